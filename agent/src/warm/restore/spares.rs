//! The fast path of a restore: when every volume has a ready spare of the current snapshot,
//! each spare is taken (renamed to the restore's staging name, unstamped) and swapped in with
//! the journaled swap, and the displaced contents are removed in the background. Nothing is
//! extracted, so the time does not grow with the data. Otherwise the restore takes the usual
//! path, unchanged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use berth_shared::name::VolumeName;

use super::volume::{self, Plan, Swapped};
use super::{RestoreMethod, RestoreOutcome, RestoreRequest, RestoredVolume};
use crate::warm::layout::AppDir;
use crate::warm::progress::Progress;
use crate::warm::spare::{self, SparePaths, Stamp};
use crate::warm::unpack::check::check;
use crate::warm::{Warm, WarmError, blocking};

/// A volume whose spare is ready.
struct Ready {
    name: VolumeName,
    tar: PathBuf,
    paths: SparePaths,
    stamp: Stamp,
}

impl Warm {
    /// Restores from ready spares when every volume has one of the current snapshot; `None`
    /// (with nothing touched) when one has not.
    pub(super) async fn restore_spares(
        &self,
        req: &RestoreRequest,
        app: &AppDir,
        jobs: &[(VolumeName, PathBuf, PathBuf)],
        plans: &[Plan],
        op: u64,
        progress: &Arc<Progress>,
    ) -> Result<Option<RestoreOutcome>, WarmError> {
        let app = app.clone();
        let jobs = jobs.to_vec();
        let swappable = plans.iter().all(|p| matches!(p, Plan::Swap { .. }));
        if !swappable {
            return Ok(None);
        }
        let Some(ready) = blocking(move || ready(&app, &jobs)).await? else {
            return Ok(None);
        };
        let bytes: u64 = ready.iter().map(|r| r.stamp.bytes).sum();
        let entries: u64 = ready.iter().map(|r| r.stamp.entries).sum();
        progress.set_totals(bytes, entries);
        progress.set_phase(format!("swapping in {} ready spares", ready.len()));
        let now_ms = berth_shared::time::unix_ms(std::time::SystemTime::now());
        // From the first take on, the restore finishes whatever happens. The displaced contents
        // are removed after the last swap: removals (a discard per file on some filesystems)
        // would otherwise slow the swaps' directory syncs.
        let mut restored = Vec::new();
        let mut displaced = Vec::new();
        for r in ready {
            let started = Instant::now();
            let paths = r.paths.clone();
            let swapped = blocking(move || {
                let claimed = spare::take(&paths, op)?;
                volume::swap(&paths.mountpoint, &claimed)
            })
            .await?;
            let swap_us = started.elapsed().as_micros() as u64;
            match swapped {
                Swapped::Done { old } => {
                    displaced.push(old);
                    restored.push(RestoredVolume {
                        name: r.name.to_string(),
                        method: RestoreMethod::Spare,
                        swap_us: Some(swap_us),
                        spare_age_secs: Some(
                            (now_ms.saturating_sub(r.stamp.built_at_ms) / 1000).max(0) as u64,
                        ),
                    });
                }
                Swapped::Impossible(reason) => {
                    // Checked as swappable a moment ago; extract in place as the usual path
                    // would, without stopping for a cancel that would leave it half done.
                    tracing::warn!(volume = %r.name, reason = %reason, "the spare could not be swapped in; restoring by clearing the volume (not atomic)");
                    restored.push(self.clear_volume(&r, progress).await?);
                }
            }
        }
        for old in displaced {
            self.remove_in_background(old);
        }
        progress.complete();
        restored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(RestoreOutcome {
            app: req.target.app.to_string(),
            volumes: restored,
            bytes,
            entries,
        }))
    }

    async fn clear_volume(
        &self,
        r: &Ready,
        progress: &Arc<Progress>,
    ) -> Result<RestoredVolume, WarmError> {
        let (tar, m) = (r.tar.clone(), r.paths.mountpoint.clone());
        let p = progress.clone();
        let keep_going = tokio_util::sync::CancellationToken::new();
        blocking(move || {
            let limit = check(&tar, &keep_going)?.bytes;
            volume::clear_and_extract(&tar, &m, limit, &p, &keep_going)
        })
        .await
        .map_err(|e| WarmError::PartlyRestored {
            volume: r.name.to_string(),
            source: Box::new(e),
        })?;
        Ok(RestoredVolume {
            name: r.name.to_string(),
            method: RestoreMethod::Clear,
            swap_us: None,
            spare_age_secs: None,
        })
    }
}

/// Every volume's ready spare, or `None` when one has none matching the snapshot. Blocking.
fn ready(
    app: &AppDir,
    jobs: &[(VolumeName, PathBuf, PathBuf)],
) -> Result<Option<Vec<Ready>>, WarmError> {
    let digest = spare::digest(app)?;
    let mut ready = Vec::new();
    for (name, tar, mountpoint) in jobs {
        let paths = SparePaths::new(mountpoint);
        let Some(stamp) = spare::matching(&paths.spare, &digest, name.as_str()) else {
            tracing::debug!(volume = %name, "no ready spare of the current snapshot");
            return Ok(None);
        };
        ready.push(Ready {
            name: name.clone(),
            tar: tar.clone(),
            paths,
            stamp,
        });
    }
    Ok(Some(ready))
}
