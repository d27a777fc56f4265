//! Create then restore on every backend; archives in the Go node API's layout; idempotent
//! creates; the index label; the JSON task interface.

use std::process::Command;

use berth_agent::archive::{
    ArchiveError, ArchiveProgress, CREATE_TASK, CreateInput, CreateOutput, Phase, RESTORE_TASK,
    RestoreOutput, Witness,
};
use berth_shared::archive::ArchiveMeta;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tree::{assert_same, build_sample, snapshot};
use super::{ALL, Backend, Env, chain};

#[tokio::test]
async fn round_trip_keeps_contents_modes_owners_mtimes_and_links() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let source = snapshot(&env.app_dir("web"));
        let (progress, watcher) = watch::channel(ArchiveProgress::default());
        let input = CreateInput {
            app: "web".into(),
            labels: vec!["owner:alice".into(), "note:nightly run".into()],
            index_label: "alice".into(),
            zstd_level: Some(3),
            ..Default::default()
        };
        let out = env
            .archiver
            .create(input, &progress, &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {}", chain(&e)));

        // The key and metadata follow the Go layout, written after the data.
        assert_eq!(
            out.key,
            format!("web:{}:alice:{}", out.uuid, out.ts),
            "{backend:?}"
        );
        assert!(!out.existing);
        let bytes = env.get(&out.key).await;
        assert_eq!(bytes.len() as u64, out.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), out.sha256);
        let meta =
            ArchiveMeta::from_json(&env.get(&format!("_metadata/{}", out.uuid)).await).unwrap();
        assert_eq!(
            (meta.uuid.as_str(), meta.app_name.as_str(), meta.ts),
            (out.uuid.as_str(), "web", out.ts)
        );
        assert_eq!(
            meta.labels,
            vec![
                "owner:alice".to_owned(),
                "note:nightly run".into(),
                format!("size:{}", out.size)
            ]
        );
        assert_eq!(meta.sha256.as_deref(), Some(out.sha256.as_str()));
        assert_eq!(meta.format.as_deref(), Some("tar+zstd"));
        assert_eq!(meta.tar_bytes, Some(out.tar_bytes));
        assert_eq!(env.keys().await, {
            let mut k = vec![out.key.clone(), format!("_metadata/{}", out.uuid)];
            k.sort();
            k
        });

        // Progress ends complete, with the pre-scan's totals.
        let p = watcher.borrow().clone();
        assert_eq!(p.phase, Phase::Done);
        assert_eq!(
            (p.bytes_done, p.entries_done),
            (p.bytes_total, p.entries_total),
            "{p:?}"
        );
        assert_eq!(p.entries_total, out.entries);
        assert_eq!(p.bytes_stored, out.size);
        assert!(p.compression_ratio() > 1.5, "{p:?}");

        // Restored under a new name, the tree is the same (the `.chowned` marker removed).
        let restored = env.restore_recorded(&out, "web-copy").await.unwrap();
        assert_eq!(restored.app, "web-copy");
        assert_eq!(restored.entries, out.entries);
        assert!(restored.sha256_verified && restored.owners_restored);
        assert_eq!(restored.sha256, out.sha256);
        assert_same(&source, &snapshot(&env.app_dir("web-copy")));
        assert!(!env.app_dir("web-copy/.chowned").exists());
        assert_eq!(
            env.apps_entries(),
            vec!["web", "web-copy"],
            "no staging left"
        );
    }
}

#[tokio::test]
async fn restore_over_an_existing_app_replaces_it_whole() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let source = snapshot(&env.app_dir("web"));
        let out = env.create_app("web").await;
        std::fs::write(env.app_dir("web/only-in-the-live-copy"), b"x").unwrap();
        std::fs::remove_file(env.app_dir("web/README.md")).unwrap();
        env.restore(&out.uuid, "web").await.unwrap();
        assert_same(&source, &snapshot(&env.app_dir("web")));
        assert_eq!(
            env.apps_entries(),
            vec!["web"],
            "{backend:?}: old copy removed"
        );
    }
}

