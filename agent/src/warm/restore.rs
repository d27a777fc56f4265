//! Restoring a warm snapshot into the stack's volumes. Refuses while deployed, when the
//! snapshot is incomplete, or when one of its volumes is absent from the stack. Every tar is
//! checked before any volume is touched; then all volumes are staged (in parallel), and only
//! when every one is ready are they swapped in, one rename each. Cancelled or failed before
//! that point, every volume is left as it was; after it, each is wholly new.

mod spares;
pub(crate) mod volume;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_shared::name::VolumeName;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::layout::{self, AppDir};
use super::meta::Meta;
use super::pack::Totals;
use super::progress::Progress;
use super::unpack::check::check;
use super::{AppTarget, Warm, WarmError, blocking};
use crate::volume::StackError;
use volume::{Plan, Swapped};

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub target: AppTarget,
    /// How long to wait for a stack being removed to be gone.
    pub wait_undeployed: Duration,
    /// Swap in ready spares when every volume has one (else, or when `false`, extract).
    pub use_spare: bool,
}

/// How a volume was restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMethod {
    /// Its ready spare exchanged with it in one rename: atomic, and independent of its size.
    Spare,
    /// Staged beside the mountpoint and exchanged in one rename: atomic.
    Swap,
    /// Emptied and extracted in place, where a swap was impossible: not atomic.
    Clear,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredVolume {
    pub name: String,
    pub method: RestoreMethod,
    /// How long putting the new contents in place took (`spare`, `swap`), in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_us: Option<u64>,
    /// How old the spare was when it was swapped in (`spare`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare_age_secs: Option<u64>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreOutcome {
    pub app: String,
    pub volumes: Vec<RestoredVolume>,
    pub bytes: u64,
    pub entries: u64,
}

/// One volume to restore and how.
struct Job {
    name: VolumeName,
    tar: PathBuf,
    mountpoint: PathBuf,
    limit: u64,
    plan: Plan,
}

