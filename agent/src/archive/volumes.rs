//! Archives of a stack's volumes. A create finds the stack's volumes by label and refuses
//! while anything of the stack runs. A restore maps each archived volume onto the target
//! stack's volume of the same short name, refuses while the stack runs, unpacks the whole
//! archive into one scratch directory on the volumes' filesystem, and only once the checksum
//! matched swaps each volume in whole, as a warm restore does.

use std::fs;
use std::path::{Path, PathBuf};

use berth_shared::StackName;
use berth_shared::name::VolumeName;

use super::ArchiveError;
use crate::docker::stack::{self, StackVolume};
use crate::volume::staging::{self, SCRATCH};
use crate::volume::swap::{self, Swapped, remove_tree};
use crate::volume::{self, Plan, StackError};

/// The stack's volumes as `(name, mountpoint)`, once nothing of the stack runs.
pub(crate) async fn for_create(
    app: &str,
    stack: &StackName,
) -> Result<Vec<(String, PathBuf)>, ArchiveError> {
    let volumes = undeployed_volumes(app, stack, "archive the volumes of").await?;
    Ok(volumes
        .into_iter()
        .map(|v| (v.name.to_string(), v.mountpoint))
        .collect())
}

/// One archived volume and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Its name in the archive (the top-level directory).
    pub archived: String,
    pub name: VolumeName,
    pub mountpoint: PathBuf,
    /// Beside the mountpoint, where its new contents wait for the swap.
    pub staging: PathBuf,
}

/// Where a volume archive goes: the targets, and the scratch directory the archive unpacks
/// into (beside the first volume's mountpoint, on the filesystem of all of them).
#[derive(Debug, Clone)]
pub(crate) struct Restore {
    pub targets: Vec<Target>,
    pub scratch: PathBuf,
    /// The app and stack, to check again right before the swap that nothing started.
    pub app: String,
    pub stack: StackName,
}

/// Plans restoring `archived` (volumes of stack `from`) into stack `to`'s volumes, for
/// operation `op` (which holds the stack's lock and owns the staging dirs).
pub(crate) async fn for_restore(
    app: &str,
    from: &str,
    archived: &[String],
    to: &StackName,
    op: u64,
) -> Result<Restore, ArchiveError> {
    if archived.is_empty() {
        return Err(ArchiveError::Input(
            "the archive's metadata lists no volumes".into(),
        ));
    }
    for name in archived {
        VolumeName::new(name.as_str()).map_err(|source| StackError::Name {
            what: "archived volume name",
            source,
        })?;
    }
    let present = undeployed_volumes(app, to, "restore the volumes of").await?;
    let mut targets = Vec::new();
    for name in archived {
        let wanted = rename(name, from, to.as_str())?;
        let Some(found) = present.iter().find(|v| v.name.as_str() == wanted) else {
            let names = present.iter().map(|v| v.name.as_str());
            return Err(StackError::missing(wanted, to, names).into());
        };
        targets.push((name.clone(), found.clone()));
    }
    let (app, stack) = (app.to_owned(), to.clone());
    let planned = tokio::task::spawn_blocking(move || plan(targets, app, stack, op))
        .await
        .map_err(ArchiveError::Join)??;
    Ok(planned)
}

/// Fails if anything of `stack` runs now: checked again at the last moment, because an
/// archive takes minutes and a deploy may have started meanwhile.
pub(crate) async fn still_undeployed(
    app: &str,
    stack: &StackName,
    action: &'static str,
) -> Result<(), ArchiveError> {
    undeployed_volumes(app, stack, action).await.map(drop)
}

fn plan(
    found: Vec<(String, StackVolume)>,
    app: String,
    stack: StackName,
    op: u64,
) -> Result<Restore, ArchiveError> {
    let mut targets = Vec::new();
    let mut device = None;
    for (archived, v) in found {
        let staging = match volume::plan(&v.mountpoint, op)? {
            Plan::Swap { staging } => staging,
            Plan::Clear { reason } => {
                return Err(StackError::Unsupported(format!(
                    "volume {}: {reason}, so it cannot be swapped whole; restore it from a \
                     warm snapshot instead",
                    v.name
                ))
                .into());
            }
        };
        let dev = volume::staging_device(&v.mountpoint)?;
        if device.is_some_and(|d| d != dev) {
            return Err(StackError::Unsupported(format!(
                "volume {} is on another filesystem than the stack's other volumes; an archive \
                 restore stages them all in one place",
                v.name
            ))
            .into());
        }
        device = Some(dev);
        targets.push(Target {
            archived,
            name: v.name,
            mountpoint: v.mountpoint,
            staging,
        });
    }
    // Named after the first volume's staging dir, with its owner, so a later restore
    // removes it if this one dies.
    let scratch = staging::with_suffix(&targets[0].staging, SCRATCH);
    Ok(Restore {
        scratch,
        targets,
        app,
        stack,
    })
}