/// What the Go node API did: `cd <app> && tar -acf <tmp>.tar.zst ./`, metadata first with a
/// `size:` label, then the file uploaded under `<app>:<uuid>:<label>:<ts>`.
pub async fn put_go_archive(env: &Env, app: &str, index: &str, ts: i64) -> (String, String) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("snap.tar.zst");
    let status = Command::new("tar")
        .arg("-acf")
        .arg(&file)
        .arg("./")
        .current_dir(env.app_dir(app))
        .status()
        .expect("GNU tar and zstd are needed: apt-get install -y tar zstd");
    assert!(status.success());
    let bytes = std::fs::read(&file).unwrap();
    let meta = format!(
        r#"{{"uuid":"{uuid}","app_name":"{app}","ts":{ts},"labels":["owner:{index}","size:{}"]}}"#,
        bytes.len()
    );
    env.put(&format!("_metadata/{uuid}"), meta.into_bytes())
        .await;
    let key = format!("{app}:{uuid}:{index}:{ts}");
    env.put(&key, bytes).await;
    (uuid, key)
}

#[tokio::test]
async fn archives_in_the_go_layout_restore() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("legacy"));
        let source = snapshot(&env.app_dir("legacy"));
        let (uuid, key) = put_go_archive(&env, "legacy", "owner7", 1_650_000_000).await;
        let out = env.restore(&uuid, "legacy-restored").await.unwrap();
        assert_eq!(out.key, key);
        assert!(!out.sha256_verified, "Go archives record no checksum");
        assert_same(&source, &snapshot(&env.app_dir("legacy-restored")));
    }
}

/// An archive no saga recorded is restored only when its object matches its `size:` label:
/// without one, or with another size, it is refused and nothing is written.
#[tokio::test]
async fn an_unrecorded_archive_needs_a_size_label_that_matches() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("legacy"));
    let (uuid, _) = put_go_archive(&env, "legacy", "owner7", 1_650_000_000).await;
    let meta_key = format!("_metadata/{uuid}");
    let meta = String::from_utf8(env.get(&meta_key).await).unwrap();
    let size_label = meta.split('"').find(|l| l.starts_with("size:")).unwrap();

    env.put(&meta_key, meta.replace(size_label, "size:12").into_bytes())
        .await;
    let err = env.restore(&uuid, "copy").await.unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::SizeMismatch {
                expected: 12,
                by: Witness::Bucket,
                ..
            }
        ),
        "{}",
        chain(&err)
    );

    let without = meta.replace(&format!(r#","{size_label}""#), "");
    assert_ne!(without, meta);
    env.put(&meta_key, without.into_bytes()).await;
    let err = env.restore(&uuid, "copy").await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::Unverifiable { .. }),
        "{}",
        chain(&err)
    );
    assert!(
        chain(&err).contains("no checksum recorded"),
        "{}",
        chain(&err)
    );
    assert_eq!(env.apps_entries(), vec!["legacy"]);
}

#[tokio::test]
async fn create_is_idempotent_with_a_caller_uuid() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let uuid = "0190a5c4-0000-7000-8000-000000000001".to_owned();
    let input = CreateInput {
        app: "web".into(),
        uuid: Some(uuid.clone()),
        ..Default::default()
    };
    let first = env.create(input.clone()).await.unwrap();
    let again = env.create(input.clone()).await.unwrap();
    assert!(!first.existing && again.existing);
    assert_eq!(
        CreateOutput {
            existing: false,
            ..again.clone()
        },
        first
    );
    assert_eq!(env.keys().await.len(), 2);

    // A repeat after a crash between data and metadata: the stray data goes, a fresh one is made.
    env.store
        .delete(&object_store::path::Path::from(format!("_metadata/{uuid}")))
        .await
        .unwrap();
    let third = env.create(input).await.unwrap();
    assert!(!third.existing);
    assert_eq!(env.keys().await.len(), 2);

    // The same uuid for another app is refused.
    build_sample(&env.app_dir("other"));
    let err = env
        .create(CreateInput {
            app: "other".into(),
            uuid: Some(uuid),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::IdInUse { .. }), "{err}");
}

