//! The one process-wide lock table: at most one operation at a time holds a stack, an app
//! directory or a volume, whatever its kind (warm snapshot or restore, archive create or
//! restore, and later a spare build). An [`Operation`] describes its holder, so whoever
//! waits or is refused can say for what. With a lock dir set ([`use_lock_dir`]), each
//! resource is also an `flock` on `<dir>/<resource>.lock`, so a second agent process on the
//! same host (a misconfiguration) is refused rather than racing.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use rustix::fs::{FlockOperation, flock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::VolumeError;

/// What an operation holds. Names were validated where they came in (no `/`, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A swarm stack or compose project, and so every volume of it.
    Stack(String),
    /// An app's directory (its whole path: tests run several apps roots in one process).
    AppDir(String),
    /// One volume touched without its stack.
    Volume(String),
}

impl Resource {
    /// The lock file's name under the lock dir.
    fn file_name(&self) -> String {
        match self {
            Resource::Stack(s) => format!("stack~{s}.lock"),
            Resource::AppDir(a) => format!("app~{}.lock", a.replace('/', "~")),
            Resource::Volume(v) => format!("volume~{v}.lock"),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Stack(s) => write!(f, "stack {s}"),
            Resource::AppDir(a) => write!(f, "app directory {a}"),
            Resource::Volume(v) => write!(f, "volume {v}"),
        }
    }
}

/// Who holds (or wants) resources: a kind of work, what it works on, and on whose behalf
/// (a saga, an archive). Each has a process-unique id that staging dirs carry.
#[derive(Debug, Clone)]
pub struct Operation {
    id: u64,
    kind: &'static str,
    subject: String,
    on_behalf_of: Option<String>,
    /// Background work that gives way: another operation wanting one of its resources
    /// cancels this token, and the holder drops its locks as soon as it stops.
    yields: Option<CancellationToken>,
}

impl PartialEq for Operation {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Operation {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Operation {
    /// `kind` (e.g. `warm_restore`) of `subject` (e.g. `stack kc`).
    pub fn new(kind: &'static str, subject: impl fmt::Display) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            kind,
            subject: subject.to_string(),
            on_behalf_of: None,
            yields: None,
        }
    }

    /// Makes this a background operation that gives way: whoever else wants one of its
    /// resources cancels `token` (the operation's own) and waits for the release, so a spare
    /// build never holds up a restore, snapshot or archive.
    pub fn yielding(mut self, token: CancellationToken) -> Self {
        self.yields = Some(token);
        self
    }

    /// Whether this operation gives way to others.
    pub fn is_yielding(&self) -> bool {
        self.yields.is_some()
    }

    /// Names whom the work is for, e.g. `saga 0190…` or `archive 0190…`.
    pub fn on_behalf_of(mut self, who: impl Into<String>) -> Self {
        self.on_behalf_of = Some(who.into());
        self
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.kind, self.subject)?;
        if let Some(who) = &self.on_behalf_of {
            write!(f, " ({who})")?;
        }
        Ok(())
    }
}

struct Table {
    held: Mutex<HashMap<Resource, Operation>>,
    released: Notify,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    held: Mutex::new(HashMap::new()),
    released: Notify::new(),
});

static LOCK_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// From now on, every resource is also an `flock` on a file under `dir` (created if needed).
/// Set at agent start (the latest agent started in a process wins). A lock dir that
/// disappears later leaves the in-process table alone in charge.
pub fn use_lock_dir(dir: PathBuf) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the lock dir; locks are in-process only");
        return;
    }
    if let Ok(mut d) = LOCK_DIR.lock() {
        *d = Some(dir);
    }
}

/// Resources held by one operation; released when dropped.
#[derive(Debug)]
pub struct Held {
    op: Operation,
    resources: Vec<Resource>,
    _files: Vec<File>,
}

impl Held {
    pub fn operation(&self) -> &Operation {
        &self.op
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = TABLE.held.lock() {
            for r in &self.resources {
                held.remove(r);
            }
        }
        TABLE.released.notify_waiters();
    }
}

/// Whether operation `id` of this process holds anything now.
pub(crate) fn is_live(id: u64) -> bool {
    TABLE
        .held
        .lock()
        .is_ok_and(|held| held.values().any(|op| op.id == id))
}

