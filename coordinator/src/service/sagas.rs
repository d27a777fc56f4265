//! `SagaService`: start, inspect, watch and steer sagas.

use std::pin::Pin;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::saga::EventKind;
use berth_shared::{AppName, HostId};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::saga::{Action, Engine, SagaStatus};
use crate::store::{EventRow, SagaFilter, SagaRow, StepRow};

#[derive(Clone, Debug)]
pub struct SagasService {
    pub engine: Engine,
    /// Ends open watch streams so a graceful shutdown does not wait for them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Open `WatchSaga` streams per token, capped (`[limits] max_watches_per_token`).
    pub watches: crate::limits::WatchSlots,
    /// A `ListSagas` page stops before its encoded size passes this (`[limits]`).
    pub page_max_bytes: usize,
}

/// How often `watch` looks for new events.
const WATCH_POLL: Duration = Duration::from_millis(200);
/// How often an open `watch` checks that its caller's token is still live: a revoked or
/// expired token ends the stream within this long (one primary-key read per period).
const WATCH_TOKEN_CHECK: Duration = Duration::from_secs(2);
/// How long `CancelSaga` waits for the cancel to take effect before it answers.
const CANCEL_SETTLE: Duration = Duration::from_secs(10);
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// Saga ids are uuids; anything else is refused before touching the store.
fn saga_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::InvalidArgument(format!("saga id {id:?} is not a uuid")))
}

pub(crate) fn saga_pb(s: SagaRow, steps: Vec<StepRow>) -> pb::Saga {
    pb::Saga {
        saga_id: s.id,
        kind: s.kind,
        status: s.status.to_string(),
        // Secret inputs were sealed at start; only their size is shown.
        inputs_json: crate::saga::secrets::for_display(&s.inputs),
        steps: steps
            .into_iter()
            .map(|st| pb::SagaStep {
                index: st.step_idx as u32,
                name: st.name,
                status: st.status.to_string(),
                attempts: st.attempts as u32,
                output_json: st.output.unwrap_or_default(),
                error: st.error.unwrap_or_default(),
                started_at_ms: st.started_at_ms.unwrap_or_default(),
                attempt_started_at_ms: st
                    .attempt_started_at_ms
                    .or(st.started_at_ms)
                    .unwrap_or_default(),
                finished_at_ms: st.finished_at_ms.unwrap_or_default(),
                pivot: st.pivot,
            })
            .collect(),
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        epoch: s.epoch as u64,
        owner_id: s.owner_id.unwrap_or_default(),
        error: s.error.unwrap_or_default(),
        output_json: s.output.unwrap_or_default(),
        cancel_requested_at_ms: s.cancel_requested_at_ms.unwrap_or_default(),
    }
}

pub(crate) fn event_pb(e: EventRow) -> pb::SagaEvent {
    let progress = (e.kind == EventKind::StepProgress)
        .then(|| {
            e.detail
                .as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        })
        .flatten()
        .map(|d| pb::Progress {
            bytes_done: d["bytes_done"].as_u64().unwrap_or_default(),
            bytes_total: d["bytes_total"].as_u64().unwrap_or_default(),
            entries_done: d["entries_done"].as_u64().unwrap_or_default(),
            entries_total: d["entries_total"].as_u64().unwrap_or_default(),
            bytes_written: d["bytes_written"].as_u64().unwrap_or_default(),
            phase: d["phase"].as_str().unwrap_or_default().to_owned(),
        });
    pb::SagaEvent {
        seq: e.seq as u64,
        saga_id: e.saga_id,
        kind: e.kind.to_string(),
        step_index: e.step_idx as i32,
        message: e.message,
        at_ms: e.at_ms,
        progress,
        final_status: String::new(),
    }
}

impl SagasService {
    /// Applies an operator action, then answers with the saga as it now is.
    async fn act(
        &self,
        id: &str,
        action: Action,
        reason: &str,
    ) -> Result<Response<pb::Saga>, Status> {
        let id = saga_id(id)?;
        let cancel = matches!(action, Action::Cancel);
        self.engine
            .act(&id, action, reason)
            .await
            .map_err(ApiError::from)?;
        let mut saga = self.saga(&id).await?;
        // A cancel is recorded; answer with what it led to once the owner acted on it (it
        // is told at once), so the caller does not see a saga still `running`.
        let deadline = tokio::time::Instant::now() + CANCEL_SETTLE;
        while cancel
            && saga
                .status
                .parse::<SagaStatus>()
                .is_ok_and(SagaStatus::is_active)
        {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            saga = self.saga(&id).await?;
        }
        Ok(Response::new(saga))
    }

    async fn saga(&self, id: &str) -> Result<pb::Saga, ApiError> {
        let store = self.engine.store();
        let saga = store.get_saga(id).await?;
        let steps = store.get_steps(id).await?;
        Ok(saga_pb(saga, steps))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SagaEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::saga_service_server::SagaService for SagasService {
    type WatchSagaStream = EventStream;

    async fn start_saga(
        &self,
        req: Request<pb::StartSagaRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        // A kind whose own RPC is admin-only (destroying a droplet) stays admin-only here.
        if crate::droplet::ADMIN_KINDS.contains(&r.kind.as_str())
            && caller.role != berth_shared::Role::Admin
        {
            return Err(ApiError::PermissionDenied(format!(
                "only an admin may start a {} saga; role {} may not",
                r.kind, caller.role
            ))
            .into());
        }
        if r.kind == "warm.restore" {
            let inputs: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&r.inputs_json).unwrap_or_default();
            super::check_restore_scope(&caller, &inputs)?;
        }
        let key = (!r.idempotency_key.is_empty()).then_some(r.idempotency_key.as_str());
        let (saga_id, existing) = self
            .engine
            .start_by(
                &r.kind,
                &r.inputs_json,
                key,
                Some(super::started_by(&caller)),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SagaRef {
            saga_id,
            kind: r.kind,
            existing,
        }))
    }

