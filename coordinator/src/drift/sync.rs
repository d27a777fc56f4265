//! The inventory sync: every droplet the read token can see, upserted into `cloud_resources`
//! (a `created` or `changed` event when something changed), and every droplet that vanished
//! marked deleted, never removed (a `deleted` event).
//!
//! A droplet missing from the listing is read once by id before it is marked: DigitalOcean's
//! listings lag (a new droplet can be missing for seconds), a 404 does not. The mark itself is
//! fenced by the sync's lease and skipped for a row seen since the sync began.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::detect::now_ms;
use super::{DriftError, retry_busy};
use crate::digitalocean::{DoApi, DropletId, NotFoundIsNone};
use crate::droplet::observed;
use crate::store::{GoneMark, JobClaim, ResourceFilter, Store, Upserted, Writer};

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Droplets listed (and those found by id after missing from the listing).
    pub seen: u32,
    pub created: u32,
    pub changed: u32,
    pub unchanged: u32,
    /// Marked deleted: missing from the listing and 404 by id.
    pub gone: u32,
    /// Missing from the listing but still readable by id (listing lag, or deleted moments ago).
    pub lagging: u32,
    pub duration_ms: u64,
}

const PAGE: i64 = 500;

fn writer(now_ms: i64) -> Writer<'static> {
    Writer {
        fence: None,
        saga_id: None,
        now_ms,
    }
}

fn count(report: &mut SyncReport, u: Upserted) {
    report.seen += 1;
    match u {
        Upserted::Created => report.created += 1,
        Upserted::Changed => report.changed += 1,
        Upserted::Unchanged => report.unchanged += 1,
    }
}

/// Syncs droplets under `claim`; stops with [`DriftError::LeaseLost`] as soon as `lost` fires.
pub async fn sync_droplets(
    store: &Store,
    api: &dyn DoApi,
    claim: &JobClaim,
    lost: &CancellationToken,
) -> Result<SyncReport, DriftError> {
    let began = Instant::now();
    let started_ms = now_ms();
    let check = || match lost.is_cancelled() {
        true => Err(DriftError::LeaseLost {
            job: super::SYNC_JOB,
        }),
        false => Ok(()),
    };
    let droplets = api.list_droplets().await.map_err(DriftError::Api)?;
    let mut report = SyncReport::default();
    let mut seen = HashSet::with_capacity(droplets.len());
    for (i, d) in droplets.iter().enumerate() {
        if i % 50 == 0 {
            check()?;
        }
        let o = observed(d);
        seen.insert(o.resource_id.clone());
        let upserted = retry_busy(|| store.upsert_resource(writer(now_ms()), &o)).await?;
        count(&mut report, upserted);
    }
    check()?;

    // Rows still alive in the inventory that the listing did not show.
    let mut missing = Vec::new();
    let mut after_id = None;
    loop {
        let filter = ResourceFilter {
            kind: Some("droplet".into()),
            tag: None,
            include_deleted: false,
            after_id: after_id.clone(),
            limit: PAGE,
        };
        let page = retry_busy(|| store.list_resources(&filter)).await?;
        after_id = page.last().map(|r| r.resource_id.clone());
        missing.extend(page.into_iter().filter(|r| {
            r.provider == "digitalocean"
                && !seen.contains(&r.resource_id)
                && r.last_seen_ms < started_ms
        }));
        if after_id.is_none() {
            break;
        }
    }
    for r in missing {
        check()?;
        let Ok(id) = r.provider_id.parse::<u64>() else {
            tracing::warn!(
                resource_id = r.resource_id,
                "droplet row with a non-numeric id"
            );
            continue;
        };
        match api.get_droplet(DropletId(id)).await.found() {
            Ok(Some(d)) => {
                report.lagging += 1;
                let o = observed(&d);
                let upserted = retry_busy(|| store.upsert_resource(writer(now_ms()), &o)).await?;
                count(&mut report, upserted);
            }
            Ok(None) => {
                let detail = json!({
                    "by": "inventory sync",
                    "why": "missing from the droplet listing and not found by id",
                });
                let rid = &r.resource_id;
                let mark = || store.mark_gone_fenced(claim, rid, started_ms, &detail, now_ms());
                match retry_busy(mark).await? {
                    GoneMark::Marked => {
                        tracing::info!(resource_id = r.resource_id, "droplet gone from the cloud");
                        report.gone += 1;
                    }
                    GoneMark::Skipped => {}
                    GoneMark::LeaseLost => {
                        return Err(DriftError::LeaseLost {
                            job: super::SYNC_JOB,
                        });
                    }
                }
            }
            Err(e) => return Err(DriftError::Api(e)),
        }
    }
    report.duration_ms = began.elapsed().as_millis() as u64;
    Ok(report)
}
