//! Bearer tokens and roles. Every RPC's required role is decided here, in one table
//! ([`policy`]), and enforced by one tower layer ([`AuthLayer`]) in front of every service.
//!
//! Tokens are 256 random bits; only their SHA-256 is stored. A slow hash buys nothing for
//! secrets of that entropy, and a fast one keeps per-call checks cheap.
//!
//! One-time enrollment tokens ([`enrollment`]) may call `TokenService.EnrollAgent` and nothing
//! else; no other token may call it.
//!
//! A ci token may be scoped to hosts and apps ([`TokenScope`]); the services that start warm
//! restores ask [`Principal::may_restore`] before starting one.

mod enrollment;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use berth_shared::Role;
use berth_shared::time::unix_ms;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{NewToken, Store, StoreError, TokenRecord, TokenScope};

/// Who is calling, put into each authorized request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    /// For agent tokens: the only host this token may speak for.
    pub host_id: Option<String>,
    /// A one-time enrollment token: it may call `TokenService.EnrollAgent` and nothing else.
    pub enrollment: bool,
    /// The hosts and apps a scoped ci token's warm restores may touch.
    pub scope: TokenScope,
}

impl Principal {
    /// Whether this caller may restore `app` on `host`: refused (naming the scope) when its
    /// token is scoped to other hosts or apps.
    pub fn may_restore(&self, host: &str, app: &str) -> Result<(), AuthError> {
        let s = &self.scope;
        let host_ok = s.hosts.is_empty() || s.hosts.iter().any(|h| h == host);
        let app_ok = s.apps.is_empty() || s.apps.iter().any(|a| a == app);
        if host_ok && app_ok {
            return Ok(());
        }
        metrics::counter!("berth_rpc_denied_total", "reason" => "scope").increment(1);
        Err(AuthError::OutOfScope {
            token_id: self.token_id.clone(),
            host: host.to_owned(),
            app: app.to_owned(),
            scope: describe_scope(s),
        })
    }
}

/// `hosts ci-1, ci-2; apps keycloak` (`any` for an empty list).
fn describe_scope(s: &TokenScope) -> String {
    let list = |v: &[String]| match v {
        [] => "any".to_owned(),
        v => v.join(", "),
    };
    format!("hosts {}; apps {}", list(&s.hosts), list(&s.apps))
}

const TOKEN_PREFIX: &str = "berth_";

/// SHA-256 of a token's text, hex encoded: the only form the store keeps.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What an RPC requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health and reflection: anyone who can reach the port.
    Public,
    /// A live token with one of these roles.
    Roles(&'static [Role]),
    /// A live, unused enrollment token, and no other.
    Enrollment,
    /// Not in the policy: refused.
    Unknown,
}

const ADMIN: &[Role] = &[Role::Admin];
const OPERATE: &[Role] = &[Role::Admin, Role::Operator];
const READ: &[Role] = &[Role::Admin, Role::Operator, Role::Ci];
const CI_RESTORE: &[Role] = &[Role::Admin, Role::Operator, Role::Ci];
const AGENT: &[Role] = &[Role::Agent];

/// The authorization policy: the roles that may call each gRPC method (`/package.Service/Method`).
pub fn policy(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        return Access::Public;
    }
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Access::Unknown;
    };
    let roles = match (service, method) {
        ("berth.v1.AgentLink", "Session") => AGENT,
        ("berth.v1.TokenService", "EnrollAgent") => return Access::Enrollment,
        ("berth.v1.TokenService", _) | ("berth.v1.DriftService", _) => ADMIN,
        ("berth.v1.DropletService", "DestroyDroplet") => ADMIN,
        ("berth.v1.DropletService", "ListDroplets") => READ,
        ("berth.v1.DropletService", _) => OPERATE,
        ("berth.v1.WarmService", "WarmRestore") => CI_RESTORE,
        ("berth.v1.WarmService", "ListWarmSnapshots") => READ,
        ("berth.v1.WarmService", _) => OPERATE,
        ("berth.v1.ArchiveService", "ListArchives" | "GetArchive") => READ,
        ("berth.v1.ArchiveService", _) => OPERATE,
        ("berth.v1.SagaService", "GetSaga" | "ListSagas" | "WatchSaga") => READ,
        ("berth.v1.SagaService", _) => OPERATE,
        ("berth.v1.HostService", _) => READ,
        ("berth.v1.ScheduleService", "ListSchedules" | "GetSchedule") => READ,
        ("berth.v1.ScheduleService", _) => OPERATE,
        _ => return Access::Unknown,
    };
    Access::Roles(roles)
}

