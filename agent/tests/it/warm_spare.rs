//! Ready spares against the real Docker engine: a restore swaps them in and the volumes equal
//! the snapshot exactly; a restore while one is building, or after a newer snapshot, takes
//! the usual path and is still exact; spares are rebuilt after a restore; `--no-spare` and the
//! disk floor are honoured; on XFS with reflink a spare costs metadata, not data.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_agent::warm::{AppTarget, RestoreMethod, SnapshotRequest, Spares, Warm, WarmConfig};
use tokio_util::sync::CancellationToken;

use crate::env::{Labels, TestStack, require_docker_as_root, run, warm};
use crate::tree::{assert_same, fill, mutate, reference};
use crate::warm::{go, restore_req, snapshot_req};

/// A warm root with a spare builder (no rate bound, no floor unless given).
struct Rig {
    root: tempfile::TempDir,
    spares: Spares,
    warm: Warm,
    _stop: tokio_util::sync::DropGuard,
}

async fn rig(config: WarmConfig) -> Rig {
    let root = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let spares = Spares::start(root.path().to_owned(), config, stop.clone());
    let warm = warm(root.path()).await.with_spares(spares.clone());
    Rig {
        root,
        spares,
        warm,
        _stop: stop.drop_guard(),
    }
}

fn unbounded() -> WarmConfig {
    WarmConfig {
        spares: true,
        spare_min_free_bytes: 0,
        spare_max_mib_per_sec: 0,
    }
}

/// Waits until `app`'s spare state satisfies `ok`; returns it.
async fn spare_state(spares: &Spares, app: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = spares.state(app).unwrap_or_default();
        if ok(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{app}'s spare is still {state:?} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spare_of(mountpoint: &Path) -> PathBuf {
    mountpoint.with_file_name("_data.berth-spare")
}

/// Entries beside a volume's `_data`, sorted.
fn beside(mountpoint: &Path) -> Vec<String> {
    crate::tree::names(mountpoint.parent().unwrap())
}

#[tokio::test]
async fn a_restore_swaps_in_ready_spares_and_the_volumes_equal_the_snapshot_exactly() {
    require_docker_as_root().await;
    let r = rig(unbounded()).await;
    let mut stack = TestStack::new("sp");
    let db = stack.volume("db", Labels::Swarm);
    let files = stack.volume("files", Labels::Swarm);
    fill(&db, 1);
    fill(&files, 2);
    let (ref_db, ref_files) = (reference(1), reference(2));
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "spa"), p, c)
        .await
        .unwrap();
    spare_state(&r.spares, "spa", |s| s == "ready").await;
    for m in [&db, &files] {
        assert_eq!(
            beside(m),
            ["_data", "_data.berth-spare", "_data.berth-spare.json"],
            "a spare and its stamp beside the volume, nothing else"
        );
        assert_same(
            &spare_of(m),
            if *m == db {
                ref_db.path()
            } else {
                ref_files.path()
            },
            true,
        );
    }

    mutate(&db);
    mutate(&files);
    let (p, c) = go();
    let out = r
        .warm
        .restore(&restore_req(&stack, "spa"), p.clone(), c)
        .await
        .unwrap();
    assert_eq!(out.volumes.len(), 2);
    for v in &out.volumes {
        assert_eq!(v.method, RestoreMethod::Spare, "{out:?}");
        assert!(v.swap_us.is_some_and(|us| us < 5_000_000), "{out:?}");
        assert!(v.spare_age_secs.is_some(), "{out:?}");
    }
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["volumes"][0]["method"], "spare", "{json}");
    assert!(out.bytes > 300_000 && out.entries > 10, "{out:?}");
    let seen = p.snapshot();
    assert_eq!(seen.bytes_total, out.bytes, "progress carries the totals");
    assert_same(&db, ref_db.path(), true);
    assert_same(&files, ref_files.path(), true);

    // The next spare is rebuilt, and the one after restores exactly too.
    spare_state(&r.spares, "spa", |s| s == "ready").await;
    assert_same(&spare_of(&db), ref_db.path(), true);
    fs::write(db.join(".env"), "changed").unwrap();
    let (p, c) = go();
    let out = r
        .warm
        .restore(&restore_req(&stack, "spa"), p, c)
        .await
        .unwrap();
    assert!(out.volumes.iter().all(|v| v.method == RestoreMethod::Spare));
    assert_same(&db, ref_db.path(), true);
    r.warm.finish_cleanup().await;
}

