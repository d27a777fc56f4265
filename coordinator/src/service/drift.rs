//! `DriftService` (admin only): the drift inbox (list, accept, revert), a resource's history,
//! desired specs recorded by hand, and the inventory sync on demand.

use berth_proto::v1 as pb;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::principal;
use crate::drift::core::DriftStatus;
use crate::drift::{Inventory, retry_busy, settle};
use crate::error::ApiError;
use crate::saga::Engine;
use crate::store::{DesiredSpec, DriftFilter, DriftRow, ResourceEvent, Writer};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;
/// Longest field name and spec a hand-recorded spec may have.
const MAX_FIELD: usize = 128;
const MAX_SPEC_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct DriftService {
    pub engine: Engine,
    pub inventory: Inventory,
}

fn page_size(page: &Option<pb::PageRequest>) -> u32 {
    match page.as_ref().map_or(0, |p| p.page_size) {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn page_token(page: &Option<pb::PageRequest>) -> &str {
    page.as_ref().map_or("", |p| p.page_token.as_str())
}

fn drift_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| {
            ApiError::InvalidArgument(format!(
                "drift id {id:?} is not a uuid; `berth drift list` shows the ids"
            ))
        })
}

fn resource_id(id: &str) -> Result<String, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id.split(':').count() == 3
        && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(id.to_owned())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "resource id {id:?} is not one: give <provider>:<kind>:<id>, e.g. do:droplet:123"
        )))
    }
}

fn reason(r: &str) -> Option<&str> {
    let r = r.trim();
    (!r.is_empty()).then_some(r)
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("json values serialize")
}

pub(crate) fn drift_pb(d: DriftRow) -> pb::Drift {
    pb::Drift {
        drift_id: d.drift_id,
        resource_id: d.resource_id,
        field: d.field,
        expected_json: json_text(&d.expected),
        actual_json: json_text(&d.actual),
        status: d.status.to_string(),
        detected_at_ms: d.detected_at_ms,
        resolved_at_ms: d.resolved_at_ms.unwrap_or_default(),
        resolved_by: d.resolved_by.unwrap_or_default(),
        revert_saga_id: d.revert_saga_id.unwrap_or_default(),
        updated_at_ms: d.updated_at_ms,
        reason: d.reason.unwrap_or_default(),
    }
}

fn event_pb(e: ResourceEvent) -> pb::ResourceEvent {
    pb::ResourceEvent {
        seq: e.seq.max(0) as u64,
        resource_id: e.resource_id,
        kind: e.kind,
        detail_json: json_text(&e.detail),
        at_ms: e.at_ms,
        saga_id: e.saga_id.unwrap_or_default(),
    }
}

fn spec_pb(s: DesiredSpec) -> pb::DesiredSpec {
    pb::DesiredSpec {
        resource_id: s.resource_id,
        spec_json: json_text(&Value::Object(s.spec)),
        spec_version: s.spec_version.max(0) as u64,
        recorded_by: s.recorded_by,
        saga_id: s.saga_id.unwrap_or_default(),
    }
}

/// A spec recorded by hand: a JSON object of field → expected value, none of them null.
fn parse_spec(text: &str) -> Result<Map<String, Value>, ApiError> {
    let bad = |m: String| ApiError::InvalidArgument(m);
    if text.len() > MAX_SPEC_BYTES {
        return Err(bad(format!("spec_json is over {MAX_SPEC_BYTES} bytes")));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "spec_json is not JSON ({e}); give an object such as {{\"size_slug\": \"s-1vcpu-1gb\"}}"
        ))
    })?;
    let Value::Object(spec) = value else {
        return Err(bad(
            "spec_json must be a JSON object of field to expected value".into(),
        ));
    };
    if spec.is_empty() {
        return Err(bad("spec_json is empty: name at least one field".into()));
    }
    for (field, v) in &spec {
        if field.is_empty() || field.len() > MAX_FIELD {
            return Err(bad(format!(
                "field name {field:?} must be 1 to {MAX_FIELD} characters"
            )));
        }
        if v.is_null() {
            return Err(bad(format!("field {field} is null: leave it out instead")));
        }
    }
    Ok(spec)
}

/// `role:token id`, for the history.
fn who<T>(req: &Request<T>) -> Result<String, Status> {
    let p = principal(req)?;
    Ok(format!("{}:{}", p.role, p.token_id))
}

