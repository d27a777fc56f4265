//! Signing in and out, and the session every page runs under.
//!
//! Sign-in takes a token pasted into a form (never a URL), checks it as the API does, and sets
//! a random session cookie (HttpOnly, SameSite=Strict, `Secure` under TLS). The database keeps
//! the cookie's SHA-256, the token's SHA-256 and a CSRF value; every request looks the token up
//! again, so a revoked or expired token ends its sessions at once, on every replica.

use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use berth_shared::Role;
use maud::html;
use rand::RngCore;
use serde::Deserialize;

use super::Console;
use super::render::{WebError, bare, now_ms};
use crate::auth::{Access, AuthError, Principal, hash_token, policy};
use crate::store::WebSession;

const COOKIE: &str = "berth_session";
/// How long a session lasts without signing in again.
const SESSION_MS: i64 = 12 * 3600 * 1000;

/// The signed-in caller of one request.
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
}

impl Session {
    /// Refuses unless the caller's role may call gRPC `method` (`/berth.v1.X/Y`), exactly as
    /// the API would.
    pub fn allow(&self, method: &str) -> Result<(), WebError> {
        match policy(method) {
            Access::Roles(roles) if roles.contains(&self.principal.role) => Ok(()),
            Access::Roles(roles) => Err(WebError::Api(tonic::Status::permission_denied(format!(
                "a {} token may not do this ({method} needs {})",
                self.principal.role,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))),
            _ => Err(WebError::Api(tonic::Status::permission_denied(format!(
                "{method} is not for the console"
            )))),
        }
    }

    /// Whether the caller's role may call `method` (to show or hide a button).
    pub fn may(&self, method: &str) -> bool {
        self.allow(method).is_ok()
    }

    /// `msg` as a request from this caller, for a service's method.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.extensions_mut().insert(self.principal.clone());
        req
    }

    /// Refuses a form that does not carry this session's CSRF value.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        let same = sent.len() == self.csrf.len()
            && sent
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same { Ok(()) } else { Err(WebError::Csrf) }
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

impl FromRequestParts<Arc<Console>> for Session {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, WebError> {
        let cookie = cookie_value(&parts.headers).ok_or(WebError::SignIn("signed-out"))?;
        let session_hash = hash_token(&cookie);
        let now = now_ms();
        let Some(session) = console.store.web_session(&session_hash, now).await? else {
            return Err(WebError::SignIn("expired"));
        };
        match console.tokens.authenticate_hash(&session.token_hash).await {
            Ok(principal) => Ok(Session {
                principal,
                csrf: session.csrf,
            }),
            Err(AuthError::Store(e)) => Err(e.into()),
            Err(e) => {
                tracing::info!(error = %e, "web session ended: its token is no longer live");
                console.store.delete_web_session(&session_hash).await?;
                Err(WebError::SignIn("token-ended"))
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Why {
    why: Option<String>,
}

pub async fn login_page(Query(q): Query<Why>) -> Response {
    let note = match q.why.as_deref() {
        Some("token-ended") => {
            Some("Your session ended: its token was revoked or expired. Sign in with a live token.")
        }
        Some("expired") => Some("Your session expired. Sign in again."),
        Some("signed-out") => Some("Sign in to continue."),
        _ => None,
    };
    login_form(StatusCode::OK, note)
}

fn login_form(status: StatusCode, note: Option<&str>) -> Response {
    bare(
        status,
        "Sign in to Berth",
        html! {
            @if let Some(note) = note { p.note { (note) } }
            form.login method="post" action="/login" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="berth_…";
                button type="submit" { "Sign in" }
            }
            p.muted {
                "An admin, operator or ci token, as the CLI uses ("
                code { "berth token create --role operator" } "). The console keeps a session, not the token."
            }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    State(console): State<Arc<Console>>,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let principal = match console.tokens.authenticate(&form.token).await {
        Ok(p) => p,
        Err(AuthError::Store(e)) => return Err(e.into()),
        Err(e) => {
            let note = format!("That token was refused: {e}.");
            return Ok(login_form(StatusCode::UNAUTHORIZED, Some(&note)));
        }
    };
    if principal.enrollment || principal.role == Role::Agent {
        return Ok(login_form(
            StatusCode::FORBIDDEN,
            Some("Agent and enrollment tokens cannot sign in: use an admin, operator or ci token."),
        ));
    }
    let session_secret = random_hex();
    let now = now_ms();
    let session = WebSession {
        token_hash: hash_token(form.token.trim()),
        csrf: random_hex(),
        expires_at_ms: now + SESSION_MS,
    };
    console
        .store
        .create_web_session(&hash_token(&session_secret), &session, now)
        .await?;
    tracing::info!(token_id = principal.token_id, role = %principal.role, "web console sign-in");
    let secure = if console.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={session_secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_MS / 1000
    );
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| WebError::BadRequest(e.to_string()))?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    session.check_csrf(&form.csrf)?;
    if let Some(cookie) = cookie_value(&headers) {
        console
            .store
            .delete_web_session(&hash_token(&cookie))
            .await?;
    }
    let mut response = Redirect::to("/login?why=signed-out").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("berth_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
