//! The spare builder: one background worker per agent that builds the spares of the apps
//! queued to it (after every snapshot, after every restore, and for every app at start), one
//! build at a time, at a bounded I/O rate. A build holds the stack's lock as work that gives
//! way (`crate::volume::lock`): a restore, snapshot or archive of the stack that wants the
//! lock cancels it and goes first, and the build is tried again later. The state of each
//! app's spares (`ready`, `building 40%`, `none: disk floor`, `off`) is what `warm list`
//! shows.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_shared::config_doc::ConfigDoc;
use berth_shared::name::VolumeName;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Build, SparePaths, discard, matching, reflink_supported};
use crate::volume::lock::{self, Operation, Resource};
use crate::volume::{Plan, VolumeError, plan};
use crate::warm::layout::{self, AppDir};
use crate::warm::meta::Meta;
use crate::warm::progress::Progress;
use crate::warm::restore::complete_volumes;
use crate::warm::unpack::check::check;
use crate::warm::{AppTarget, Warm, WarmError, blocking};

/// How long a build that gave way (or found the stack busy) waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The agent's `[warm]` table.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct WarmConfig {
    /// Keep a ready spare beside each volume of every warm snapshot, so a restore is a rename.
    /// A spare doubles the volume's footprint on its filesystem (not on reflink filesystems,
    /// where spares share blocks).
    #[serde(default = "default_spares")]
    pub spares: bool,
    /// Skip (and report) a spare that would leave less than this many bytes free on the
    /// volume's filesystem.
    #[serde(default = "default_spare_min_free_bytes")]
    pub spare_min_free_bytes: u64,
    /// Upper bound of a spare build's writes, in MiB a second (0: no bound).
    #[serde(default = "default_spare_max_mib_per_sec")]
    pub spare_max_mib_per_sec: u64,
}

fn default_spares() -> bool {
    true
}
fn default_spare_min_free_bytes() -> u64 {
    5 << 30
}
fn default_spare_max_mib_per_sec() -> u64 {
    200
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            spares: default_spares(),
            spare_min_free_bytes: default_spare_min_free_bytes(),
            spare_max_mib_per_sec: default_spare_max_mib_per_sec(),
        }
    }
}

/// Where an app's spares stand.
#[derive(Debug, Clone)]
pub enum SpareState {
    /// Waiting for its turn (or for the stack to be free).
    Queued,
    /// Being built; the counters say how far.
    Building(Arc<Progress>),
    /// Every volume has a spare matching the current snapshot.
    Ready,
    /// Not built: it would leave less than the free-space floor (the log says how much).
    DiskFloor,
    /// Spares are off in the agent's config.
    Off,
    /// The snapshot was taken with `--no-spare`.
    OffForApp,
    /// A volume cannot have one (its mountpoint is a mount of its own, ...).
    Unsupported(String),
    /// The build failed; the next snapshot or restore tries again.
    Failed(String),
}

impl fmt::Display for SpareState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpareState::Queued => f.write_str("queued"),
            SpareState::Building(p) => {
                let s = p.snapshot();
                match (s.bytes_done * 100).checked_div(s.bytes_total) {
                    Some(pct) => write!(f, "building {}%", pct.min(99)),
                    None => f.write_str("building"),
                }
            }
            SpareState::Ready => f.write_str("ready"),
            SpareState::DiskFloor => f.write_str("none: disk floor"),
            SpareState::Off => f.write_str("off"),
            SpareState::OffForApp => f.write_str("off (--no-spare)"),
            SpareState::Unsupported(why) => write!(f, "none: {why}"),
            SpareState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The handle on the agent's spare builder.
#[derive(Debug, Clone)]
pub struct Spares {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: WarmConfig,
    queue: Mutex<VecDeque<(AppTarget, Instant)>>,
    wake: Notify,
    states: Mutex<HashMap<String, SpareState>>,
}

impl Spares {
    /// Starts the builder for the warm root `root` on the current runtime, until `shutdown`.
    /// Every app with a snapshot is queued, so spares are checked (and stale or half-made
    /// ones replaced) after a restart.
    pub fn start(root: PathBuf, config: WarmConfig, shutdown: CancellationToken) -> Spares {
        let spares = Spares {
            inner: Arc::new(Inner {
                config,
                queue: Mutex::default(),
                wake: Notify::new(),
                states: Mutex::default(),
            }),
        };
        let worker = spares.clone();
        tokio::spawn(async move { worker.run(root, shutdown).await });
        spares
    }

