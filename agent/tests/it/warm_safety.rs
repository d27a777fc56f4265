//! Warm restores of hostile or broken snapshots: escaping paths and links, bad volume names
//! in `meta.json`, incomplete snapshots — refused or contained, nothing written outside the
//! volume and the volume left as it was.

use std::fs;
use std::path::Path;

use berth_agent::warm::{WarmError, WarmErrorKind};

use crate::env::{Labels, TestStack, require_docker_as_root, warm};
use crate::hostile_tar::{
    cases, dir, escaped, file, hard_link, outside_dir, shown, sparse, sparse_contents, symlink, tar,
};
use crate::warm::{go, restore_req};

/// Writes a snapshot of `app` whose only volume's tar is `tar`.
fn plant(root: &Path, app: &str, volume: &str, tar: &[u8]) {
    let snap = root.join(app).join("snapshot");
    fs::create_dir_all(snap.join("volumes")).unwrap();
    fs::write(snap.join(format!("volumes/{volume}.tar")), tar).unwrap();
    let meta = serde_json::json!({"recipe": app, "domain": "", "commit": null, "version": null, "volumes": [volume], "ts": "2024-01-01T00:00:00Z"});
    fs::write(snap.join("meta.json"), meta.to_string()).unwrap();
}

/// Every case of the table the archive restore shares (`crate::hostile_tar`): refused
/// before or while staging, naming the entry; nothing written outside the volume, and the
/// volume left as it was.
#[tokio::test]
async fn hostile_tars_are_refused_and_nothing_is_written_outside_the_volume() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let outside = outside_dir(&tag);
    fs::create_dir_all(&outside).unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("v", Labels::Swarm);
    fs::write(mp.join("keep"), "original").unwrap();
    let volume = format!("{}_v", stack.name);

    for (i, case) in cases(&tag).into_iter().enumerate() {
        let name = case.name;
        let app = format!("hostile{i}");
        plant(root.path(), &app, &volume, &tar(&case.items));
        let (p, c) = go();
        let err = w
            .restore(&restore_req(&stack, &app), p, c)
            .await
            .unwrap_err();
        let text = berth_agent::chain(&err);
        assert_eq!(err.kind(), WarmErrorKind::Invalid, "{name}: {text}");
        assert!(matches!(err, WarmError::UnsafeTar { .. }), "{name}: {text}");
        assert!(text.contains("refusing to restore"), "{name}: {text}");
        assert!(text.contains(case.reason), "{name}: {text}");
        assert!(
            text.contains(&format!("entry {}", shown(&case.entry))),
            "{name}: {text}"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{name}: wrote outside"
        );
        let esc = escaped(&tag);
        for dir in [mp.parent().unwrap(), mp.parent().unwrap().parent().unwrap()] {
            assert!(
                !dir.join(&esc).exists(),
                "{name}: wrote {esc} beside the volume"
            );
        }
        let names: Vec<_> = fs::read_dir(&mp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"], "{name}: the volume changed");
        assert_eq!(fs::read_to_string(mp.join("keep")).unwrap(), "original");
        let siblings = fs::read_dir(mp.parent().unwrap()).unwrap().count();
        assert_eq!(siblings, 1, "{name}: a staging dir was left");
    }
    fs::remove_dir(&outside).unwrap();
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
        &tar(&[file("./f", b"x")]),
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
    let archive = tar(&[symlink("./out", &out), file("./out", b"replaced")]);
    plant(root.path(), "links", &volume, &archive);
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

    let archive = tar(&[symlink("./out", &out)]);
    plant(root.path(), "links", &volume, &archive);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "links"), p, c)
        .await
        .unwrap();
    assert_eq!(fs::read_link(mp.join("out")).unwrap(), outside.path());
}

/// What a restore takes as it is: names that are not UTF-8 (Linux names are bytes) and a
/// sparse file whose map spills into extension blocks, restored byte for byte.
#[tokio::test]
async fn non_utf8_names_and_long_sparse_maps_restore_byte_exact() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("v", Labels::Swarm);
    let volume = format!("{}_v", stack.name);
    // 30 regions: four in the header, the rest in two extension blocks.
    let regions: Vec<(u64, u64)> = (0..30).map(|i| (i * 8192, 512)).collect();
    let real = 30 * 8192 + 4096;
    let archive = tar(&[
        dir(b"./caf\xe9/"),
        file(b"./caf\xe9/x", b"data"),
        hard_link(b"./h\xff", b"./caf\xe9/x"),
        symlink(b"./l\xfe", b"caf\xe9/x"),
        sparse("./sparse", real, &regions),
    ]);
    plant(root.path(), "bytes", &volume, &archive);
    let (p, c) = go();
    w.restore(&restore_req(&stack, "bytes"), p, c)
        .await
        .unwrap_or_else(|e| panic!("{}", berth_agent::chain(&e)));
    let mut names: Vec<Vec<u8>> = fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    let expected: [&[u8]; 4] = [b"caf\xe9", b"h\xff", b"l\xfe", b"sparse"];
    assert_eq!(names, expected);
    let path = |p: &[u8]| mp.join(OsStr::from_bytes(p));
    assert_eq!(fs::read(path(b"caf\xe9/x")).unwrap(), b"data");
    assert_eq!(
        fs::metadata(path(b"h\xff")).unwrap().ino(),
        fs::metadata(path(b"caf\xe9/x")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(path(b"l\xfe"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"caf\xe9/x"
    );
    assert_eq!(
        fs::read(mp.join("sparse")).unwrap(),
        sparse_contents(real, &regions)
    );
}
