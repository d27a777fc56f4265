//! Bad input: archives with `..`, absolute paths, entries through links, device nodes,
//! set-id files, oversized records, sizes that lie, decompression and sparse bombs; app
//! names and labels that could escape or split a key. Refused clearly, naming the entry;
//! nothing written outside and the target left as it was.

use berth_agent::ErrorKind;
use berth_agent::archive::{ArchiveError, BytesCap, CreateInput};
use sha2::{Digest, Sha256};

use super::tree::{build_sample, noise};
use super::{ALL, Backend, Env, chain};
use crate::hostile_tar::{
    Case, Item, cases, dir, escaped, file, hard_link, outside_dir, shown, sparse, sparse_contents,
    symlink, tar_zst,
};

/// Uploads `bytes` in the Go layout (size label only, no checksum) and returns the uuid.
pub(super) async fn upload(env: &Env, bytes: Vec<u8>, extra_meta: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    let meta = format!(
        r#"{{"uuid":"{uuid}","app_name":"src","ts":1,"labels":["size:{}"]{extra_meta}}}"#,
        bytes.len()
    );
    env.put(&format!("_metadata/{uuid}"), meta.into_bytes())
        .await;
    env.put(&format!("src:{uuid}:-:1"), bytes).await;
    uuid
}

/// Every case of the table warm restores share (`crate::hostile_tar`), and what only an app
/// directory refuses: a device node, set-id files.
pub(super) fn app_dir_cases(tag: &str) -> Vec<Case> {
    let mut cases = cases(tag);
    let app_dir_only = [
        (
            "device node",
            vec![dir("dev/"), Item::Device(b"dev/null2".to_vec())],
            "is a device node, which an app directory never gets back",
            "dev/null2",
        ),
        (
            "setuid root file",
            vec![Item::Mode(b"sh".to_vec(), 0o4755)],
            "is a set-user-ID or set-group-ID file",
            "sh",
        ),
        (
            "setgid file",
            vec![file("ok", b"x"), Item::Mode(b"tool".to_vec(), 0o2711)],
            "is a set-user-ID or set-group-ID file",
            "tool",
        ),
    ];
    for (name, items, reason, entry) in app_dir_only {
        cases.push(Case {
            name,
            items,
            reason,
            entry: entry.as_bytes().to_vec(),
        });
    }
    cases
}

/// Every case of the table warm restores share (`crate::hostile_tar`), and what only an app
/// directory refuses, on every backend: refused naming the entry, nothing written outside,
/// the existing app left as it was and no staging left.
#[tokio::test]
async fn unsafe_archives_are_refused_and_nothing_is_written_outside() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let outside = outside_dir(&tag);
    std::fs::create_dir_all(&outside).unwrap();
    let cases = app_dir_cases(&tag);
    for backend in ALL {
        let env = Env::new(backend).await;
        let victim = env.app_dir("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), "original").unwrap();
        for case in &cases {
            let name = case.name;
            let uuid = upload(&env, tar_zst(&case.items), "").await;
            let err = env.restore(&uuid, "victim").await.unwrap_err();
            let text = chain(&err);
            assert!(
                matches!(err, ArchiveError::UnsafeEntry { .. }),
                "{backend:?} {name}: {text}"
            );
            assert!(text.contains(case.reason), "{backend:?} {name}: {text}");
            assert!(
                text.starts_with(&format!("archive entry {} ", shown(&case.entry))),
                "{backend:?} {name}: {text}"
            );
            assert_eq!(err.kind(), ErrorKind::Invalid);
            assert_eq!(
                std::fs::read_dir(&outside).unwrap().count(),
                0,
                "{backend:?} {name}: wrote outside"
            );
            let esc = escaped(&tag);
            let apps = env.apps.path();
            for dir in [apps, apps.parent().unwrap()] {
                assert!(!dir.join(&esc).exists(), "{backend:?} {name}: wrote {esc}");
            }
            assert_eq!(env.apps_entries(), ["victim"], "{backend:?} {name}");
            let names: Vec<_> = std::fs::read_dir(&victim)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["keep"], "{backend:?} {name}: the target changed");
            assert_eq!(
                std::fs::read_to_string(victim.join("keep")).unwrap(),
                "original"
            );
        }
    }
    std::fs::remove_dir(&outside).unwrap();
}

/// A compressed stream cut inside an entry (a Go archive records no checksum): refused
/// naming the entry the archive ends in.
#[tokio::test]
async fn a_truncated_stream_is_refused_naming_the_entry_it_ends_in() {
    let env = Env::new(Backend::Memory).await;
    let whole = tar_zst(&[
        dir("./"),
        file("./small", b"x"),
        Item::File(b"./big".to_vec(), noise(7, 4 << 20)),
    ]);
    let cut = whole[..whole.len() / 2].to_vec();
    let uuid = upload(&env, cut, "").await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{text}");
    assert!(
        text.starts_with("archive entry \"./big\" is cut short"),
        "{text}"
    );
    assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
}