/// Takes every one of `resources` for `op`, or none: refused, naming the holder, when one is
/// held.
pub fn try_acquire(op: &Operation, resources: &[Resource]) -> Result<Held, VolumeError> {
    match take(op, resources)? {
        Ok(held) => Ok(held),
        Err((resource, holder)) => Err(VolumeError::Busy {
            resource,
            holder: holder.to_string(),
        }),
    }
}

/// Takes every one of `resources` for `op` without waiting for other work: refused, naming
/// the holder, while one is held; only a holder that gives way (a spare build) is waited
/// for, up to [`YIELD_WAIT`], after being asked to stop.
pub async fn acquire_now(op: &Operation, resources: &[Resource]) -> Result<Held, VolumeError> {
    let deadline = tokio::time::Instant::now() + YIELD_WAIT;
    loop {
        let released = TABLE.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        match take(op, resources)? {
            Ok(held) => return Ok(held),
            Err((resource, holder)) if holder.is_yielding() => {
                if tokio::time::timeout_at(deadline, &mut released)
                    .await
                    .is_err()
                {
                    return Err(VolumeError::Busy {
                        resource,
                        holder: holder.to_string(),
                    });
                }
            }
            Err((resource, holder)) => {
                return Err(VolumeError::Busy {
                    resource,
                    holder: holder.to_string(),
                });
            }
        }
    }
}

