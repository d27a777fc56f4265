//! The console's frame and its small pieces: the layout every page shares, statuses that carry
//! their name as well as a colour, times relative with the absolute one on hover, and the
//! refusal pages. The CSS and JavaScript are embedded: the console needs no network.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use berth_shared::human::{relative_time, utc_time};
use maud::{DOCTYPE, Markup, html};
use tonic::Code;

use super::session::Session;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
}

/// Around every request: refuses a POST from another site, and adds `Server-Timing:
/// app;dur=<ms>` and the headers every page wants (no framing, no sniffing, a content policy
/// that allows only the console's own scripts and styles).
pub async fn envelope(req: Request, next: Next) -> Response {
    // A form posted from another site is refused before any handler (the cookie is
    // SameSite=Strict already; this also covers the sign-in form).
    let cross_site = req.method() == axum::http::Method::POST
        && req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site {
        return WebError::Csrf.into_response();
    }
    let started = Instant::now();
    let mut response = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        headers.insert("server-timing", v);
    }
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    response
}

/// The places in the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Sagas,
    Drift,
    Hosts,
    Archives,
    Schedules,
}

/// A whole page: the navigation, who is signed in (and the sign-out form), then `body`.
pub fn page(title: &str, nav: Nav, session: &Session, body: Markup) -> Response {
    let link = |to: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(to == nav).then_some("here")] { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body {
                header {
                    a.brand href="/" { "Berth" }
                    nav {
                        (link(Nav::Overview, "/", "Overview"))
                        (link(Nav::Sagas, "/sagas", "Sagas"))
                        (link(Nav::Drift, "/drift", "Drift"))
                        (link(Nav::Hosts, "/hosts", "Hosts"))
                        (link(Nav::Archives, "/archives", "Archives"))
                        (link(Nav::Schedules, "/schedules", "Schedules"))
                    }
                    form.who method="post" action="/logout" {
                        span { (session.principal.role.as_str()) " · token " (session.principal.token_id) }
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// The `<head>` of every page; the script only where a session is (timelines, confirmations).
fn head(title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Berth" }
            link rel="stylesheet" href="/assets/console.css";
            @if script { script src="/assets/console.js" defer {} }
        }
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A page without the frame (sign-in, refusals before a session exists).
pub fn bare(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, false))
            body.bare { main { h1 { (title) } (body) } }
        }
    };
    html_response(status, markup)
}

/// A status as a badge: its colour and its name, so it reads without colour too.
pub fn status(s: &str) -> Markup {
    let class = match s {
        "completed" | "compensated" | "online" | "active" | "accepted" | "reverted" | "ok"
        | "good" => "ok",
        "running" | "pending" | "compensating" | "retrying" | "reverting" => "busy",
        "failed" | "compensation_failed" | "offline" | "open" | "bad" | "missed" => "bad",
        "paused" | "cancelled" | "abandoned" | "skipped" | "stale" => "warn",
        _ => "plain",
    };
    html! { span class={"status " (class)} data-status=(s) { (s.replace('_', " ")) } }
}

/// A time relative to now, with the UTC time on hover.
pub fn when(now_ms: i64, at_ms: i64) -> Markup {
    if at_ms <= 0 {
        return html! { span.muted { "never" } };
    }
    html! { time datetime=(utc_time(at_ms)) title=(utc_time(at_ms)) { (relative_time(now_ms, at_ms)) } }
}

/// An empty list's message: what it means and the command that fills it.
pub fn empty(what: &str, command: &str) -> Markup {
    html! {
        div.empty {
            p { (what) }
            @if !command.is_empty() { p { "To make one: " code { (command) } } }
        }
    }
}

/// Pretty JSON text, or the text itself.
pub fn json_text(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

pub fn now_ms() -> i64 {
    berth_shared::time::unix_ms(std::time::SystemTime::now())
}

/// Why a request got no page.
#[derive(Debug)]
pub enum WebError {
    /// No live session: sign in (again), saying why.
    SignIn(&'static str),
    /// The API refused or failed: its code and message.
    Api(tonic::Status),
    /// A form without the session's CSRF value.
    Csrf,
    BadRequest(String),
}

impl From<tonic::Status> for WebError {
    fn from(s: tonic::Status) -> Self {
        WebError::Api(s)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %berth_shared::chain(&e), "web console: store error");
        WebError::Api(tonic::Status::unavailable(
            "the database is not answering; try again",
        ))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (code, title, message) = match self {
            WebError::SignIn(why) => {
                return Redirect::to(&format!("/login?why={why}")).into_response();
            }
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Refused",
                "This form did not carry this session's CSRF value. Reload the page and try again."
                    .to_owned(),
            ),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Not understood", m),
            WebError::Api(s) => {
                let code = match s.code() {
                    Code::NotFound => StatusCode::NOT_FOUND,
                    Code::PermissionDenied => StatusCode::FORBIDDEN,
                    Code::Unauthenticated => {
                        return Redirect::to("/login?why=signed-out").into_response();
                    }
                    Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::AlreadyExists
                    | Code::OutOfRange => StatusCode::BAD_REQUEST,
                    Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let title = match code {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::BAD_REQUEST => "Refused",
                    _ => "Something went wrong",
                };
                (code, title, s.message().to_owned())
            }
        };
        bare(
            code,
            title,
            html! {
                p.error { (message) }
                p { a href="/" { "Back to the overview" } }
            },
        )
    }
}
