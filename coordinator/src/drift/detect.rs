//! Drift detection over the store: for every resource with a desired spec, read what the
//! inventory holds, let the core decide, and carry out its plan on `cloud_drift`.
//!
//! Two detections may run at once (two coordinators, or a periodic and an on-demand one): every
//! write is conditional and the database keeps one open row per (resource, field), so the
//! loser of a race writes nothing, not even an event.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::core::{self, DriftAction, DriftStatus, LiveResource, Observed, OpenDrift};
use crate::store::{CloudResource, DriftRow, Store, StoreError};

/// What one detection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DetectReport {
    /// Resources with a desired spec that were compared.
    pub resources: u32,
    pub opened: u32,
    pub updated: u32,
    pub closed_stale: u32,
    pub closed_reverted: u32,
    /// Mismatches another detection had opened first.
    pub already_open: u32,
}

impl DetectReport {
    pub fn closed(&self) -> u32 {
        self.closed_stale + self.closed_reverted
    }
}

/// The live resource as the core reads it: the inventory's columns (those it has) first,
/// then the provider's whole object.
pub fn live_resource(r: &CloudResource) -> LiveResource {
    let mut fields = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            fields.insert(k.to_owned(), Value::String(v.clone()));
        }
    };
    put("name", Some(&r.name));
    put("region", r.region.as_ref());
    put("size_slug", r.size_slug.as_ref());
    put("image", r.image.as_ref());
    put("status", Some(&r.status));
    put("public_ipv4", r.public_ipv4.as_ref());
    fields.insert("tags".into(), r.tags.clone().into());
    LiveResource {
        fields,
        attributes: r.attributes.clone(),
        deleted: r.deleted_at_ms.is_some(),
    }
}

fn open_of(row: &DriftRow) -> OpenDrift {
    OpenDrift {
        drift_id: row.drift_id.clone(),
        field: row.field.clone(),
        expected: row.expected.clone(),
        actual: row.actual.clone(),
        reverting: row.revert_saga_id.is_some(),
    }
}

/// Compares every desired spec with the inventory and settles `cloud_drift` accordingly.
pub async fn detect_all(store: &Store) -> Result<DetectReport, StoreError> {
    let mut report = DetectReport::default();
    let specs = store.list_desired_specs().await?;
    let mut open: BTreeMap<String, Vec<DriftRow>> = BTreeMap::new();
    for row in store.open_drift().await? {
        open.entry(row.resource_id.clone()).or_default().push(row);
    }
    let mut compared = BTreeSet::new();
    for spec in &specs {
        let rid = spec.resource_id.as_str();
        compared.insert(rid.to_owned());
        let resource = store.get_resource(rid).await?;
        let live = resource.as_ref().map(live_resource);
        let observed = match (&resource, &live) {
            (None, _) | (_, None) => Observed::Missing,
            (Some(r), Some(l)) if r.deleted_at_ms.is_some() => {
                match store.deleted_by_saga(rid).await? {
                    Some(true) => Observed::RetiredByBerth,
                    _ => Observed::Row(l),
                }
            }
            (Some(_), Some(l)) => Observed::Row(l),
        };
        let rows = open.get(rid).map(Vec::as_slice).unwrap_or_default();
        let mismatches = core::detect_observed(&spec.spec, observed);
        apply(store, rid, mismatches, rows, &mut report).await?;
        report.resources += 1;
    }
    // Open drift of resources that no longer have a spec (unregistered): nothing to compare.
    for (rid, rows) in &open {
        if !compared.contains(rid) {
            apply(store, rid, Vec::new(), rows, &mut report).await?;
        }
    }
    report_open_gauge(store).await;
    Ok(report)
}

async fn apply(
    store: &Store,
    rid: &str,
    mismatches: Vec<core::Mismatch>,
    rows: &[DriftRow],
    report: &mut DetectReport,
) -> Result<(), StoreError> {
    let open: Vec<OpenDrift> = rows.iter().map(open_of).collect();
    let now = now_ms();
    for action in core::plan(mismatches, &open) {
        match action {
            DriftAction::Open(m) => {
                match store
                    .open_drift_row(rid, &m.field, &m.expected, &m.actual, now)
                    .await?
                {
                    Some(row) => {
                        tracing::info!(
                            resource_id = rid,
                            field = m.field,
                            drift_id = row.drift_id,
                            expected = %m.expected,
                            actual = %m.actual,
                            "drift detected"
                        );
                        report.opened += 1;
                    }
                    None => report.already_open += 1,
                }
            }
            DriftAction::Update {
                drift_id,
                expected,
                actual,
            } => {
                if store
                    .update_drift_row(&drift_id, &expected, &actual, now)
                    .await?
                {
                    report.updated += 1;
                }
            }
            DriftAction::CloseStale { drift_id } => {
                if store
                    .close_drift_row(&drift_id, DriftStatus::Stale, "detection", now)
                    .await?
                {
                    report.closed_stale += 1;
                }
            }
            DriftAction::CloseReverted { drift_id } => {
                let by = rows
                    .iter()
                    .find(|r| r.drift_id == drift_id)
                    .and_then(|r| r.revert_requested_by.clone())
                    .unwrap_or_else(|| "detection".into());
                if store
                    .close_drift_row(&drift_id, DriftStatus::Reverted, &by, now)
                    .await?
                {
                    tracing::info!(resource_id = rid, drift_id, "drift reverted");
                    report.closed_reverted += 1;
                }
            }
        }
    }
    Ok(())
}

/// Sets `berth_drift_open{field}` from the table (0 for fields that drifted before).
pub async fn report_open_gauge(store: &Store) {
    match store.open_drift_counts().await {
        Ok(counts) => {
            for (field, n) in counts {
                metrics::gauge!("berth_drift_open", "field" => field).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count open drift for the metrics"),
    }
}

pub(crate) fn now_ms() -> i64 {
    berth_shared::time::unix_ms(std::time::SystemTime::now())
}
