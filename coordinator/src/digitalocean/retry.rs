//! When a failed DigitalOcean call is sent again, and how long to wait first: exponential
//! backoff with jitter and a cap, `retry-after` when the server gives one, and no blind
//! resending of a request that may already have taken effect.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::HeaderMap;

/// Attempts and backoff for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles with each retry.
    pub initial: Duration,
    /// Longest backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (0 for the first): `initial × 2^retry` capped at
    /// `max`, of which a random half ("equal jitter"), so callers that failed together do not
    /// come back together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

/// Whether a request can be sent again after it failed in a way that leaves unknown whether
/// DigitalOcean acted on it. GETs and DELETEs can; creates and actions cannot (DigitalOcean has
/// no idempotency key: a resent create makes a second droplet). 429s and connections that never
/// opened are always safe to resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Safe,
    Unsafe,
}

/// The rate-limit headers of a response (names matched case-insensitively by `HeaderMap`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix seconds at which the oldest counted request stops counting.
    pub reset: Option<u64>,
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    pub fn parse(headers: &HeaderMap, now: SystemTime) -> RateHeaders {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        RateHeaders {
            limit: num("ratelimit-limit"),
            remaining: num("ratelimit-remaining"),
            reset: num("ratelimit-reset"),
            retry_after: headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now)),
        }
    }
}

/// `retry-after` as integer seconds or an HTTP date; a date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let b0 = p.backoff(0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100));
            let b2 = p.backoff(2);
            assert!(b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400));
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(500) && b9 <= Duration::from_secs(1));
        }
        assert!(p.backoff(u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn headers_parse_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert("Ratelimit-Limit", "5000".parse().unwrap());
        h.insert("Ratelimit-Remaining", "4988".parse().unwrap());
        h.insert("Ratelimit-Reset", "1689907151".parse().unwrap());
        h.insert("Retry-After", "3".parse().unwrap());
        let r = RateHeaders::parse(&h, SystemTime::now());
        assert_eq!(
            r,
            RateHeaders {
                limit: Some(5000),
                remaining: Some(4988),
                reset: Some(1689907151),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
    }
}
