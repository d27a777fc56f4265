//! Sample app directories with every kind of entry an archive must keep, and a comparison of
//! two trees by contents, modes, owners, mtimes and links.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use sha2::{Digest, Sha256};

/// Fast deterministic bytes that do not compress.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds the sample app at `root`: owners, modes (set-gid and sticky dir, read-only dirs), mtimes,
/// relative symlinks, a hard link, a fifo, names and link targets over 100 bytes, an empty
/// file, text that compresses and bytes that do not, and a `.chowned` marker.
pub fn build_sample(root: &Path) {
    let long_dir = "d".repeat(120);
    let long_file = format!("{}.txt", "f".repeat(120));
    for dir in [
        "bin",
        "data/sub",
        "links",
        "sticky",
        &format!("long/{long_dir}"),
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let text = "the quick brown fox jumps over the lazy dog\n".repeat(50_000);
    let files: [(&str, &[u8], u32, u32); 9] = [
        (".chowned", b"1", 0o644, 0),
        ("README.md", b"# sample app\n", 0o644, 1000),
        ("empty", b"", 0o600, 70),
        ("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755, 0),
        ("bin/tool", b"x", 0o711, 0),
        ("data/compressible.txt", text.as_bytes(), 0o640, 1000),
        ("data/hard_a", b"shared by two names", 0o644, 1000),
        ("data/sub/deep.txt", b"deep", 0o444, 70),
        ("sticky/note", b"n", 0o666, 1000),
    ];
    for (path, content, mode, owner) in files {
        let p = root.join(path);
        fs::write(&p, content).unwrap();
        chown(&p, owner, owner);
        chmod(&p, mode);
    }
    fs::write(root.join("data/blob.bin"), noise(7, 3 << 20)).unwrap();
    fs::write(root.join(format!("long/{long_dir}/{long_file}")), b"long").unwrap();
    fs::hard_link(root.join("data/hard_a"), root.join("data/sub/hard_b")).unwrap();
    symlink("../README.md", root.join("links/rel")).unwrap();
    symlink("missing-but-inside", root.join("links/dangling")).unwrap();
    symlink("../data", root.join("links/dir_link")).unwrap();
    symlink(
        format!("long/{long_dir}/{long_file}"),
        root.join("long_link"),
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        root.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    chown(&root.join("links/rel"), 1000, 1000);
    let dirs: [(&str, u32, u32); 6] = [
        ("", 0o750, 1000),
        ("bin", 0o755, 0),
        ("data", 0o700, 70),
        ("data/sub", 0o555, 70),
        ("sticky", 0o3777, 0), // set-group-ID and sticky: kept on directories
        ("links", 0o755, 1000),
    ];
    for (dir, mode, owner) in dirs {
        chown(&root.join(dir), owner, owner);
        chmod(&root.join(dir), mode);
    }
    // Times last, deepest first, so no later write bumps them.
    let mut all: Vec<PathBuf> = snapshot_paths(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, rel) in all.iter().enumerate() {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64 * 61);
    }
}

fn snapshot_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new()];
    let mut i = 0;
    while i < out.len() {
        let full = root.join(&out[i]);
        if fs::symlink_metadata(&full).unwrap().is_dir() {
            for e in fs::read_dir(&full).unwrap() {
                out.push(out[i].join(e.unwrap().file_name()));
            }
        }
        i += 1;
    }
    out
}

/// What a comparison looks at for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// SHA-256 of a file's bytes, or a symlink's target.
    pub content: String,
    /// For hard-linked files: the first path (in name order) of the same inode.
    pub link_group: Option<PathBuf>,
}

/// Every entry under `root` (the root itself as ""), except `.chowned`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut paths = snapshot_paths(root);
    paths.sort();
    let mut by_inode: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        if rel == Path::new(".chowned") {
            continue;
        }
        let full = root.join(&rel);
        let m = fs::symlink_metadata(&full).unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&full).unwrap().display().to_string(),
            )
        } else if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_file() {
            (
                "file",
                hex::encode(Sha256::digest(fs::read(&full).unwrap())),
            )
        } else {
            ("special", format!("{:o}", m.mode() & 0o170000))
        };
        let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
            by_inode
                .entry(m.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                content,
                link_group,
            },
        );
    }
    out
}

/// Asserts two trees are the same, naming the first difference.
pub fn assert_same(expected: &BTreeMap<PathBuf, Node>, found: &BTreeMap<PathBuf, Node>) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !found.contains_key(*k))
        .collect();
    let extra: Vec<_> = found
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (path, e) in expected {
        assert_eq!(e, &found[path], "entry {path:?} differs");
    }
}
