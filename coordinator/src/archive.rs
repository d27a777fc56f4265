//! The archive catalog: the coordinator reads the archive store directly, so archives stay
//! listable, linkable and deletable when the host that made them is gone.
//!
//! Listing reads key names only (`<app>:<uuid>:<index>:<ts>`), never every metadata object;
//! one archive's metadata is read when that archive is asked for. Deleting removes the data
//! first, then the metadata. Retention treats an app's directory archives and its volume
//! archives as two histories, and never deletes the newest good archive of either. The
//! upload sweep (`sweep.rs`) aborts multipart uploads that no live `archive.create` saga owns.

mod bucket;
mod check;
mod config;
mod error;
mod recorded;
mod step;
mod sweep;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::AppName;
use berth_shared::archive::{
    ArchiveId, ArchiveKey, ArchiveMeta, KeepReason, RetentionEntry, RetentionPolicy, Rule,
    SOURCE_APP_DIR, StoreUrl, Verdict, plan_retention,
};
use object_store::ObjectStore;

pub use check::{CheckStep, VERIFY_FAILED_LABEL};
pub use config::{ArchiveConfig, MAX_LINK_EXPIRY_SECS};
pub use error::CatalogError;
pub use recorded::{recorded, recorded_digest};
pub use step::{RetentionInputs, RetentionStep};
pub use sweep::{SWEEP_JOB, SweepOutcome, UploadSweeper};

use bucket::Bucket;

/// One archive as listing sees it: its key and its object's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub key: ArchiveKey,
    pub size: u64,
}

/// One archive with its metadata.
#[derive(Debug, Clone)]
pub struct ArchiveDetail {
    pub entry: ArchiveEntry,
    pub meta: ArchiveMeta,
}

/// Which archives to list: of some apps (all when empty), with an index value (any if none).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub apps: Vec<AppName>,
    pub index: Option<String>,
}

/// A download link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// A presigned `https://` (or `http://`) URL, or `file:///…` for a local store.
    pub url: String,
    /// When the link stops working, unix ms; 0 when it does not expire (local paths).
    pub expires_at_ms: i64,
}

/// Which of an app's archives [`Catalog::newest_good`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Any,
    /// Made of the app directory.
    AppDir,
    /// Made of this stack's volumes.
    Volumes(&'a str),
}

/// Whether a prune deletes what its policy does not keep, or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMode {
    Delete,
    DryRun,
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct PruneOutcome {
    pub deleted: Vec<ArchiveEntry>,
    /// Each survivor with every rule that keeps it.
    pub kept: Vec<(ArchiveEntry, Vec<KeepReason>)>,
}

/// The archive store, as the coordinator's API sees it.
#[derive(Debug, Clone)]
pub struct Catalog {
    bucket: Bucket,
    config: ArchiveConfig,
    /// Where archives' verifications are recorded (`archive_checks`): retention never counts
    /// one that failed its latest as good. `None`: none are consulted (tests of the bucket).
    checks: Option<crate::store::Store>,
}

impl Catalog {
    /// Opens the store `config` names (reads the S3 credential files; touches no network).
    pub fn open(config: ArchiveConfig) -> Result<Self, CatalogError> {
        let bucket = Bucket::open(&config)?;
        Ok(Self {
            bucket,
            config,
            checks: None,
        })
    }

    /// A catalog over a store the caller made (tests share one `InMemory` with an agent).
    pub fn with_store(config: ArchiveConfig, store: Arc<dyn ObjectStore>) -> Self {
        let url = config.url().unwrap_or(StoreUrl::Memory);
        Self {
            bucket: Bucket::from_store(url, store),
            config,
            checks: None,
        }
    }

    /// The same catalog, consulting the verifications recorded in `store`.
    pub fn with_checks(mut self, store: crate::store::Store) -> Self {
        self.checks = Some(store);
        self
    }