/// The reasons `berth_auth_failures_total` counts a refused token under.
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "missing",
    "malformed",
    "unknown",
    "revoked",
    "expired",
    "enrollment_used",
];

/// Counts a refused token in `berth_auth_failures_total{reason}` (one of [`FAILURE_REASONS`]).
fn auth_failed(reason: &'static str) {
    metrics::counter!("berth_auth_failures_total", "reason" => reason).increment(1);
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send the metadata header `authorization: Bearer <token>`")]
    Missing,
    #[error("the token is unknown, revoked or expired")]
    Invalid,
    #[error("role {role} may not call {path} (allowed: {allowed})")]
    Forbidden {
        role: Role,
        path: String,
        allowed: String,
    },
    #[error("{path} is not a known method")]
    UnknownMethod { path: String },
    #[error("an enrollment token may only enroll an agent (`berth-agent enroll`), not call {path}")]
    EnrollmentOnly { path: String },
    #[error(
        "{path} needs a one-time enrollment token (`berth-coordinator token create --role agent \
         --host HOST --enrollment`), not a {role} token"
    )]
    EnrollmentRequired { role: Role, path: String },
    #[error(
        "this enrollment token was already used ({at}); it works once: create a new one with \
         `berth-coordinator token create --role agent --host HOST --enrollment`"
    )]
    EnrollmentUsed { at: String },
    #[error(
        "this enrollment token expired ({at}); create a new one with \
         `berth-coordinator token create --role agent --host HOST --enrollment`"
    )]
    EnrollmentExpired { at: String },
    #[error("this enrollment token is bound to host {bound}, not {asked}")]
    EnrollmentHostMismatch { bound: String, asked: String },
    #[error("an enrollment token must have a lifetime (--ttl)")]
    EnrollmentTtlRequired,
    #[error("the role {0} needs a host id (--host)")]
    HostRequired(Role),
    #[error("only agent tokens are bound to a host; drop the host id for role {0}")]
    HostNotAllowed(Role),
    #[error("only ci tokens are scoped to hosts and apps; drop --host/--app for role {0}")]
    ScopeNotAllowed(Role),
    #[error(
        "token {token_id} may not restore app {app:?} on host {host:?}: it is scoped to {scope}"
    )]
    OutOfScope {
        token_id: String,
        host: String,
        app: String,
        scope: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ServiceError for AuthError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            AuthError::Missing
            | AuthError::Invalid
            | AuthError::EnrollmentUsed { .. }
            | AuthError::EnrollmentExpired { .. } => ErrorCode::Unauthenticated,
            AuthError::Forbidden { .. }
            | AuthError::UnknownMethod { .. }
            | AuthError::EnrollmentOnly { .. }
            | AuthError::EnrollmentRequired { .. }
            | AuthError::EnrollmentHostMismatch { .. }
            | AuthError::OutOfScope { .. } => ErrorCode::PermissionDenied,
            AuthError::HostRequired(_)
            | AuthError::HostNotAllowed(_)
            | AuthError::ScopeNotAllowed(_)
            | AuthError::EnrollmentTtlRequired => ErrorCode::InvalidArgument,
            AuthError::Store(s) => s.error_code(),
        }
    }

    fn public_message(&self) -> String {
        match self {
            AuthError::Store(s) => s.public_message(),
            e => e.to_string(),
        }
    }
}

/// Issues and checks tokens against the store.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Store,
    /// Hashes that matched no live token lately: answered without a lookup.
    unknown: crate::limits::UnknownTokens,
}

