//! Bad input: archives with `..`, absolute paths, escaping links, device nodes, set-id files,
//! decompression bombs; app names and labels that could escape or split a key. Refused
//! clearly, nothing written outside.

use std::io::{self, Read};
use std::path::PathBuf;

use berth_agent::ErrorKind;
use berth_agent::archive::{ArchiveError, BytesCap, CreateInput};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::tree::build_sample;
use super::{ALL, Backend, Env, chain};

enum Item<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Zeros(&'a str, u64),
    /// A character device (major 1, minor 3: /dev/null's numbers).
    Device(&'a str),
    /// A regular file with this mode.
    Mode(&'a str, u32),
}

/// A tar + zstd stream written header by header, so names are exactly what we say (the tar
/// crate's writer would refuse most of them).
fn hostile_archive(items: &[Item]) -> Vec<u8> {
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for item in items {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let (name, data): (&str, Box<dyn Read>) = match *item {
            Item::File(name, content) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(content.len() as u64);
                (name, Box::new(content))
            }
            Item::Zeros(name, size) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                (name, Box::new(io::repeat(0).take(size)))
            }
            Item::Dir(name) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                (name, Box::new(io::empty()))
            }
            Item::Device(name) => {
                h.set_entry_type(EntryType::Char);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (name, Box::new(io::empty()))
            }
            Item::Mode(name, mode) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(mode);
                h.set_size(2);
                (name, Box::new(&b"#!"[..]))
            }
            Item::Symlink(name, target) | Item::HardLink(name, target) => {
                let kind = if matches!(item, Item::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                h.set_entry_type(kind);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
                (name, Box::new(io::empty()))
            }
        };
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Uploads `bytes` in the Go layout (size label only, no checksum) and returns the uuid.
async fn upload(env: &Env, bytes: Vec<u8>, extra_meta: &str) -> String {
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

fn outside_paths(env: &Env, tag: &str) -> Vec<PathBuf> {
    let apps = env.apps.path();
    vec![
        apps.join(format!("escaped-{tag}.txt")),
        apps.parent().unwrap().join(format!("escaped-{tag}.txt")),
        PathBuf::from(format!("/tmp/berth-abs-{tag}")),
    ]
}

#[tokio::test]
async fn unsafe_archives_are_refused_and_nothing_is_written_outside() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let up = format!("../escaped-{tag}.txt");
    let up2 = format!("./../../escaped-{tag}.txt");
    let abs = format!("/tmp/berth-abs-{tag}/x.txt");
    let via = format!("out/escaped-{tag}.txt");
    let chain_escape = format!("m/escaped-{tag}.txt");
    let cases: Vec<(&str, Vec<Item>, &str)> = vec![
        (
            "dot-dot",
            vec![Item::Dir("./"), Item::File(&up, b"x")],
            "'..'",
        ),
        ("dot-dot deeper", vec![Item::File(&up2, b"x")], "'..'"),
        ("absolute", vec![Item::File(&abs, b"x")], "absolute"),
        (
            "symlink out",
            vec![Item::Symlink("out", "../.."), Item::File(&via, b"x")],
            "points outside",
        ),
        (
            "absolute symlink",
            vec![Item::Symlink("etc", "/etc")],
            "points outside",
        ),
        (
            "hard link out",
            vec![Item::HardLink("pw", "../../etc/hostname")],
            "'..'",
        ),
        (
            "symlink chain",
            vec![
                Item::Dir("s/t/"),
                Item::Symlink("s/t/l", "../../u"),
                Item::Symlink("m", "s/t/l/../.."),
                Item::File(&chain_escape, b"x"),
            ],
            "leads outside",
        ),
        (
            "device node",
            vec![Item::Dir("dev/"), Item::Device("dev/null2")],
            "a device node",
        ),
        (
            "setuid root file",
            vec![Item::Mode("sh", 0o4755)],
            "set-user-ID or set-group-ID",
        ),
        (
            "setgid file",
            vec![Item::File("ok", b"x"), Item::Mode("tool", 0o2711)],
            "set-user-ID or set-group-ID",
        ),
    ];
    for backend in ALL {
        let env = Env::new(backend).await;
        for (name, items, reason) in &cases {
            let uuid = upload(&env, hostile_archive(items), "").await;
            let err = env.restore(&uuid, "victim").await.unwrap_err();
            let text = chain(&err);
            assert!(
                matches!(err, ArchiveError::UnsafeEntry { .. }),
                "{backend:?} {name}: {text}"
            );
            assert!(text.contains(reason), "{backend:?} {name}: {text}");
            assert_eq!(err.kind(), ErrorKind::Invalid);
            for p in outside_paths(&env, &tag) {
                assert!(
                    !p.exists(),
                    "{backend:?} {name}: {} was written",
                    p.display()
                );
            }
            assert!(
                env.apps_entries().is_empty(),
                "{backend:?} {name}: {:?}",
                env.apps_entries()
            );
        }
    }
}

#[tokio::test]
async fn a_decompression_bomb_is_stopped_at_the_limit() {
    for backend in ALL {
        let env = Env::with(backend, |c| c.max_restore_bytes = Some(8 << 20)).await;
        let bomb = hostile_archive(&[Item::Zeros("zeros", 64 << 20)]);
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
    let bomb = hostile_archive(&[Item::Zeros("zeros", 4 << 20)]);
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
    // Room for about 32 MiB above the floor; the bomb decodes to 512 MiB.
    let floor = free.saturating_sub(32 << 20);
    let env = Env::with(Backend::Memory, |c| c.keep_free_bytes = floor).await;
    let bomb = hostile_archive(&[Item::Zeros("zeros", 512 << 20)]);
    assert!(bomb.len() < 256 << 10, "a small archive: {}", bomb.len());
    let uuid = upload(&env, bomb, "").await;
    let err = env.restore(&uuid, "victim").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::TooLarge { limit, why: BytesCap::FreeSpace { .. }, .. }
                if *limit < 64 << 20
        ),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("keep_free_bytes"), "{}", chain(&err));
    assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
}

/// A small valid archive (one file), for tests that swap it in for another.
pub fn tiny_archive() -> Vec<u8> {
    hostile_archive(&[Item::File("note.txt", b"not what was archived")])
}

#[tokio::test]
async fn too_many_entries_are_refused() {
    let env = Env::with(Backend::Memory, |c| c.max_restore_entries = 3).await;
    let items: Vec<Item> = vec![
        Item::File("a", b"1"),
        Item::File("b", b"2"),
        Item::File("c", b"3"),
        Item::File("d", b"4"),
    ];
    let uuid = upload(&env, hostile_archive(&items), "").await;
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

#[tokio::test]
async fn an_app_with_a_link_escaping_it_is_not_archived() {
    let env = Env::new(Backend::Memory).await;
    let dir = env.app_dir("web");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("config")).unwrap();
    let err = env
        .create(CreateInput {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::EscapingLink { .. }),
        "{}",
        chain(&err)
    );
    assert!(env.keys().await.is_empty());
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
