//! The volume mechanics warm snapshots and app archives share, as a leaf neither owns:
//! `lock` (one operation per stack, app directory or volume at a time), `staging` (staging
//! dirs named after their owner, and the cleanup that removes only those whose owner is
//! provably dead), `swap` (putting a staged dir in place of a target, journaled before its
//! first rename where the filesystem needs two, and recovered after a crash), `plan` (swap
//! or clear-and-extract, per volume), and finding a stack's volumes ([`copyable_volumes`],
//! failing with [`StackError`]).
//!
//! Everything in `staging` and `swap` blocks: call it from blocking threads.

mod error;
pub mod lock;
mod plan;
pub(crate) mod staging;
pub mod swap;

use std::path::PathBuf;

use berth_shared::StackName;
use bollard::Docker;

use crate::docker::stack::{self, StackVolume};

pub use error::{StackError, VolumeError};
pub use lock::{Operation, Resource};
pub(crate) use plan::{Plan, plan, staging_device};
pub use swap::{TestCut, set_test_cut};

/// The agent's start hook: takes cross-process locks under `<state_dir>/locks/` from now on,
/// and in the background finishes or rolls back swaps that a crash cut between their two
/// renames (under the apps root and beside every Docker volume) and removes staging dirs whose
/// owner is dead. A restore also does this for its own targets before it starts, so nothing
/// waits for this.
pub fn recover_at_start(config: &crate::Config) -> tokio::task::JoinHandle<()> {
    lock::use_lock_dir(config.state_dir.join("locks"));
    let apps_root = config.apps_root.clone();
    tokio::spawn(async move {
        let mut dirs = vec![apps_root];
        match volume_parents().await {
            Ok(parents) => dirs.extend(parents),
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "cannot list docker volumes to recover cut swaps; each restore recovers its own")
            }
        }
        recover_dirs(dirs).await;
    })
}

/// Recovers every target in each of `dirs` (see [`swap::recover_dir`]), on blocking threads.
pub async fn recover_dirs(dirs: Vec<PathBuf>) {
    let done = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            if let Err(e) = swap::recover_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %crate::chain(&e), "cannot recover cut swaps");
            }
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "swap recovery failed");
    }
}

/// The volumes of `stack` that Berth can copy: refuses a stack with none, or with one whose
/// data is not at its mountpoint (see [`StackVolume::unsupported`]).
pub async fn copyable_volumes(
    docker: &Docker,
    stack: &StackName,
) -> Result<Vec<StackVolume>, StackError> {
    let volumes = stack::stack_volumes(docker, stack).await?;
    if volumes.is_empty() {
        return Err(StackError::NoVolumes {
            stack: stack.to_string(),
        });
    }
    if let Some(why) = volumes.iter().find_map(StackVolume::unsupported) {
        return Err(StackError::Unsupported(why));
    }
    Ok(volumes)
}

/// The directories holding the mountpoints of this engine's local volumes.
async fn volume_parents() -> Result<Vec<PathBuf>, crate::AgentError> {
    let docker = crate::docker::connect().await?;
    let mut parents: Vec<PathBuf> = crate::docker::stack::all_mountpoints(&docker)
        .await?
        .into_iter()
        .filter_map(|m| m.parent().map(PathBuf::from))
        .collect();
    parents.sort();
    parents.dedup();
    Ok(parents)
}
