//! Warm snapshots and restores against the real Docker engine: refusal while deployed,
//! exact restores, labels instead of name prefixes, missing volumes, the clear fallback,
//! waiting for a stack to go away, and listing.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::volume::StackError;
use berth_agent::warm::{
    AppTarget, Progress, RestoreMethod, RestoreRequest, SnapshotRequest, WarmError, WarmErrorKind,
};
use berth_shared::StackName;
use tokio_util::sync::CancellationToken;

use crate::env::{Labels, TestStack, Tmpfs, mount_tmpfs, require_docker_as_root, run, warm};
use crate::tree::{MIB, allocated, assert_same, differences, fill, mutate, reference};

pub fn snapshot_req(stack: &TestStack, app: &str) -> SnapshotRequest {
    SnapshotRequest {
        target: AppTarget::new(app, "", Some(&stack.name)).unwrap(),
        commit: Some("abc123".into()),
        version: Some("1.2.3".into()),
        spare: true,
        wait_undeployed: Duration::ZERO,
    }
}

pub fn restore_req(stack: &TestStack, app: &str) -> RestoreRequest {
    RestoreRequest {
        target: AppTarget::new(app, "", Some(&stack.name)).unwrap(),
        use_spare: true,
        wait_undeployed: Duration::ZERO,
    }
}

pub fn go() -> (Arc<Progress>, CancellationToken) {
    (Arc::new(Progress::new()), CancellationToken::new())
}

#[tokio::test]
async fn snapshot_refuses_while_deployed_and_restore_brings_back_exactly_the_snapshot() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let db = stack.volume("db", Labels::Swarm);
    let files = stack.volume("files", Labels::Swarm);
    fill(&db, 1);
    fill(&files, 2);
    let (ref_db, ref_files) = (reference(1), reference(2));
    assert_same(&db, ref_db.path(), true);
    fs::create_dir_all(root.path().join("kc")).unwrap();
    fs::write(root.path().join("kc/last_good"), "1.2.2").unwrap();

    let running = stack.container("app", "db");
    let (p, c) = go();
    let err = w
        .snapshot(&snapshot_req(&stack, "kc"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::Conflict);
    let msg = err.to_string();
    assert!(
        msg.contains(&running) && msg.contains("running") && msg.contains("undeploy"),
        "{msg}"
    );
    let (p, c) = go();
    let err = w
        .restore(&restore_req(&stack, "kc"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::Conflict, "{err}");
    stack.remove_container(&running);

    let (progress, c) = go();
    let out = w
        .snapshot(&snapshot_req(&stack, "kc"), progress.clone(), c)
        .await
        .unwrap();
    let names = [
        format!("{}_db", stack.name),
        format!("{}_files", stack.name),
    ];
    assert_eq!(out.volumes, names);
    let p = progress.snapshot();
    assert_eq!(
        (p.bytes_done, p.entries_done),
        (p.bytes_total, p.entries_total)
    );
    assert!(p.bytes_total > 600_000 && p.entries_total > 40, "{p:?}");
    assert_eq!(
        fs::read_to_string(root.path().join("kc/last_good")).unwrap(),
        "1.2.2"
    );
    let snap = root.path().join("kc/snapshot");
    assert!(snap.join(format!("volumes/{}.tar", names[0])).is_file());
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(snap.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["recipe"], "kc");
    assert_eq!(
        (meta["commit"].as_str(), meta["version"].as_str()),
        (Some("abc123"), Some("1.2.3"))
    );
    assert_eq!(meta["volumes"], serde_json::json!(names));
    assert_eq!(meta["ts"], out.ts);
    assert!(
        allocated(&snap.join(format!("volumes/{}.tar", names[0]))) < 4 * MIB,
        "the 64 MiB sparse file was stored expanded"
    );

    mutate(&db);
    mutate(&files);
    assert!(!differences(&db, ref_db.path(), true).is_empty());
    let (progress, c) = go();
    let out = w
        .restore(&restore_req(&stack, "kc"), progress.clone(), c)
        .await
        .unwrap();
    assert!(
        out.volumes.iter().all(|v| v.method == RestoreMethod::Swap),
        "{out:?}"
    );
    assert_same(&db, ref_db.path(), true);
    assert_same(&files, ref_files.path(), true);
    assert!(
        allocated(&db.join("sparse.img")) < 4 * MIB,
        "holes were written on restore"
    );
    let p = progress.snapshot();
    assert_eq!(
        (p.bytes_done, p.entries_done),
        (p.bytes_total, p.entries_total)
    );
    // Once the old contents are removed (in the background), nothing is left beside the
    // mountpoints.
    w.finish_cleanup().await;
    for mp in [&db, &files] {
        let siblings: Vec<_> = fs::read_dir(mp.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(siblings, ["_data"], "{siblings:?}");
    }
    // The volume still works for a container.
    let again = stack.container("check", "db");
    let listing = crate::env::docker(&["exec", &again, "cat", "/data/.env"]);
    assert_eq!(listing, "SECRET=1\n");
}

#[tokio::test]
async fn compose_labels_are_used_and_name_prefixes_do_not_collide() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut short = TestStack::new("_a_b");
    let mut long = TestStack::named(&format!("{}_c", short.name));
    let data = short.volume("data", Labels::Compose);
    let other = long.volume("data", Labels::Compose);
    fs::write(data.join("mine"), "a_b").unwrap();
    fs::write(other.join("theirs"), "a_b_c").unwrap();
    // `<a_b>_c_data` starts with `<a_b>_`: a prefix match would take it too.
    let found = w
        .volumes(&StackName::new(&short.name).unwrap())
        .await
        .unwrap();
    let names: Vec<_> = found.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(names, [format!("{}_data", short.name)]);

    let (p, c) = go();
    let out = w.snapshot(&snapshot_req(&short, "ab"), p, c).await.unwrap();
    assert_eq!(out.volumes, [format!("{}_data", short.name)]);
    fs::write(data.join("mine"), "changed").unwrap();
    fs::write(other.join("theirs"), "untouched").unwrap();
    let (p, c) = go();
    w.restore(&restore_req(&short, "ab"), p, c).await.unwrap();
    assert_eq!(fs::read_to_string(data.join("mine")).unwrap(), "a_b");
    assert_eq!(
        fs::read_to_string(other.join("theirs")).unwrap(),
        "untouched"
    );

    let listed = w.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].app.as_str(), listed[0].complete), ("ab", true));
    assert_eq!(listed[0].version.as_deref(), Some("1.2.3"));
    drop(long);
}

