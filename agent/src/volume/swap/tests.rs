//! Swaps cut between their two renames, and the repair that follows.

use super::*;
use crate::volume::lock::{self, Operation, Resource};

/// `<root>/vol/_data` holding `old`, and a synced staging dir beside it holding `new`,
/// owned by operation `op`.
fn setup(root: &Path, op: u64) -> (PathBuf, PathBuf) {
    let target = root.join("vol").join("_data");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("f"), "old").unwrap();
    fs::write(target.join("only-old"), "x").unwrap();
    let staging = staging::path_for(&target, op);
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("f"), "new").unwrap();
    (target, staging)
}

fn holds(target: &Path) -> String {
    let f = fs::read_to_string(target.join("f")).unwrap();
    assert_eq!(target.join("only-old").exists(), f == "old", "wholly {f}");
    f
}

fn beside(target: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An operation id no live operation has: its entries are dead.
fn dead_op() -> u64 {
    Operation::new("warm_restore", "stack gone").id()
}

#[test]
fn a_swap_with_two_renames_leaves_the_old_contents_aside_and_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (target, staging) = setup(dir.path(), dead_op());
    let Swapped::Done { old } = swap_with(&target, &staging, TestCut::TwoRenames).unwrap() else {
        panic!("swapped")
    };
    assert_eq!(holds(&target), "new");
    assert_eq!(fs::read_to_string(old.join("f")).unwrap(), "old");
    assert!(!staging::with_suffix(&staging, JOURNAL).exists());
    repair(&target).unwrap();
    assert_eq!(beside(&target), ["_data"], "the dead aside is removed");
}

#[test]
fn an_exchange_swap_leaves_the_old_contents_at_the_staging_path() {
    let dir = tempfile::tempdir().unwrap();
    let (target, staging) = setup(dir.path(), dead_op());
    let Swapped::Done { old } = swap_with(&target, &staging, TestCut::Off).unwrap() else {
        panic!("swapped")
    };
    assert_eq!(holds(&target), "new");
    assert_eq!(holds(&old), "old");
}

#[test]
fn a_swap_cut_between_its_renames_is_rolled_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (target, staging) = setup(dir.path(), dead_op());
    let e = swap_with(&target, &staging, TestCut::StopAfterFirstRename).unwrap_err();
    assert!(matches!(e, VolumeError::CutForTest { .. }), "{e}");
    assert!(!target.exists(), "cut after the first rename");
    let journal: Journal =
        serde_json::from_slice(&fs::read(staging::with_suffix(&staging, JOURNAL)).unwrap())
            .unwrap();
    assert_eq!(journal.target, target);
    assert!(journal.staging_synced);
    repair(&target).unwrap();
    assert_eq!(holds(&target), "old");
    assert_eq!(beside(&target), ["_data"]);
}

#[test]
fn recovery_at_start_rolls_back_every_cut_swap_of_a_dir() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    let mut targets = Vec::new();
    for app in ["wiki.example.org", "wiki.example.com"] {
        let target = apps.join(app);
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("f"), "old").unwrap();
        fs::write(target.join("only-old"), "x").unwrap();
        let staging = staging::path_for(&target, dead_op());
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("f"), "new").unwrap();
        swap_with(&target, &staging, TestCut::StopAfterFirstRename).unwrap_err();
        targets.push(target);
    }
    recover_dir(&apps).unwrap();
    for t in &targets {
        assert_eq!(holds(t), "old");
    }
    let mut left: Vec<_> = fs::read_dir(&apps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["wiki.example.com", "wiki.example.org"]);
}

#[test]
fn a_cut_swap_whose_previous_contents_are_gone_is_finished_from_its_synced_staging() {
    let dir = tempfile::tempdir().unwrap();
    let (target, staging) = setup(dir.path(), dead_op());
    swap_with(&target, &staging, TestCut::StopAfterFirstRename).unwrap_err();
    fs::remove_dir_all(staging::with_suffix(&staging, ASIDE)).unwrap();
    repair(&target).unwrap();
    assert_eq!(holds(&target), "new");
    assert_eq!(beside(&target), ["_data"]);
}

#[test]
fn a_cut_swap_of_a_live_operation_is_left_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operation::new("warm_restore", "stack live1");
    let held = lock::try_acquire(&op, &[Resource::Stack("live1".into())]).unwrap();
    let (target, staging) = setup(dir.path(), op.id());
    swap_with(&target, &staging, TestCut::StopAfterFirstRename).unwrap_err();
    let before = beside(&target);
    repair(&target).unwrap();
    assert_eq!(beside(&target), before, "nothing of a live swap is touched");
    drop(held);
    repair(&target).unwrap();
    assert_eq!(holds(&target), "old");
}

#[test]
fn repair_removes_dead_staging_and_keeps_live_staging() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operation::new("archive_restore", "stack live2");
    let _held = lock::try_acquire(&op, &[Resource::Stack("live2".into())]).unwrap();
    let (target, live) = setup(dir.path(), op.id());
    let dead = staging::path_for(&target, dead_op());
    fs::create_dir(&dead).unwrap();
    let legacy = target.with_file_name("_data.berth-restore-0123456789ab");
    fs::create_dir(&legacy).unwrap();
    repair(&target).unwrap();
    assert!(live.exists(), "a live operation's staging stays");
    assert!(!dead.exists(), "a dead operation's staging goes");
    assert!(legacy.exists(), "an owner that cannot be told stays");
    assert_eq!(holds(&target), "old");
}

#[test]
fn a_cut_swap_of_an_earlier_agent_version_is_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("_data");
    let aside = dir.path().join("_data.berth-restore-0123456789ab.old");
    fs::create_dir(&aside).unwrap();
    fs::write(aside.join("f"), "old").unwrap();
    repair(&target).unwrap();
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "old");
}

#[test]
fn the_test_knob_reads_its_values() {
    assert_eq!(
        TestCut::parse("after_first_rename"),
        Some(TestCut::AbortAfterFirstRename)
    );
    assert_eq!(TestCut::parse("two_renames"), Some(TestCut::TwoRenames));
    assert_eq!(TestCut::parse(""), Some(TestCut::Off));
    assert_eq!(TestCut::parse("sometimes"), None);
}
