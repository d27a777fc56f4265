//! Limits for every caller: the `[limits]` config, the short negative cache of unknown tokens
//! ([`UnknownTokens`]), the cap on open watch streams per token ([`WatchSlots`]) and the
//! bounds on what an agent says in its hello ([`check_hello`]).

mod unknown;
mod watch;

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

pub use unknown::UnknownTokens;
pub use watch::{WatchGuard, WatchSlots};

/// `[limits]`: what one caller or one connection may take of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A TLS client that has not finished its handshake after this many seconds is dropped.
    pub tls_handshake_timeout_secs: u64,
    /// TCP keepalive on accepted connections, in seconds (a vanished peer is noticed).
    pub tcp_keepalive_secs: u64,
    /// HTTP/2 streams (calls) one connection may have open at once; clients queue the rest.
    pub max_streams_per_connection: u32,
    /// `WatchSaga` streams one token may have open at once.
    pub max_watches_per_token: usize,
    /// Unknown tokens remembered, so repeating one costs no database lookup.
    pub unknown_token_cache_entries: usize,
    /// How long an unknown token is remembered, in seconds.
    pub unknown_token_cache_secs: u64,
    /// A `ListSagas` page stops before its encoded size passes this many bytes.
    pub list_page_max_bytes: usize,
    /// Sagas in progress one ci token may have (a CI runner waiting for apps to be
    /// undeployed must not hold every engine slot).
    pub max_active_sagas_per_ci_token: u64,
    /// Sagas in progress all ci tokens together may have; below `sagas.max_concurrent`, so
    /// operators always have slots.
    pub max_active_ci_sagas: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            tls_handshake_timeout_secs: 10,
            tcp_keepalive_secs: 60,
            max_streams_per_connection: 100,
            max_watches_per_token: 32,
            unknown_token_cache_entries: 10_000,
            unknown_token_cache_secs: 30,
            list_page_max_bytes: 1024 * 1024,
            max_active_sagas_per_ci_token: 4,
            max_active_ci_sagas: 16,
        }
    }
}

impl LimitsConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            (
                "tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("max_watches_per_token", self.max_watches_per_token as u64),
            ("list_page_max_bytes", self.list_page_max_bytes as u64),
            (
                "max_active_sagas_per_ci_token",
                self.max_active_sagas_per_ci_token,
            ),
            ("max_active_ci_sagas", self.max_active_ci_sagas),
        ] {
            anyhow::ensure!(value > 0, "limits.{name} must be at least 1");
        }
        Ok(())
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }

    pub fn tcp_keepalive(&self) -> Duration {
        Duration::from_secs(self.tcp_keepalive_secs)
    }

    pub fn unknown_tokens(&self) -> UnknownTokens {
        UnknownTokens::new(
            self.unknown_token_cache_entries,
            Duration::from_secs(self.unknown_token_cache_secs),
        )
    }
}

/// A value over its limit, named: the field, its size and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} has {count} entries; the limit is {max}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "this token already has {max} WatchSaga streams open (limits.max_watches_per_token = \
         {max}); close one first"
    )]
    Watches { max: usize },
}

impl crate::error::ServiceError for LimitError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            LimitError::TooLong { .. } | LimitError::TooMany { .. } => ErrorCode::InvalidArgument,
            LimitError::Watches { .. } => ErrorCode::ResourceExhausted,
        }
    }
}

/// `Err` naming `field` when `value` is longer than `max` bytes.
pub fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    match value.len() {
        len if len > max => Err(LimitError::TooLong { field, len, max }),
        _ => Ok(()),
    }
}

/// `Err` naming `field` when `values` has more than `max` entries or one longer than `each`.
pub fn check_list(
    field: &'static str,
    values: &[String],
    max: usize,
    each: usize,
) -> Result<(), LimitError> {
    if values.len() > max {
        return Err(LimitError::TooMany {
            field,
            count: values.len(),
            max,
        });
    }
    values.iter().try_for_each(|v| check_len(field, v, each))
}

/// Longest hostname an agent may report (DNS's limit).
pub const MAX_HOSTNAME: usize = 253;
/// Longest agent or Docker version string.
pub const MAX_VERSION: usize = 128;
/// Most capabilities one agent may announce, and the longest one.
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CAPABILITY: usize = 64;

/// Checks what an agent says about itself before any of it is stored; the hello is refused
/// (`INVALID_ARGUMENT`, naming the field and the limit) when a value is over its limit.
pub fn check_hello(hello: &pb::Hello) -> Result<(), LimitError> {
    check_len("hello.hostname", &hello.hostname, MAX_HOSTNAME)?;
    check_len("hello.agent_version", &hello.agent_version, MAX_VERSION)?;
    check_len("hello.docker_version", &hello.docker_version, MAX_VERSION)?;
    check_list(
        "hello.capabilities",
        &hello.capabilities,
        MAX_CAPABILITIES,
        MAX_CAPABILITY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_hello_is_refused_naming_the_field_and_limit() {
        let mut hello = pb::Hello {
            hostname: "web-1".into(),
            agent_version: "1.0".into(),
            ..Default::default()
        };
        check_hello(&hello).unwrap();
        hello.hostname = "h".repeat(300);
        let e = check_hello(&hello).unwrap_err().to_string();
        assert!(e.contains("hello.hostname") && e.contains("253"), "{e}");
        hello.hostname = "web-1".into();
        hello.capabilities = vec!["x".into(); 65];
        let e = check_hello(&hello).unwrap_err().to_string();
        assert!(e.contains("hello.capabilities") && e.contains("64"), "{e}");
        hello.capabilities = vec!["x".repeat(65)];
        let e = check_hello(&hello).unwrap_err().to_string();
        assert!(
            e.contains("hello.capabilities") && e.contains("65 bytes"),
            "{e}"
        );
    }
}