/// A sparse file's real size, not the few bytes it stores, counts against
/// `max_restore_bytes`: a small archive cannot make a huge file.
#[tokio::test]
async fn a_sparse_file_counts_its_real_size_against_the_limit() {
    let env = Env::with(Backend::Memory, |c| c.max_restore_bytes = Some(8 << 20)).await;
    let bomb = tar_zst(&[sparse(
        "./huge",
        64 << 20,
        &[(0, 512), ((64 << 20) - 512, 512)],
    )]);
    assert!(bomb.len() < 4096, "a small archive: {}", bomb.len());
    let uuid = upload(&env, bomb, "").await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{text}");
    assert!(
        text.starts_with("archive entry \"./huge\" is a sparse file of 67108864 bytes")
            && text.contains("max_restore_bytes"),
        "{text}"
    );
    assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
}

/// Names that are not UTF-8 (Linux names are bytes) and a sparse file whose map spills into
/// extension blocks, restored byte for byte; a later entry replaces a symlink in its way and
/// never writes through it.
#[tokio::test]
async fn bytes_names_sparse_files_and_replaced_links_restore_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    let tag = uuid::Uuid::new_v4().simple().to_string();
    let outside = outside_dir(&tag);
    std::fs::create_dir_all(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let env = Env::new(Backend::Memory).await;
    let regions: Vec<(u64, u64)> = (0..30).map(|i| (i * 8192, 512)).collect();
    let real = 30 * 8192 + 4096;
    let archive = tar_zst(&[
        dir("./"),
        dir(b"./caf\xe9/"),
        file(b"./caf\xe9/x", b"data"),
        hard_link(b"./h\xff", b"./caf\xe9/x"),
        symlink(b"./l\xfe", b"caf\xe9/x"),
        sparse("./sparse", real, &regions),
        symlink("./was-link", out),
        file("./was-link", b"replaced"),
        symlink("./was-dir-link", out),
        dir("./was-dir-link/"),
        file("./was-dir-link/inside", b"inside"),
    ]);
    let uuid = upload(&env, archive, "").await;
    env.restore(&uuid, "bytes")
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let app = env.app_dir("bytes");
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(&app)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    let expected: [&[u8]; 6] = [
        b"caf\xe9",
        b"h\xff",
        b"l\xfe",
        b"sparse",
        b"was-dir-link",
        b"was-link",
    ];
    assert_eq!(names, expected, "no name changed, none added");
    let path = |p: &[u8]| app.join(OsStr::from_bytes(p));
    assert_eq!(std::fs::read(path(b"caf\xe9/x")).unwrap(), b"data");
    assert_eq!(
        std::fs::metadata(path(b"h\xff")).unwrap().ino(),
        std::fs::metadata(path(b"caf\xe9/x")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(path(b"l\xfe"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"caf\xe9/x"
    );
    let restored = std::fs::read(app.join("sparse")).unwrap();
    assert!(
        restored == sparse_contents(real, &regions),
        "sparse file differs"
    );
    assert!(
        std::fs::metadata(app.join("sparse")).unwrap().blocks() * 512 < real,
        "holes were written"
    );
    assert_eq!(std::fs::read(app.join("was-link")).unwrap(), b"replaced");
    assert_eq!(
        std::fs::read(app.join("was-dir-link/inside")).unwrap(),
        b"inside"
    );
    assert!(
        std::fs::symlink_metadata(app.join("was-dir-link"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through a link"
    );
    std::fs::remove_dir(&outside).unwrap();
}

#[tokio::test]
async fn a_decompression_bomb_is_stopped_at_the_limit() {
    for backend in ALL {
        let env = Env::with(backend, |c| c.max_restore_bytes = Some(8 << 20)).await;
        let bomb = tar_zst(&[Item::Zeros(b"zeros".to_vec(), 64 << 20)]);
        assert!(bomb.len() < 64 << 10, "a small archive: {}", bomb.len());
        let uuid = upload(&env, bomb.clone(), "").await;
        let err = env.restore(&uuid, "victim").await.unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooLarge { .. }),
            "{backend:?}: {}",
            chain(&err)
        );
        assert!(chain(&err).contains("decompression bomb"));
        assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
    }
    // Berth's metadata records the exact tar length: more is refused whatever the limit.
    let env = Env::new(Backend::Memory).await;
    let bomb = tar_zst(&[Item::Zeros(b"zeros".to_vec(), 4 << 20)]);
    let sha = hex::encode(Sha256::digest(&bomb));
    let uuid = upload(
        &env,
        bomb,
        &format!(r#","sha256":"{sha}","tar_bytes":65536"#),
    )
    .await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooLarge { limit: 65536, .. }),
        "{}",
        chain(&err)
    );
}

/// With no length recorded and no fixed cap (the defaults), a bomb stops where unpacking
/// more would take the filesystem below `keep_free_bytes`.
#[tokio::test]
async fn a_bomb_without_a_recorded_length_stops_above_the_free_space_floor() {
    let tmp = std::env::temp_dir();
    let st = rustix::fs::statvfs(&tmp).unwrap();
    let free = st.f_bavail * st.f_frsize;
    // Room for about 64 MiB above the floor; the bomb decodes to 4 GiB. Other tests change
    // the free space meanwhile (by a few hundred MB at most), so the cap is only bounded.
    let floor = free.saturating_sub(64 << 20);
    let env = Env::with(Backend::Memory, |c| c.keep_free_bytes = floor).await;
    let bomb = tar_zst(&[Item::Zeros(b"zeros".to_vec(), 4 << 30)]);
    assert!(bomb.len() < 1 << 20, "a small archive: {}", bomb.len());
    let uuid = upload(&env, bomb, "").await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::TooLarge { limit, why: BytesCap::FreeSpace { .. }, .. }
                if *limit < 1 << 30
        ),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("keep_free_bytes"), "{}", chain(&err));
    assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
}

