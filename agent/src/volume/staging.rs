//! Staging dirs and their owners. A staging dir sits beside its target (same filesystem)
//! and is named `.<target>~berth~<pid>.<start>.<boot>.<op>~<rand>`: the agent process (pid,
//! its start time in clock ticks since boot, the boot id) and the operation of that process
//! that made it. Derived names append (`~old`, `~swap`, `~scratch`), never replace an
//! extension, so `wiki.example.org` and `wiki.example.com` never share one. A staging dir is
//! dead, and may be removed, only when its owner provably is: another boot, a process that is
//! gone (or whose pid now names a process started at another time), or this process with the
//! operation no longer holding any lock and the path not being removed in the background.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use super::lock;

const MARK: &str = "~berth~";
/// Suffix of the dir holding a target's previous contents during a two-rename swap.
pub(crate) const ASIDE: &str = "~old";
/// Suffix of the journal of a two-rename swap.
pub(crate) const JOURNAL: &str = "~swap";
/// Suffix of an archive's scratch dir (all volumes unpacked before they are staged).
pub(crate) const SCRATCH: &str = "~scratch";

/// The process that made a staging dir, and its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
    start: u64,
    boot: String,
    op: u64,
}

/// This process: pid, start time, boot id.
static ME: LazyLock<(u32, u64, String)> = LazyLock::new(|| {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0), boot_id())
});

impl Owner {
    /// Operation `op` of this process.
    pub fn of(op: u64) -> Self {
        Self {
            pid: ME.0,
            start: ME.1,
            boot: ME.2.clone(),
            op,
        }
    }

    fn token(&self) -> String {
        format!("{}.{}.{}.{}", self.pid, self.start, self.boot, self.op)
    }

    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let owner = Self {
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            boot: parts.next()?.to_owned(),
            op: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(owner)
    }

    /// Whether the owner may still be using what it made.
    fn is_alive(&self, path: &Path) -> bool {
        if self.boot != ME.2 {
            return false;
        }
        if (self.pid, self.start) == (ME.0, ME.1) {
            return lock::is_live(self.op) || being_removed(path);
        }
        start_time(self.pid).is_some_and(|s| s == self.start)
    }
}

/// A new staging path for `target`, owned by operation `op` of this process.
pub(crate) fn path_for(target: &Path, op: u64) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    target.with_file_name(format!(
        ".{name}{MARK}{}~{}",
        Owner::of(op).token(),
        &rand[..8]
    ))
}

/// `path` with `suffix` appended to its last component.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An entry beside a target that Berth made for it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: PathBuf,
    /// `None` for names this version cannot read an owner from.
    pub owner: Option<Owner>,
    /// The suffix after the staging name: "", [`ASIDE`], [`JOURNAL`], [`SCRATCH`]...
    pub suffix: String,
}

impl Entry {
    pub fn is_dead(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| !o.is_alive(&self.path))
    }
}

/// Parses `file_name` as a staging entry of the target named `target`.
pub(crate) fn parse(dir: &Path, target: &str, file_name: &str) -> Option<Entry> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(target)?;
    let rest = rest.strip_prefix(MARK)?;
    let (token, rest) = rest.split_once('~')?;
    let suffix = match rest.rfind('~') {
        Some(i) => rest[i..].to_owned(),
        None => String::new(),
    };
    Some(Entry {
        path: dir.join(file_name),
        owner: Owner::parse(token),
        suffix,
    })
}

/// The target name of a staging entry's file name (for recovery of a whole directory).
pub(crate) fn target_of(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix('.')?;
    rest.find(MARK)
        .map(|i| &rest[..i])
        .filter(|t| !t.is_empty())
}

/// Paths this process removes in the background; their owner is alive until done.
static REMOVING: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

fn being_removed(path: &Path) -> bool {
    REMOVING.lock().is_ok_and(|r| r.contains(path))
}

/// Removes `path` (blocking), marked as alive meanwhile so no cleanup races with it.
pub(crate) fn remove_owned(path: &Path) -> std::io::Result<()> {
    if let Ok(mut r) = REMOVING.lock() {
        r.insert(path.to_owned());
    }
    let result = match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    if let Ok(mut r) = REMOVING.lock() {
        r.remove(path);
    }
    result
}

/// Process `pid`'s start time (clock ticks after boot), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields restart after the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().replace('-', "")[..8.min(b.trim().len())].to_owned())
        .unwrap_or_else(|_| "noboot".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Operation, Resource};

    #[test]
    fn dotted_app_names_get_staging_names_of_their_own() {
        let root = Path::new("/apps");
        let org = path_for(&root.join("wiki.example.org"), 7);
        let com = path_for(&root.join("wiki.example.com"), 7);
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name(&org).starts_with(".wiki.example.org~berth~"),
            "{org:?}"
        );
        assert!(
            name(&com).starts_with(".wiki.example.com~berth~"),
            "{com:?}"
        );
        for suffix in ["", ASIDE, JOURNAL, SCRATCH] {
            assert_ne!(with_suffix(&org, suffix), with_suffix(&com, suffix));
        }
        assert!(name(&with_suffix(&org, ASIDE)).starts_with(".wiki.example.org~"));
        // Each entry parses back to its own target only.
        let e = parse(root, "wiki.example.org", &name(&org)).unwrap();
        assert_eq!(e.owner, Some(Owner::of(7)));
        assert!(parse(root, "wiki.example.com", &name(&org)).is_none());
        assert!(parse(root, "wiki.example", &name(&org)).is_none());
        assert_eq!(target_of(&name(&org)), Some("wiki.example.org"));
        let aside = parse(root, "wiki.example.org", &name(&with_suffix(&org, ASIDE))).unwrap();
        assert_eq!(aside.suffix, ASIDE);
    }

    #[test]
    fn an_entry_of_a_live_operation_is_alive_and_of_a_finished_one_dead() {
        let op = Operation::new("warm_restore", "stack st1");
        let held = lock::try_acquire(&op, &[Resource::Stack("st1".into())]).unwrap();
        let p = path_for(Path::new("/v/_data"), op.id());
        let e = parse(
            Path::new("/v"),
            "_data",
            &p.file_name().unwrap().to_string_lossy(),
        )
        .unwrap();
        assert!(!e.is_dead());
        drop(held);
        assert!(e.is_dead());
    }

    #[test]
    fn another_live_process_is_alive_and_a_gone_one_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let other = Owner {
            pid: child.id(),
            start: start_time(child.id()).unwrap(),
            boot: ME.2.clone(),
            op: 1,
        };
        let path = Path::new("/nowhere");
        assert!(other.is_alive(path));
        let reused = Owner {
            start: other.start + 1,
            ..other.clone()
        };
        assert!(!reused.is_alive(path), "a pid reused by a later process");
        let rebooted = Owner {
            boot: "elsewhen".into(),
            ..other.clone()
        };
        assert!(!rebooted.is_alive(path));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!other.is_alive(path));
    }
}
