//! The simulator's knobs: how long DigitalOcean takes to do things and to show them, the rate
//! limits per token, and where pagination links point.

use std::time::Duration;

/// The delays of DigitalOcean's eventual consistency, in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// A created droplet reads `new` this long, then `active` (its create action completes).
    pub active_after: Duration,
    /// Its public IPv4 shows this long after it became `active`.
    pub ipv4_after_active: Duration,
    /// Power off / on, shutdown and resize actions run this long.
    pub action_duration: Duration,
    /// Snapshot actions run this long.
    pub snapshot_duration: Duration,
    /// A snapshot shows in listings (and in `droplet.snapshot_ids`) this long after its action
    /// completed; `GET /v2/snapshots/{id}` finds it as soon as the action completed.
    pub snapshot_listing_lag: Duration,
    /// A deleted droplet stays readable and listed this long; a deleted snapshot stays listed
    /// (`GET` by id answers 404 at once).
    pub delete_linger: Duration,
    /// A new droplet is missing from listings this long.
    pub list_lag_after_create: Duration,
    /// `GET /v2/droplets/{id}` of a new droplet answers 404 this long.
    pub get_404_after_create: Duration,
}

impl Timings {
    /// Short delays for tests: everything settles within half a second.
    pub fn fast() -> Self {
        Self {
            active_after: Duration::from_millis(200),
            ipv4_after_active: Duration::from_millis(50),
            action_duration: Duration::from_millis(150),
            snapshot_duration: Duration::from_millis(250),
            snapshot_listing_lag: Duration::from_millis(200),
            delete_linger: Duration::from_millis(200),
            list_lag_after_create: Duration::ZERO,
            get_404_after_create: Duration::ZERO,
        }
    }

    /// Roughly what DigitalOcean does: for demos.
    pub fn realistic() -> Self {
        Self {
            active_after: Duration::from_secs(30),
            ipv4_after_active: Duration::from_secs(3),
            action_duration: Duration::from_secs(10),
            snapshot_duration: Duration::from_secs(60),
            snapshot_listing_lag: Duration::from_secs(5),
            delete_linger: Duration::from_secs(5),
            list_lag_after_create: Duration::from_secs(3),
            get_404_after_create: Duration::from_secs(1),
        }
    }

    /// Every delay divided by `factor` (time acceleration).
    pub fn accelerated(self, factor: f64) -> Self {
        let f = |d: Duration| d.div_f64(factor.max(f64::MIN_POSITIVE));
        Self {
            active_after: f(self.active_after),
            ipv4_after_active: f(self.ipv4_after_active),
            action_duration: f(self.action_duration),
            snapshot_duration: f(self.snapshot_duration),
            snapshot_listing_lag: f(self.snapshot_listing_lag),
            delete_linger: f(self.delete_linger),
            list_lag_after_create: f(self.list_lag_after_create),
            get_404_after_create: f(self.get_404_after_create),
        }
    }
}

/// Per-token limits over sliding windows: each request counts for one window after it is made.
/// A refused (429) request does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// The burst limit (DigitalOcean: 250 per minute); past it a 429 carries `retry-after`.
    pub burst: u32,
    pub burst_window: Duration,
    /// The long limit (DigitalOcean: 5,000 per hour); reported as `ratelimit-limit`.
    pub long: u32,
    pub long_window: Duration,
}

impl RateLimits {
    /// DigitalOcean's: 250 a minute, 5,000 an hour.
    pub fn digitalocean() -> Self {
        Self {
            burst: 250,
            burst_window: Duration::from_secs(60),
            long: 5000,
            long_window: Duration::from_secs(3600),
        }
    }

    /// No limit worth the name (benchmarks of everything but the limiter).
    pub fn unlimited() -> Self {
        Self {
            burst: u32::MAX,
            burst_window: Duration::from_secs(60),
            long: u32::MAX,
            long_window: Duration::from_secs(3600),
        }
    }
}

/// Everything the simulator is started with; all of it can be changed while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub timings: Timings,
    pub rate_limits: RateLimits,
    /// Host that pagination links name, as DigitalOcean's do (clients must parse the page
    /// number out of `links.pages.next`, not follow the URL).
    pub links_base: String,
    /// `account.droplet_limit`; creating past it answers 422.
    pub droplet_limit: u32,
    /// Check every response against the spec too, recording mismatches as violations.
    pub validate_responses: bool,
}

impl SimConfig {
    /// Fast timings and DigitalOcean's real rate limits.
    pub fn fast() -> Self {
        Self {
            timings: Timings::fast(),
            rate_limits: RateLimits::digitalocean(),
            links_base: "https://api.digitalocean.com".to_owned(),
            droplet_limit: 5000,
            validate_responses: true,
        }
    }

    pub fn realistic() -> Self {
        Self {
            timings: Timings::realistic(),
            ..Self::fast()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::fast()
    }
}
