//! One operation per stack, whatever its kind, against the real Docker engine: a second
//! operation waits (its phase saying for what) or is refused naming the holder; a restore's
//! cleanup never removes a live restore's staging; a swap cut between its two renames (the
//! real `berth-warm` binary aborted there) is rolled back at start and before a restore.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_agent::archive::{ArchiveProgress, CreateInput, RestoreInput};
use berth_agent::warm::{Progress, RestoreRequest, SnapshotRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::archive::{Backend, Env, chain};
use crate::env::{Labels, TestStack, require_docker_as_root, warm};
use crate::tree::{assert_same, fill, reference};
use crate::warm::{go, restore_req, snapshot_req};
use crate::warm_interrupt::{berth_warm, fill_with, holds, kill, staging_dirs, until};

fn empty(mp: &Path) {
    for e in fs::read_dir(mp).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

/// Empties `mp` and fills it with the tree of `seed`.
fn refill(mp: &Path, seed: u8) {
    empty(mp);
    fill(mp, seed);
}

/// A tree a volume archive takes (no links leaving it): `seed` varies names and contents.
fn plain(root: &Path, seed: u8) {
    fs::create_dir_all(root.join(format!("d{seed}/e"))).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("common"), vec![seed; 4096]).unwrap();
    fs::write(root.join(format!("d{seed}/e/only-{seed}")), [seed; 3]).unwrap();
    std::os::unix::fs::symlink(format!("d{seed}"), root.join("link")).unwrap();
}

fn replain(root: &Path, seed: u8) {
    empty(root);
    plain(root, seed);
}

/// Every path under `root` with its contents (files) or target (links).
fn listing(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p);
                "dir".into()
            } else {
                format!("{:?}", fs::read(&p).unwrap())
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// `mp` holds exactly the plain tree of `seed`.
fn assert_plain(mp: &Path, seed: u8) {
    let want = tempfile::tempdir().unwrap();
    plain(want.path(), seed);
    assert_eq!(
        listing(mp),
        listing(want.path()),
        "{} against seed {seed}",
        mp.display()
    );
}

/// A restore that waits (up to a minute) for the stack to be undeployed: it holds the
/// stack's lock while a container runs, until the test removes the container.
fn patient_restore(stack: &TestStack, app: &str) -> RestoreRequest {
    RestoreRequest {
        wait_undeployed: Duration::from_secs(60),
        ..restore_req(stack, app)
    }
}

fn phase(p: &Progress) -> String {
    p.snapshot().phase
}

#[tokio::test]
async fn a_warm_snapshot_waits_for_a_warm_restore_of_its_stack_saying_for_what() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("lw");
    let one = stack.volume("one", Labels::Swarm);
    let two = stack.volume("two", Labels::Swarm);
    fill(&one, 1);
    fill(&two, 2);
    // Two apps of one stack (e.g. a CI app and an operator's): their warm folders differ.
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "lw-a"), p, c)
        .await
        .unwrap();
    refill(&one, 3);
    refill(&two, 4);
    let running = stack.container("app", "one");

    let restore_progress = Arc::new(Progress::new());
    let restore = {
        let (w, req, p) = (
            w.clone(),
            patient_restore(&stack, "lw-a"),
            restore_progress.clone(),
        );
        tokio::spawn(async move { w.restore(&req, p, CancellationToken::new()).await })
    };
    until("the restore holding the stack", || {
        phase(&restore_progress) == "checking that the app is undeployed"
    })
    .await;
    let snapshot_progress = Arc::new(Progress::new());
    let snapshot = {
        let req = SnapshotRequest {
            wait_undeployed: Duration::from_secs(60),
            ..snapshot_req(&stack, "lw-b")
        };
        let (w, p) = (w.clone(), snapshot_progress.clone());
        tokio::spawn(async move { w.snapshot(&req, p, CancellationToken::new()).await })
    };
    let waiting = format!("waiting for warm_restore of stack {}", stack.name);
    until("the snapshot waiting for the restore", || {
        phase(&snapshot_progress) == waiting
    })
    .await;
    stack.remove_container(&running);
    restore.await.unwrap().unwrap();
    snapshot.await.unwrap().unwrap();
    w.finish_cleanup().await;
    assert_same(&one, reference(1).path(), true);
    assert_same(&two, reference(2).path(), true);

    // The snapshot taken after the restore holds exactly what the restore put back.
    refill(&one, 5);
    refill(&two, 6);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "lw-b"), p, c).await.unwrap();
    w.finish_cleanup().await;
    assert_same(&one, reference(1).path(), true);
    assert_same(&two, reference(2).path(), true);
}

