//! `ArchiveService`: create, restore and verify run as sagas (`archive.create`,
//! `archive.restore`, `archive.verify`) on the named host's agent; listings show each
//! archive's latest verification (`archive_checks`); everything else reads or changes the archive store directly.
//! A prune also aborts the multipart uploads no live saga owns (the upload sweep).

use std::sync::Arc;
use std::time::SystemTime;

use berth_proto::v1 as pb;
use berth_shared::AppName;
use berth_shared::archive::{ArchiveId, KeepReason, RetentionPolicy, parse_timezone};
use berth_shared::time::unix_ms;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::archive::{ArchiveDetail, ArchiveEntry, Catalog, CatalogError, ListQuery, PruneMode};
use crate::error::ApiError;
use crate::saga::Engine;
use crate::store::{ArchiveCheck, Store};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Clone, Debug)]
pub struct ArchivesService {
    pub catalog: Arc<Catalog>,
    pub engine: Engine,
    /// Read by the upload sweep: which sagas are live.
    pub store: Store,
}

fn entry_to_pb(e: &ArchiveEntry) -> pb::Archive {
    pb::Archive {
        uuid: e.key.id().to_string(),
        app: e.key.app().to_string(),
        key: e.key.to_string(),
        index_label: e.key.index().unwrap_or_default().to_owned(),
        ts_ms: e.key.ts().saturating_mul(1000),
        size_bytes: e.size,
        sha256: String::new(),
        labels: Vec::new(),
        last_check: None,
    }
}

fn detail_to_pb(d: ArchiveDetail) -> pb::Archive {
    pb::Archive {
        sha256: d.meta.sha256.unwrap_or_default(),
        labels: d.meta.labels,
        ..entry_to_pb(&d.entry)
    }
}

fn check_to_pb(c: ArchiveCheck) -> pb::ArchiveCheck {
    pb::ArchiveCheck {
        ok: c.ok,
        problem: c.problem.unwrap_or_default(),
        checked_at_ms: c.checked_at_ms,
        saga_id: c.saga_id,
        host_id: c.host_id,
    }
}

impl ArchivesService {
    /// Fills in each archive's latest verification.
    async fn with_checks(
        &self,
        mut archives: Vec<pb::Archive>,
    ) -> Result<Vec<pb::Archive>, Status> {
        let uuids: Vec<&str> = archives.iter().map(|a| a.uuid.as_str()).collect();
        let checks = self
            .store
            .latest_archive_checks(&uuids)
            .await
            .map_err(ApiError::from)?;
        let mut by_uuid: std::collections::HashMap<String, ArchiveCheck> =
            checks.into_iter().map(|c| (c.uuid.clone(), c)).collect();
        for a in &mut archives {
            a.last_check = by_uuid.remove(&a.uuid).map(check_to_pb);
        }
        Ok(archives)
    }
}

fn id(uuid: &str) -> Result<ArchiveId, Status> {
    ArchiveId::new(uuid).map_err(|e| ApiError::from(CatalogError::from(e)).into())
}

fn app(name: &str) -> Result<AppName, Status> {
    AppName::new(name).map_err(|e| ApiError::from(CatalogError::App(e)).into())
}

fn deleted(ids: impl IntoIterator<Item = ArchiveId>) -> Response<pb::DeleteArchivesResponse> {
    Response::new(pb::DeleteArchivesResponse {
        deleted_uuids: ids.into_iter().map(|i| i.to_string()).collect(),
        ..Default::default()
    })
}

/// A prune request's rules (0: unset) and zone; an unknown zone is refused naming the field.
fn policy(req: &pb::PruneArchivesRequest) -> Result<RetentionPolicy, Status> {
    let set = |n: u32| (n != 0).then_some(n);
    let timezone = match req.timezone.as_str() {
        "" => None,
        name => Some(
            parse_timezone(name).map_err(|e| Status::invalid_argument(format!("timezone: {e}")))?,
        ),
    };
    Ok(RetentionPolicy {
        keep_last: set(req.keep_last),
        keep_hourly: set(req.keep_hourly),
        keep_daily: set(req.keep_daily),
        keep_weekly: set(req.keep_weekly),
        keep_monthly: set(req.keep_monthly),
        keep_yearly: set(req.keep_yearly),
        keep_within_secs: (req.keep_within_secs != 0).then_some(req.keep_within_secs),
        timezone,
    })
}

