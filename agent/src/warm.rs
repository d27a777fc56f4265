//! Warm snapshots: one last-known-good copy of an app's Docker volumes on this host's disk,
//! taken and restored while the app is undeployed, in the layout of cc-ci's warmsnap.py
//! (`layout`). [`Warm`] is the entry point: `snapshot`, `restore`, `list`.
//!
//! Async code here only orchestrates; tarring, extracting and every filesystem change run on
//! blocking threads, at most `parallelism` volumes at a time, and observe a
//! `CancellationToken`. [`Progress`] is what a task runner reports while they work.

mod copy;
mod error;
pub(crate) mod layout;
mod list;
mod meta;
mod pack;
mod progress;
pub(crate) mod restore;
mod snapshot;
pub(crate) mod spare;
mod unpack;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::name::VolumeName;
use berth_shared::{AppName, StackName};
use bollard::Docker;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::docker::stack::{
    COMPOSE_LABEL, Deployment, LiveContainer, SWARM_LABEL, StackVolume,
};
pub use error::{WarmError, WarmErrorKind};
pub use list::SnapshotInfo;
pub use meta::Meta;
pub use progress::{Progress, ProgressSnapshot};
pub use restore::{RestoreMethod, RestoreOutcome, RestoreRequest, RestoredVolume};
pub use snapshot::{SnapshotOutcome, SnapshotRequest};
pub use spare::{BuildMethod, SpareState, Spares, SparesBuilt, Stamp, WarmConfig};

use crate::docker::stack::{self, WaitError};
use crate::volume::StackError;
use crate::volume::lock::{self, Operation, Resource};
use layout::{AppDir, AppLock};

/// How often a busy app lock is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(200);

/// Which app, and how to find its stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTarget {
    /// The app's folder under the warm root.
    pub app: AppName,
    /// The app's domain, recorded in `meta.json`.
    pub domain: String,
    /// The swarm stack or compose project whose volumes are the app's.
    pub stack: StackName,
}

impl AppTarget {
    /// Validates the names; the stack is `stack` when given, else derived from `domain`.
    pub fn new(app: &str, domain: &str, stack: Option<&str>) -> Result<Self, WarmError> {
        let app = AppName::new(app).map_err(|source| WarmError::Name {
            what: "app name",
            source,
        })?;
        if domain.len() > 253 || domain.chars().any(|c| c.is_control() || c == '/') {
            return Err(WarmError::Input(format!(
                "domain {domain:?} is not a domain name"
            )));
        }
        let stack = match stack.filter(|s| !s.is_empty()) {
            Some(s) => StackName::new(s),
            None if domain.is_empty() => {
                return Err(WarmError::Input(
                    "give the app's domain or its stack name".to_owned(),
                ));
            }
            None => StackName::from_domain(domain),
        }
        .map_err(|source| WarmError::Name {
            what: "stack name",
            source,
        })?;
        Ok(Self {
            app,
            domain: domain.to_owned(),
            stack,
        })
    }
}

/// Warm snapshots under one warm root, of the stacks of one Docker engine.
#[derive(Debug, Clone)]
pub struct Warm {
    docker: Docker,
    root: PathBuf,
    parallelism: usize,
    /// Removals of old volume contents still running after their restore returned.
    cleanups: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Whom the work is for (a saga), named to operations waiting for its locks.
    on_behalf_of: Option<String>,
    /// The agent's spare builder, told after every snapshot and restore.
    spares: Option<Spares>,
}

