//! Volume contents for the warm tests: a tree with every kind of entry (filled as root), a
//! way to change it, and a comparison of two trees by content, owners, modes, mtimes, link
//! targets, hard-link identity and xattrs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

pub const MIB: u64 = 1 << 20;

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn own(path: &Path, id: u32) {
    lchown(path, Some(id), Some(id)).unwrap();
}

/// Fills `root` (an existing, preferably empty dir) with one of everything; `seed` varies
/// the contents so two volumes differ.
pub fn fill(root: &Path, seed: u8) {
    let p = |rel: &str| root.join(rel);
    for d in ["a/b/c", ".config", "empty", "owned70", "owned1000"] {
        fs::create_dir_all(p(d)).unwrap();
    }
    fs::write(p(".env"), format!("SECRET={seed}\n")).unwrap();
    fs::write(p(".config/app.ini"), "[app]\nx = 1\n").unwrap();
    fs::write(p("a/b/c/deep.txt"), vec![b'd'; 1000 + seed as usize]).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8 ^ seed).collect();
    fs::write(p("a/b/big.bin"), big).unwrap();
    fs::write(p(&format!("a/{}", "n".repeat(150))), "a long name").unwrap();
    fs::write(p("owned70/data"), "postgres-like").unwrap();
    fs::write(p("owned1000/data"), "user-owned").unwrap();
    fs::write(p("hard1"), "linked twice").unwrap();
    fs::hard_link(p("hard1"), p("hard2")).unwrap();
    symlink("a/b/c/deep.txt", p("rel-link")).unwrap();
    symlink("/etc/hostname", p("abs-link")).unwrap();
    symlink("does/not/exist", p("dangling")).unwrap();
    let sparse = fs::File::create(p("sparse.img")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.write_all_at(&[seed; 8192], 20 * MIB).unwrap();
    sparse.write_all_at(b"tail", 64 * MIB - 4).unwrap();
    drop(sparse);
    fs::write(p("setuid"), "#!/bin/sh\n").unwrap();
    fs::write(p("zero-perm"), "nobody reads me").unwrap();
    rustix::fs::mknodat(
        CWD,
        p("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        p("null-dev"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::setxattr(p(".env").as_path(), "user.berth", b"1", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(p("a").as_path(), "user.berth", b"dir", XattrFlags::empty()).unwrap();

    for (rel, id) in [
        ("owned70", 70),
        ("owned70/data", 70),
        ("owned1000", 1000),
        ("owned1000/data", 1000),
        ("a/b/c/deep.txt", 1000),
        ("abs-link", 70),
    ] {
        own(&p(rel), id);
    }
    for (rel, mode) in [
        (".env", 0o600),
        ("setuid", 0o4755),
        ("zero-perm", 0o000),
        ("empty", 0o1777),
        ("owned70", 0o700),
        ("a/b/c/deep.txt", 0o640),
    ] {
        chmod(&p(rel), mode);
    }
    own(root, 70);
    chmod(root, 0o750);
    // Old mtimes, files first and directories deepest first, so none is disturbed later.
    let mut t = 1_000_000_000 + i64::from(seed) * 1000;
    let long = format!("a/{}", "n".repeat(150));
    for rel in [
        ".env",
        ".config/app.ini",
        "a/b/c/deep.txt",
        "a/b/big.bin",
        "owned70/data",
        "owned1000/data",
        &long,
        "hard1",
        "rel-link",
        "abs-link",
        "dangling",
        "sparse.img",
        "setuid",
        "zero-perm",
        "fifo",
        "null-dev",
    ] {
        set_mtime(&p(rel), t);
        t += 86_400;
    }
    for rel in [
        "a/b/c",
        "a/b",
        "a",
        ".config",
        "empty",
        "owned70",
        "owned1000",
        "",
    ] {
        set_mtime(&p(rel), t);
        t += 86_400;
    }
}

/// Changes `root` in every way a restore must undo.
pub fn mutate(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::write(p(".env"), "SECRET=changed\n").unwrap();
    fs::remove_file(p("a/b/c/deep.txt")).unwrap();
    fs::create_dir_all(p("new/dir")).unwrap();
    fs::write(p("new/dir/file"), "new").unwrap();
    fs::write(p(".new-dotfile"), "new").unwrap();
    fs::write(p("..dots"), "odd name").unwrap();
    own(&p("owned70/data"), 1000);
    chmod(&p("setuid"), 0o755);
    fs::remove_file(p("rel-link")).unwrap();
    symlink("elsewhere", p("rel-link")).unwrap();
    fs::remove_file(p("hard2")).unwrap();
    fs::write(p("hard2"), "no longer a link").unwrap();
    fs::write(p("sparse.img"), "not sparse any more").unwrap();
    rustix::fs::removexattr(p(".env").as_path(), "user.berth").ok();
    fs::remove_dir(p("empty")).unwrap();
    chmod(root, 0o755);
    own(root, 0);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

struct Tree {
    nodes: BTreeMap<String, Node>,
    links: BTreeSet<Vec<String>>,
}

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut value[..]) {
            out.insert(name.to_vec(), value[..len].to_vec());
        }
    }
    out
}

fn read(root: &Path, with_xattrs: bool) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![(root.to_owned(), ".".to_owned())];
    while let Some((path, rel)) = stack.pop() {
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else {
            "other"
        };
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        nodes.insert(
            rel.clone(),
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                size: if ft.is_file() { m.len() } else { 0 },
                link: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
                rdev: if ft.is_char_device() { m.rdev() } else { 0 },
                xattrs: if with_xattrs && !ft.is_symlink() {
                    xattrs(&path)
                } else {
                    BTreeMap::new()
                },
            },
        );
        if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                stack.push((e.path(), format!("{rel}/{name}")));
            }
        }
    }
    let links = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Tree { nodes, links }
}

/// Every difference between the trees at `a` and `b` (empty when they are the same).
pub fn differences(a: &Path, b: &Path, with_xattrs: bool) -> Vec<String> {
    let (ta, tb) = (read(a, with_xattrs), read(b, with_xattrs));
    let mut diffs = Vec::new();
    for (rel, na) in &ta.nodes {
        match tb.nodes.get(rel) {
            None => diffs.push(format!("{rel}: only in {}", a.display())),
            Some(nb) if na != nb => diffs.push(format!("{rel}: {na:?} != {nb:?}")),
            Some(_) if na.kind == "file" => {
                if !same_contents(&a.join(rel), &b.join(rel)) {
                    diffs.push(format!("{rel}: contents differ"));
                }
            }
            Some(_) => {}
        }
    }
    for rel in tb.nodes.keys().filter(|r| !ta.nodes.contains_key(*r)) {
        diffs.push(format!("{rel}: only in {}", b.display()));
    }
    if ta.links != tb.links {
        diffs.push(format!(
            "hard links differ: {:?} != {:?}",
            ta.links, tb.links
        ));
    }
    diffs
}

/// Compares two files 256 KiB at a time (memory stays small whatever their size).
fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 256 << 10], vec![0u8; 256 << 10]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return fb.read(&mut bb[..1]).unwrap() == 0;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Asserts the trees are the same, listing every difference when they are not.
pub fn assert_same(a: &Path, b: &Path, with_xattrs: bool) {
    let diffs = differences(a, b, with_xattrs);
    assert!(
        diffs.is_empty(),
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        diffs.join("\n")
    );
}

/// Bytes allocated on disk for `path`.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// A reference copy of the fixture in a temporary dir (filled the same way).
pub fn reference(seed: u8) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), seed);
    dir
}
