//! App archives end to end: an agent archives into `file://`, `memory://` or the real S3
//! server; the coordinator's catalog lists (by app and by label), gets, links (a presigned URL
//! downloads the same bytes, and expires), prunes and deletes; an agent restores under a new
//! name and the trees match. Archives written in the Go node API's layout work the same way.
//! The upload sweep aborts orphaned multipart uploads (`sweep.rs`); tiered retention through
//! the service and the CLI (`retention.rs`). A verify catches a flipped byte, labels the
//! archive and keeps retention off it (`verify.rs`).

mod catalog;
mod e2e;
mod grpc;
mod retention;
mod sweep;
mod verify;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use berth_agent::archive::{
    ArchiveConfig as AgentArchiveConfig, ArchiveProgress, Archiver, CreateInput, CreateOutput,
    RestoreInput,
};
use berth_coordinator::archive::{ArchiveConfig as CoordArchiveConfig, Catalog, ListQuery};
use berth_shared::AppName;
use berth_tests::s3::S3Server;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    File,
    Memory,
    S3,
}

pub const ALL: [Backend; 3] = [Backend::File, Backend::Memory, Backend::S3];

/// An agent's archiver and a coordinator's catalog over the same store.
pub struct Both {
    pub agent: Archiver,
    pub catalog: Catalog,
    pub raw: Arc<dyn ObjectStore>,
    pub apps: TempDir,
    pub s3: Option<S3Server>,
    _dir: Option<TempDir>,
    /// The agent's `state_dir` (its upload journal).
    _state: TempDir,
}

pub async fn both(backend: Backend) -> Both {
    let apps = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    match backend {
        Backend::File => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("file://{}/archives", dir.path().display());
            let agent = Archiver::new(AgentArchiveConfig::for_url(&url), apps.path(), state.path())
                .unwrap();
            let catalog = Catalog::open(CoordArchiveConfig::for_url(&url)).unwrap();
            let raw =
                Arc::new(LocalFileSystem::new_with_prefix(dir.path().join("archives")).unwrap());
            Both {
                agent,
                catalog,
                raw,
                apps,
                s3: None,
                _dir: Some(dir),
                _state: state,
            }
        }
        Backend::Memory => {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let agent = Archiver::with_store(
                AgentArchiveConfig::for_url("memory://"),
                apps.path(),
                store.clone(),
            );
            let catalog =
                Catalog::with_store(CoordArchiveConfig::for_url("memory://"), store.clone());
            Both {
                agent,
                catalog,
                raw: store,
                apps,
                s3: None,
                _dir: None,
                _state: state,
            }
        }
        Backend::S3 => {
            let s3 = S3Server::start().await;
            let agent = Archiver::new(s3.agent_config("prod"), apps.path(), state.path()).unwrap();
            let catalog = Catalog::open(s3.coordinator_config("prod")).unwrap();
            let raw = s3.client("prod");
            Both {
                agent,
                catalog,
                raw,
                apps,
                s3: Some(s3),
                _dir: None,
                _state: state,
            }
        }
    }
}

impl Both {
    pub fn dir(&self, app: &str) -> std::path::PathBuf {
        self.apps.path().join(app)
    }

    pub async fn create(&self, app: &str, labels: &[&str], index: &str) -> CreateOutput {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        let input = CreateInput {
            app: app.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            index_label: index.into(),
            ..Default::default()
        };
        self.agent
            .create(input, &progress, &CancellationToken::new())
            .await
            .unwrap()
    }

    pub async fn restore(&self, uuid: &str, target: &str) {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        let input = RestoreInput {
            uuid: uuid.into(),
            target_app: Some(target.into()),
            ..Default::default()
        };
        self.agent
            .restore(input, &progress, &CancellationToken::new())
            .await
            .unwrap();
    }

    pub async fn list(&self, apps: &[&str], index: Option<&str>) -> Vec<String> {
        let query = ListQuery {
            apps: apps.iter().map(|a| AppName::new(*a).unwrap()).collect(),
            index: index.map(str::to_owned),
        };
        let entries = self.catalog.list(&query).await.unwrap();
        entries.iter().map(|e| e.key.id().to_string()).collect()
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("GNU coreutils, findutils, diffutils, tar and zstd are needed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small app: owners, modes, a hard link, symlinks, bytes that do not compress.
pub fn build_app(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data/private")).unwrap();
    std::fs::write(dir.join("README.md"), "hello\n".repeat(1000)).unwrap();
    std::fs::write(dir.join("bin/run.sh"), "#!/bin/sh\n").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("data/private/blob"), noise).unwrap();
    std::fs::write(dir.join(".chowned"), "").unwrap();
    std::fs::hard_link(dir.join("README.md"), dir.join("data/readme-again")).unwrap();
    std::os::unix::fs::symlink("../README.md", dir.join("bin/readme")).unwrap();
    for (path, mode, owner) in [
        ("bin/run.sh", "755", "0:0"),
        ("data/private", "700", "70:70"),
        ("data/private/blob", "600", "70:70"),
        ("README.md", "644", "1000:1000"),
    ] {
        run(Command::new("chmod").arg(mode).arg(dir.join(path)));
        run(Command::new("chown").arg(owner).arg(dir.join(path)));
    }
    run(Command::new("chown")
        .args(["-h", "1000:1000"])
        .arg(dir.join("bin/readme")));
    run(Command::new("find").arg(dir).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        "@1600000000",
        "{}",
        "+",
    ]));
}

/// Every entry with its type, mode, owner, group, mtime, link target and link count.
fn listing(dir: &Path) -> String {
    let out = run(Command::new("find")
        .arg(".")
        .args(["-printf", "%P|%y|%m|%U|%G|%T@|%l|%n\n"])
        .current_dir(dir));
    let mut lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(".chowned|"))
        .collect();
    lines.sort();
    lines.join("\n")
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(listing(a), listing(b));
    run(Command::new("diff")
        .args(["-r", "--no-dereference", "-x", ".chowned"])
        .arg(a)
        .arg(b));
    assert!(
        !b.join(".chowned").exists(),
        "the .chowned marker is removed on restore"
    );
}