#[tokio::test]
async fn a_stack_without_volumes_or_missing_one_is_refused_by_name() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let (p, c) = go();
    let err = w
        .snapshot(&snapshot_req(&stack, "gone"), p, c)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WarmError::Stack(StackError::NoVolumes { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&stack.name));

    let keep = stack.volume("keep", Labels::Swarm);
    let lost = stack.volume("lost", Labels::Swarm);
    fs::write(keep.join("f"), "v1").unwrap();
    fs::write(lost.join("f"), "v1").unwrap();
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "gone"), p, c)
        .await
        .unwrap();
    fs::write(keep.join("f"), "v2").unwrap();
    stack.remove_volume("lost");
    let (p, c) = go();
    let err = w
        .restore(&restore_req(&stack, "gone"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains(&format!("{}_lost is absent", stack.name)),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(keep.join("f")).unwrap(),
        "v2",
        "refused before touching anything"
    );

    let (p, c) = go();
    let err = w
        .restore(&restore_req(&stack, "never-snapshotted"), p, c)
        .await
        .unwrap_err();
    assert!(matches!(err, WarmError::NoSnapshot { .. }), "{err}");
}

#[tokio::test]
async fn a_volume_that_is_a_mount_of_its_own_is_restored_by_clearing() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("tmp", Labels::Swarm);
    mount_tmpfs(&mp, "256m");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
    let _unmount = Unmount(mp.clone());
    fill(&mp, 3);
    let reference = reference(3);
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "mnt"), p, c)
        .await
        .unwrap();
    mutate(&mp);
    let (p, c) = go();
    let out = w.restore(&restore_req(&stack, "mnt"), p, c).await.unwrap();
    assert_eq!(out.volumes.len(), 1);
    assert_eq!(out.volumes[0].method, RestoreMethod::Clear);
    assert_same(&mp, reference.path(), true);
    run("mountpoint", &["-q", &mp.to_string_lossy()]);
}

#[tokio::test]
async fn waiting_for_undeploy_lets_a_stopping_container_go() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("db", Labels::Swarm);
    fs::write(mp.join("f"), "x").unwrap();
    let name = stack.container("app", "db");
    let stopper = {
        let name = name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            crate::env::docker(&["rm", "-f", &name]);
        })
    };
    let mut req = snapshot_req(&stack, "waiting");
    req.wait_undeployed = Duration::from_secs(30);
    let (p, c) = go();
    w.snapshot(&req, p, c).await.unwrap();
    stopper.join().unwrap();
    stack.remove_container(&name);
}

#[tokio::test]
async fn a_full_disk_leaves_the_previous_snapshot_intact_and_says_so() {
    require_docker_as_root().await;
    let tmpfs = Tmpfs::mount("2m");
    let w = warm(tmpfs.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("db", Labels::Swarm);
    fs::write(mp.join("small"), "first").unwrap();
    let (p, c) = go();
    w.snapshot(&snapshot_req(&stack, "full"), p, c)
        .await
        .unwrap();
    let meta = tmpfs.path().join("full/snapshot/meta.json");
    let before = fs::read(&meta).unwrap();

    // Too big to fit: refused after the scan.
    fs::write(mp.join("big"), vec![1u8; 3 * MIB as usize]).unwrap();
    let (p, c) = go();
    let err = w
        .snapshot(&snapshot_req(&stack, "full"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::NoSpace, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no space left") && msg.contains(&tmpfs.path().display().to_string()),
        "{msg}"
    );
    assert_eq!(fs::read(&meta).unwrap(), before);
    fs::remove_file(mp.join("big")).unwrap();

    // Small in data but large in headers: the disk fills while tarring.
    for i in 0..2500 {
        fs::write(mp.join(format!("{i:0>120}")), "").unwrap();
    }
    let (p, c) = go();
    let err = w
        .snapshot(&snapshot_req(&stack, "full"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::NoSpace, "{err}");
    let msg = berth_agent::chain(&err);
    assert!(
        msg.contains("no space left") && msg.contains(".snapshot.staging"),
        "{msg}"
    );
    assert_eq!(fs::read(&meta).unwrap(), before);
    assert!(!tmpfs.path().join("full/.snapshot.staging").exists());
    // And the previous snapshot still restores.
    for i in 0..2500 {
        fs::remove_file(mp.join(format!("{i:0>120}"))).unwrap();
    }
    fs::write(mp.join("small"), "second").unwrap();
    let (p, c) = go();
    w.restore(&restore_req(&stack, "full"), p, c).await.unwrap();
    assert_eq!(fs::read_to_string(mp.join("small")).unwrap(), "first");
}
