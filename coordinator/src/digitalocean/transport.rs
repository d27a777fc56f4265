//! `HttpDoApi`'s transport: one DigitalOcean call through the token's rate limiter, with
//! retries, and its failure turned into a typed `DoApiError`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{Method, Url};
use thiserror::Error;
use tracing::{debug, warn};

use super::config::{ClientSettings, DigitalOceanConfig};
use super::error::{DoApiError, DoErrorKind, ErrorBody, Failure, classify};
use super::limiter::{LimiterStats, RateLimiter};
use super::retry::{Idempotency, RateHeaders, RetryPolicy};
use super::token::{Token, TokenError, TokenPurpose, Tokens};

/// The reqwest implementation of [`super::DoApi`]. Clone it freely: clones share the HTTP
/// connection pool and the rate limiters, which is the point (one budget per token for the
/// whole coordinator).
#[derive(Clone)]
pub struct HttpDoApi {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    read: Option<Credential>,
    provisioning: Option<Credential>,
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

#[derive(Clone)]
struct Credential {
    token: Token,
    limiter: Arc<RateLimiter>,
}

impl fmt::Debug for HttpDoApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDoApi")
            .field("base", &self.inner.base.as_str())
            .field("read_token", &self.inner.read.as_ref().map(|c| &c.token))
            .field(
                "provisioning_token",
                &self.inner.provisioning.as_ref().map(|c| &c.token),
            )
            .finish()
    }
}

/// Why a client could not be made.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("no digitalocean token configured")]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("invalid [digitalocean] settings: {0:#}")]
    Settings(anyhow::Error),
    #[error("cannot build the http client")]
    Http(#[source] reqwest::Error),
}

/// Counters for tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Of those, resends after a failure.
    pub retries: u64,
    /// 429 responses received.
    pub rate_limited: u64,
}

/// One call as the operations describe it.
pub(super) struct Call {
    pub op: &'static str,
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
    pub purpose: TokenPurpose,
    pub idempotency: Idempotency,
}

/// A successful (2xx) answer.
pub(super) struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub attempts: u32,
    pub request_id: Option<String>,
}