fn pruned_to_pb(e: &ArchiveEntry, reasons: &[KeepReason]) -> pb::PrunedArchive {
    pb::PrunedArchive {
        uuid: e.key.id().to_string(),
        app: e.key.app().to_string(),
        key: e.key.to_string(),
        ts_ms: e.key.ts().saturating_mul(1000),
        reasons: reasons
            .iter()
            .map(|r| pb::KeepReason {
                rule: r.rule.as_str().to_owned(),
                bucket: r.bucket.clone(),
            })
            .collect(),
    }
}

/// `<ts>.<uuid>` of the last archive of a page: the next page starts after it.
fn page_after(token: &str) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Status::invalid_argument("page_token is not one this service gave; start again without it")
    };
    let (ts, uuid) = token.split_once('.').ok_or_else(bad)?;
    let ts = ts.parse().map_err(|_| bad())?;
    ArchiveId::new(uuid).map_err(|_| bad())?;
    Ok(Some((ts, uuid.to_owned())))
}

#[tonic::async_trait]
impl pb::archive_service_server::ArchiveService for ArchivesService {
    async fn create_archive(
        &self,
        req: Request<pb::CreateArchiveRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = create_inputs(&r)?;
        Ok(Response::new(
            super::start_saga(
                &self.engine,
                &caller,
                "archive.create",
                &inputs,
                &r.idempotency_key,
            )
            .await?,
        ))
    }

    async fn restore_archive(
        &self,
        req: Request<pb::RestoreArchiveRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let uuid = id(&r.uuid)?;
        // Refuse at once what the agent would: an archive that is not in the store.
        self.catalog.get(&uuid).await.map_err(ApiError::from)?;
        let inputs = json!({
            "host_id": r.host_id,
            "uuid": uuid.to_string(),
            "target_app": (!r.target_app.is_empty()).then_some(r.target_app),
            "stack": (!r.stack.is_empty()).then_some(r.stack),
            // Sealed into saga_secrets when the saga starts (`saga::secrets`).
            berth_shared::task::IDENTITY_FIELD: (!r.identity.is_empty()).then_some(r.identity),
        });
        Ok(Response::new(
            super::start_saga(
                &self.engine,
                &caller,
                "archive.restore",
                &inputs,
                &r.idempotency_key,
            )
            .await?,
        ))
    }

    async fn list_archives(
        &self,
        req: Request<pb::ListArchivesRequest>,
    ) -> Result<Response<pb::ListArchivesResponse>, Status> {
        let req = req.into_inner();
        let apps = req
            .apps
            .iter()
            .map(|a| app(a))
            .collect::<Result<Vec<_>, _>>()?;
        let index = match req.index_label.as_str() {
            "" => None,
            v if v.contains([':', '/']) || v.chars().any(char::is_control) => {
                return Err(Status::invalid_argument(format!(
                    "index_label {v:?} cannot be in a key: it has ':', '/' or a control character"
                )));
            }
            v => Some(v.to_owned()),
        };
        let page = req.page.unwrap_or_default();
        let size = match page.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = page_after(&page.page_token)?;
        let entries = self
            .catalog
            .list(&ListQuery { apps, index })
            .await
            .map_err(ApiError::from)?;
        let start = match &after {
            None => 0,
            Some((ts, uuid)) => entries
                .iter()
                .position(|e| {
                    e.key.ts() < *ts || (e.key.ts() == *ts && e.key.id().as_str() < uuid.as_str())
                })
                .unwrap_or(entries.len()),
        };
        let page: Vec<&ArchiveEntry> = entries[start..].iter().take(size).collect();
        let next_page_token = match page.last() {
            Some(last) if start + page.len() < entries.len() => {
                format!("{}.{}", last.key.ts(), last.key.id())
            }
            _ => String::new(),
        };
        let archives = self
            .with_checks(page.into_iter().map(entry_to_pb).collect())
            .await?;
        Ok(Response::new(pb::ListArchivesResponse {
            archives,
            next_page_token,
        }))
    }

    async fn get_archive(
        &self,
        req: Request<pb::GetArchiveRequest>,
    ) -> Result<Response<pb::Archive>, Status> {
        let id = id(&req.into_inner().uuid)?;
        let detail = self.catalog.get(&id).await.map_err(ApiError::from)?;
        let mut archive = self.with_checks(vec![detail_to_pb(detail)]).await?;
        Ok(Response::new(archive.remove(0)))
    }

