//! `[schedules]`: how coordinators take turns firing schedules.

use std::time::Duration;

use anyhow::bail;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// How often a coordinator looks for due occurrences, in milliseconds.
    pub tick_ms: u64,
    /// The firing coordinator's hold on the `schedule.fire` job, in seconds: if it dies,
    /// another takes over this long after.
    pub lease_secs: u64,
    /// An occurrence found due later than this after its time, in seconds, was missed (no
    /// coordinator ran then): it is caught up once, or recorded as missed.
    pub late_grace_secs: u64,
    /// Schedules may not fire more often than this, in seconds.
    pub min_interval_secs: u64,
    /// Ended runs kept per schedule (older ones are forgotten hourly).
    pub keep_runs: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            tick_ms: 1000,
            lease_secs: 15,
            late_grace_secs: 300,
            min_interval_secs: 60,
            keep_runs: 1000,
        }
    }
}

impl ScheduleConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if !(100..=60_000).contains(&self.tick_ms) {
            bail!("schedules.tick_ms ({}) must be 100 to 60000", self.tick_ms);
        }
        if self.lease_secs < 2 || self.lease_secs * 1000 < 2 * self.tick_ms {
            bail!(
                "schedules.lease_secs ({}) must be at least 2 and twice tick_ms",
                self.lease_secs
            );
        }
        if self.min_interval_secs == 0 {
            bail!("schedules.min_interval_secs must be at least 1");
        }
        if self.keep_runs == 0 {
            bail!(
                "schedules.keep_runs must be at least 1 (the last run is what `schedule list` shows)"
            );
        }
        Ok(())
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}