#[tokio::test]
async fn a_restore_while_the_spare_is_building_takes_the_usual_path_and_is_exact() {
    require_docker_as_root().await;
    // 1 MiB/s: the build of ~1 MiB of data plus a sparse file's regions takes seconds.
    let r = rig(WarmConfig {
        spare_max_mib_per_sec: 1,
        ..unbounded()
    })
    .await;
    let mut stack = TestStack::new("sb");
    let db = stack.volume("db", Labels::Swarm);
    fill(&db, 3);
    fs::write(db.join("bulk.bin"), vec![9u8; 4 << 20]).unwrap();
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "spb"), p, c)
        .await
        .unwrap();
    let state = spare_state(&r.spares, "spb", |s| s.starts_with("building")).await;
    assert!(state.starts_with("building"), "{state}");
    let snapshot_tree = tempfile::tempdir().unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", db.display()),
            &snapshot_tree.path().display().to_string(),
        ],
    );

    mutate(&db);
    let (p, c) = go();
    let started = Instant::now();
    let out = r
        .warm
        .restore(&restore_req(&stack, "spb"), p, c)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the build gave way instead of finishing first"
    );
    assert_eq!(out.volumes[0].method, RestoreMethod::Swap, "{out:?}");
    assert_same(&db, snapshot_tree.path(), true);
    // The half-built spare was dropped; the build starts again and finishes.
    assert!(!spare_of(&db).exists());
    spare_state(&r.spares, "spb", |s| s == "ready").await;
    assert_same(&spare_of(&db), snapshot_tree.path(), true);
    r.warm.finish_cleanup().await;
}

#[tokio::test]
async fn a_restore_after_a_newer_snapshot_never_uses_the_old_spare() {
    require_docker_as_root().await;
    let r = rig(unbounded()).await;
    let mut stack = TestStack::new("sn");
    let db = stack.volume("db", Labels::Swarm);
    fill(&db, 4);
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "spn"), p, c)
        .await
        .unwrap();
    spare_state(&r.spares, "spn", |s| s == "ready").await;
    let old_stamp = fs::read(db.with_file_name("_data.berth-spare.json")).unwrap();

    // A newer snapshot taken where no builder hears of it: the old spare stays on disk.
    fs::write(db.join(".env"), "SECRET=newer\n").unwrap();
    let newer = tempfile::tempdir().unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", db.display()),
            &newer.path().display().to_string(),
        ],
    );
    let bare = warm(r.root.path()).await;
    let (p, c) = go();
    bare.snapshot(&snapshot_req(&stack, "spn"), p, c)
        .await
        .unwrap();
    assert_eq!(
        fs::read(db.with_file_name("_data.berth-spare.json")).unwrap(),
        old_stamp
    );

    mutate(&db);
    let (p, c) = go();
    let out = bare
        .restore(&restore_req(&stack, "spn"), p, c)
        .await
        .unwrap();
    assert_eq!(out.volumes[0].method, RestoreMethod::Swap, "{out:?}");
    assert_same(&db, newer.path(), true);
    bare.finish_cleanup().await;
}