#[tokio::test]
async fn the_index_label_name_keeps_go_listing_by_label_working() {
    let env = Env::with(Backend::Memory, |c| {
        c.index_label_name = Some("owner".into())
    })
    .await;
    build_sample(&env.app_dir("web"));
    let from_label = env
        .create(CreateInput {
            app: "web".into(),
            labels: vec!["owner:bob".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(from_label.key.split(':').nth(2), Some("bob"));
    let from_value = env
        .create(CreateInput {
            app: "web".into(),
            index_label: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let meta =
        ArchiveMeta::from_json(&env.get(&format!("_metadata/{}", from_value.uuid)).await).unwrap();
    assert_eq!(meta.labels[0], "owner:carol");
    assert_eq!(meta.index.as_deref(), Some("carol"));
}

#[tokio::test]
async fn tasks_speak_json() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let cancel = CancellationToken::new();
    let out = env
        .archiver
        .run_task(
            CREATE_TASK,
            r#"{"app":"web","labels":["a:b"],"index_label":"","zstd_level":1}"#,
            &progress,
            &cancel,
        )
        .await
        .unwrap();
    let created: CreateOutput = serde_json::from_str(&out).unwrap();
    let inputs = format!(r#"{{"uuid":"{}","target_app":"web2"}}"#, created.uuid);
    let out = env
        .archiver
        .run_task(RESTORE_TASK, &inputs, &progress, &cancel)
        .await
        .unwrap();
    let restored: RestoreOutput = serde_json::from_str(&out).unwrap();
    assert_eq!(restored.app, "web2");

    // What the saga sends: its inputs without host_id, absent values as null.
    let saga_style = r#"{"app":"web","labels":null,"index_label":null,"zstd_level":null}"#;
    let out = env
        .archiver
        .run_task(CREATE_TASK, saga_style, &progress, &cancel)
        .await
        .unwrap();
    let created: CreateOutput = serde_json::from_str(&out).unwrap();
    assert!(created.key.contains(":-:"), "{}", created.key);

    let err = env
        .archiver
        .run_task(
            CREATE_TASK,
            r#"{"app":"web","colour":"red"}"#,
            &progress,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(chain(&err).contains("colour"), "{}", chain(&err));
    assert!(!err.retryable());
    let err = env
        .archiver
        .run_task("warm_snapshot", "{}", &progress, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::UnknownKind(_)));
}

/// Links are data: an app with links out of it (`certs -> /etc/ssl/certs`, `up -> ../..`),
/// made by Berth or by the Go tool, restores with the links as they were; nothing is
/// followed. With `refuse_escaping_links` those restores are refused, naming the link.
#[tokio::test]
async fn links_out_of_the_app_are_archived_and_restored_as_they_are() {
    let links = [
        ("certs", "/etc/ssl/certs"),
        ("up", "../.."),
        ("in", "data/sub"),
    ];
    // A small app: the sample tree's megabytes, made and removed by three backends at
    // once, would move the free space other tests measure.
    let make = |env: &Env| {
        let app = env.app_dir("linked");
        std::fs::create_dir_all(app.join("data/sub")).unwrap();
        std::fs::write(app.join("data/sub/config.yml"), b"tls: on\n").unwrap();
        std::fs::write(app.join("README.md"), b"# linked\n").unwrap();
        for (name, target) in links {
            std::os::unix::fs::symlink(target, env.app_dir("linked").join(name)).unwrap();
        }
    };
    let same_links = |env: &Env, app: &str| {
        for (name, target) in links {
            let link = env.app_dir(app).join(name);
            assert!(
                std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "{app}/{name}"
            );
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                std::path::Path::new(target)
            );
        }
    };
    for backend in ALL {
        let env = Env::new(backend).await;
        make(&env);
        let source = snapshot(&env.app_dir("linked"));
        let out = env.create_app("linked").await;
        env.restore(&out.uuid, "linked-copy")
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {}", chain(&e)));
        same_links(&env, "linked-copy");
        assert_same(&source, &snapshot(&env.app_dir("linked-copy")));
        let (uuid, _) = put_go_archive(&env, "linked", "owner7", 1_650_000_000).await;
        env.restore(&uuid, "linked-go")
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {}", chain(&e)));
        same_links(&env, "linked-go");
    }

    let env = Env::with(Backend::Memory, |c| c.refuse_escaping_links = true).await;
    make(&env);
    let out = env.create_app("linked").await;
    let (go_uuid, _) = put_go_archive(&env, "linked", "owner7", 1_650_000_000).await;
    // Berth archives in name order; GNU tar in directory order: either link comes first.
    let refusals = |prefix: &str| {
        [("certs", "/etc/ssl/certs"), ("up", "../..")].map(|(name, target)| {
            format!(
                "archive entry \"{prefix}{name}\" is a symlink to {target:?}, which leads \
                 outside the target"
            )
        })
    };
    for (uuid, prefix) in [(out.uuid.as_str(), ""), (go_uuid.as_str(), "./")] {
        let err = env.restore(uuid, "refused").await.unwrap_err();
        let text = chain(&err);
        assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{text}");
        assert!(
            refusals(prefix)
                .iter()
                .any(|r| text.starts_with(r.as_str())),
            "{text}"
        );
        assert!(!env.app_dir("refused").exists());
    }
    // Only `certs` and `up` lead out: without them the app restores.
    for name in ["certs", "up"] {
        std::fs::remove_file(env.app_dir("linked").join(name)).unwrap();
    }
    let out = env.create_app("linked").await;
    env.restore(&out.uuid, "kept").await.unwrap();
    assert_eq!(
        std::fs::read_link(env.app_dir("kept/in")).unwrap(),
        std::path::Path::new("data/sub")
    );
}

/// A link made to escape through an earlier one (`p -> .`, then `esc -> p/p/p/p/../../../..`,
/// inside as it reads) is refused under `refuse_escaping_links`: links are resolved against
/// the tree extracted so far, and once more when it is complete.
#[tokio::test]
async fn escaping_link_chains_are_resolved_against_the_tree() {
    use crate::hostile_tar::{dir, symlink, tar_zst};
    let env = Env::with(Backend::Memory, |c| c.refuse_escaping_links = true).await;
    let cases = [
        (
            vec![
                dir("./"),
                symlink("p", "."),
                symlink("esc", "p/p/p/p/../../../.."),
            ],
            "esc",
        ),
        (
            vec![
                dir("./"),
                symlink("p", "."),
                symlink("esc", "p/p/p/p/../../../../.."),
            ],
            "esc",
        ),
        // Inside when made (`d` is not there yet); `d -> .` makes it lead out.
        (
            vec![dir("./"), symlink("l", "d/.."), symlink("d", ".")],
            "l",
        ),
        (
            vec![
                dir("./"),
                dir("a/b/"),
                symlink("a/b/up", "../../.."),
                symlink("x", "a"),
            ],
            "a/b/up",
        ),
    ];
    for (items, entry) in cases {
        let archive = tar_zst(&items);
        let uuid = uuid::Uuid::new_v4().to_string();
        let meta = format!(
            r#"{{"uuid":"{uuid}","app_name":"src","ts":1,"labels":["size:{}"]}}"#,
            archive.len()
        );
        env.put(&format!("_metadata/{uuid}"), meta.into_bytes())
            .await;
        env.put(&format!("src:{uuid}:-:1"), archive).await;
        let err = env.restore(&uuid, "victim").await.unwrap_err();
        let text = chain(&err);
        assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{text}");
        assert!(
            text.starts_with(&format!("archive entry {entry:?} is a symlink"))
                && text.contains("leads outside"),
            "{text}"
        );
        assert!(env.apps_entries().is_empty(), "{:?}", env.apps_entries());
    }
}