    /// Labels archive `id` [`VERIFY_FAILED_LABEL`] in its metadata; `false` when it has none.
    pub async fn label_failed(&self, id: &ArchiveId) -> Result<bool, CatalogError> {
        self.bucket.add_label(id, VERIFY_FAILED_LABEL).await
    }

    /// The run times (unix ms) of scheduled runs that found their source unchanged since
    /// each of `ids`: retention counts the archive for the tiers those runs would have filled.
    async fn covers(&self, ids: &[&str]) -> Result<HashMap<String, Vec<i64>>, CatalogError> {
        let Some(store) = &self.checks else {
            return Ok(HashMap::new());
        };
        store
            .archive_covers(ids)
            .await
            .map_err(CatalogError::Checks)
    }

    /// The uuids among `ids` whose latest verification failed.
    async fn failed_checks(&self, ids: &[&str]) -> Result<HashSet<String>, CatalogError> {
        let Some(store) = &self.checks else {
            return Ok(HashSet::new());
        };
        let latest = store
            .latest_archive_checks(ids)
            .await
            .map_err(CatalogError::Checks)?;
        Ok(latest
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.uuid)
            .collect())
    }

    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// Archives matching `query`, newest first, from key names.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<ArchiveEntry>, CatalogError> {
        let mut entries = if query.apps.is_empty() {
            self.entries("").await?
        } else if self.bucket.url.is_s3() {
            let mut all = Vec::new();
            for app in query.apps.iter().collect::<BTreeSet<_>>() {
                all.extend(self.entries(&ArchiveKey::app_prefix(app)).await?);
            }
            all
        } else {
            let apps: HashSet<&AppName> = query.apps.iter().collect();
            let mut all = self.entries("").await?;
            all.retain(|e| apps.contains(e.key.app()));
            all
        };
        if let Some(index) = &query.index {
            entries.retain(|e| e.key.index() == Some(index.as_str()));
        }
        entries.sort_by(|a, b| ArchiveKey::newest_first(&a.key, &b.key));
        Ok(entries)
    }

    /// One archive with its metadata; not found when either is missing.
    pub async fn get(&self, id: &ArchiveId) -> Result<ArchiveDetail, CatalogError> {
        let (entry, meta) = self.locate(id).await?;
        match (entry, meta) {
            (Some(entry), Some(meta)) => Ok(ArchiveDetail { entry, meta }),
            _ => Err(CatalogError::NotFound { id: id.to_string() }),
        }
    }

    /// A download link for archive `id`, valid `expires_secs` (default from the config).
    pub async fn link(
        &self,
        id: &ArchiveId,
        expires_secs: Option<u32>,
        now_ms: i64,
    ) -> Result<Link, CatalogError> {
        let secs = expires_secs.unwrap_or(self.config.link_expiry_secs);
        if secs == 0 || secs > self.config.max_link_expiry_secs {
            return Err(CatalogError::Invalid(format!(
                "expires_secs {secs} is out of range; use 1 to {}",
                self.config.max_link_expiry_secs
            )));
        }
        let detail = self.get(id).await?;
        let url = self
            .bucket
            .link(
                detail.entry.key.as_str(),
                Duration::from_secs(u64::from(secs)),
            )
            .await?
            .ok_or_else(|| CatalogError::NoLinks {
                store: self.bucket.url.to_string(),
            })?;
        let expires_at_ms = if self.bucket.url.is_s3() {
            now_ms + i64::from(secs) * 1000
        } else {
            0
        };
        Ok(Link { url, expires_at_ms })
    }

    /// Deletes archive `id`: its data, then its metadata. Not found when neither exists.
    pub async fn delete(&self, id: &ArchiveId) -> Result<(), CatalogError> {
        let (entry, meta) = self.locate(id).await?;
        if entry.is_none() && meta.is_none() {
            return Err(CatalogError::NotFound { id: id.to_string() });
        }
        if let Some(entry) = &entry {
            self.bucket.delete(entry.key.as_str()).await?;
        }
        self.bucket.delete(&id.metadata_key()).await?;
        tracing::info!(uuid = %id, key = ?entry.map(|e| e.key.to_string()), "archive deleted");
        Ok(())
    }

    /// Deletes every archive of `app` (data, then metadata); returns their uuids.
    pub async fn delete_app(&self, app: &AppName) -> Result<Vec<ArchiveId>, CatalogError> {
        let query = ListQuery {
            apps: vec![app.clone()],
            index: None,
        };
        let mut deleted = Vec::new();
        for entry in self.list(&query).await? {
            self.delete_entry(&entry).await?;
            deleted.push(entry.key.id().clone());
        }
        tracing::info!(app = %app, count = deleted.len(), "app archives deleted");
        Ok(deleted)
    }

    /// The newest good archive of `app` from `source` (complete, and not failed at its
    /// latest verification), reading metadata newest first until one matches.
    pub async fn newest_good(
        &self,
        app: &AppName,
        source: Source<'_>,
    ) -> Result<Option<ArchiveDetail>, CatalogError> {
        let query = ListQuery {
            apps: vec![app.clone()],
            index: None,
        };
        let entries = self.list(&query).await?;
        let ids: Vec<&str> = entries.iter().map(|e| e.key.id().as_str()).collect();
        let failed = self.failed_checks(&ids).await?;
        for entry in entries {
            if failed.contains(entry.key.id().as_str()) {
                continue;
            }
            let Some(meta) = self.bucket.read_meta(entry.key.id()).await? else {
                continue;
            };
            let from_dir = meta.source.as_deref().is_none_or(|s| s == SOURCE_APP_DIR);
            let matches = match source {
                Source::Any => true,
                Source::AppDir => from_dir,
                Source::Volumes(stack) => !from_dir && meta.stack.as_deref() == Some(stack),
            };
            if matches && complete(&entry, &meta) {
                return Ok(Some(ArchiveDetail { entry, meta }));
            }
        }
        Ok(None)
    }

    /// Applies `policy` (over the config's defaults) to `app`'s archives, or to every app's
    /// when `app` is `None`. A dry run deletes nothing and reports what it would delete.
    pub async fn prune(
        &self,
        app: Option<&AppName>,
        policy: RetentionPolicy,
        mode: PruneMode,
        now_secs: i64,
    ) -> Result<PruneOutcome, CatalogError> {
        let policy = policy.or(self.config.retention());
        if policy.is_empty() {
            return Err(berth_shared::archive::RetentionError::NoRule.into());
        }
        let all = self
            .list(&ListQuery {
                apps: app.into_iter().cloned().collect(),
                index: None,
            })
            .await?;
        let apps: BTreeSet<AppName> = all.iter().map(|e| e.key.app().clone()).collect();
        let ids: Vec<&str> = all.iter().map(|e| e.key.id().as_str()).collect();
        let failed = self.failed_checks(&ids).await?;
        let covers = self.covers(&ids).await?;
        let grace = self.config.upload_grace().as_secs() as i64;
        let mut outcome = PruneOutcome::default();
        for app in apps {
            // An app's directory archives and its volume archives are two histories: each
            // keeps its own last N and its own newest good archive. That needs every
            // archive's metadata (one small read each); an archive without metadata counts
            // with the directory archives, as Go's did.
            let mut histories: BTreeMap<String, Vec<(ArchiveEntry, bool)>> = BTreeMap::new();
            for entry in all.iter().filter(|e| e.key.app() == &app) {
                let meta = self.bucket.read_meta(entry.key.id()).await?;
                if meta.is_none() && now_secs - entry.key.ts() < grace {
                    // Its create may be writing the metadata now: neither a candidate nor
                    // deleted.
                    let reason = KeepReason {
                        rule: Rule::InProgress,
                        bucket: String::new(),
                    };
                    outcome.kept.push((entry.clone(), vec![reason]));
                    continue;
                }
                let source = meta
                    .as_ref()
                    .and_then(|m| m.source.clone())
                    .unwrap_or_else(|| SOURCE_APP_DIR.to_owned());
                // An archive that failed its latest verification is never good.
                let good = !failed.contains(entry.key.id().as_str())
                    && meta.as_ref().is_some_and(|m| complete(entry, m));
                histories
                    .entry(source)
                    .or_default()
                    .push((entry.clone(), good));
            }
            for history in histories.into_values() {
                self.prune_history(history, &covers, &policy, mode, now_secs, &mut outcome)
                    .await?;
            }
        }
        tracing::info!(
            app = ?app.map(AppName::as_str),
            deleted = outcome.deleted.len(),
            kept = outcome.kept.len(),
            dry_run = mode == PruneMode::DryRun,
            "archives pruned"
        );
        Ok(outcome)
    }

    /// Applies `policy` to one history of one app (newest first, each with whether it is
    /// complete).
    async fn prune_history(
        &self,
        history: Vec<(ArchiveEntry, bool)>,
        covers: &HashMap<String, Vec<i64>>,
        policy: &RetentionPolicy,
        mode: PruneMode,
        now_secs: i64,
        outcome: &mut PruneOutcome,
    ) -> Result<(), CatalogError> {
        let candidates: Vec<RetentionEntry> = history
            .iter()
            .map(|(e, good)| RetentionEntry {
                id: e.key.id().to_string(),
                ts: e.key.ts(),
                good: *good,
                covers: covers
                    .get(e.key.id().as_str())
                    .map(|at| at.iter().map(|ms| ms / 1000).collect())
                    .unwrap_or_default(),
            })
            .collect();
        let plan = plan_retention(&candidates, policy, now_secs)?;
        let entries = history.into_iter().map(|(e, _)| e);
        for (entry, verdict) in entries.zip(plan.verdicts) {
            match verdict {
                Verdict::Keep(reasons) => outcome.kept.push((entry, reasons)),
                Verdict::Delete => {
                    if mode == PruneMode::Delete {
                        self.delete_entry(&entry).await?;
                    }
                    outcome.deleted.push(entry);
                }
            }
        }
        Ok(())
    }

    async fn delete_entry(&self, entry: &ArchiveEntry) -> Result<(), CatalogError> {
        self.bucket.delete(entry.key.as_str()).await?;
        self.bucket.delete(&entry.key.id().metadata_key()).await?;
        Ok(())
    }

    /// Archive keys at the top level starting with `prefix`; other objects are skipped.
    async fn entries(&self, prefix: &str) -> Result<Vec<ArchiveEntry>, CatalogError> {
        let mut skipped = 0usize;
        let entries = self
            .bucket
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|(name, size)| match ArchiveKey::parse(&name) {
                Ok(key) => Some(ArchiveEntry { key, size }),
                Err(e) => {
                    skipped += 1;
                    tracing::debug!(key = name, error = %e, "not an archive key; skipped");
                    None
                }
            })
            .collect();
        if skipped > 0 {
            tracing::warn!(
                skipped,
                prefix,
                "objects that are not archive keys were skipped"
            );
        }
        Ok(entries)
    }

    /// The data entry and metadata of `id`: the metadata names the app, whose keys are
    /// listed; without metadata, every top-level key is searched.
    async fn locate(
        &self,
        id: &ArchiveId,
    ) -> Result<(Option<ArchiveEntry>, Option<ArchiveMeta>), CatalogError> {
        let meta = self.bucket.read_meta(id).await?;
        let prefix = meta
            .as_ref()
            .and_then(|m| AppName::new(m.app_name.as_str()).ok())
            .map(|app| ArchiveKey::app_prefix(&app))
            .unwrap_or_default();
        let entry = self
            .entries(&prefix)
            .await?
            .into_iter()
            .find(|e| e.key.id() == id);
        Ok((entry, meta))
    }
}

/// Whether an archive's metadata describes a complete archive of its key's app: its data's
/// size is the one recorded.
fn complete(entry: &ArchiveEntry, meta: &ArchiveMeta) -> bool {
    meta.app_name == entry.key.app().as_str() && meta.size().is_none_or(|s| s == entry.size)
}

#[cfg(test)]
mod tests;