#[tonic::async_trait]
impl pb::drift_service_server::DriftService for DriftService {
    async fn list_drift(
        &self,
        req: Request<pb::ListDriftRequest>,
    ) -> Result<Response<pb::ListDriftResponse>, Status> {
        let r = req.into_inner();
        let statuses = if r.statuses.is_empty() {
            vec![DriftStatus::Open]
        } else {
            r.statuses
                .iter()
                .map(|s| s.parse::<DriftStatus>().map_err(ApiError::InvalidArgument))
                .collect::<Result<Vec<_>, _>>()?
        };
        let limit = page_size(&r.page);
        let before_id = match page_token(&r.page) {
            "" => None,
            t => Some(drift_id(t).map_err(|_| {
                ApiError::InvalidArgument("page_token is not one this server gave".into())
            })?),
        };
        let filter = DriftFilter {
            statuses,
            resource_id: (!r.resource_id.is_empty())
                .then(|| resource_id(&r.resource_id))
                .transpose()?,
            field: (!r.field.is_empty()).then_some(r.field),
            before_id,
            limit: i64::from(limit) + 1,
        };
        let mut rows = self
            .engine
            .store()
            .list_drift(&filter)
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = match more {
            true => rows.last().map(|d| d.drift_id.clone()).unwrap_or_default(),
            false => String::new(),
        };
        Ok(Response::new(pb::ListDriftResponse {
            drift: rows.into_iter().map(drift_pb).collect(),
            next_page_token,
        }))
    }

    async fn accept_drift(
        &self,
        req: Request<pb::DriftIdRequest>,
    ) -> Result<Response<pb::Drift>, Status> {
        let by = who(&req)?;
        let r = req.into_inner();
        let id = drift_id(&r.drift_id)?;
        let accepted = settle::accept(self.engine.store(), &id, &by, reason(&r.reason))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(drift_pb(accepted.drift)))
    }

    async fn revert_drift(
        &self,
        req: Request<pb::DriftIdRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let by = who(&req)?;
        let r = req.into_inner();
        let id = drift_id(&r.drift_id)?;
        let started = settle::revert(
            &self.engine,
            self.inventory.configured(),
            &id,
            &by,
            reason(&r.reason),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::SagaRef {
            saga_id: started.saga_id,
            kind: started.kind,
            existing: started.existing,
        }))
    }

    async fn resource_history(
        &self,
        req: Request<pb::ResourceHistoryRequest>,
    ) -> Result<Response<pb::ResourceHistoryResponse>, Status> {
        let r = req.into_inner();
        let rid = resource_id(&r.resource_id)?;
        let limit = page_size(&r.page);
        let after_seq = match page_token(&r.page) {
            "" => 0,
            t => t.parse::<i64>().map_err(|_| {
                ApiError::InvalidArgument("page_token is not one this server gave".into())
            })?,
        };
        let mut events = self
            .engine
            .store()
            .resource_events(&rid, after_seq, i64::from(limit) + 1)
            .await
            .map_err(ApiError::from)?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_page_token = match more {
            true => events.last().map(|e| e.seq.to_string()).unwrap_or_default(),
            false => String::new(),
        };
        Ok(Response::new(pb::ResourceHistoryResponse {
            events: events.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }

    async fn record_desired_spec(
        &self,
        req: Request<pb::RecordDesiredSpecRequest>,
    ) -> Result<Response<pb::DesiredSpec>, Status> {
        let by = who(&req)?;
        let r = req.into_inner();
        let rid = resource_id(&r.resource_id)?;
        let spec = parse_spec(&r.spec_json)?;
        let store = self.engine.store();
        if store
            .get_resource(&rid)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::NotFound(format!(
                "resource {rid} in the inventory not found (run `berth drift sync` if it is new)"
            ))
            .into());
        }
        let writer = || Writer {
            fence: None,
            saga_id: None,
            now_ms: berth_shared::time::unix_ms(std::time::SystemTime::now()),
        };
        let record = || store.record_desired_spec(writer(), &rid, &spec, &by);
        let recorded = retry_busy(record).await.map_err(ApiError::from)?;
        Ok(Response::new(spec_pb(recorded)))
    }

    async fn sync_inventory(
        &self,
        req: Request<pb::SyncInventoryRequest>,
    ) -> Result<Response<pb::SyncInventoryResponse>, Status> {
        let r = req.into_inner();
        let outcome = self
            .inventory
            .sync_now(r.skip_detection)
            .await
            .map_err(ApiError::from)?;
        let drift_open = match outcome.detect {
            Some(_) => self
                .engine
                .store()
                .open_drift_counts()
                .await
                .map_err(ApiError::from)?
                .iter()
                .map(|(_, n)| *n as u32)
                .sum(),
            None => 0,
        };
        let s = outcome.sync;
        let d = outcome.detect.unwrap_or_default();
        Ok(Response::new(pb::SyncInventoryResponse {
            seen: s.seen,
            created: s.created,
            changed: s.changed,
            gone: s.gone,
            duration_ms: s.duration_ms,
            detected: outcome.detect.is_some(),
            drift_opened: d.opened,
            drift_updated: d.updated,
            drift_closed: d.closed(),
            drift_open,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_objects_without_nulls() {
        let spec =
            parse_spec(r#"{"size_slug": "s-1vcpu-1gb", "tags": ["a"], "vcpus": 1}"#).unwrap();
        assert_eq!(spec.len(), 3);
        for bad in ["[]", "{}", "nope", r#"{"size_slug": null}"#, r#"{"": 1}"#] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains("spec_json") || e.contains("field"), "{bad}: {e}");
        }
        assert!(resource_id("do:droplet:12").is_ok());
        assert!(resource_id("droplet-12").is_err());
        assert!(drift_id("nope").is_err());
    }
}
