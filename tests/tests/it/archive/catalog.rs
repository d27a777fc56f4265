//! The catalog over every backend: list, get, link, prune, delete; restore compared with the
//! source tree; archives in the Go node API's layout; presigned links that expire.

use std::process::Command;
use std::time::Duration;

use berth_coordinator::archive::PruneMode;
use berth_coordinator::error::{ErrorCode, ServiceError};
use berth_shared::AppName;
use berth_shared::archive::{ArchiveId, RetentionPolicy};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{ALL, Backend, assert_same_tree, both, build_app, run};

#[tokio::test]
async fn create_list_link_restore_prune_and_delete_on_every_backend() {
    for backend in ALL {
        let b = both(backend).await;
        build_app(&b.dir("web"));
        build_app(&b.dir("db"));
        let first = b.create("web", &["owner:alice"], "alice").await;
        let second = b.create("web", &["owner:bob"], "bob").await;
        let db = b.create("db", &["owner:alice"], "alice").await;

        // Listing reads keys: by app, by several apps, by label. Newest first.
        assert_eq!(
            b.list(&["web"], None).await,
            vec![second.uuid.clone(), first.uuid.clone()],
            "{backend:?}"
        );
        assert_eq!(b.list(&["web", "db"], None).await.len(), 3);
        let mut alice = b.list(&[], Some("alice")).await;
        alice.sort();
        let mut expected = vec![first.uuid.clone(), db.uuid.clone()];
        expected.sort();
        assert_eq!(alice, expected);

        // Get gives the metadata.
        let id = ArchiveId::new(first.uuid.as_str()).unwrap();
        let detail = b.catalog.get(&id).await.unwrap();
        assert_eq!(detail.entry.size, first.size);
        assert_eq!(detail.meta.sha256.as_deref(), Some(first.sha256.as_str()));
        assert!(detail.meta.labels.contains(&format!("size:{}", first.size)));

        // A link downloads the same bytes.
        let stored = b
            .raw
            .get(&ObjectPath::from(first.key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        match backend {
            Backend::S3 => {
                let link = b.catalog.link(&id, Some(600), 0).await.unwrap();
                assert!(
                    link.url.starts_with(&b.s3.as_ref().unwrap().endpoint),
                    "{}",
                    link.url
                );
                let body = reqwest::get(&link.url).await.unwrap();
                assert_eq!(body.status(), 200);
                assert_eq!(body.bytes().await.unwrap(), stored);
            }
            Backend::File => {
                let link = b.catalog.link(&id, None, 0).await.unwrap();
                let path = link.url.strip_prefix("file://").unwrap();
                assert_eq!(std::fs::read(path).unwrap(), stored.to_vec());
                assert_eq!(link.expires_at_ms, 0);
            }
            Backend::Memory => {
                let err = b.catalog.link(&id, None, 0).await.unwrap_err();
                assert_eq!(err.error_code(), ErrorCode::FailedPrecondition);
            }
        }

        // Restored under a new name, on "another host" (a fresh apps root works the same).
        b.restore(&first.uuid, "web-restored").await;
        assert_same_tree(&b.dir("web"), &b.dir("web-restored"));

        // Retention: keep the last one of web; db untouched.
        let web = AppName::new("web").unwrap();
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let pruned = b
            .catalog
            .prune(Some(&web), policy, PruneMode::Delete, i64::MAX / 2)
            .await
            .unwrap();
        assert_eq!(pruned.deleted.len(), 1);
        assert_eq!(pruned.deleted[0].key.id().as_str(), first.uuid);
        assert_eq!(b.list(&["web"], None).await, vec![second.uuid.clone()]);

        // Delete one, then all of an app: data and metadata go.
        b.catalog
            .delete(&ArchiveId::new(second.uuid.as_str()).unwrap())
            .await
            .unwrap();
        let gone = b
            .catalog
            .delete_app(&AppName::new("db").unwrap())
            .await
            .unwrap();
        assert_eq!(gone.len(), 1);
        let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(b.raw.list(None))
            .await
            .unwrap();
        assert!(left.is_empty(), "{backend:?}: {left:?}");
    }
}

#[tokio::test]
async fn a_presigned_link_downloads_the_archive_then_expires() {
    let b = both(Backend::S3).await;
    build_app(&b.dir("web"));
    let out = b.create("web", &[], "").await;
    let id = ArchiveId::new(out.uuid.as_str()).unwrap();
    // Signed in whole seconds: a 3 s link is good for at least 2 s, time enough to fetch.
    let link = b.catalog.link(&id, Some(3), 0).await.unwrap();
    let fresh = reqwest::get(&link.url).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.bytes().await.unwrap().len() as u64, out.size);
    // The server checks expiry against its clock, in whole seconds.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let expired = reqwest::get(&link.url).await.unwrap();
    assert_eq!(expired.status(), 403);
    assert!(expired.text().await.unwrap().contains("expired"));
    // A link is not a key to anything else: changing the object's name breaks the signature.
    let other = link.url.replacen(&out.uuid[..8], "00000000", 1);
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 403);
}

#[tokio::test]
async fn archives_in_the_go_layout_are_listed_and_restored() {
    for backend in ALL {
        let b = both(backend).await;
        build_app(&b.dir("legacy"));
        // What the Go node API did: tar -acf, metadata (with size:) first, then the upload.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("snap.tar.zst");
        run(Command::new("tar")
            .arg("-acf")
            .arg(&file)
            .arg("./")
            .current_dir(b.dir("legacy")));
        let bytes = std::fs::read(&file).unwrap();
        let uuid = uuid::Uuid::new_v4().to_string();
        let meta = format!(
            r#"{{"uuid":"{uuid}","app_name":"legacy","ts":1650000000,"labels":["owner:7","size:{}"]}}"#,
            bytes.len()
        );
        let key = format!("legacy:{uuid}:7:1650000000");
        b.raw
            .put(
                &ObjectPath::from(format!("_metadata/{uuid}")),
                PutPayload::from(meta.into_bytes()),
            )
            .await
            .unwrap();
        b.raw
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
            .await
            .unwrap();

        assert_eq!(
            b.list(&["legacy"], None).await,
            vec![uuid.clone()],
            "{backend:?}"
        );
        assert_eq!(b.list(&[], Some("7")).await, vec![uuid.clone()]);
        let detail = b
            .catalog
            .get(&ArchiveId::new(uuid.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(detail.entry.key.as_str(), key);
        assert!(detail.meta.sha256.is_none());
        b.restore(&uuid, "legacy-restored").await;
        assert_same_tree(&b.dir("legacy"), &b.dir("legacy-restored"));
    }
}
