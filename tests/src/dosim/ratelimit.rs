//! DigitalOcean's per-token rate limits: two sliding windows (burst and long), the
//! `ratelimit-*` headers on every answer, and 429 with `retry-after` past the burst limit.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::RateLimits;

/// The verdict on one request, with the headers to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds at which the oldest counted request stops counting.
    pub reset: u64,
    /// Seconds to wait, on a 429 caused by the burst limit.
    pub retry_after: Option<u64>,
}

/// Request times per token label, oldest first.
#[derive(Debug, Default)]
pub struct Windows {
    per_token: HashMap<String, VecDeque<Instant>>,
}

impl Windows {
    pub fn check(&mut self, token: &str, limits: &RateLimits, now: Instant) -> Verdict {
        let times = self.per_token.entry(token.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.long_window)
        {
            times.pop_front();
        }
        let burst_start = times.partition_point(|t| now.duration_since(*t) >= limits.burst_window);
        let in_burst = (times.len() - burst_start) as u64;
        let in_long = times.len() as u64;
        let (burst, long) = (u64::from(limits.burst), u64::from(limits.long));
        let mut retry_after = None;
        let allowed = if in_burst >= burst {
            let oldest = times[burst_start];
            let wait = (oldest + limits.burst_window).saturating_duration_since(now);
            retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            false
        } else {
            in_long < long
        };
        if allowed {
            times.push_back(now);
        }
        let used_burst = in_burst + u64::from(allowed);
        let used_long = in_long + u64::from(allowed);
        let remaining = burst
            .saturating_sub(used_burst)
            .min(long.saturating_sub(used_long));
        let until_reset = times
            .front()
            .map(|t| (*t + limits.long_window).saturating_duration_since(now))
            .unwrap_or(Duration::ZERO);
        let reset = (SystemTime::now() + until_reset)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            .ceil() as u64;
        Verdict {
            allowed,
            limit: long.min(u64::from(u32::MAX)),
            remaining,
            reset,
            retry_after,
        }
    }
}