impl Restore {
    /// Checks that the unpacked scratch dir holds exactly the archived volumes, syncs it,
    /// then swaps each volume in whole. If one cannot be swapped, those already swapped get
    /// their previous contents back, so the stack is never left half restored. The old
    /// contents are removed once all are in. Blocking.
    pub(crate) fn swap_in(&self) -> Result<(), ArchiveError> {
        let write = |path: &Path| {
            let path = path.to_owned();
            move |source| ArchiveError::Write { path, source }
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.scratch).map_err(write(&self.scratch))? {
            let entry = entry.map_err(write(&self.scratch))?;
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
        found.sort();
        let mut expected: Vec<String> = self.targets.iter().map(|t| t.archived.clone()).collect();
        expected.sort();
        if found != expected {
            return Err(ArchiveError::UnsafeEntry {
                path: "./".into(),
                reason: format!(
                    "holds {}, but a volume archive's root must hold exactly its volumes ({})",
                    found.join(", "),
                    expected.join(", ")
                ),
            });
        }
        for t in &self.targets {
            if !fs::symlink_metadata(self.scratch.join(&t.archived)).is_ok_and(|m| m.is_dir()) {
                return Err(ArchiveError::UnsafeEntry {
                    path: t.archived.clone(),
                    reason: "is not a directory, which a volume must be".into(),
                });
            }
        }
        // Everything unpacked reaches the disk before any volume changes (one syncfs for
        // the volumes' filesystem, not an fsync per file).
        fs::File::open(&self.scratch)
            .and_then(|dir| rustix::fs::syncfs(dir).map_err(Into::into))
            .map_err(write(&self.scratch))?;
        for t in &self.targets {
            if let Err(e) = fs::rename(self.scratch.join(&t.archived), &t.staging) {
                self.remove_staging();
                return Err(write(&t.staging)(e));
            }
        }
        let mut swapped: Vec<(&Target, PathBuf)> = Vec::new();
        for t in &self.targets {
            let failed = match swap::swap(&t.mountpoint, &t.staging) {
                Ok(Swapped::Done { old }) => {
                    swapped.push((t, old));
                    tracing::info!(volume = %t.name, "volume restored from the archive");
                    continue;
                }
                Ok(Swapped::Impossible(why)) => {
                    ArchiveError::from(StackError::Unsupported(format!("volume {}: {why}", t.name)))
                }
                Err(e) => ArchiveError::from(e),
            };
            put_back(&swapped);
            self.remove_staging();
            return Err(failed);
        }
        for path in swapped
            .into_iter()
            .map(|(_, old)| old)
            .chain([self.scratch.clone()])
        {
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a volume's old contents; remove it by hand");
            }
        }
        Ok(())
    }

    /// Removes the staging dirs of volumes not swapped in.
    fn remove_staging(&self) {
        for t in &self.targets {
            if fs::symlink_metadata(&t.staging).is_ok() {
                let _ = remove_tree(&t.staging);
            }
        }
    }
}

/// Swaps each volume's previous contents (at `old`) back in, last first.
fn put_back(swapped: &[(&Target, PathBuf)]) {
    for (t, old) in swapped.iter().rev() {
        match swap::swap(&t.mountpoint, old) {
            Ok(Swapped::Done { old: restored }) => {
                tracing::warn!(volume = %t.name, "a later volume failed: this one is back as it was");
                let _ = remove_tree(&restored);
            }
            Ok(Swapped::Impossible(why)) => {
                tracing::error!(volume = %t.name, previous = %old.display(), why, "cannot put the volume's previous contents back; move them away from where `previous` says before the next restore of this volume removes them")
            }
            Err(e) => {
                tracing::error!(volume = %t.name, previous = %old.display(), error = %e, "cannot put the volume's previous contents back; move them away from where `previous` says before the next restore of this volume removes them")
            }
        }
    }
}

/// `name`, a volume of stack `from`, as the same volume of stack `to`.
fn rename(name: &str, from: &str, to: &str) -> Result<String, ArchiveError> {
    if from == to {
        return Ok(name.to_owned());
    }
    let short = name.strip_prefix(from).and_then(|r| r.strip_prefix('_'));
    match short {
        Some(short) if !short.is_empty() => Ok(format!("{to}_{short}")),
        _ => Err(ArchiveError::Input(format!(
            "volume {name} is not named <stack>_<volume> after its stack {from}, so it cannot \
             be mapped onto stack {to}; restore it into stack {from}"
        ))),
    }
}