impl Tokens {
    pub fn new(store: Store) -> Self {
        let unknown = crate::limits::LimitsConfig::default().unknown_tokens();
        Self { store, unknown }
    }

    /// Remembers unknown tokens in `unknown` (see `[limits]`).
    pub fn with_unknown_cache(self, unknown: crate::limits::UnknownTokens) -> Self {
        Self { unknown, ..self }
    }

    /// Creates a token and returns its record and its plaintext, which is never stored.
    pub async fn issue(
        &self,
        role: Role,
        host_id: Option<&berth_shared::HostId>,
        description: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<(TokenRecord, String), AuthError> {
        self.issue_scoped(role, host_id, &TokenScope::default(), description, ttl)
            .await
    }

    /// [`Tokens::issue`] with a scope, which only a ci token may have.
    pub async fn issue_scoped(
        &self,
        role: Role,
        host_id: Option<&berth_shared::HostId>,
        scope: &TokenScope,
        description: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<(TokenRecord, String), AuthError> {
        match (role, host_id) {
            (Role::Agent, None) => return Err(AuthError::HostRequired(role)),
            (r, Some(_)) if r != Role::Agent => return Err(AuthError::HostNotAllowed(r)),
            _ => {}
        }
        if role != Role::Ci && !scope.is_unlimited() {
            return Err(AuthError::ScopeNotAllowed(role));
        }
        let (token_id, token) = new_secret();
        let now = unix_ms(SystemTime::now());
        let record = self
            .store
            .insert_token(&NewToken {
                token_id: &token_id,
                token_hash: &hash_token(&token),
                role: role.as_str(),
                host_id: host_id.map(|h| h.as_str()),
                description,
                created_at_ms: now,
                expires_at_ms: ttl.map(|t| now + t.as_millis() as i64),
                scope,
            })
            .await?;
        Ok((record, token))
    }

    /// The caller behind a bearer token, if the token is live.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        // Not a token this coordinator could have issued, or one found unknown lately: no
        // lookup, so a flood of made-up tokens costs the database nothing.
        if !well_formed(token) {
            auth_failed("malformed");
            return Err(AuthError::Invalid);
        }
        self.authenticate_hash(&hash_token(token)).await
    }

    /// The caller behind a token known by its hash (a web session keeps only that), if the
    /// token is live.
    pub async fn authenticate_hash(&self, hash: &str) -> Result<Principal, AuthError> {
        let now = unix_ms(SystemTime::now());
        if self.unknown.contains(hash) {
            metrics::counter!("berth_token_unknown_cached_total").increment(1);
            auth_failed("unknown");
            return Err(AuthError::Invalid);
        }
        metrics::counter!("berth_token_queries_total").increment(1);
        let Some(record) = self.store.find_live_token(hash, now).await? else {
            metrics::counter!("berth_token_queries_total").increment(1);
            let (why, reason) = self.why_not_live(hash, now).await?;
            auth_failed(reason);
            if reason == "unknown" {
                self.unknown.insert(hash);
            }
            return Err(why);
        };
        let role = record
            .role
            .parse::<Role>()
            .map_err(|_| AuthError::Invalid)?;
        Ok(Principal {
            token_id: record.token_id,
            role,
            host_id: record.host_id,
            enrollment: record.enrollment,
            scope: record.scope,
        })
    }

    /// Authenticates and authorizes one call to `path`.
    pub async fn authorize(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        let allowed = match policy(path) {
            Access::Public => return Ok(None),
            Access::Unknown => {
                return Err(AuthError::UnknownMethod {
                    path: path.to_owned(),
                });
            }
            Access::Roles(roles) => Some(roles),
            Access::Enrollment => None,
        };
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                auth_failed("missing");
                AuthError::Missing
            })?;
        let principal = self.authenticate(token).await?;
        let allowed = match (allowed, principal.enrollment) {
            (None, true) => return Ok(Some(principal)),
            (None, false) => {
                metrics::counter!("berth_rpc_denied_total", "reason" => "enrollment").increment(1);
                return Err(AuthError::EnrollmentRequired {
                    role: principal.role,
                    path: path.to_owned(),
                });
            }
            (Some(_), true) => {
                metrics::counter!("berth_rpc_denied_total", "reason" => "enrollment").increment(1);
                return Err(AuthError::EnrollmentOnly {
                    path: path.to_owned(),
                });
            }
            (Some(roles), false) => roles,
        };
        if !allowed.contains(&principal.role) {
            metrics::counter!("berth_rpc_denied_total", "reason" => "role").increment(1);
            return Err(AuthError::Forbidden {
                role: principal.role,
                path: path.to_owned(),
                allowed: allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Some(principal))
    }
}

/// Whether `token` has the shape of one [`new_secret`] makes: `berth_` and 64 hex digits.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh token: its id and its plaintext (`berth_` and 64 hex digits).
fn new_secret() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let token_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    (token_id, token)
}