/// How long [`acquire_now`] waits for background work that was asked to give way.
pub const YIELD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes every one of `resources` for `op`, waiting while another operation of this process
/// holds one (`waiting` hears about each new holder) until `cancel`. Another agent process
/// holding one is refused at once, naming it.
pub async fn acquire(
    op: &Operation,
    resources: &[Resource],
    cancel: &CancellationToken,
    mut waiting: impl FnMut(&Resource, &Operation),
) -> Result<Held, VolumeError> {
    let mut last = None;
    loop {
        let released = TABLE.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        match take(op, resources)? {
            Ok(held) => return Ok(held),
            Err((resource, holder)) => {
                if last != Some(holder.id) {
                    tracing::info!(resource = %resource, holder = %holder, waiter = %op, "waiting for a lock");
                    waiting(&resource, &holder);
                    last = Some(holder.id);
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(VolumeError::Cancelled),
            () = &mut released => {}
        }
    }
}

/// All or nothing: the held set, or the first resource in use and its holder.
#[allow(clippy::type_complexity)]
fn take(
    op: &Operation,
    resources: &[Resource],
) -> Result<Result<Held, (Resource, Operation)>, VolumeError> {
    let mut sorted = resources.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut held = TABLE.held.lock().expect("lock table poisoned");
    for r in &sorted {
        if let Some(holder) = held.get(r) {
            // Background work gives way to anything else (but not to more background work).
            if let Some(token) = &holder.yields
                && !op.is_yielding()
                && !token.is_cancelled()
            {
                tracing::info!(resource = %r, holder = %holder, wanted_by = %op, "asking background work to give way");
                token.cancel();
            }
            return Ok(Err((r.clone(), holder.clone())));
        }
    }
    let mut files = Vec::new();
    let dir = LOCK_DIR.lock().ok().and_then(|d| d.clone());
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        for r in &sorted {
            files.push(lock_file(&dir, r, op)?);
        }
    }
    for r in &sorted {
        held.insert(r.clone(), op.clone());
    }
    Ok(Ok(Held {
        op: op.clone(),
        resources: sorted,
        _files: files,
    }))
}

/// Locks `<dir>/<resource>.lock` and writes who holds it; refused when another process does.
fn lock_file(dir: &std::path::Path, r: &Resource, op: &Operation) -> Result<File, VolumeError> {
    let path = dir.join(r.file_name());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| VolumeError::io("open", &path, e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut who = String::new();
            let _ = file.read_to_string(&mut who);
            return Err(VolumeError::Busy {
                resource: r.clone(),
                holder: format!("another agent process on this host ({})", who.trim()),
            });
        }
        Err(e) => return Err(VolumeError::io("lock", &path, e.into())),
    }
    let who = format!("pid {}: {op}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(who.as_bytes()))
        .map_err(|e| VolumeError::io("write", &path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str) -> Resource {
        Resource::Stack(name.into())
    }

    #[test]
    fn a_second_operation_is_refused_naming_the_holder_until_the_first_drops() {
        let first = Operation::new("warm_restore", "stack lk1").on_behalf_of("saga s-1");
        let held = try_acquire(&first, &[stack("lk1"), Resource::AppDir("a1".into())]).unwrap();
        assert!(is_live(first.id()));
        let second = Operation::new("archive_restore", "app a1");
        let e = try_acquire(&second, &[Resource::AppDir("a1".into())]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "app directory a1 is busy: warm_restore of stack lk1 (saga s-1) is running on it; \
             retry when it has finished"
        );
        drop(held);
        assert!(!is_live(first.id()));
        try_acquire(&second, &[Resource::AppDir("a1".into())]).unwrap();
    }

    #[test]
    fn nothing_is_taken_when_one_resource_is_busy() {
        let first = Operation::new("warm_snapshot", "stack lk2");
        let _held = try_acquire(&first, &[stack("lk2")]).unwrap();
        let second = Operation::new("archive_create", "app a2");
        try_acquire(&second, &[Resource::AppDir("a2".into()), stack("lk2")]).unwrap_err();
        let third = Operation::new("archive_create", "app a2");
        try_acquire(&third, &[Resource::AppDir("a2".into())]).unwrap();
    }

    #[tokio::test]
    async fn a_waiter_says_for_what_and_gets_the_lock_when_it_is_released() {
        let first = Operation::new("warm_restore", "stack lk3").on_behalf_of("saga s-3");
        let held = try_acquire(&first, &[stack("lk3")]).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let second = Operation::new("warm_snapshot", "stack lk3");
        let cancel = CancellationToken::new();
        let waiter = tokio::spawn(async move {
            acquire(&second, &[stack("lk3")], &cancel, |r, holder| {
                tx.send(format!("waiting for {holder} ({r})")).unwrap();
            })
            .await
            .map(|h| h.operation().kind())
        });
        assert_eq!(
            rx.recv().await.unwrap(),
            "waiting for warm_restore of stack lk3 (saga s-3) (stack lk3)"
        );
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), "warm_snapshot");
    }

    #[tokio::test]
    async fn a_waiter_stops_when_cancelled() {
        let first = Operation::new("warm_restore", "stack lk4");
        let _held = try_acquire(&first, &[stack("lk4")]).unwrap();
        let cancel = CancellationToken::new();
        let second = Operation::new("warm_restore", "stack lk4");
        let c = cancel.clone();
        let waiter =
            tokio::spawn(async move { acquire(&second, &[stack("lk4")], &c, |_, _| {}).await });
        tokio::task::yield_now().await;
        cancel.cancel();
        assert!(matches!(waiter.await.unwrap(), Err(VolumeError::Cancelled)));
    }

    #[tokio::test]
    async fn background_work_gives_way_to_an_operation_and_never_to_more_background_work() {
        let token = CancellationToken::new();
        let spare = Operation::new("spare_build", "stack lk6").yielding(token.clone());
        let held = try_acquire(&spare, &[stack("lk6")]).unwrap();
        // Another background build does not preempt it.
        let other = Operation::new("spare_build", "stack lk6").yielding(CancellationToken::new());
        try_acquire(&other, &[stack("lk6")]).unwrap_err();
        assert!(!token.is_cancelled());
        // An archive asks it to stop, and waits for the release.
        let archive = Operation::new("archive_create", "stack lk6");
        let waiter = tokio::spawn(async move {
            acquire_now(&archive, &[stack("lk6")])
                .await
                .map(|h| h.operation().kind())
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
            .await
            .expect("the holder was asked to give way");
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), "archive_create");
    }

    #[tokio::test]
    async fn acquire_now_refuses_at_once_when_the_holder_is_not_background_work() {
        let first = Operation::new("warm_restore", "stack lk7").on_behalf_of("saga s-7");
        let _held = try_acquire(&first, &[stack("lk7")]).unwrap();
        let second = Operation::new("archive_restore", "stack lk7");
        let started = std::time::Instant::now();
        let e = acquire_now(&second, &[stack("lk7")]).await.unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(e.to_string().contains("warm_restore of stack lk7"), "{e}");
    }

    #[test]
    fn a_lock_file_held_by_another_process_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = stack("lk5");
        let op = Operation::new("warm_restore", "stack lk5");
        let _mine = lock_file(dir.path(), &r, &op).unwrap();
        // flock is per open file description: a second open behaves as another process.
        let e = lock_file(dir.path(), &r, &Operation::new("archive_create", "x")).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("another agent process") && shown.contains("warm_restore of stack lk5"),
            "{shown}"
        );
    }
}