    async fn get_saga(
        &self,
        req: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let id = saga_id(&req.into_inner().saga_id)?;
        Ok(Response::new(self.saga(&id).await?))
    }

    async fn list_sagas(
        &self,
        req: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let r = req.into_inner();
        let statuses = r
            .statuses
            .iter()
            .map(|s| s.parse::<SagaStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let page = r.page.unwrap_or_default();
        let limit = match page.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before_id = match page.page_token.as_str() {
            "" => None,
            t => Some(saga_id(t).map_err(|_| {
                ApiError::InvalidArgument("page_token is not one this server gave".into())
            })?),
        };
        let filter = SagaFilter {
            statuses,
            kind: (!r.kind.is_empty()).then_some(r.kind),
            host_id: match r.host_id.as_str() {
                "" => None,
                h => Some(HostId::new(h).map_err(ApiError::from)?.to_string()),
            },
            app: match r.app.as_str() {
                "" => None,
                a => Some(AppName::new(a).map_err(ApiError::from)?.to_string()),
            },
            created_after_ms: (r.created_after_ms > 0).then_some(r.created_after_ms),
            created_before_ms: (r.created_before_ms > 0).then_some(r.created_before_ms),
            before_id,
            limit: i64::from(limit) + 1,
        };
        let store = self.engine.store();
        let mut rows = store.list_sagas(&filter).await.map_err(ApiError::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = if more {
            rows.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        // Capped in bytes as well as rows: a page ends before the saga that would take it
        // past `page_max_bytes` (a page always holds at least one saga), and the next page
        // starts at that saga.
        let mut sagas: Vec<pb::Saga> = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        let mut next_page_token = next_page_token;
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let mut steps_of = store.get_steps_of(&ids).await.map_err(ApiError::from)?;
        for row in rows {
            let steps = steps_of.remove(&row.id).unwrap_or_default();
            let saga = saga_pb(row, steps);
            let size = prost::Message::encoded_len(&saga) + 8;
            if !sagas.is_empty() && bytes + size > self.page_max_bytes {
                next_page_token = sagas.last().map(|s| s.saga_id.clone()).unwrap_or_default();
                break;
            }
            bytes += size;
            sagas.push(saga);
        }
        Ok(Response::new(pb::ListSagasResponse {
            sagas,
            next_page_token,
        }))
    }

    async fn watch_saga(
        &self,
        req: Request<pb::WatchSagaRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let id = saga_id(&r.saga_id)?;
        let slot = self
            .watches
            .acquire(&caller.token_id)
            .map_err(ApiError::from)?;
        let store = self.engine.store().clone();
        store.get_saga(&id).await.map_err(ApiError::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Held until this task ends, whichever way: the stream's slot for its token.
            let _slot = slot;
            let mut after = r.after_seq as i64;
            let mut checked = tokio::time::Instant::now();
            loop {
                if checked.elapsed() >= WATCH_TOKEN_CHECK {
                    checked = tokio::time::Instant::now();
                    let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
                    if let Ok(false) = store.token_is_live(&caller.token_id, now).await {
                        let _ = tx
                            .send(Err(Status::unauthenticated(
                                "the token watching this saga was revoked or expired",
                            )))
                            .await;
                        return;
                    }
                }
                let events = match store.events_after(&id, after, 500).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                };
                let caught_up = events.len() < 500;
                for e in events {
                    after = e.seq;
                    if tx.send(Ok(event_pb(e))).await.is_err() {
                        return;
                    }
                }
                if caught_up {
                    match store.get_saga(&id).await {
                        Ok(s) if s.status.is_final() => {
                            // Events written before the final status are all in by now.
                            if let Ok(rest) = store.events_after(&id, after, 500).await {
                                for e in rest {
                                    after = e.seq;
                                    let _ = tx.send(Ok(event_pb(e))).await;
                                }
                            }
                            let last = pb::SagaEvent {
                                seq: after as u64,
                                saga_id: id.clone(),
                                kind: EventKind::WatchEnd.to_string(),
                                step_index: -1,
                                message: format!("saga {}", s.status),
                                final_status: s.status.to_string(),
                                ..Default::default()
                            };
                            let _ = tx.send(Ok(last)).await;
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                            return;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH_POLL) => {}
                        _ = tx.closed() => return,
                        // The client resumes from the last event against another coordinator.
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_saga(
        &self,
        req: Request<pb::SagaIdRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let r = req.into_inner();
        self.act(&r.saga_id, Action::Cancel, &r.reason).await
    }

    async fn retry_saga(
        &self,
        req: Request<pb::SagaIdRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let r = req.into_inner();
        self.act(&r.saga_id, Action::Retry, &r.reason).await
    }

    async fn skip_step(
        &self,
        req: Request<pb::SkipStepRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let r = req.into_inner();
        self.act(&r.saga_id, Action::Skip(r.step_index), &r.reason)
            .await
    }

    async fn resume_compensation(
        &self,
        req: Request<pb::SagaIdRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let r = req.into_inner();
        self.act(&r.saga_id, Action::ResumeCompensation, &r.reason)
            .await
    }

    async fn abandon_saga(
        &self,
        req: Request<pb::SagaIdRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let r = req.into_inner();
        self.act(&r.saga_id, Action::Abandon, &r.reason).await
    }
}
