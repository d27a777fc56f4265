use std::fs;
use std::path::Path;

use berth_shared::AppName;
use berth_shared::name::VolumeName;

use super::*;
use crate::volume::lock::{self, Operation, Resource};

/// A warm root with a one-volume snapshot of app `sp`, and the volume's mountpoint.
struct Fixture {
    _dir: tempfile::TempDir,
    app: AppDir,
    volume: VolumeName,
    mountpoint: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let app = AppDir::new(&dir.path().join("warm"), &AppName::new("sp").unwrap());
    let volume = VolumeName::new("sp_data").unwrap();
    fs::create_dir_all(app.snapshot().join("volumes")).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(app.tar(&volume))
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    fs::write(
        app.meta(),
        br#"{"recipe":"sp","domain":"","volumes":["sp_data"],"ts":"2026-12-06T00:00:00Z"}"#,
    )
    .unwrap();
    let mountpoint = dir.path().join("vol/_data");
    fs::create_dir_all(&mountpoint).unwrap();
    fs::write(mountpoint.join("dirty"), b"x").unwrap();
    Fixture {
        _dir: dir,
        app,
        volume,
        mountpoint,
    }
}

fn build(f: &Fixture, op: u64, reflink: bool) -> Stamp {
    let digest = digest(&f.app).unwrap();
    let tar = f.app.tar(&f.volume);
    let limit = crate::warm::unpack::check::check(&tar, &CancellationToken::new())
        .unwrap()
        .bytes;
    let paths = SparePaths::new(&f.mountpoint);
    Build {
        paths: &paths,
        volume: f.volume.as_str(),
        tar: &tar,
        digest: &digest,
        limit,
        op,
        reflink,
    }
    .run(&Progress::new(), &CancellationToken::new())
    .unwrap()
}

#[test]
fn a_spare_is_stamped_with_its_snapshot_and_a_new_snapshot_no_longer_matches_it() {
    let f = fixture();
    let op = Operation::new("spare_build", "stack t1");
    let _held = lock::try_acquire(&op, &[Resource::Stack("t1".into())]).unwrap();
    let stamp = build(&f, op.id(), false);
    assert_eq!(stamp.method, BuildMethod::Extract);
    assert_eq!((stamp.entries, stamp.bytes), (5, 100_005));
    let paths = SparePaths::new(&f.mountpoint);
    assert_eq!(fs::read(paths.spare.join("a.txt")).unwrap(), b"alpha");
    assert!(!paths.spare.join("dirty").exists());
    let d = digest(&f.app).unwrap();
    assert_eq!(matching(&paths.spare, &d, "sp_data"), Some(stamp));
    assert!(
        matching(&paths.spare, &d, "sp_other").is_none(),
        "another volume's spare"
    );

    // A new snapshot (new meta.json) names another digest: the spare no longer matches.
    fs::write(
        f.app.meta(),
        br#"{"recipe":"sp","domain":"","volumes":["sp_data"],"ts":"2026-12-06T00:00:01Z"}"#,
    )
    .unwrap();
    let newer = digest(&f.app).unwrap();
    assert_ne!(newer, d);
    assert!(matching(&paths.spare, &newer, "sp_data").is_none());

    // A spare whose stamp is missing (a crash between rename and stamp) is not trusted.
    fs::remove_file(SparePaths::stamp_of(&paths.spare)).unwrap();
    assert!(matching(&paths.spare, &d, "sp_data").is_none());
}

#[test]
fn taking_a_spare_unstamps_it_before_the_swap() {
    let f = fixture();
    let op = Operation::new("warm_restore", "stack t2");
    let _held = lock::try_acquire(&op, &[Resource::Stack("t2".into())]).unwrap();
    build(&f, op.id(), false);
    let paths = SparePaths::new(&f.mountpoint);
    let claimed = take(&paths, op.id()).unwrap();
    assert!(!paths.spare.exists());
    assert!(!SparePaths::stamp_of(&paths.spare).exists());
    assert_eq!(fs::read(claimed.join("a.txt")).unwrap(), b"alpha");
    let name = claimed.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("._data~berth~"), "{name}");
}

#[test]
fn discarding_removes_the_stamp_and_the_tree() {
    let f = fixture();
    let op = Operation::new("spare_build", "stack t3");
    let _held = lock::try_acquire(&op, &[Resource::Stack("t3".into())]).unwrap();
    build(&f, op.id(), false);
    let paths = SparePaths::new(&f.mountpoint);
    discard(&paths.spare, op.id()).unwrap();
    assert!(!paths.spare.exists());
    assert!(!SparePaths::stamp_of(&paths.spare).exists());
    let left: Vec<_> = fs::read_dir(f.mountpoint.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("_data")]);
}

#[test]
fn a_cancelled_build_leaves_no_spare() {
    let f = fixture();
    let op = Operation::new("spare_build", "stack t4");
    let _held = lock::try_acquire(&op, &[Resource::Stack("t4".into())]).unwrap();
    let digest = digest(&f.app).unwrap();
    let tar = f.app.tar(&f.volume);
    let paths = SparePaths::new(&f.mountpoint);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let e = Build {
        paths: &paths,
        volume: f.volume.as_str(),
        tar: &tar,
        digest: &digest,
        limit: 1 << 20,
        op: op.id(),
        reflink: false,
    }
    .run(&Progress::new(), &cancel)
    .unwrap_err();
    assert!(matches!(e, WarmError::Cancelled), "{e:?}");
    assert!(!paths.spare.exists());
    let parent = f.mountpoint.parent().unwrap();
    assert_eq!(
        fs::read_dir(parent).unwrap().count(),
        1,
        "only _data is left"
    );
}

#[test]
fn a_tmpfs_or_ext4_probe_says_no_reflink_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Whatever the answer on this filesystem, the probe cleans up after itself.
    let _ = reflink_supported(dir.path());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    let _ = Path::new("/");
}