/// A small valid archive (one file), for tests that swap it in for another.
pub fn tiny_archive() -> Vec<u8> {
    tar_zst(&[file("note.txt", b"not what was archived")])
}

#[tokio::test]
async fn too_many_entries_are_refused() {
    let env = Env::with(Backend::Memory, |c| c.max_restore_entries = 3).await;
    let items = [
        file("a", b"1"),
        file("b", b"2"),
        file("c", b"3"),
        file("d", b"4"),
    ];
    let uuid = upload(&env, tar_zst(&items), "").await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyEntries { .. }),
        "{}",
        chain(&err)
    );
    assert!(env.apps_entries().is_empty());
}

#[tokio::test]
async fn names_labels_and_levels_that_could_escape_or_split_a_key_are_refused() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;
    let before = env.apps_entries();
    for bad in ["a:b", "a/b", "..", "../web", "a\0b", "", ".hidden"] {
        let err = env
            .create(CreateInput {
                app: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::App(_)), "{bad:?}: {err}");
        assert!(
            chain(&err).starts_with("invalid app name: app name"),
            "{}",
            chain(&err)
        );
        if !bad.is_empty() {
            let err = env.restore(&out.uuid, bad).await.unwrap_err();
            assert!(matches!(err, ArchiveError::App(_)), "{bad:?}: {err}");
        }
    }
    let cases: [(CreateInput, &str); 4] = [
        (
            CreateInput {
                app: "web".into(),
                index_label: "a:b".into(),
                ..Default::default()
            },
            "index label",
        ),
        (
            CreateInput {
                app: "web".into(),
                index_label: "a/b".into(),
                ..Default::default()
            },
            "index label",
        ),
        (
            CreateInput {
                app: "web".into(),
                labels: vec!["size:1".into()],
                ..Default::default()
            },
            "reserved",
        ),
        (
            CreateInput {
                app: "web".into(),
                zstd_level: Some(30),
                ..Default::default()
            },
            "1 to 19",
        ),
    ];
    for (input, expected) in cases {
        let err = env.create(input).await.unwrap_err();
        assert!(chain(&err).contains(expected), "{}", chain(&err));
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }
    let err = env.restore("../../etc/passwd", "x").await.unwrap_err();
    assert!(chain(&err).contains("not a uuid"), "{}", chain(&err));
    assert_eq!(env.apps_entries(), before);
    assert_eq!(env.keys().await.len(), 2, "only the one good archive");
}

/// What an app-directory restore refuses is refused at create too, naming the file, so no
/// archive is made that cannot be restored; nothing is uploaded.
#[tokio::test]
async fn an_app_with_a_device_node_or_set_id_file_is_not_archived() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Backend::Memory).await;
    for (name, what) in [("setuid", 0o4755), ("setgid", 0o2755), ("device", 0)] {
        let app = format!("app-{name}");
        let dir = env.app_dir(&app);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let path = dir.join("bin").join(name);
        if what == 0 {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(1, 3),
            )
            .unwrap();
        } else {
            std::fs::write(&path, b"x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(what)).unwrap();
        }
        let err = env
            .create(CreateInput {
                app: app.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ArchiveError::Unrestorable { .. }),
            "{name}: {}",
            chain(&err)
        );
        let msg = chain(&err);
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("not archived"),
            "{msg}"
        );
        assert!(
            env.keys().await.is_empty(),
            "{name}: {:?}",
            env.keys().await
        );
    }
}
