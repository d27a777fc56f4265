//! Round trips of `pack` and `unpack` on a temporary tree (no Docker), and GNU tar reading
//! what `pack` writes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use tokio_util::sync::CancellationToken;

use super::{pack, scan};
use crate::warm::progress::Progress;
use crate::warm::unpack::{check::check, unpack};

const MIB: u64 = 1 << 20;

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A small tree with every kind of entry `pack` handles that needs no root.
fn fixture(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join(".hidden"), "dot").unwrap();
    fs::write(root.join("a/b/c/data.bin"), vec![7u8; 300_000]).unwrap();
    fs::write(root.join("a/small"), "small").unwrap();
    fs::hard_link(root.join("a/small"), root.join("hard")).unwrap();
    symlink("/etc/passwd", root.join("escaping-link")).unwrap();
    let long = "n".repeat(150);
    fs::write(root.join("a").join(&long), "long name").unwrap();
    symlink("t".repeat(140), root.join("long-target")).unwrap();
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"middle", 10 * MIB).unwrap();
    sparse.write_all_at(b"end", 64 * MIB - 3).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        root.join("a/small").as_path(),
        "user.berth",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::set_permissions(root.join("a/small"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    for (p, t) in [
        ("a/small", 1_000_000_000),
        ("escaping-link", 1_100_000_000),
        ("empty", 1_200_000_000),
        ("a/b", 1_300_000_000),
        (".", 1_400_000_000),
    ] {
        set_mtime(&root.join(p), t);
    }
}

fn assert_restored(from: &Path, to: &Path, xattrs: bool) {
    let small = fs::symlink_metadata(to.join("a/small")).unwrap();
    assert_eq!(fs::read(to.join("a/small")).unwrap(), b"small");
    assert_eq!(small.mode() & 0o7777, 0o4751);
    assert_eq!(small.mtime(), 1_000_000_000);
    assert_eq!(
        small.ino(),
        fs::symlink_metadata(to.join("hard")).unwrap().ino(),
        "hard link identity"
    );
    if xattrs {
        let mut v = [0u8; 8];
        let n =
            rustix::fs::getxattr(to.join("a/small").as_path(), "user.berth", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"1");
    }
    assert_eq!(
        fs::read_link(to.join("escaping-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::symlink_metadata(to.join("escaping-link"))
            .unwrap()
            .mtime(),
        1_100_000_000
    );
    assert_eq!(
        fs::read_link(to.join("long-target"))
            .unwrap()
            .as_os_str()
            .len(),
        140
    );
    assert_eq!(
        fs::read(to.join("a").join("n".repeat(150))).unwrap(),
        b"long name"
    );
    assert_eq!(fs::read(to.join(".hidden")).unwrap(), b"dot");
    assert_eq!(
        fs::read(to.join("a/b/c/data.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    let empty = fs::metadata(to.join("empty")).unwrap();
    assert_eq!(
        (empty.mode() & 0o7777, empty.mtime()),
        (0o1777, 1_200_000_000)
    );
    assert_eq!(fs::read_dir(to.join("empty")).unwrap().count(), 0);
    assert_eq!(fs::metadata(to.join("a/b")).unwrap().mtime(), 1_300_000_000);
    assert_eq!(
        fs::metadata(to).unwrap().mtime(),
        fs::metadata(from).unwrap().mtime()
    );
    assert!(
        fs::symlink_metadata(to.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let sparse = fs::metadata(to.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 64 * MIB);
    assert!(
        sparse.blocks() * 512 < MIB,
        "holes were written: {} blocks",
        sparse.blocks()
    );
    assert_eq!(
        fs::read(to.join("sparse")).unwrap(),
        fs::read(from.join("sparse")).unwrap()
    );
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn pack_then_unpack_keeps_every_kind_of_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fixture(&src);
    let cancel = CancellationToken::new();
    let scanned = scan(&src, &cancel).unwrap();
    let progress = Progress::new();
    let tar = dir.path().join("v.tar");
    let packed = pack(&src, &tar, &progress, &cancel).unwrap();
    assert_eq!(packed.entries, scanned.entries);
    assert!(
        fs::metadata(&tar).unwrap().len() < 2 * MIB,
        "the sparse file was expanded in the tar"
    );
    let checked = check(&tar, &cancel).unwrap();
    assert_eq!(checked.entries, packed.entries);
    let restored = unpack(&tar, &dst, checked.bytes, &Progress::new(), &cancel).unwrap();
    assert_eq!(restored.bytes, checked.bytes);
    assert_restored(&src, &dst, true);
    assert_eq!(progress.snapshot().entries_done, packed.entries);
}

#[test]
fn gnu_tar_reads_what_pack_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fixture(&src);
    let tar = dir.path().join("v.tar");
    pack(&src, &tar, &Progress::new(), &CancellationToken::new()).unwrap();
    let out = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&dst)
        .output()
        .expect("GNU tar is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_restored(&src, &dst, true);
}