impl HttpDoApi {
    /// A client for `settings.api_url` with these tokens. Equal tokens share one limiter.
    pub fn new(settings: ClientSettings, tokens: Tokens) -> Result<Self, SetupError> {
        if tokens.read.is_none() && tokens.provisioning.is_none() {
            return Err(SetupError::NoToken);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-coordinator/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(SetupError::Http)?;
        let mut limiters: HashMap<String, Arc<RateLimiter>> = HashMap::new();
        let mut credential = |t: Option<Token>| {
            t.map(|token| Credential {
                limiter: limiters
                    .entry(token.fingerprint())
                    .or_insert_with(|| Arc::new(RateLimiter::new(settings.budget)))
                    .clone(),
                token,
            })
        };
        let read = credential(tokens.read);
        let provisioning = credential(tokens.provisioning);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: settings.api_url,
                retry: settings.retry,
                read,
                provisioning,
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
            }),
        })
    }

    /// A client from the `[digitalocean]` config section (reads the token files).
    pub fn from_config(config: &DigitalOceanConfig) -> Result<Self, SetupError> {
        config.check().map_err(SetupError::Settings)?;
        let settings = config.settings().map_err(SetupError::Settings)?;
        Self::new(settings, config.tokens()?)
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            rate_limited: self.inner.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// The counters of the limiter behind a purpose's token.
    pub fn limiter_stats(&self, purpose: TokenPurpose) -> Option<LimiterStats> {
        self.credential(purpose).map(|c| c.limiter.stats())
    }

    fn credential(&self, purpose: TokenPurpose) -> Option<&Credential> {
        match purpose {
            TokenPurpose::Read => self
                .inner
                .read
                .as_ref()
                .or(self.inner.provisioning.as_ref()),
            TokenPurpose::Provisioning => self.inner.provisioning.as_ref(),
        }
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.inner.base.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// Sends a call, waiting on the limiter before every attempt and retrying what is safe.
    pub(super) async fn call(&self, call: &Call) -> Result<Reply, DoApiError> {
        let Some(cred) = self.credential(call.purpose) else {
            return Err(DoApiError::local(
                call.op,
                DoErrorKind::Unauthorized,
                format!("no {} token configured", call.purpose.as_str()),
            ));
        };
        let policy = self.inner.retry;
        let mut url = self.url(&call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            cred.limiter.acquire().await;
            if attempt > 1 {
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .header(AUTHORIZATION, cred.token.authorization())
                .header(ACCEPT, "application/json");
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let failed = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let wall = SystemTime::now();
                    let rate = RateHeaders::parse(&headers, wall);
                    cred.limiter.observe(&rate, wall);
                    match response.bytes().await {
                        Ok(body) => {
                            let request_id = header_request_id(&headers);
                            debug!(op = call.op, status, attempt, request_id = ?request_id, "digitalocean call");
                            if (200..300).contains(&status) {
                                return Ok(Reply {
                                    status,
                                    body,
                                    attempts: attempt,
                                    request_id,
                                });
                            }
                            Outcome::Status {
                                status,
                                body,
                                rate,
                                request_id,
                            }
                        }
                        Err(e) => Outcome::Lost(e),
                    }
                }
                Err(e) => Outcome::Lost(e),
            };
            match self.decide(call, &policy, attempt, failed, cred) {
                Decision::Retry(wait) => tokio::time::sleep(wait).await,
                Decision::Fail(failure) => return Err(DoApiError::boxed(failure)),
            }
        }
    }

    fn decide(
        &self,
        call: &Call,
        policy: &RetryPolicy,
        attempt: u32,
        outcome: Outcome,
        cred: &Credential,
    ) -> Decision {
        let attempts_left = attempt < policy.max_attempts;
        match outcome {
            Outcome::Status {
                status,
                body,
                rate,
                request_id,
            } => {
                let err = ErrorBody::parse(&body);
                let request_id = err.request_id.or(request_id);
                let kind = classify(status, &err.message);
                if status == 429 {
                    self.inner.rate_limited.fetch_add(1, Ordering::Relaxed);
                    // Everyone sharing the token waits, not only this caller: `retry-after`
                    // already paused the limiter (`observe`); without one, back off.
                    if rate.retry_after.is_none() {
                        cred.limiter.pause(policy.backoff(attempt - 1));
                    }
                }
                let server_error = (500..600).contains(&status) && status != 501;
                let retry = attempts_left
                    && (status == 429 || (server_error && call.idempotency == Idempotency::Safe));
                if retry {
                    // A 429's wait is the limiter's pause; a 5xx waits its own backoff.
                    let wait = if status == 429 {
                        Duration::ZERO
                    } else {
                        rate.retry_after
                            .unwrap_or_else(|| policy.backoff(attempt - 1))
                    };
                    warn!(op = call.op, status, attempt, request_id = ?request_id, wait_ms = wait.as_millis() as u64, "digitalocean call failed, retrying");
                    return Decision::Retry(wait);
                }
                Decision::Fail(Box::new(Failure {
                    op: call.op,
                    kind,
                    status: Some(status),
                    code: err.code,
                    message: err.message,
                    request_id,
                    attempts: attempt,
                    retry_after: rate.retry_after,
                    may_have_applied: server_error && call.idempotency == Idempotency::Unsafe,
                    source: None,
                }))
            }
            Outcome::Lost(e) => {
                // A connection that never opened carried nothing: safe to resend anything.
                let never_sent = e.is_connect();
                let retry = attempts_left && (never_sent || call.idempotency == Idempotency::Safe);
                let what = if e.is_timeout() {
                    "timed out"
                } else if never_sent {
                    "could not connect"
                } else if e.is_body() || e.is_decode() {
                    "response cut off"
                } else {
                    "connection failed"
                };
                if retry {
                    let wait = policy.backoff(attempt - 1);
                    warn!(
                        op = call.op,
                        attempt,
                        error = what,
                        wait_ms = wait.as_millis() as u64,
                        "digitalocean call failed, retrying"
                    );
                    return Decision::Retry(wait);
                }
                Decision::Fail(Box::new(Failure {
                    op: call.op,
                    kind: DoErrorKind::Transient,
                    status: None,
                    code: None,
                    message: what.to_owned(),
                    request_id: None,
                    attempts: attempt,
                    retry_after: None,
                    may_have_applied: !never_sent && call.idempotency == Idempotency::Unsafe,
                    source: Some(e),
                }))
            }
        }
    }
}

enum Outcome {
    Status {
        status: u16,
        body: Bytes,
        rate: RateHeaders,
        request_id: Option<String>,
    },
    Lost(reqwest::Error),
}

enum Decision {
    Retry(Duration),
    Fail(Box<Failure>),
}

fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
