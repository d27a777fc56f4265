//! Taking a warm snapshot: refuse while deployed, tar every volume (in parallel) into
//! `.snapshot.staging/`, sync, write `meta.json` last, then swap only `snapshot/`. Any
//! failure or cancellation before the swap leaves the previous snapshot as it was.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_shared::name::VolumeName;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::layout::{self, AppDir};
use super::meta::{Meta, format_ts};
use super::pack::{self, Totals};
use super::progress::Progress;
use super::{AppTarget, Warm, WarmError, blocking};

/// What to snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotRequest {
    pub target: AppTarget,
    pub commit: Option<String>,
    pub version: Option<String>,
    /// How long to wait for a stack being removed to be gone.
    pub wait_undeployed: Duration,
    /// Keep a ready spare of this snapshot beside each volume (when the agent's spares are
    /// on); `false` is `berth warm snapshot --no-spare`, recorded in `meta.json`.
    pub spare: bool,
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotOutcome {
    pub app: String,
    pub volumes: Vec<String>,
    /// File data bytes tarred.
    pub bytes: u64,
    pub entries: u64,
    /// `meta.json`'s `ts`.
    pub ts: String,
}

impl Warm {
    /// Snapshots every volume of the target's stack as the app's new last-known-good.
    pub async fn snapshot(
        &self,
        req: &SnapshotRequest,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> Result<SnapshotOutcome, WarmError> {
        let target = &req.target;
        let _stack = self
            .hold_stack("warm_snapshot", target, &progress, &cancel)
            .await?;
        progress.set_phase("finding volumes");
        let volumes = crate::volume::copyable_volumes(&self.docker, &target.stack).await?;
        let names: Vec<VolumeName> = volumes.iter().map(|v| v.name.clone()).collect();
        progress.set_phase("checking that the app is undeployed");
        self.ensure_undeployed("snapshot", target, &names, req.wait_undeployed, &cancel)
            .await?;

        let app = AppDir::new(&self.root, &target.app);
        let dir = app.dir.clone();
        blocking(move || fs::create_dir_all(&dir).map_err(|e| WarmError::io("create", &dir, e)))
            .await?;
        let _lock = self.lock(&app, &cancel).await?;
        let repair = app.clone();
        blocking(move || layout::repair(&repair)).await?;

        let result = self
            .write_staging(req, &app, &volumes, &names, &progress, &cancel)
            .await;
        let totals = match result {
            Ok(totals) => totals,
            Err(e) => {
                let staging = app.staging();
                if let Err(cleanup) = blocking(move || layout::remove_tree(&staging)).await {
                    tracing::warn!(error = %crate::chain(&cleanup), "cannot remove the snapshot staging dir");
                }
                return Err(e);
            }
        };
        progress.set_phase("swapping in the new snapshot");
        let swap = app.clone();
        blocking(move || layout::swap_in(&swap)).await?;
        tracing::info!(app = %target.app, volumes = names.len(), bytes = totals.0.bytes, entries = totals.0.entries, "warm snapshot taken");
        drop(_stack);
        self.spares_after(target);
        Ok(SnapshotOutcome {
            app: target.app.to_string(),
            volumes: names.iter().map(ToString::to_string).collect(),
            bytes: totals.0.bytes,
            entries: totals.0.entries,
            ts: totals.1,
        })
    }

    /// Fills `.snapshot.staging/` completely (tars, then `meta.json`), synced.
    async fn write_staging(
        &self,
        req: &SnapshotRequest,
        app: &AppDir,
        volumes: &[crate::docker::stack::StackVolume],
        names: &[VolumeName],
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<(Totals, String), WarmError> {
        progress.set_phase("scanning");
        let roots: Vec<PathBuf> = volumes.iter().map(|v| v.mountpoint.clone()).collect();
        let scanned = self
            .each_volume(roots.clone(), cancel, |root, stop| pack::scan(&root, stop))
            .await?;
        let total = sum(&scanned);
        progress.set_totals(total.bytes, total.entries);

        let dir = app.dir.clone();
        let needed = total.bytes + 512 * total.entries + 1024 * names.len() as u64;
        let free = blocking(move || layout::free_space(&dir)).await?;
        if needed > free {
            return Err(WarmError::DiskFull {
                path: app.dir.clone(),
                needed: Some(needed),
                free: Some(free),
            });
        }

        let staging = app.staging();
        let volumes_dir = staging.join(layout::VOLUMES);
        let mk = volumes_dir.clone();
        blocking(move || fs::create_dir_all(&mk).map_err(|e| WarmError::io("create", &mk, e)))
            .await?;
        progress.set_phase(format!("tarring {} volumes", names.len()));
        let jobs: Vec<(PathBuf, PathBuf)> = roots
            .into_iter()
            .zip(names)
            .map(|(root, name)| (root, volumes_dir.join(layout::tar_name(name))))
            .collect();
        let p = progress.clone();
        let packed = self
            .each_volume(jobs, cancel, move |(root, tar), stop| {
                let _span = tracing::debug_span!("tar", volume = %root.display()).entered();
                pack::pack(&root, &tar, &p, stop)
            })
            .await?;

        // Someone may have deployed the app while we were reading its volumes.
        self.ensure_undeployed("snapshot", &req.target, names, Duration::ZERO, cancel)
            .await?;
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }

        let ts = format_ts(chrono::Utc::now());
        let totals = sum(&packed);
        let mut meta = Meta {
            recipe: req.target.app.to_string(),
            domain: req.target.domain.clone(),
            commit: req.commit.clone(),
            version: req.version.clone(),
            volumes: names.iter().map(ToString::to_string).collect(),
            ts: ts.clone(),
            extra: serde_json::Map::new(),
        };
        meta.extra
            .insert("stack".into(), req.target.stack.to_string().into());
        meta.extra.insert(
            "berth".into(),
            serde_json::json!({
                "agent_version": env!("CARGO_PKG_VERSION"),
                "bytes": totals.bytes,
                "entries": totals.entries,
                "spare": req.spare,
            }),
        );
        progress.set_phase("writing metadata");
        let bytes = meta.to_json();
        blocking(move || {
            layout::sync_dir(&volumes_dir)?;
            layout::write_synced(&staging.join(layout::META), &bytes)?;
            layout::sync_dir(&staging)
        })
        .await?;
        Ok((totals, ts))
    }
}

fn sum(all: &[Totals]) -> Totals {
    all.iter().fold(Totals::default(), |a, t| Totals {
        bytes: a.bytes + t.bytes,
        entries: a.entries + t.entries,
    })
}
