//! Interrupted warm snapshots and restores: cancelled mid-way, killed with SIGKILL
//! (`berth-warm` as a child process), or leftovers of a run killed earlier. A snapshot never
//! damages the previous one; a restore leaves each volume wholly old or wholly new.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent::warm::{Progress, WarmError};
use tokio_util::sync::CancellationToken;

use crate::env::{Labels, TestStack, require_docker_as_root, warm};
use crate::tree::MIB;
use crate::warm::{go, restore_req, snapshot_req};

const FILES: usize = 384;

/// `FILES` files of 1 MiB, every byte `byte`.
pub fn fill_with(mp: &Path, byte: u8) {
    let data = vec![byte; MIB as usize];
    fs::create_dir_all(mp.join("data")).unwrap();
    for i in 0..FILES {
        fs::write(mp.join(format!("data/{i:04}")), &data).unwrap();
    }
}

/// Which single byte every file holds, or a description of the mix.
pub fn holds(mp: &Path) -> Result<u8, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut count = 0;
    for e in fs::read_dir(mp.join("data")).map_err(|e| e.to_string())? {
        let data = fs::read(e.unwrap().path()).unwrap();
        if data.len() != MIB as usize {
            return Err(format!("a file of {} bytes", data.len()));
        }
        seen.insert(data[0]);
        seen.insert(data[data.len() - 1]);
        count += 1;
    }
    match (seen.len(), count) {
        (1, FILES) => Ok(*seen.first().unwrap()),
        _ => Err(format!("{count} files holding {seen:?}")),
    }
}

/// Polls `done` every 2 ms for up to 30 s.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not happen in time"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn berth_warm(op: &str, root: &Path, stack: &TestStack, app: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth-warm"))
        .args([
            op,
            "--warm-root",
            &root.to_string_lossy(),
            "--app",
            app,
            "--stack",
            &stack.name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth-warm runs")
}

pub fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn staging_tar_started(root: &Path, app: &str) -> bool {
    let dir = root.join(app).join(".snapshot.staging/volumes");
    fs::read_dir(dir).is_ok_and(|mut d| d.any(|e| e.unwrap().metadata().unwrap().len() > 0))
}

pub fn staging_dirs(mp: &Path) -> Vec<PathBuf> {
    fs::read_dir(mp.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "_data")
        .collect()
}

#[tokio::test]
async fn an_interrupted_snapshot_leaves_the_previous_one_intact_and_usable() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("db", Labels::Swarm);
    fill_with(&mp, b'A');
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "cut"), p, c)
        .await
        .unwrap();
    let meta = root.path().join("cut/snapshot/meta.json");
    let first = fs::read(&meta).unwrap();
    fill_with(&mp, b'B');

    // Cancelled while tarring.
    let (progress, cancel) = (Arc::new(Progress::new()), CancellationToken::new());
    let watcher = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::spawn(async move {
            until("tarring", || progress.snapshot().bytes_done > 0).await;
            cancel.cancel();
        })
    };
    let err = w
        .snapshot(&snapshot_req(&stack, "cut"), progress.clone(), cancel)
        .await
        .unwrap_err();
    watcher.await.unwrap();
    assert!(matches!(err, WarmError::Cancelled), "{err}");
    assert!(progress.snapshot().bytes_done < progress.snapshot().bytes_total);
    assert_eq!(fs::read(&meta).unwrap(), first);
    assert!(!root.path().join("cut/.snapshot.staging").exists());

    // Killed while tarring: the staging dir stays behind, the snapshot is untouched.
    let child = berth_warm("snapshot", root.path(), &stack, "cut");
    until("the child tarring", || {
        staging_tar_started(root.path(), "cut")
    })
    .await;
    kill(child);
    assert!(root.path().join("cut/.snapshot.staging").exists());
    assert_eq!(fs::read(&meta).unwrap(), first);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "cut"), p, c).await.unwrap();
    assert_eq!(holds(&mp), Ok(b'A'), "the previous snapshot restores");

    // A swap cut between its two renames: no snapshot/, the previous one in .snapshot.old.
    fs::rename(
        root.path().join("cut/snapshot"),
        root.path().join("cut/.snapshot.old"),
    )
    .unwrap();
    fill_with(&mp, b'C');
    let (p, c) = go();
    w.restore(&restore_req(&stack, "cut"), p, c).await.unwrap();
    assert_eq!(holds(&mp), Ok(b'A'));
    assert_eq!(fs::read(&meta).unwrap(), first);

    // The next snapshot cleans up and succeeds.
    fs::create_dir_all(root.path().join("cut/.snapshot.staging/volumes")).unwrap();
    fs::write(
        root.path().join("cut/.snapshot.staging/volumes/junk.tar"),
        "junk",
    )
    .unwrap();
    fill_with(&mp, b'D');
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "cut"), p, c)
        .await
        .unwrap();
    let names: Vec<_> = fs::read_dir(root.path().join("cut"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["snapshot"]);
    fill_with(&mp, b'E');
    let (p, c) = go();
    w.restore(&restore_req(&stack, "cut"), p, c).await.unwrap();
    assert_eq!(holds(&mp), Ok(b'D'));
}

#[tokio::test]
async fn an_interrupted_restore_leaves_each_volume_wholly_old_or_wholly_new() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let one = stack.volume("one", Labels::Swarm);
    let two = stack.volume("two", Labels::Swarm);
    fill_with(&one, b'N');
    fill_with(&two, b'N');
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "rs"), p, c).await.unwrap();
    fill_with(&one, b'O');
    fill_with(&two, b'O');
    fs::write(one.join("only-old"), "old").unwrap();

    // Cancelled while extracting: both volumes wholly old, no staging left.
    let (progress, cancel) = (Arc::new(Progress::new()), CancellationToken::new());
    let watcher = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::spawn(async move {
            until("extracting", || progress.snapshot().bytes_done > 0).await;
            cancel.cancel();
        })
    };
    let err = w
        .restore(&restore_req(&stack, "rs"), progress, cancel)
        .await
        .unwrap_err();
    watcher.await.unwrap();
    assert!(matches!(err, WarmError::Cancelled), "{err}");
    for mp in [&one, &two] {
        assert_eq!(holds(mp), Ok(b'O'));
        assert!(staging_dirs(mp).is_empty(), "{:?}", staging_dirs(mp));
    }
    assert!(one.join("only-old").exists());

    // Killed while extracting: each volume wholly old or wholly new, never mixed.
    let child = berth_warm("restore", root.path(), &stack, "rs");
    until("the child extracting", || {
        [&one, &two].iter().any(|mp| {
            staging_dirs(mp)
                .iter()
                .any(|s| fs::read_dir(s.join("data")).is_ok_and(|mut d| d.next().is_some()))
        })
    })
    .await;
    kill(child);
    for mp in [&one, &two] {
        let state = holds(mp);
        assert!(
            state == Ok(b'O') || state == Ok(b'N'),
            "{}: {state:?}",
            mp.display()
        );
        assert_eq!(
            mp.join("only-old").exists(),
            state == Ok(b'O') && mp == &one
        );
    }
    // The next restore cleans the leftovers and completes.
    let (p, c) = go();
    w.restore(&restore_req(&stack, "rs"), p, c).await.unwrap();
    w.finish_cleanup().await;
    for mp in [&one, &two] {
        assert_eq!(holds(mp), Ok(b'N'));
        assert!(staging_dirs(mp).is_empty());
    }
    assert!(!one.join("only-old").exists());
}
