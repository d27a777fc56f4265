//! `[inventory]`: when the inventory is synced from DigitalOcean and drift detected after it.

use std::time::Duration;

use anyhow::bail;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

/// The inventory sync and drift detection schedule (`[inventory]`). The schedule lives in the
/// database, so coordinators sharing one take turns instead of each syncing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Sync every droplet the read token can see this often, in seconds. 0 turns the periodic
    /// sync and detection off (`berth drift sync` still runs both on demand).
    pub sync_interval_secs: u64,
    /// Detect drift this long after each sync, in seconds, so it compares with fresh inventory.
    pub drift_delay_secs: u64,
    /// After a failed sync, try again this long after, in seconds (at most
    /// `sync_interval_secs`).
    pub retry_secs: u64,
    /// A coordinator waits this long after it starts before it first looks at the schedule, in
    /// seconds, so restarts do not stampede DigitalOcean.
    pub start_delay_secs: u64,
    /// A claim on a running sync lasts this long without renewal, in seconds: if its holder
    /// dies, another coordinator takes the job over this long after. Renewed every third of it.
    pub lease_secs: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            sync_interval_secs: 15 * 60,
            drift_delay_secs: 5 * 60,
            retry_secs: 60,
            start_delay_secs: 60,
            lease_secs: 60,
        }
    }
}

impl InventoryConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.lease_secs < 3 {
            bail!(
                "inventory.lease_secs ({}) must be at least 3",
                self.lease_secs
            );
        }
        if self.sync_interval_secs > 0 && self.retry_secs == 0 {
            bail!("inventory.retry_secs must be at least 1 when the periodic sync is on");
        }
        Ok(())
    }

    pub fn periodic(&self) -> bool {
        self.sync_interval_secs > 0
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval_secs)
    }

    pub fn drift_delay(&self) -> Duration {
        Duration::from_secs(self.drift_delay_secs)
    }

    pub fn retry(&self) -> Duration {
        Duration::from_secs(self.retry_secs.min(self.sync_interval_secs.max(1)))
    }

    pub fn start_delay(&self) -> Duration {
        Duration::from_secs(self.start_delay_secs)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// How often an idle coordinator looks whether a job is due: a tenth of the shortest
    /// period, between 200 ms and 15 s.
    pub fn tick(&self) -> Duration {
        let shortest = [
            self.sync_interval_secs,
            self.drift_delay_secs,
            self.retry_secs,
        ]
        .into_iter()
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(self.sync_interval_secs);
        Duration::from_millis(shortest.saturating_mul(100))
            .clamp(Duration::from_millis(200), Duration::from_secs(15))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_sync_every_15_minutes_and_detect_5_after() {
        let c = InventoryConfig::default();
        assert_eq!(c.interval(), Duration::from_secs(900));
        assert_eq!(c.drift_delay(), Duration::from_secs(300));
        assert_eq!(c.tick(), Duration::from_secs(6));
        c.check().unwrap();
        let fast = InventoryConfig {
            sync_interval_secs: 1,
            drift_delay_secs: 0,
            ..c.clone()
        };
        assert_eq!(fast.tick(), Duration::from_millis(200));
        let bad = InventoryConfig { lease_secs: 1, ..c };
        assert!(bad.check().unwrap_err().to_string().contains("lease_secs"));
    }
}