#[tokio::test]
async fn an_archive_restore_is_refused_naming_the_warm_restore_holding_its_stack() {
    require_docker_as_root().await;
    let env = Env::new(Backend::File).await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("la");
    let one = stack.volume("one", Labels::Swarm);
    let two = stack.volume("two", Labels::Swarm);
    // The warm snapshot holds trees 1 and 2; the volume archive trees 7 and 8.
    plain(&one, 1);
    plain(&two, 2);
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "la"), p, c).await.unwrap();
    replain(&one, 7);
    replain(&two, 8);
    let archived = env
        .create(CreateInput {
            app: "la".into(),
            stack: Some(stack.name.clone()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {}", chain(&e)));
    replain(&one, 3);
    replain(&two, 4);
    let running = stack.container("app", "one");

    let restore_progress = Arc::new(Progress::new());
    let restore = {
        let (w, req, p) = (
            w.clone(),
            patient_restore(&stack, "la"),
            restore_progress.clone(),
        );
        tokio::spawn(async move { w.restore(&req, p, CancellationToken::new()).await })
    };
    until("the warm restore holding the stack", || {
        phase(&restore_progress) == "checking that the app is undeployed"
    })
    .await;
    let stack_name = stack.name.clone();
    let archive_restore = || async {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        env.archiver
            .restore(
                RestoreInput {
                    uuid: archived.uuid.clone(),
                    stack: Some(stack_name.clone()),
                    ..Default::default()
                },
                &progress,
                &CancellationToken::new(),
            )
            .await
    };
    let refused = archive_restore().await.unwrap_err();
    let shown = chain(&refused);
    assert!(
        shown.contains(&format!(
            "stack {} is busy: warm_restore of stack {}",
            stack.name, stack.name
        )),
        "{shown}"
    );
    stack.remove_container(&running);
    restore.await.unwrap().unwrap();
    w.finish_cleanup().await;
    assert_plain(&one, 1);
    assert_plain(&two, 2);

    // Once the warm restore is done, the archive restore runs and wins whole.
    archive_restore()
        .await
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    assert_plain(&one, 7);
    assert_plain(&two, 8);
    for mp in [&one, &two] {
        assert!(staging_dirs(mp).is_empty(), "{:?}", staging_dirs(mp));
    }
}

#[tokio::test]
async fn a_restore_never_removes_the_staging_of_a_live_restore_in_another_process() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("ls");
    let one = stack.volume("one", Labels::Swarm);
    fill_with(&one, b'N');
    // Two apps whose snapshots hold the same contents, restored by two processes at once.
    for app in ["ls-a", "ls-b"] {
        let (p, c) = go();
        w.snapshot(&snapshot_req(&stack, app), p, c).await.unwrap();
    }
    fill_with(&one, b'O');
    let child = berth_warm("restore", root.path(), &stack, "ls-a");
    until("the other process extracting", || {
        staging_dirs(&one)
            .iter()
            .any(|s| fs::read_dir(s.join("data")).is_ok_and(|mut d| d.next().is_some()))
    })
    .await;
    // This restore's cleanup runs while the other process stages: it must leave that alone.
    let (p, c) = go();
    w.restore(&restore_req(&stack, "ls-b"), p, c).await.unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the other restore failed: {out:?}");
    w.finish_cleanup().await;
    assert_eq!(holds(&one), Ok(b'N'));

    // A restore killed mid-way: its staging has a dead owner and the next restore removes it.
    fill_with(&one, b'O');
    let child = berth_warm("restore", root.path(), &stack, "ls-a");
    until("the child extracting", || {
        staging_dirs(&one)
            .iter()
            .any(|s| fs::read_dir(s.join("data")).is_ok_and(|mut d| d.next().is_some()))
    })
    .await;
    kill(child);
    assert!(!staging_dirs(&one).is_empty());
    let (p, c) = go();
    w.restore(&restore_req(&stack, "ls-b"), p, c).await.unwrap();
    w.finish_cleanup().await;
    assert_eq!(holds(&one), Ok(b'N'));
    assert!(staging_dirs(&one).is_empty(), "{:?}", staging_dirs(&one));
}

/// `berth-warm restore` with its swaps cut after the first rename: it aborts there.
fn cut_restore(root: &Path, stack: &TestStack, app: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_berth-warm"))
        .args([
            "restore",
            "--warm-root",
            &root.to_string_lossy(),
            "--app",
            app,
        ])
        .args(["--stack", &stack.name])
        .env("BERTH_AGENT_TEST_CUT_SWAP", "after_first_rename")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the restore was cut");
}

fn parent(mp: &Path) -> PathBuf {
    mp.parent().unwrap().to_owned()
}

#[tokio::test]
async fn a_swap_cut_between_its_renames_is_rolled_back_at_start_and_before_a_restore() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("lc");
    let one = stack.volume("one", Labels::Swarm);
    let two = stack.volume("two", Labels::Swarm);
    fill(&one, 1);
    fill(&two, 2);
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "lc"), p, c).await.unwrap();
    refill(&one, 3);
    refill(&two, 4);

    // Cut, then the agent's start hook: every volume wholly old, nothing left beside it.
    cut_restore(root.path(), &stack, "lc");
    assert!(
        !one.exists() || !two.exists(),
        "one volume's mountpoint was renamed aside when the process died"
    );
    berth_agent::volume::recover_dirs(vec![parent(&one), parent(&two)]).await;
    assert_same(&one, reference(3).path(), true);
    assert_same(&two, reference(4).path(), true);
    for mp in [&one, &two] {
        assert!(staging_dirs(mp).is_empty(), "{:?}", staging_dirs(mp));
    }

    // Cut again, then a restore: it rolls the cut back first, then restores whole.
    cut_restore(root.path(), &stack, "lc");
    let (p, c) = go();
    w.restore(&restore_req(&stack, "lc"), p, c).await.unwrap();
    w.finish_cleanup().await;
    assert_same(&one, reference(1).path(), true);
    assert_same(&two, reference(2).path(), true);
    for mp in [&one, &two] {
        assert!(staging_dirs(mp).is_empty(), "{:?}", staging_dirs(mp));
    }
}