    /// Queues a (re)build of `target`'s spares.
    pub fn request(&self, target: &AppTarget) {
        if let Ok(mut q) = self.inner.queue.lock() {
            q.retain(|(t, _)| t.app != target.app);
            q.push_back((target.clone(), Instant::now()));
        }
        self.set(target.app.as_str(), SpareState::Queued);
        self.inner.wake.notify_one();
    }

    /// What `warm list` shows for `app`'s spares; `None` before the builder looked at it.
    pub fn state(&self, app: &str) -> Option<String> {
        self.inner
            .states
            .lock()
            .ok()?
            .get(app)
            .map(ToString::to_string)
    }

    fn set(&self, app: &str, state: SpareState) {
        if let Ok(mut s) = self.inner.states.lock() {
            s.insert(app.to_owned(), state);
        }
    }

    fn next(&self) -> Option<Result<AppTarget, Instant>> {
        let mut q = self.inner.queue.lock().ok()?;
        let now = Instant::now();
        match q.iter().position(|(_, at)| *at <= now) {
            Some(i) => q.remove(i).map(|(t, _)| Ok(t)),
            None => q.iter().map(|(_, at)| *at).min().map(Err),
        }
    }

    fn retry_later(&self, target: AppTarget) {
        if let Ok(mut q) = self.inner.queue.lock()
            && !q.iter().any(|(t, _)| t.app == target.app)
        {
            q.push_back((target, Instant::now() + RETRY_AFTER));
        }
    }

    async fn run(self, root: PathBuf, shutdown: CancellationToken) {
        let warm = loop {
            match Warm::connect(root.clone()).await {
                Ok(w) => break w,
                Err(e) => {
                    tracing::warn!(error = %crate::chain(&e), "spare builder: cannot reach the docker engine; trying again in 10 s");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(10)) => {}
                    }
                }
            }
        };
        self.queue_every_app(&warm).await;
        loop {
            let wait = match self.next() {
                Some(Ok(target)) => {
                    self.build(&warm, target, &shutdown).await;
                    continue;
                }
                Some(Err(at)) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn queue_every_app(&self, warm: &Warm) {
        let listed = match warm.list(None).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "spare builder: cannot list the warm root");
                return;
            }
        };
        for info in listed.into_iter().filter(|i| i.complete) {
            let app = AppDir::new(
                warm.root(),
                &berth_shared::AppName::new(&info.app).expect("listed apps are valid"),
            );
            let stack = complete_volumes(&app).ok().and_then(|(m, _)| {
                m.extra
                    .get("stack")
                    .and_then(|s| s.as_str().map(str::to_owned))
            });
            match AppTarget::new(&info.app, &info.domain, stack.as_deref()) {
                Ok(target) => self.request(&target),
                Err(e) => {
                    tracing::warn!(app = %info.app, error = %crate::chain(&e), "spare builder: cannot tell the app's stack; no spare until its next snapshot")
                }
            }
        }
    }

    async fn build(&self, warm: &Warm, target: AppTarget, shutdown: &CancellationToken) {
        let app = target.app.to_string();
        let cancel = shutdown.child_token();
        let rate = self.inner.config.spare_max_mib_per_sec << 20;
        let progress = Arc::new(Progress::paced(rate, cancel.clone()));
        self.set(&app, SpareState::Building(progress.clone()));
        let result = warm
            .build_spares(&target, &self.inner.config, &progress, &cancel)
            .await;
        let state = match result {
            Ok(built) => built.state,
            Err(WarmError::Cancelled) if shutdown.is_cancelled() => return,
            Err(WarmError::Cancelled) => {
                tracing::info!(app = %app, "spare build gave way to another operation; trying again later");
                self.retry_later(target);
                SpareState::Queued
            }
            Err(WarmError::Volume(VolumeError::Busy { .. })) => {
                self.retry_later(target);
                SpareState::Queued
            }
            Err(e) => {
                let why = crate::chain(&e);
                tracing::warn!(app = %app, error = %why, "spare build failed");
                SpareState::Failed(why)
            }
        };
        self.set(&app, state);
    }
}

/// What a spare build did: the state `warm list` shows, and the stamp of each spare built.
#[derive(Debug, Clone)]
pub struct SparesBuilt {
    pub state: SpareState,
    pub built: Vec<super::Stamp>,
}