impl Warm {
    pub fn new(docker: Docker, root: impl Into<PathBuf>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            docker,
            root: root.into(),
            parallelism: cpus.clamp(2, 4),
            cleanups: Arc::default(),
            on_behalf_of: None,
            spares: None,
        }
    }

    /// Connects to the local engine (`DOCKER_HOST` honoured, API version negotiated).
    pub async fn connect(root: impl Into<PathBuf>) -> Result<Self, WarmError> {
        Ok(Self::new(crate::docker::connect().await?, root))
    }

    /// How many volumes are tarred or extracted at the same time (at least 1).
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Names whom this work is for (e.g. `saga <id>`), as operations waiting for it see it.
    pub fn on_behalf_of(mut self, who: impl Into<String>) -> Self {
        self.on_behalf_of = Some(who.into());
        self
    }

    /// Tells `spares` after every snapshot and restore, so the next restore finds them ready.
    pub fn with_spares(mut self, spares: Spares) -> Self {
        self.spares = Some(spares);
        self
    }

    /// Queues a rebuild of the target's spares, when a builder runs.
    fn spares_after(&self, target: &AppTarget) {
        if let Some(spares) = &self.spares {
            spares.request(target);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stack's volumes, by label.
    pub async fn volumes(&self, stack: &StackName) -> Result<Vec<StackVolume>, WarmError> {
        Ok(stack::stack_volumes(&self.docker, stack).await?)
    }

    /// What runs of the stack now (services, live containers mounting `volumes`).
    pub async fn deployment(
        &self,
        stack: &StackName,
        volumes: &[VolumeName],
    ) -> Result<Deployment, WarmError> {
        Ok(stack::deployment(&self.docker, stack, volumes).await?)
    }

    /// The snapshots under the warm root, of one app or of all.
    pub async fn list(&self, app: Option<&AppName>) -> Result<Vec<SnapshotInfo>, WarmError> {
        let root = self.root.clone();
        let app = app.cloned();
        blocking(move || list::list(&root, app.as_ref())).await
    }

    /// Waits until the old contents that restores swapped out are removed. A restore
    /// returns as soon as the volumes hold the snapshot; removing what they held before runs
    /// on (a process about to exit calls this; a restarted one removes leftovers itself).
    pub async fn finish_cleanup(&self) {
        loop {
            let pending: Vec<_> = match self.cleanups.lock() {
                Ok(mut c) => c.drain(..).collect(),
                Err(_) => return,
            };
            if pending.is_empty() {
                return;
            }
            for handle in pending {
                let _ = handle.await;
            }
        }
    }

    /// Removes `path` on a blocking thread, tracked by `finish_cleanup`.
    fn remove_in_background(&self, path: PathBuf) {
        let handle = tokio::task::spawn_blocking(move || layout::remove_marked(&path));
        if let Ok(mut c) = self.cleanups.lock() {
            c.retain(|h| !h.is_finished());
            c.push(handle);
        }
    }

    /// Waits (up to `wait`) until nothing of the stack runs; the error names what does.
    async fn ensure_undeployed(
        &self,
        action: &'static str,
        target: &AppTarget,
        volumes: &[VolumeName],
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), WarmError> {
        let deadline = tokio::time::Instant::now() + wait;
        stack::wait_undeployed(&self.docker, &target.stack, volumes, deadline, cancel)
            .await
            .map_err(|e| match e {
                WaitError::Engine(e) => WarmError::Engine(e),
                WaitError::Cancelled => WarmError::Cancelled,
                WaitError::Deployed(running) => StackError::Deployed {
                    action,
                    app: target.app.to_string(),
                    stack: target.stack.to_string(),
                    running,
                }
                .into(),
            })
    }

    /// Takes the stack's lock in the agent's lock table, waiting (with the phase saying for
    /// what) while another operation on it runs, until `cancel`.
    async fn hold_stack(
        &self,
        kind: &'static str,
        target: &AppTarget,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<lock::Held, WarmError> {
        let resource = Resource::Stack(target.stack.to_string());
        let mut op = Operation::new(kind, &resource);
        if let Some(who) = &self.on_behalf_of {
            op = op.on_behalf_of(who.clone());
        }
        let held = lock::acquire(&op, &[resource], cancel, |_, holder| {
            progress.set_phase(format!("waiting for {holder}"));
        })
        .await?;
        Ok(held)
    }

    /// Takes the app's lock, waiting while another snapshot or restore of it runs.
    async fn lock(&self, app: &AppDir, cancel: &CancellationToken) -> Result<AppLock, WarmError> {
        let mut warned = false;
        loop {
            let dir = app.dir.clone();
            if let Some(lock) = blocking(move || AppLock::try_lock(&dir)).await? {
                return Ok(lock);
            }
            if !warned {
                tracing::info!(dir = %app.dir.display(), "another snapshot or restore of this app is running; waiting for it");
                warned = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(WarmError::Cancelled),
                () = tokio::time::sleep(LOCK_RETRY) => {}
            }
        }
    }

    /// Runs `work` for every item on blocking threads, `parallelism` at a time. The first
    /// failure cancels the rest; it is the error returned (not the cancellations it caused).
    async fn each_volume<I, T, F>(
        &self,
        items: Vec<I>,
        cancel: &CancellationToken,
        work: F,
    ) -> Result<Vec<T>, WarmError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I, &CancellationToken) -> Result<T, WarmError> + Send + Sync + 'static,
    {
        let stop = cancel.child_token();
        // Dropped before the end (its caller gave up): the blocking work stops too.
        let _stop_when_dropped = stop.clone().drop_guard();
        let permits = Arc::new(Semaphore::new(self.parallelism));
        let work = Arc::new(work);
        let mut set = JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let (permits, work, stop) = (permits.clone(), work.clone(), stop.clone());
            set.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                if stop.is_cancelled() {
                    return (i, Err(WarmError::Cancelled));
                }
                let r = tokio::task::spawn_blocking(move || work(item, &stop)).await;
                (i, r.map_err(WarmError::Join).and_then(|r| r))
            });
        }
        let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(set.len()).collect();
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            let (i, result) = match joined {
                Ok(r) => r,
                Err(e) => (usize::MAX, Err(WarmError::Join(e))),
            };
            match result {
                Ok(t) => results[i] = Some(t),
                Err(e) => {
                    stop.cancel();
                    let replace = match &first_error {
                        None => true,
                        Some(WarmError::Cancelled) => !matches!(e, WarmError::Cancelled),
                        Some(_) => false,
                    };
                    if replace {
                        first_error = Some(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(results
                .into_iter()
                .map(|r| r.expect("every item done"))
                .collect()),
        }
    }
}

/// The snapshots under `root`, of one app or of all. Blocking: it reads the warm root.
pub fn list_snapshots(root: &Path, app: Option<&AppName>) -> Result<Vec<SnapshotInfo>, WarmError> {
    list::list(root, app)
}

/// Runs blocking `f` on a blocking thread.
pub(crate) fn blocking<T, F>(f: F) -> impl Future<Output = Result<T, WarmError>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, WarmError> + Send + 'static,
{
    let handle = tokio::task::spawn_blocking(f);
    async move { handle.await.map_err(WarmError::Join)? }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_validate_names_and_derive_the_stack() {
        let t = AppTarget::new("kc", "kc.ci.example.org", None).unwrap();
        assert_eq!(t.stack.as_str(), "kc_ci_example_org");
        let t = AppTarget::new("kc", "", Some("custom")).unwrap();
        assert_eq!(t.stack.as_str(), "custom");
        for (app, domain, stack) in [
            ("a/b", "x.org", None),
            ("..", "x.org", None),
            ("a\0b", "x.org", None),
            ("kc", "", None),
            ("kc", "x/y", None),
            ("kc", "x.org", Some("../s")),
            ("kc", "a\0b", None),
        ] {
            assert!(
                AppTarget::new(app, domain, stack).is_err(),
                "{app:?} {domain:?} {stack:?}"
            );
        }
    }
}
