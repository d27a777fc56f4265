//! The tree against what hostile archives try: writing through symlinks in the way or on the
//! path, hard links to links that lead out, links that lead out only through others.

use std::fs;

use rustix::fs::Timespec;

use super::*;

pub(in crate::tarsafe) fn attrs() -> Attrs {
    Attrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    }
}

fn name(raw: &str) -> Name {
    Name::parse(raw.as_bytes()).unwrap()
}

fn tree(root: &Path, links: Links) -> Tree {
    let options = Options {
        owners: false,
        links,
        link_root_depth: 0,
    };
    Tree::open(root, options).unwrap()
}

fn refused(e: UntarError) -> String {
    match e {
        UntarError::Refused { why, .. } => why,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut t = tree(root.path(), Links::AsArchived);
    t.symlink(
        &name("out"),
        outside.path().as_os_str().as_encoded_bytes(),
        &attrs(),
    )
    .unwrap();
    t.symlink(&name("in"), b".", &attrs()).unwrap();
    // On the path: refused, even through a link that points inside.
    for through in ["out/x", "in/x"] {
        let why = refused(t.file(&name(through)).unwrap_err());
        assert!(why.contains("goes through"), "{why}");
        let why = refused(t.dir(&name(&format!("{through}/")), attrs()).unwrap_err());
        assert!(why.contains("goes through"), "{why}");
    }
    // In the way: replaced.
    let mut f = t.file(&name("out")).unwrap();
    io::Write::write_all(&mut f, b"replaced").unwrap();
    t.dir(&name("in/"), attrs()).unwrap();
    t.finish().unwrap();
    assert_eq!(fs::read(root.path().join("out")).unwrap(), b"replaced");
    assert!(root.path().join("in").is_dir());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn hard_links_never_reach_outside() {
    let root = tempfile::tempdir().unwrap();
    let mut t = tree(root.path(), Links::AsArchived);
    t.dir(&name("a/"), attrs()).unwrap();
    t.file(&name("a/f")).unwrap();
    t.symlink(&name("etc"), b"/etc", &attrs()).unwrap();
    t.symlink(&name("pw"), b"/etc/passwd", &attrs()).unwrap();
    t.symlink(&name("a/up"), b"../f2", &attrs()).unwrap();
    t.symlink(&name("a/same"), b"f", &attrs()).unwrap();
    let link = |t: &mut Tree, from: &str, to: &str| t.hard_link(&name(from), &name(to));
    assert!(refused(link(&mut t, "h1", "etc/passwd").unwrap_err()).contains("through \"etc\""));
    assert!(refused(link(&mut t, "h2", "pw").unwrap_err()).contains("leads outside"));
    assert!(refused(link(&mut t, "h3", "a").unwrap_err()).contains("a directory"));
    assert!(refused(link(&mut t, "h4", "nope").unwrap_err()).contains("not extracted"));
    // Inside where it is, outside from the root.
    assert!(refused(link(&mut t, "h5", "a/up").unwrap_err()).contains("leads outside"));
    link(&mut t, "a/h6", "a/up").unwrap();
    link(&mut t, "a/h7", "a/same").unwrap();
    link(&mut t, "h8", "a/f").unwrap();
    t.finish().unwrap();
    assert_eq!(
        fs::read_link(root.path().join("a/h7")).unwrap(),
        Path::new("f")
    );
}

#[test]
fn escaping_links_are_refused_when_asked_even_when_a_later_entry_makes_them_escape() {
    let root = tempfile::tempdir().unwrap();
    let mut t = tree(root.path(), Links::RefuseEscaping);
    t.symlink(&name("p"), b".", &attrs()).unwrap();
    t.symlink(&name("ok"), b"p/p/x", &attrs()).unwrap();
    let why = refused(
        t.symlink(&name("esc"), b"p/p/p/p/../../../..", &attrs())
            .unwrap_err(),
    );
    assert!(why.contains("leads outside"), "{why}");
    assert!(refused(t.symlink(&name("abs"), b"/etc", &attrs()).unwrap_err()).contains("outside"));
    // Inside when made; `d -> .` later makes it lead out.
    t.symlink(&name("l"), b"d/..", &attrs()).unwrap();
    t.symlink(&name("d"), b".", &attrs()).unwrap();
    match t.finish() {
        Err(UntarError::Refused { entry, why }) => {
            assert_eq!(entry, b"l");
            assert!(why.contains("leads outside"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Without the option, links are data.
    let root = tempfile::tempdir().unwrap();
    let mut t = tree(root.path(), Links::AsArchived);
    t.symlink(&name("abs"), b"/etc", &attrs()).unwrap();
    t.symlink(&name("up"), b"../..", &attrs()).unwrap();
    t.finish().unwrap();
    assert_eq!(
        fs::read_link(root.path().join("up")).unwrap(),
        Path::new("../..")
    );
}
