//! Adopt-before-create lookups. DigitalOcean has no idempotency key, so a step that may have
//! created something before a crash first looks for it by the name or tag it chose; listings
//! lag creates, so a lookup can be repeated for a bounded time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::debug;

use super::DoApi;
use super::error::DoApiError;
use super::model::{Droplet, DropletId, DropletSnapshot, ImageKind};

/// How long to keep looking for something a listing has not caught up with yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Listings in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait between two listings.
    pub interval: Duration,
}

impl Patience {
    /// One look, no waiting: for the first run of a step, when nothing can exist yet.
    pub const ONCE: Patience = Patience {
        attempts: 1,
        interval: Duration::ZERO,
    };

    pub fn new(attempts: u32, interval: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            interval,
        }
    }
}

impl Default for Patience {
    /// A minute: what the snapshot listing lag has been seen to need (12 × 5 s).
    fn default() -> Self {
        Self::new(12, Duration::from_secs(5))
    }
}

/// The droplets carrying `tag`, listing again while none shows (a just-created droplet can be
/// missing from listings for a few seconds). Empty after every attempt: there is none.
pub async fn find_droplets_by_tag(
    api: &dyn DoApi,
    tag: &str,
    patience: Patience,
) -> Result<Vec<Droplet>, DoApiError> {
    for attempt in 1..=patience.attempts {
        let found = api.list_droplets_by_tag(tag).await?;
        if !found.is_empty() || attempt == patience.attempts {
            return Ok(found);
        }
        debug!(tag, attempt, "no droplet with the tag yet, looking again");
        tokio::time::sleep(patience.interval).await;
    }
    Ok(Vec::new())
}

/// The snapshot of `droplet` named `name` (type `snapshot`, not `backup`), listing again while
/// it is missing: a snapshot shows in the listing some time after its action completed. When
/// the name matches nothing and `action_started_at` is given, a single snapshot created at that
/// instant is taken (terraform's fallback). Several with the name: the newest.
pub async fn find_droplet_snapshot(
    api: &dyn DoApi,
    droplet: DropletId,
    name: &str,
    action_started_at: Option<DateTime<Utc>>,
    patience: Patience,
) -> Result<Option<DropletSnapshot>, DoApiError> {
    for attempt in 1..=patience.attempts {
        let snapshots = api.list_droplet_snapshots(droplet).await?;
        if let Some(found) = pick_snapshot(snapshots, name, action_started_at) {
            return Ok(Some(found));
        }
        if attempt < patience.attempts {
            debug!(%droplet, name, attempt, "snapshot not listed yet, looking again");
            tokio::time::sleep(patience.interval).await;
        }
    }
    Ok(None)
}

fn pick_snapshot(
    snapshots: Vec<DropletSnapshot>,
    name: &str,
    action_started_at: Option<DateTime<Utc>>,
) -> Option<DropletSnapshot> {
    let user_made: Vec<_> = snapshots
        .into_iter()
        .filter(|s| s.kind == ImageKind::Snapshot)
        .collect();
    let by_name = user_made
        .iter()
        .filter(|s| s.name == name)
        .max_by_key(|s| s.created_at);
    if let Some(s) = by_name {
        return Some(s.clone());
    }
    let at = action_started_at?;
    let mut same_time = user_made.into_iter().filter(|s| s.created_at == at);
    match (same_time.next(), same_time.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u64, name: &str, at: &str, kind: ImageKind) -> DropletSnapshot {
        DropletSnapshot {
            id,
            name: name.into(),
            created_at: at.parse().unwrap(),
            regions: vec![],
            min_disk_size: None,
            size_gigabytes: None,
            kind,
        }
    }

    #[test]
    fn by_name_then_by_action_start() {
        let list = vec![
            snap(
                1,
                "berth-snap-7-abc",
                "2026-01-01T00:00:00Z",
                ImageKind::Backup,
            ),
            snap(
                2,
                "berth-snap-7-abc",
                "2026-01-01T00:00:01Z",
                ImageKind::Snapshot,
            ),
            snap(3, "other", "2026-01-02T00:00:00Z", ImageKind::Snapshot),
        ];
        assert_eq!(
            pick_snapshot(list.clone(), "berth-snap-7-abc", None).map(|s| s.id),
            Some(2)
        );
        assert_eq!(pick_snapshot(list.clone(), "missing", None), None);
        let at = "2026-01-02T00:00:00Z".parse().ok();
        assert_eq!(pick_snapshot(list, "missing", at).map(|s| s.id), Some(3));
    }
}
