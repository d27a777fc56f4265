//! The `[digitalocean]` section of the coordinator's config, and the client settings it makes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_shared::config_doc::ConfigDoc;
use reqwest::Url;
use serde::Deserialize;

use super::limiter::RateBudget;
use super::retry::RetryPolicy;
use super::token::{TokenError, Tokens};

/// Access to the DigitalOcean API. Tokens come from files (systemd `LoadCredential=` works).
#[derive(Debug, Clone, PartialEq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct DigitalOceanConfig {
    /// Base URL of the API, without `/v2`: `https://api.digitalocean.com`, or the simulator's
    /// address for tests and demos (`http://127.0.0.1:8800`).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// File holding a read-scoped token, used for every read (inventory sync, polls, lookups).
    /// Absent: reads use the provisioning token.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// File holding the token for writes (droplets, actions, snapshots, tags). Absent: the
    /// coordinator only reads.
    #[serde(default)]
    pub provisioning_token_file: Option<PathBuf>,
    /// Steady budget per token, requests per minute, shared by every saga and the inventory
    /// sync, first come first served. DigitalOcean allows 250 a minute and 5,000 an hour per
    /// token; the client also slows down on the `ratelimit-*` and `retry-after` headers.
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    /// Requests per token that may go at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Longest pause, in seconds, taken on the server's word (`retry-after`, `ratelimit-reset`).
    #[serde(default = "default_max_pause_secs")]
    pub max_pause_secs: u64,
    /// Attempts per call, the first included, for 429s, 5xx and connection failures. Creates
    /// and actions are sent again only when they surely did not reach DigitalOcean.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry, in milliseconds; doubles each retry, with jitter.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest backoff between retries, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Timeout of one HTTP request, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

fn default_api_url() -> String {
    "https://api.digitalocean.com".to_owned()
}
fn default_requests_per_minute() -> u32 {
    240
}
fn default_burst() -> u32 {
    10
}
fn default_max_pause_secs() -> u64 {
    60
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_initial_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_request_timeout_secs() -> u64 {
    30
}

/// Everything the HTTP client needs besides the tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub api_url: Url,
    pub budget: RateBudget,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClientSettings {
    /// Defaults for `api_url`.
    pub fn new(api_url: Url) -> Self {
        Self {
            api_url,
            budget: RateBudget::default(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(default_request_timeout_secs()),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl DigitalOceanConfig {
    /// A section with defaults pointing at `api_url` (tests, the simulator demo).
    pub fn for_url(api_url: &str) -> Self {
        let mut c: Self = toml::from_str("").expect("every field has a default");
        c.api_url = api_url.to_owned();
        c
    }

    /// Checks that TOML types cannot express; reads no file.
    pub fn check(&self) -> anyhow::Result<()> {
        self.url()?;
        if self.read_token_file.is_none() && self.provisioning_token_file.is_none() {
            bail!(
                "[digitalocean] needs read_token_file, provisioning_token_file or both \
                 (or remove the section to run without DigitalOcean)"
            );
        }
        if self.requests_per_minute == 0 || self.burst == 0 || self.max_attempts == 0 {
            bail!("[digitalocean] requests_per_minute, burst and max_attempts must be at least 1");
        }
        if self.retry_initial_ms > self.retry_max_ms {
            bail!(
                "[digitalocean] retry_initial_ms ({}) must not exceed retry_max_ms ({})",
                self.retry_initial_ms,
                self.retry_max_ms
            );
        }
        if self.request_timeout_secs == 0 {
            bail!("[digitalocean] request_timeout_secs must be at least 1");
        }
        Ok(())
    }

    fn url(&self) -> anyhow::Result<Url> {
        let url = Url::parse(&self.api_url)
            .with_context(|| format!("[digitalocean] api_url {:?} is not a url", self.api_url))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            bail!(
                "[digitalocean] api_url {:?} must be an http or https base url",
                self.api_url
            );
        }
        Ok(url)
    }

    pub fn settings(&self) -> anyhow::Result<ClientSettings> {
        Ok(ClientSettings {
            api_url: self.url()?,
            budget: RateBudget {
                per_minute: self.requests_per_minute,
                burst: self.burst,
                max_pause: Duration::from_secs(self.max_pause_secs),
                fallback_pause: Duration::from_millis(self.retry_initial_ms),
            },
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                initial: Duration::from_millis(self.retry_initial_ms),
                max: Duration::from_millis(self.retry_max_ms),
            },
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            connect_timeout: Duration::from_secs(10),
        })
    }

    /// Reads the token files.
    pub fn tokens(&self) -> Result<Tokens, TokenError> {
        Tokens::from_files(
            self.read_token_file.as_deref(),
            self.provisioning_token_file.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_below_digitaloceans_limits() {
        let mut c = DigitalOceanConfig::for_url("https://api.digitalocean.com");
        c.read_token_file = Some("/run/credentials/x/do-read".into());
        c.check().unwrap();
        let s = c.settings().unwrap();
        assert!(s.budget.per_minute < 250);
        assert_eq!(s.api_url.as_str(), "https://api.digitalocean.com/");
    }

    #[test]
    fn a_section_without_tokens_or_with_a_bad_url_is_refused() {
        let c = DigitalOceanConfig::for_url("https://api.digitalocean.com");
        assert!(c.check().unwrap_err().to_string().contains("token_file"));
        let mut c = DigitalOceanConfig::for_url("ftp://x");
        c.read_token_file = Some("/t".into());
        assert!(c.check().unwrap_err().to_string().contains("api_url"));
    }
}
