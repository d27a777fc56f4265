//! Warm restores of hostile or broken snapshots: escaping paths and links, bad volume names
//! in `meta.json`, incomplete snapshots — refused or contained, nothing written outside the
//! volume and the volume left as it was.

use std::fs;
use std::path::Path;

use berth_agent::warm::{WarmError, WarmErrorKind};
use tar::{EntryType, Header};

use crate::env::{Labels, TestStack, require_docker_as_root, warm};
use crate::warm::{go, restore_req};

/// One raw tar entry: name and link bytes are written as they are (no checks).
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    link: &'a [u8],
    data: &'a [u8],
}

fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..e.name.len()].copy_from_slice(e.name);
        gnu.linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: EntryType::Regular,
        link: b"",
        data,
    }
}

fn link<'a>(name: &'a [u8], kind: EntryType, target: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind,
        link: target,
        data: b"",
    }
}

/// Writes a snapshot of `app` whose only volume's tar is `tar`.
fn plant(root: &Path, app: &str, volume: &str, tar: &[u8]) {
    let snap = root.join(app).join("snapshot");
    fs::create_dir_all(snap.join("volumes")).unwrap();
    fs::write(snap.join(format!("volumes/{volume}.tar")), tar).unwrap();
    let meta = serde_json::json!({"recipe": app, "domain": "", "commit": null, "version": null, "volumes": [volume], "ts": "2024-01-01T00:00:00Z"});
    fs::write(snap.join("meta.json"), meta.to_string()).unwrap();
}

#[tokio::test]
async fn hostile_tars_are_refused_and_nothing_is_written_outside_the_volume() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap().as_bytes().to_vec();
    let out_file = [out.as_slice(), b"/pwned"].concat();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("v", Labels::Swarm);
    fs::write(mp.join("keep"), "original").unwrap();
    let volume = format!("{}_v", stack.name);
    let big_pax = vec![b'x'; 2 << 20];

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dot-dot",
            raw_tar(&[file(b"./ok", b"1"), file(b"../evil", b"x")]),
        ),
        ("dot-dot-inside", raw_tar(&[file(b"./a/../../evil", b"x")])),
        ("absolute", raw_tar(&[file(&out_file, b"x")])),
        (
            "through-symlink",
            raw_tar(&[
                link(b"./esc", EntryType::Symlink, &out),
                file(b"./esc/pwned", b"x"),
            ]),
        ),
        (
            "hardlink-up",
            raw_tar(&[link(b"./hl", EntryType::Link, b"../../../../etc/passwd")]),
        ),
        (
            "hardlink-absolute",
            raw_tar(&[link(b"./hl", EntryType::Link, b"/etc/passwd")]),
        ),
        (
            "hardlink-through-symlink",
            raw_tar(&[
                link(b"./esc", EntryType::Symlink, b"/etc"),
                link(b"./hl", EntryType::Link, b"esc/passwd"),
            ]),
        ),
        (
            "pax-bomb",
            raw_tar(&[
                Raw {
                    name: b"././@PaxHeader",
                    kind: EntryType::XHeader,
                    link: b"",
                    data: &big_pax,
                },
                file(b"./f", b"x"),
            ]),
        ),
        (
            "symlink-over-root",
            raw_tar(&[link(b"./", EntryType::Symlink, b"/")]),
        ),
    ];
    for (i, (case, tar)) in cases.into_iter().enumerate() {
        let app = format!("hostile{i}");
        plant(root.path(), &app, &volume, &tar);
        let (p, c) = go();
        let err = w
            .restore(&restore_req(&stack, &app), p, c)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), WarmErrorKind::Invalid, "{case}: {err}");
        assert!(
            matches!(err, WarmError::UnsafeTar { .. }),
            "{case}: {}",
            berth_agent::chain(&err)
        );
        assert!(
            err.to_string().contains("refusing to restore"),
            "{case}: {err}"
        );
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{case}: wrote outside"
        );
        assert!(
            !Path::new("/evil").exists() && !mp.parent().unwrap().join("evil").exists(),
            "{case}"
        );
        let names: Vec<_> = fs::read_dir(&mp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"], "{case}: the volume changed");
        assert_eq!(fs::read_to_string(mp.join("keep")).unwrap(), "original");
        let siblings = fs::read_dir(mp.parent().unwrap()).unwrap().count();
        assert_eq!(siblings, 1, "{case}: a staging dir was left");
    }
    assert_eq!(
        fs::read_to_string("/etc/passwd").map(|s| s.is_empty()).ok(),
        Some(false)
    );
}

#[tokio::test]
async fn bad_volume_names_and_incomplete_snapshots_are_refused() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("v", Labels::Swarm);
    fs::write(mp.join("keep"), "original").unwrap();
    for (i, bad) in ["../x", "a/b", "a\u{0}b", ".."].into_iter().enumerate() {
        let app = format!("badname{i}");
        let snap = root.path().join(&app).join("snapshot");
        fs::create_dir_all(snap.join("volumes")).unwrap();
        let meta = serde_json::json!({"recipe": app, "volumes": [bad], "ts": ""});
        fs::write(snap.join("meta.json"), meta.to_string()).unwrap();
        let (p, c) = go();
        let err = w
            .restore(&restore_req(&stack, &app), p, c)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), WarmErrorKind::Invalid, "{bad:?}: {err}");
        assert!(
            err.to_string().contains("invalid volume name in meta.json"),
            "{err}"
        );
    }
    // Meta listing a tar that is not there: incomplete, never used.
    let volume = format!("{}_v", stack.name);
    plant(
        root.path(),
        "incomplete",
        &volume,
        &raw_tar(&[file(b"./f", b"x")]),
    );
    fs::remove_file(
        root.path()
            .join(format!("incomplete/snapshot/volumes/{volume}.tar")),
    )
    .unwrap();
    let (p, c) = go();
    let err = w
        .restore(&restore_req(&stack, "incomplete"), p, c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WarmErrorKind::NotFound);
    assert!(err.to_string().contains("incomplete"), "{err}");
    // Meta that is not JSON.
    fs::write(
        root.path().join("incomplete/snapshot/meta.json"),
        "{not json",
    )
    .unwrap();
    let (p, c) = go();
    let err = w
        .restore(&restore_req(&stack, "incomplete"), p, c)
        .await
        .unwrap_err();
    assert!(matches!(err, WarmError::BadMeta { .. }), "{err}");
    assert_eq!(fs::read_to_string(mp.join("keep")).unwrap(), "original");
}

#[tokio::test]
async fn symlinks_pointing_outside_are_restored_as_links_but_never_followed() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("v", Labels::Swarm);
    let volume = format!("{}_v", stack.name);
    let out = outside.path().to_str().unwrap().as_bytes().to_vec();
    // A link out, then a file of the same name: the file replaces the link, it does not
    // write through it.
    let tar = raw_tar(&[
        link(b"./out", EntryType::Symlink, &out),
        file(b"./out", b"replaced"),
    ]);
    plant(root.path(), "links", &volume, &tar);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "links"), p, c)
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(mp.join("out")).unwrap(), "replaced");
    assert!(
        !fs::symlink_metadata(mp.join("out"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

    let tar = raw_tar(&[link(b"./out", EntryType::Symlink, &out)]);
    plant(root.path(), "links", &volume, &tar);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "links"), p, c)
        .await
        .unwrap();
    assert_eq!(fs::read_link(mp.join("out")).unwrap(), outside.path());
}