impl Warm {
    /// Builds the spares of `target`'s snapshot that do not match it yet (or removes them when
    /// spares are off), holding the stack's lock as work that gives way: another operation
    /// wanting the stack cancels `cancel`, and this returns `Cancelled`. A stack in use by
    /// another operation is refused (busy). `progress` paces the writes when it was made so.
    pub async fn build_spares(
        &self,
        target: &AppTarget,
        config: &WarmConfig,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<SparesBuilt, WarmError> {
        let op = Operation::new("spare_build", format!("stack {}", target.stack))
            .yielding(cancel.clone());
        let _held = lock::try_acquire(&op, &[Resource::Stack(target.stack.to_string())])?;
        let op = op.id();
        let app = AppDir::new(self.root(), &target.app);
        let a = app.clone();
        let (meta, names) = match blocking(move || complete_volumes(&a)).await {
            Ok(found) => found,
            Err(WarmError::NoSnapshot { why, .. }) => {
                return Ok(SparesBuilt {
                    state: SpareState::Unsupported(format!("no complete snapshot ({why})")),
                    built: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let volumes = self.volumes(&target.stack).await?;
        let mut mountpoints = Vec::new();
        for name in &names {
            match volumes.iter().find(|v| &v.name == name) {
                Some(v) if v.unsupported().is_none() => mountpoints.push(v.mountpoint.clone()),
                _ => {
                    return Ok(SparesBuilt {
                        state: SpareState::Unsupported(format!(
                            "volume {name} is not in stack {} as a local volume",
                            target.stack
                        )),
                        built: Vec::new(),
                    });
                }
            }
        }
        let off = if !config.spares {
            Some(SpareState::Off)
        } else if !spare_wanted(&meta) {
            Some(SpareState::OffForApp)
        } else {
            None
        };
        let config = config.clone();
        let p = progress.clone();
        let stop = cancel.clone();
        blocking(move || {
            if let Some(off) = off {
                for m in &mountpoints {
                    let paths = SparePaths::new(m);
                    discard(&paths.spare, op)?;
                    discard(&paths.base, op)?;
                }
                return Ok(SparesBuilt {
                    state: off,
                    built: Vec::new(),
                });
            }
            build_volumes(&app, &names, &mountpoints, op, &config, &p, &stop)
        })
        .await
    }
}

/// Whether the snapshot wants spares: not when it was taken with `--no-spare`.
pub(crate) fn spare_wanted(meta: &Meta) -> bool {
    meta.extra
        .get("berth")
        .and_then(|b| b.get("spare"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true)
}

/// Builds every volume's spare that does not match the snapshot yet. Blocking.
fn build_volumes(
    app: &AppDir,
    names: &[VolumeName],
    mountpoints: &[PathBuf],
    op: u64,
    config: &WarmConfig,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<SparesBuilt, WarmError> {
    let digest = super::digest(app)?;
    let mut todo = Vec::new();
    for (name, mountpoint) in names.iter().zip(mountpoints) {
        match plan(mountpoint, op)? {
            Plan::Swap { .. } => {}
            Plan::Clear { reason } => {
                return Ok(SparesBuilt {
                    state: SpareState::Unsupported(format!("volume {name}: {reason}")),
                    built: Vec::new(),
                });
            }
        }
        let paths = SparePaths::new(mountpoint);
        if matching(&paths.spare, &digest, name.as_str()).is_none() {
            let tar = app.tar(name);
            let limit = check(&tar, cancel)?.bytes;
            todo.push((name, paths, tar, limit));
        }
    }
    progress.set_totals(todo.iter().map(|t| t.3).sum(), 0);
    let mut built = Vec::new();
    for (name, paths, tar, limit) in &todo {
        let parent = paths.mountpoint.parent().unwrap_or(&paths.mountpoint);
        let reflink = reflink_supported(parent);
        let has_base = reflink && matching(&paths.base, &digest, name.as_str()).is_some();
        // A stale spare is removed first, so it does not count against the floor.
        discard(&paths.spare, op)?;
        let needed = if has_base { 1 << 20 } else { limit + (1 << 20) };
        let free = layout::free_space(parent)?;
        if free < needed.saturating_add(config.spare_min_free_bytes) {
            tracing::warn!(volume = %name, path = %parent.display(), needed, free, floor = config.spare_min_free_bytes, "not building a spare: it would leave less than the free-space floor");
            return Ok(SparesBuilt {
                state: SpareState::DiskFloor,
                built,
            });
        }
        let stamp = Build {
            paths,
            volume: name.as_str(),
            tar,
            digest: &digest,
            limit: *limit,
            op,
            reflink,
        }
        .run(progress, cancel)?;
        tracing::info!(volume = %name, method = ?stamp.method, build_ms = stamp.build_ms, bytes = stamp.bytes, entries = stamp.entries, "spare ready");
        built.push(stamp);
    }
    Ok(SparesBuilt {
        state: SpareState::Ready,
        built,
    })
}