    async fn get_archive_link(
        &self,
        req: Request<pb::GetArchiveLinkRequest>,
    ) -> Result<Response<pb::ArchiveLink>, Status> {
        let req = req.into_inner();
        let id = id(&req.uuid)?;
        let expires = (req.expires_secs != 0).then_some(req.expires_secs);
        let link = self
            .catalog
            .link(&id, expires, unix_ms(SystemTime::now()))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ArchiveLink {
            url: link.url,
            expires_at_ms: link.expires_at_ms,
        }))
    }

    async fn delete_archive(
        &self,
        req: Request<pb::DeleteArchiveRequest>,
    ) -> Result<Response<pb::DeleteArchivesResponse>, Status> {
        let who = super::principal(&req)?;
        let id = id(&req.into_inner().uuid)?;
        self.catalog.delete(&id).await.map_err(ApiError::from)?;
        tracing::info!(uuid = %id, token_id = who.token_id, "archive deleted on request");
        Ok(deleted([id]))
    }

    async fn delete_app_archives(
        &self,
        req: Request<pb::DeleteAppArchivesRequest>,
    ) -> Result<Response<pb::DeleteArchivesResponse>, Status> {
        let who = super::principal(&req)?;
        let app = app(&req.into_inner().app)?;
        let ids = self
            .catalog
            .delete_app(&app)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(app = %app, count = ids.len(), token_id = who.token_id, "app archives deleted on request");
        Ok(deleted(ids))
    }

    async fn prune_archives(
        &self,
        req: Request<pb::PruneArchivesRequest>,
    ) -> Result<Response<pb::DeleteArchivesResponse>, Status> {
        let who = super::principal(&req)?;
        let req = req.into_inner();
        let app = match req.app.as_str() {
            "" => None,
            a => Some(app(a)?),
        };
        let policy = policy(&req)?;
        let zone = policy.or(self.catalog.config().retention()).zone();
        let now = unix_ms(SystemTime::now()) / 1000;
        let mode = if req.dry_run {
            PruneMode::DryRun
        } else {
            PruneMode::Delete
        };
        let outcome = self
            .catalog
            .prune(app.as_ref(), policy, mode, now)
            .await
            .map_err(ApiError::from)?;
        // Orphaned uploads are the bucket's, not an app's: swept whatever `app` says.
        let aborted = if req.dry_run {
            0
        } else {
            let grace = self.catalog.config().upload_grace();
            self.catalog
                .sweep_uploads(&self.store, SystemTime::now(), grace)
                .await
                .map_err(ApiError::from)?
                .aborted
                .len()
        };
        tracing::info!(
            app = ?app.as_ref().map(AppName::as_str),
            deleted = outcome.deleted.len(),
            aborted_uploads = aborted,
            dry_run = req.dry_run,
            token_id = who.token_id,
            "prune on request"
        );
        Ok(Response::new(pb::DeleteArchivesResponse {
            deleted_uuids: outcome
                .deleted
                .iter()
                .map(|e| e.key.id().to_string())
                .collect(),
            pruned: outcome
                .deleted
                .iter()
                .map(|e| pruned_to_pb(e, &[]))
                .collect(),
            kept: outcome
                .kept
                .iter()
                .map(|(e, reasons)| pruned_to_pb(e, reasons))
                .collect(),
            timezone: zone.name().to_owned(),
        }))
    }

    async fn verify_archive(
        &self,
        req: Request<pb::VerifyArchiveRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let uuid = id(&r.uuid)?;
        // Refuse at once an archive that is not in the store: there is nothing to verify.
        self.catalog.get(&uuid).await.map_err(ApiError::from)?;
        let inputs = json!({ "host_id": r.host_id, "uuid": uuid.to_string() });
        Ok(Response::new(
            super::start_saga(
                &self.engine,
                &caller,
                "archive.verify",
                &inputs,
                &r.idempotency_key,
            )
            .await?,
        ))
    }
}

/// The `archive.create` saga's inputs for a request (also what a schedule's run starts with).
pub(crate) fn create_inputs(r: &pb::CreateArchiveRequest) -> Result<serde_json::Value, Status> {
    let stack = match (r.volumes, r.stack.is_empty()) {
        (_, false) => Some(r.stack.clone()),
        (true, true) => {
            berth_shared::StackName::new(r.app.as_str()).map_err(|e| {
                Status::invalid_argument(format!(
                    "volumes without a stack use the app's name as the stack, but {}; \
                     name the stack",
                    e
                ))
            })?;
            Some(r.app.clone())
        }
        (false, true) => None,
    };
    Ok(json!({
        "host_id": r.host_id,
        "app": r.app,
        "stack": stack,
        "labels": r.labels,
        "index_label": (!r.index_label.is_empty()).then_some(&r.index_label),
        "zstd_level": (r.zstd_level != 0).then_some(r.zstd_level),
        "recipients": r.recipients,
    }))
}