#[tokio::test]
async fn no_spare_snapshots_and_the_disk_floor_build_none_and_say_so() {
    require_docker_as_root().await;
    let r = rig(unbounded()).await;
    let mut stack = TestStack::new("so");
    let db = stack.volume("db", Labels::Swarm);
    fill(&db, 5);
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "spo"), p, c)
        .await
        .unwrap();
    spare_state(&r.spares, "spo", |s| s == "ready").await;

    // --no-spare: recorded in meta.json, and the existing spare is removed.
    let req = SnapshotRequest {
        spare: false,
        ..snapshot_req(&stack, "spo")
    };
    let (p, c) = go();
    r.warm.snapshot(&req, p, c).await.unwrap();
    spare_state(&r.spares, "spo", |s| s == "off (--no-spare)").await;
    assert_eq!(beside(&db), ["_data"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(r.root.path().join("spo/snapshot/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["berth"]["spare"], false, "{meta}");

    // A floor above the free space: no spare, and the state says why.
    let floor = rig(WarmConfig {
        spare_min_free_bytes: u64::MAX / 2,
        ..unbounded()
    })
    .await;
    let (p, c) = go();
    floor
        .warm
        .snapshot(&snapshot_req(&stack, "spf"), p, c)
        .await
        .unwrap();
    spare_state(&floor.spares, "spf", |s| s == "none: disk floor").await;
    assert_eq!(beside(&db), ["_data"]);

    // Spares off in the config: none, and the state says off.
    let off = rig(WarmConfig {
        spares: false,
        ..unbounded()
    })
    .await;
    let (p, c) = go();
    off.warm
        .snapshot(&snapshot_req(&stack, "spx"), p, c)
        .await
        .unwrap();
    spare_state(&off.spares, "spx", |s| s == "off").await;
    assert_eq!(beside(&db), ["_data"]);
}

/// An XFS filesystem with reflink on a loop device, mounted over a Docker volume's directory
/// (so `_data` and its spare live on it); unmounted when dropped.
struct XfsVolume {
    dir: PathBuf,
    image: tempfile::NamedTempFile,
}

impl XfsVolume {
    fn mount_over(mountpoint: &Path, size: &str) -> XfsVolume {
        let image = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        run(
            "truncate",
            &["-s", size, &image.path().display().to_string()],
        );
        let mkfs = ["mkfs.xfs", "/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs"]
            .into_iter()
            .find(|p| Command::new(p).arg("-V").output().is_ok())
            .expect("mkfs.xfs is missing: install Debian's xfsprogs (.ci/tools.sh does)");
        run(
            mkfs,
            &[
                "-q",
                "-f",
                "-m",
                "reflink=1",
                &image.path().display().to_string(),
            ],
        );
        let dir = mountpoint.parent().unwrap().to_owned();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image.path())
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount an XFS image on a loop device ({}): this test needs root, \
             /dev/loop-control and free loop devices",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        fs::create_dir(mountpoint).unwrap();
        XfsVolume { dir, image }
    }

    fn used(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.dir).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for XfsVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = &self.image;
    }
}

#[tokio::test]
async fn on_xfs_with_reflink_a_spare_costs_metadata_not_data() {
    require_docker_as_root().await;
    let r = rig(unbounded()).await;
    let mut stack = TestStack::new("sx");
    let db = stack.volume("db", Labels::Swarm);
    let xfs = XfsVolume::mount_over(&db, "1G");
    // 64 MiB of data that does not compress or dedupe, and the fixture's odd entries.
    fill(&db, 6);
    let noise: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(db.join("data.bin"), noise).unwrap();
    let reference_tree = tempfile::tempdir().unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", db.display()),
            &reference_tree.path().display().to_string(),
        ],
    );
    let data = 64u64 << 20;
    let before = xfs.used();

    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "spr"), p, c)
        .await
        .unwrap();
    spare_state(&r.spares, "spr", |s| s == "ready").await;
    let stamp: serde_json::Value =
        serde_json::from_slice(&fs::read(db.with_file_name("_data.berth-spare.json")).unwrap())
            .unwrap();
    assert_eq!(stamp["method"], "reflink", "{stamp}");
    assert!(db.with_file_name("_data.berth-base").is_dir());
    let first = xfs.used() - before;
    assert!(
        first < data + data / 20 + (8 << 20),
        "the base costs the data once and the spare almost nothing: {first} bytes for {data}"
    );

    // A restore (by a Warm no builder hears from) consumes the spare; the rebuild, asked
    // for after measuring, is a clone of the base.
    mutate(&db);
    let bare = warm(r.root.path()).await;
    let (p, c) = go();
    let out = bare
        .restore(&restore_req(&stack, "spr"), p, c)
        .await
        .unwrap();
    assert_eq!(out.volumes[0].method, RestoreMethod::Spare);
    bare.finish_cleanup().await;
    assert_same(&db, reference_tree.path(), true);
    assert!(!spare_of(&db).exists());
    let consumed = xfs.used();
    r.spares
        .request(&AppTarget::new("spr", "", Some(&stack.name)).unwrap());
    spare_state(&r.spares, "spr", |s| s == "ready").await;
    let rebuilt = xfs.used();
    let cost = rebuilt.saturating_sub(consumed);
    assert!(
        cost < data / 20,
        "a reflinked spare costs under 5% of the volume's data: {cost} bytes for {data}"
    );
    assert_same(
        &db.with_file_name("_data.berth-spare"),
        reference_tree.path(),
        true,
    );
    drop(r);
    drop(xfs);
}

#[tokio::test]
async fn a_snapshot_replaced_while_a_spare_builds_cancels_the_build_and_the_next_spare_is_of_it() {
    require_docker_as_root().await;
    let r = rig(WarmConfig {
        spare_max_mib_per_sec: 1,
        ..unbounded()
    })
    .await;
    let mut stack = TestStack::new("sr");
    let db = stack.volume("db", Labels::Swarm);
    fill(&db, 7);
    fs::write(db.join("bulk.bin"), vec![5u8; 4 << 20]).unwrap();
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "sps"), p, c)
        .await
        .unwrap();
    spare_state(&r.spares, "sps", |s| s.starts_with("building")).await;

    // A new snapshot takes the stack from the build at once.
    fs::write(db.join(".env"), "SECRET=second\n").unwrap();
    let second = tempfile::tempdir().unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", db.display()),
            &second.path().display().to_string(),
        ],
    );
    let started = Instant::now();
    let (p, c) = go();
    r.warm
        .snapshot(&snapshot_req(&stack, "sps"), p, c)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the snapshot waited for the build instead of cancelling it: {:?}",
        started.elapsed()
    );
    spare_state(&r.spares, "sps", |s| s == "ready").await;
    assert_same(&spare_of(&db), second.path(), true);

    mutate(&db);
    let (p, c) = go();
    let out = r
        .warm
        .restore(&restore_req(&stack, "sps"), p, c)
        .await
        .unwrap();
    assert_eq!(out.volumes[0].method, RestoreMethod::Spare);
    assert_same(&db, second.path(), true);
    r.warm.finish_cleanup().await;
}