/// Tower layer that authorizes every request before it reaches a service.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    tokens: Tokens,
}

impl AuthLayer {
    pub fn new(tokens: Tokens) -> Self {
        Self { tokens }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    tokens: Tokens,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match tokens.authorize(&path, header.as_deref()).await {
                Ok(principal) => {
                    if let Some(p) = principal {
                        req.extensions_mut().insert(p);
                    }
                    inner.call(req).await
                }
                Err(e) => {
                    tracing::debug!(path, error = %e, "request refused");
                    Ok(crate::error::status_of(&e).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_berth_method_is_in_the_policy() {
        use prost::Message;
        let fds = prost_types::FileDescriptorSet::decode(berth_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let mut count = 0;
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(
                        matches!(policy(&path), Access::Roles(_) | Access::Enrollment),
                        "{path} has no entry in the authorization policy"
                    );
                    count += 1;
                }
            }
        }
        assert!(count > 30, "only {count} methods found");
    }

    #[test]
    fn sensitive_methods_are_admin_only() {
        for path in [
            "/berth.v1.TokenService/CreateToken",
            "/berth.v1.DriftService/AcceptDrift",
            "/berth.v1.DriftService/ListDrift",
            "/berth.v1.DropletService/DestroyDroplet",
        ] {
            assert_eq!(policy(path), Access::Roles(ADMIN), "{path}");
        }
        assert_eq!(policy("/berth.v1.AgentLink/Session"), Access::Roles(AGENT));
        assert_eq!(
            policy("/berth.v1.TokenService/EnrollAgent"),
            Access::Enrollment
        );
        assert_eq!(policy("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(policy("/berth.v1.Nope/Nope"), Access::Unknown);
    }

    #[test]
    fn only_well_formed_tokens_are_looked_up() {
        assert!(well_formed(&new_secret().1));
        assert!(!well_formed("berth_abc"));
        assert!(!well_formed(&format!("berth_{}", "g".repeat(64))));
        assert!(!well_formed(&"a".repeat(70)));
    }

    #[test]
    fn a_scoped_token_restores_only_within_its_scope() {
        let caller = |hosts: &[&str], apps: &[&str]| Principal {
            token_id: "t1".into(),
            role: Role::Ci,
            host_id: None,
            enrollment: false,
            scope: TokenScope {
                hosts: hosts.iter().map(|s| s.to_string()).collect(),
                apps: apps.iter().map(|s| s.to_string()).collect(),
            },
        };
        caller(&[], &[]).may_restore("prod-1", "keycloak").unwrap();
        caller(&["ci-1"], &[])
            .may_restore("ci-1", "anything")
            .unwrap();
        caller(&["ci-1"], &["keycloak"])
            .may_restore("ci-1", "keycloak")
            .unwrap();
        let err = caller(&["ci-1"], &["keycloak"])
            .may_restore("prod-1", "keycloak")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"prod-1\"") && err.contains("hosts ci-1; apps keycloak"),
            "{err}"
        );
        assert!(
            caller(&["ci-1"], &["keycloak"])
                .may_restore("ci-1", "wiki")
                .is_err()
        );
    }

    #[test]
    fn hashes_are_hex_sha256() {
        let h = hash_token("berth_abc");
        assert_eq!(h.len(), 64);
        assert_ne!(h, hash_token("berth_abd"));
    }
}