/// The stack's volumes, each one whose data is at its mountpoint, while nothing of the
/// stack runs.
async fn undeployed_volumes(
    app: &str,
    stack: &StackName,
    action: &'static str,
) -> Result<Vec<StackVolume>, ArchiveError> {
    let docker = crate::docker::connect().await.map_err(StackError::from)?;
    let volumes = volume::copyable_volumes(&docker, stack).await?;
    let names: Vec<VolumeName> = volumes.iter().map(|v| v.name.clone()).collect();
    let running = stack::deployment(&docker, stack, &names)
        .await
        .map_err(StackError::from)?;
    if !running.is_undeployed() {
        return Err(StackError::Deployed {
            action,
            app: app.to_owned(),
            stack: stack.to_string(),
            running,
        }
        .into());
    }
    Ok(volumes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two volumes `a` and `b` under `root` (as `<root>/<v>/_data`), each holding `old`, and
    /// an unpacked scratch dir holding `new` for each.
    fn staged(root: &Path) -> Restore {
        let mut targets = Vec::new();
        for v in ["stk_a", "stk_b"] {
            let mountpoint = root.join(v).join("_data");
            fs::create_dir_all(&mountpoint).unwrap();
            fs::write(mountpoint.join("f"), "old").unwrap();
            targets.push(Target {
                archived: v.to_owned(),
                name: VolumeName::new(v).unwrap(),
                staging: staging::path_for(&root.join(v).join("_data"), 0),
                mountpoint,
            });
        }
        let scratch = staging::with_suffix(&targets[0].staging, SCRATCH);
        for v in ["stk_a", "stk_b"] {
            fs::create_dir_all(scratch.join(v)).unwrap();
            fs::write(scratch.join(v).join("f"), "new").unwrap();
        }
        Restore {
            targets,
            scratch,
            app: "app".into(),
            stack: StackName::new("stk").unwrap(),
        }
    }

    fn content(t: &Target) -> String {
        fs::read_to_string(t.mountpoint.join("f")).unwrap()
    }

    #[test]
    fn every_volume_is_swapped_in_and_the_old_contents_go() {
        let dir = tempfile::tempdir().unwrap();
        let r = staged(dir.path());
        r.swap_in().unwrap();
        assert_eq!(content(&r.targets[0]), "new");
        assert_eq!(content(&r.targets[1]), "new");
        for v in ["stk_a", "stk_b"] {
            let left: Vec<_> = fs::read_dir(dir.path().join(v)).unwrap().collect();
            assert_eq!(left.len(), 1, "only _data is left in {v}");
        }
    }

    #[test]
    fn a_volume_that_cannot_be_swapped_puts_the_earlier_ones_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = staged(dir.path());
        // The second volume's mountpoint vanished: its swap fails after the first's succeeded.
        fs::remove_dir_all(&r.targets[1].mountpoint).unwrap();
        let e = r.swap_in().unwrap_err();
        assert!(e.to_string().contains("stk_b"), "{e}");
        assert_eq!(
            content(&r.targets[0]),
            "old",
            "the first volume is back as it was"
        );
        assert!(!r.targets[1].staging.exists() && !r.targets[0].staging.exists());
    }

    #[test]
    fn an_archive_root_with_other_entries_is_refused_before_any_swap() {
        let dir = tempfile::tempdir().unwrap();
        let r = staged(dir.path());
        fs::create_dir(r.scratch.join("stk_evil")).unwrap();
        let e = r.swap_in().unwrap_err();
        assert!(e.to_string().contains("exactly its volumes"), "{e}");
        assert_eq!(content(&r.targets[0]), "old");
        assert_eq!(content(&r.targets[1]), "old");
    }

    #[test]
    fn volumes_map_onto_another_stack_by_short_name() {
        assert_eq!(rename("kc_db", "kc", "kc").unwrap(), "kc_db");
        assert_eq!(rename("kc_db", "kc", "kc2").unwrap(), "kc2_db");
        assert_eq!(rename("kc_db_x", "kc", "new").unwrap(), "new_db_x");
        let e = rename("other_db", "kc", "kc2").unwrap_err().to_string();
        assert!(e.contains("cannot be mapped"), "{e}");
        assert!(rename("kc_", "kc", "kc2").is_err());
    }
}