impl Warm {
    /// Makes each of the snapshot's volumes hold exactly the snapshot's contents.
    pub async fn restore(
        &self,
        req: &RestoreRequest,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> Result<RestoreOutcome, WarmError> {
        let target = &req.target;
        let app = AppDir::new(&self.root, &target.app);
        let stack_lock = self
            .hold_stack("warm_restore", target, &progress, &cancel)
            .await?;
        let op = stack_lock.operation().id();
        progress.set_phase("finding volumes");
        let current = self.volumes(&target.stack).await?;
        let current_names: Vec<VolumeName> = current.iter().map(|v| v.name.clone()).collect();
        progress.set_phase("checking that the app is undeployed");
        self.ensure_undeployed(
            "restore",
            target,
            &current_names,
            req.wait_undeployed,
            &cancel,
        )
        .await?;

        let dir = app.dir.clone();
        if !blocking(move || layout::exists(&dir)).await? {
            return Err(self.no_snapshot(target, "it has no folder under the warm root"));
        }
        let _lock = self.lock(&app, &cancel).await?;
        let a = app.clone();
        let (_, names) = blocking(move || {
            layout::repair(&a)?;
            complete_volumes(&a)
        })
        .await
        .map_err(|e| match e {
            WarmError::NoSnapshot { why, .. } => self.no_snapshot(target, &why),
            e => e,
        })?;

        let by_name: HashMap<&VolumeName, _> = current.iter().map(|v| (&v.name, v)).collect();
        let mut jobs = Vec::new();
        for name in &names {
            let Some(v) = by_name.get(name) else {
                let present = current_names.iter().map(VolumeName::as_str);
                return Err(StackError::missing(name.as_str(), &target.stack, present).into());
            };
            if let Some(why) = v.unsupported() {
                return Err(StackError::Unsupported(why).into());
            }
            jobs.push((name.clone(), app.tar(name), v.mountpoint.clone()));
        }

        // Each volume's plan finishes or rolls back a cut swap first; both paths use it.
        let mountpoints: Vec<PathBuf> = jobs.iter().map(|j| j.2.clone()).collect();
        let plans = blocking(move || {
            mountpoints
                .iter()
                .map(|m| volume::plan(m, op).map_err(WarmError::from))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;

        if req.use_spare
            && let Some(outcome) = self
                .restore_spares(req, &app, &jobs, &plans, op, &progress)
                .await?
        {
            tracing::info!(app = %target.app, volumes = outcome.volumes.len(), "warm snapshot restored from ready spares");
            self.spares_after(target);
            return Ok(outcome);
        }

        progress.set_phase("checking the snapshot");
        let tars: Vec<PathBuf> = jobs.iter().map(|j| j.1.clone()).collect();
        let checked = self
            .each_volume(tars, &cancel, |tar, stop| check(&tar, stop))
            .await?;
        let total = checked.iter().fold(Totals::default(), |a, t| Totals {
            bytes: a.bytes + t.bytes,
            entries: a.entries + t.entries,
        });
        progress.set_totals(total.bytes, total.entries);

        let jobs: Vec<Job> = jobs
            .into_iter()
            .zip(checked)
            .zip(plans)
            .map(|(((name, tar, mountpoint), t), plan)| Job {
                name,
                tar,
                mountpoint,
                limit: t.bytes,
                plan,
            })
            .collect();
        self.fit_staging(&jobs).await?;

        let outcome = self.restore_jobs(req, jobs, &progress, &cancel).await;
        self.spares_after(target);
        let outcome = outcome?;
        tracing::info!(app = %target.app, volumes = outcome.volumes.len(), bytes = outcome.bytes, "warm snapshot restored");
        Ok(outcome)
    }

    fn no_snapshot(&self, target: &AppTarget, why: &str) -> WarmError {
        WarmError::NoSnapshot {
            app: target.app.to_string(),
            root: self.root.clone(),
            why: why.to_owned(),
        }
    }

    /// A staging copy needs room beside the old contents: refuse up front, with every
    /// volume untouched, when a filesystem lacks it.
    async fn fit_staging(&self, jobs: &[Job]) -> Result<(), WarmError> {
        let mut need: HashMap<u64, (u64, PathBuf)> = HashMap::new();
        for job in jobs {
            if matches!(job.plan, Plan::Swap { .. }) {
                let m = job.mountpoint.clone();
                let dev =
                    blocking(move || volume::staging_device(&m).map_err(WarmError::from)).await?;
                let parent = job
                    .mountpoint
                    .parent()
                    .unwrap_or(&job.mountpoint)
                    .to_owned();
                need.entry(dev).or_insert((0, parent)).0 += job.limit + (1 << 20);
            }
        }
        for (needed, path) in need.into_values() {
            let p = path.clone();
            let free = blocking(move || layout::free_space(&p)).await?;
            if needed > free {
                return Err(WarmError::DiskFull {
                    path,
                    needed: Some(needed),
                    free: Some(free),
                });
            }
        }
        Ok(())
    }

    async fn restore_jobs(
        &self,
        req: &RestoreRequest,
        jobs: Vec<Job>,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutcome, WarmError> {
        // Phase 1: stage every swappable volume; nothing is changed yet.
        progress.set_phase(format!("extracting {} volumes", jobs.len()));
        let staged_jobs: Vec<(PathBuf, PathBuf, PathBuf, u64)> = jobs
            .iter()
            .filter_map(|j| match &j.plan {
                Plan::Swap { staging } => Some((
                    j.tar.clone(),
                    j.mountpoint.clone(),
                    staging.clone(),
                    j.limit,
                )),
                Plan::Clear { .. } => None,
            })
            .collect();
        let stagings: Vec<PathBuf> = staged_jobs.iter().map(|j| j.2.clone()).collect();
        let p = progress.clone();
        let staged = self
            .each_volume(
                staged_jobs,
                cancel,
                move |(tar, mountpoint, staging, limit), stop| {
                    volume::stage(&tar, &mountpoint, &staging, limit, &p, stop)
                },
            )
            .await;
        let names: Vec<VolumeName> = jobs.iter().map(|j| j.name.clone()).collect();
        let ready = match staged {
            Ok(t) => self
                .ensure_undeployed("restore", &req.target, &names, Duration::ZERO, cancel)
                .await
                .and_then(|()| {
                    if cancel.is_cancelled() {
                        Err(WarmError::Cancelled)
                    } else {
                        Ok(t)
                    }
                }),
            Err(e) => Err(e),
        };
        let mut totals = match ready {
            Ok(t) => t.iter().fold(Totals::default(), |a, t| Totals {
                bytes: a.bytes + t.bytes,
                entries: a.entries + t.entries,
            }),
            Err(e) => {
                let cleanup = stagings.clone();
                if let Err(c) =
                    blocking(move || cleanup.iter().try_for_each(|s| layout::remove_tree(s))).await
                {
                    tracing::warn!(error = %crate::chain(&c), "cannot remove restore staging dirs");
                }
                return Err(e);
            }
        };

        // Phase 2: swap them in. From here on, the restore finishes whatever happens.
        progress.set_phase("swapping volumes in");
        let mut restored = Vec::new();
        let mut clear = Vec::new();
        // Removed after the last swap, so removals do not slow the swaps' directory syncs.
        let mut displaced = Vec::new();
        for job in jobs {
            match &job.plan {
                Plan::Swap { staging } => {
                    let (m, s) = (job.mountpoint.clone(), staging.clone());
                    let started = Instant::now();
                    let swapped = blocking(move || volume::swap(&m, &s)).await?;
                    let swap_us = Some(started.elapsed().as_micros() as u64);
                    tracing::debug!(volume = %job.name, "volume swapped in");
                    match swapped {
                        Swapped::Done { old } => {
                            displaced.push(old);
                            restored.push(RestoredVolume {
                                name: job.name.to_string(),
                                method: RestoreMethod::Swap,
                                swap_us,
                                spare_age_secs: None,
                            });
                        }
                        Swapped::Impossible(reason) => clear.push((job, reason)),
                    }
                }
                Plan::Clear { reason } => {
                    let reason = reason.clone();
                    clear.push((job, reason));
                }
            }
        }

        for old in displaced {
            self.remove_in_background(old);
        }

        // Phase 3: volumes that cannot be swapped, cleared and extracted in place. Cancelling
        // now would leave them half restored, so this part does not stop for it.
        let keep_going = CancellationToken::new();
        for (job, reason) in clear {
            tracing::warn!(volume = %job.name, reason = %reason, "restoring by clearing the volume (not atomic)");
            progress.set_phase(format!("clearing and extracting {}", job.name));
            let p = progress.clone();
            let stop = keep_going.clone();
            let (tar, m, limit) = (job.tar.clone(), job.mountpoint.clone(), job.limit);
            let t = blocking(move || volume::clear_and_extract(&tar, &m, limit, &p, &stop))
                .await
                .map_err(|e| WarmError::PartlyRestored {
                    volume: job.name.to_string(),
                    source: Box::new(e),
                })?;
            totals.bytes += t.bytes;
            totals.entries += t.entries;
            restored.push(RestoredVolume {
                name: job.name.to_string(),
                method: RestoreMethod::Clear,
                swap_us: None,
                spare_age_secs: None,
            });
        }
        restored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RestoreOutcome {
            app: req.target.app.to_string(),
            volumes: restored,
            bytes: totals.bytes,
            entries: totals.entries,
        })
    }
}

/// The snapshot's metadata and volumes, when it is complete: `meta.json` readable and every
/// listed tar present. Volume names are validated before they become paths.
pub(crate) fn complete_volumes(app: &AppDir) -> Result<(Meta, Vec<VolumeName>), WarmError> {
    let path = app.meta();
    let incomplete = |why: String| WarmError::NoSnapshot {
        app: String::new(),
        root: PathBuf::new(),
        why,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(incomplete("snapshot/meta.json is missing".into()));
        }
        Err(e) => return Err(WarmError::io("read", &path, e)),
    };
    let meta = Meta::from_json(&bytes).map_err(|why| WarmError::BadMeta {
        path: path.clone(),
        why,
    })?;
    if meta.volumes.is_empty() {
        return Err(incomplete("its meta.json lists no volumes".into()));
    }
    let mut names: Vec<VolumeName> = Vec::new();
    for v in &meta.volumes {
        let name = VolumeName::new(v.as_str()).map_err(|source| WarmError::Name {
            what: "volume name in meta.json",
            source,
        })?;
        let tar = app.tar(&name);
        match std::fs::symlink_metadata(&tar) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(incomplete(format!(
                    "snapshot/volumes/{} is missing, so the snapshot is incomplete; take a new one",
                    layout::tar_name(&name)
                )));
            }
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok((meta, names))
}
