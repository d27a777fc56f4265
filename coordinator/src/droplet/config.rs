//! The `[droplets]` section of the coordinator's config: how droplet steps pace their polls
//! and how long they wait for DigitalOcean.

use std::time::Duration;

use anyhow::bail;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

use crate::digitalocean::Patience;

/// How droplet sagas wait for DigitalOcean. The defaults suit the real API; tests and demos
/// against the simulator shorten them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct DropletConfig {
    /// How often a step looks at a droplet or an action in progress, in milliseconds. Each
    /// look is one API call under the token's shared budget.
    pub poll_interval_ms: u64,
    /// `WaitDropletActive` gives up (and the saga destroys the droplet) when the droplet is not
    /// active with a public IPv4 this many seconds after the wait began.
    pub active_timeout_secs: u64,
    /// A power, resize or snapshot action is given up this many seconds after it was posted.
    pub action_timeout_secs: u64,
    /// Listings lag creates: a lookup that may race one (adopting a droplet after a crash,
    /// finding a snapshot after its action completed) lists this many times before concluding
    /// "none"…
    pub lookup_attempts: u32,
    /// …this many milliseconds apart.
    pub lookup_interval_ms: u64,
}

impl Default for DropletConfig {
    fn default() -> Self {
        DropletConfig {
            poll_interval_ms: 5_000,
            active_timeout_secs: 600,
            action_timeout_secs: 7_200,
            lookup_attempts: 12,
            lookup_interval_ms: 5_000,
        }
    }
}

/// The config in the form the steps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub poll: Duration,
    pub active_timeout: Duration,
    pub action_timeout: Duration,
    pub lookup: Patience,
}

impl DropletConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.poll_interval_ms == 0 || self.lookup_interval_ms == 0 {
            bail!("[droplets] poll_interval_ms and lookup_interval_ms must be at least 1");
        }
        if self.lookup_attempts == 0 {
            bail!("[droplets] lookup_attempts must be at least 1");
        }
        if self.active_timeout_secs == 0 || self.action_timeout_secs == 0 {
            bail!("[droplets] active_timeout_secs and action_timeout_secs must be at least 1");
        }
        Ok(())
    }

    pub fn pace(&self) -> Pace {
        Pace {
            poll: Duration::from_millis(self.poll_interval_ms),
            active_timeout: Duration::from_secs(self.active_timeout_secs),
            action_timeout: Duration::from_secs(self.action_timeout_secs),
            lookup: Patience::new(
                self.lookup_attempts,
                Duration::from_millis(self.lookup_interval_ms),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_from_an_empty_section_and_check() {
        let c: DropletConfig = toml::from_str("").unwrap();
        assert_eq!(c, DropletConfig::default());
        c.check().unwrap();
        assert_eq!(c.pace().lookup.attempts, 12);
        let bad: DropletConfig = toml::from_str("poll_interval_ms = 0").unwrap();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("poll_interval_ms")
        );
        assert!(toml::from_str::<DropletConfig>("poll_ms = 3").is_err());
    }
}
