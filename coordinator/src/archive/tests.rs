//! Catalog tests over `memory://` and `file://` (the S3 conformance run, with presigned links,
//! is in the end-to-end suite, `tests/tests/it/archive`).

use std::sync::Arc;

use berth_shared::archive::{ArchiveMeta, RetentionError, Rule};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::*;
use crate::error::{ErrorCode, ServiceError};

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Writes an archive the way the Go node API lays it out: data object and metadata.
async fn put(
    store: &dyn ObjectStore,
    app: &str,
    n: u32,
    index: &str,
    ts: i64,
    data: &[u8],
    with_meta: bool,
) -> String {
    let key = format!("{app}:{}:{index}:{ts}", uuid(n));
    store
        .put(&Path::from(key.as_str()), PutPayload::from(data.to_vec()))
        .await
        .unwrap();
    if with_meta {
        let mut meta = ArchiveMeta::new(uuid(n), app, ts);
        meta.labels.push(format!("owner:{index}"));
        meta.push_size(data.len() as u64);
        store
            .put(
                &Path::from(format!("_metadata/{}", uuid(n)).as_str()),
                PutPayload::from(meta.to_json()),
            )
            .await
            .unwrap();
    }
    key
}

fn memory() -> (Catalog, Arc<InMemory>) {
    let store = Arc::new(InMemory::new());
    let catalog = Catalog::with_store(ArchiveConfig::for_url("memory://"), store.clone());
    (catalog, store)
}

fn app(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

fn id(n: u32) -> ArchiveId {
    ArchiveId::new(uuid(n)).unwrap()
}

fn uuids(entries: &[ArchiveEntry]) -> Vec<String> {
    entries.iter().map(|e| e.key.id().to_string()).collect()
}

#[tokio::test]
async fn lists_by_app_apps_and_index_newest_first_from_keys() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "alice", 100, b"a", true).await;
    put(&*store, "web", 2, "-", 300, b"bb", true).await;
    put(&*store, "web.example.org", 3, "alice", 200, b"c", true).await;
    put(&*store, "db", 4, "bob", 50, b"d", true).await;
    // Not archives: skipped, never fatal.
    store
        .put(&Path::from("README"), PutPayload::from_static(b"x"))
        .await
        .unwrap();
    store
        .put(&Path::from("web:nope:-:1"), PutPayload::from_static(b"x"))
        .await
        .unwrap();

    let web = catalog
        .list(&ListQuery {
            apps: vec![app("web")],
            index: None,
        })
        .await
        .unwrap();
    // `web:` does not match `web.example.org:`.
    assert_eq!(uuids(&web), vec![uuid(2), uuid(1)]);
    assert_eq!(web[0].size, 2);
    assert_eq!(web[1].key.index(), Some("alice"));

    let two = catalog
        .list(&ListQuery {
            apps: vec![app("db"), app("web.example.org")],
            index: None,
        })
        .await
        .unwrap();
    assert_eq!(uuids(&two), vec![uuid(3), uuid(4)]);

    let alice = catalog
        .list(&ListQuery {
            apps: vec![],
            index: Some("alice".into()),
        })
        .await
        .unwrap();
    assert_eq!(uuids(&alice), vec![uuid(3), uuid(1)]);
    assert_eq!(catalog.list(&ListQuery::default()).await.unwrap().len(), 4);
}

#[tokio::test]
async fn get_needs_data_and_metadata() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "-", 100, b"abc", true).await;
    put(&*store, "web", 2, "-", 100, b"abc", false).await;
    let d = catalog.get(&id(1)).await.unwrap();
    assert_eq!(d.meta.size(), Some(3));
    assert_eq!(d.entry.key.app().as_str(), "web");
    for missing in [2, 3] {
        let err = catalog.get(&id(missing)).await.unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::NotFound, "{err}");
    }
}

#[tokio::test]
async fn links_by_backend() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "-", 100, b"abc", true).await;
    let err = catalog.link(&id(1), None, 0).await.unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("no download links"), "{err}");
    let err = catalog
        .link(&id(1), Some(MAX_LINK_EXPIRY_SECS + 1), 0)
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::InvalidArgument);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let catalog = Catalog::open(ArchiveConfig::for_url(&url)).unwrap();
    // A directory that does not exist yet is an empty store.
    let missing = Catalog::open(ArchiveConfig::for_url(format!("{url}/not/yet"))).unwrap();
    assert!(
        missing
            .list(&ListQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let key = put(&local, "web", 1, "-", 100, b"abc", true).await;
    let link = catalog.link(&id(1), None, 0).await.unwrap();
    assert_eq!(link.url, format!("{url}/{key}"));
    assert_eq!(link.expires_at_ms, 0);
    assert_eq!(std::fs::read(dir.path().join(&key)).unwrap(), b"abc");
}

#[tokio::test]
async fn delete_removes_data_then_metadata_and_handles_halves() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "-", 100, b"a", true).await;
    put(&*store, "web", 2, "-", 100, b"a", false).await; // data without metadata
    put(&*store, "web", 3, "-", 100, b"a", true).await;
    store
        .delete(&Path::from(format!("web:{}:-:100", uuid(3)).as_str()))
        .await
        .unwrap(); // metadata only

    for n in [1, 2, 3] {
        catalog.delete(&id(n)).await.unwrap();
    }
    assert!(
        store.list(None).next().await.is_none(),
        "everything is gone"
    );
    let err = catalog.delete(&id(1)).await.unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn delete_app_removes_only_that_app() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "-", 100, b"a", true).await;
    put(&*store, "web", 2, "-", 200, b"a", true).await;
    put(&*store, "web2", 3, "-", 100, b"a", true).await;
    let mut gone: Vec<String> = catalog
        .delete_app(&app("web"))
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    gone.sort();
    assert_eq!(gone, vec![uuid(1), uuid(2)]);
    let left: Vec<String> = store
        .list(None)
        .map(|o| o.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|k| k.contains(&uuid(3))), "{left:?}");
}

#[tokio::test]
async fn prune_follows_the_policy_and_keeps_the_newest_good_one() {
    let (catalog, store) = memory();
    // Newest two are incomplete (no metadata); 3 is the newest good one.
    put(&*store, "web", 5, "-", 500, b"a", false).await;
    put(&*store, "web", 4, "-", 400, b"a", false).await;
    put(&*store, "web", 3, "-", 300, b"a", true).await;
    put(&*store, "web", 2, "-", 200, b"a", true).await;
    put(&*store, "web", 1, "-", 100, b"a", true).await;
    put(&*store, "other", 9, "-", 100, b"a", true).await;
    let last1 = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    // Within the upload grace (an hour) of their key's time, incomplete archives may be
    // finishing: kept as in progress, neither candidates nor deleted.
    let fresh = catalog
        .prune(Some(&app("web")), last1, PruneMode::DryRun, 1000)
        .await
        .unwrap();
    assert_eq!(uuids(&fresh.deleted), vec![uuid(2), uuid(1)]);
    let in_progress: Vec<_> = fresh
        .kept
        .iter()
        .filter(|(_, r)| r.iter().any(|r| r.rule == Rule::InProgress))
        .map(|(e, _)| e.key.id().to_string())
        .collect();
    assert_eq!(in_progress, vec![uuid(5), uuid(4)]);
    let later = 10_000;
    let dry = catalog
        .prune(Some(&app("web")), last1, PruneMode::DryRun, later)
        .await
        .unwrap();
    // Incomplete archives take no slot of keep_last, however new: the newest good one is the
    // last one kept.
    assert_eq!(
        uuids(&dry.deleted),
        vec![uuid(5), uuid(4), uuid(2), uuid(1)]
    );
    assert_eq!(
        catalog.list(&ListQuery::default()).await.unwrap().len(),
        6,
        "dry run"
    );

    let done = catalog
        .prune(Some(&app("web")), last1, PruneMode::Delete, later)
        .await
        .unwrap();
    assert_eq!(
        uuids(&done.deleted),
        vec![uuid(5), uuid(4), uuid(2), uuid(1)]
    );
    let kept: Vec<_> = done
        .kept
        .iter()
        .map(|(e, r)| (e.key.id().to_string(), r.clone()))
        .collect();
    assert_eq!(
        kept,
        vec![(
            uuid(3),
            vec![KeepReason {
                rule: Rule::Last,
                bucket: String::new()
            }]
        )]
    );
    assert!(
        catalog.get(&id(2)).await.is_err(),
        "metadata went with the data"
    );
    assert!(catalog.get(&id(3)).await.is_ok());
    assert!(catalog.get(&id(9)).await.is_ok(), "other apps untouched");

    // A policy is required, from the request or the config.
    let err = catalog
        .prune(None, RetentionPolicy::default(), PruneMode::Delete, 1000)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CatalogError::Retention(RetentionError::NoRule)
    ));
    let mut config = ArchiveConfig::for_url("memory://");
    config.keep_within_secs = Some(1);
    let catalog = Catalog::with_store(config, store.clone());
    // Everything old: each app keeps only its newest good archive.
    put(&*store, "web", 6, "-", 50, b"a", true).await;
    let all = catalog
        .prune(None, RetentionPolicy::default(), PruneMode::Delete, 1000)
        .await
        .unwrap();
    assert_eq!(uuids(&all.deleted), vec![uuid(6)]);
}

#[tokio::test]
async fn an_apps_volume_archives_and_directory_archives_are_pruned_as_two_histories() {
    let (catalog, store) = memory();
    for n in 1..=3 {
        put(&*store, "kc", n, "-", i64::from(n) * 100, b"a", true).await;
    }
    for n in 4..=5 {
        put(&*store, "kc", n, "-", i64::from(n) * 100, b"a", true).await;
        let mut meta = ArchiveMeta::new(uuid(n), "kc", i64::from(n) * 100);
        meta.push_size(1);
        meta.source = Some(berth_shared::archive::SOURCE_VOLUMES.to_owned());
        store
            .put(
                &Path::from(format!("_metadata/{}", uuid(n)).as_str()),
                PutPayload::from(meta.to_json()),
            )
            .await
            .unwrap();
    }
    let last1 = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    let out = catalog
        .prune(Some(&app("kc")), last1, PruneMode::Delete, 1000)
        .await
        .unwrap();
    let mut deleted = uuids(&out.deleted);
    deleted.sort();
    // The newest of each kind stays: volume archives do not push out directory archives.
    assert_eq!(deleted, vec![uuid(1), uuid(2), uuid(4)]);
    assert!(catalog.get(&id(3)).await.is_ok());
    assert!(catalog.get(&id(5)).await.is_ok());
}

#[tokio::test]
async fn a_size_mismatch_is_not_good() {
    let (catalog, store) = memory();
    put(&*store, "web", 2, "-", 200, b"a", true).await;
    put(&*store, "web", 1, "-", 100, b"a", true).await;
    // Truncate the newest: its metadata says 1 byte, the object now has 0.
    store
        .put(
            &Path::from(format!("web:{}:-:200", uuid(2)).as_str()),
            PutPayload::from_static(b""),
        )
        .await
        .unwrap();
    let p = RetentionPolicy {
        keep_within_secs: Some(1),
        ..RetentionPolicy::default()
    };
    let out = catalog
        .prune(None, p, PruneMode::Delete, 1000)
        .await
        .unwrap();
    assert_eq!(uuids(&out.deleted), vec![uuid(2)]);
}

use futures::StreamExt;

#[tokio::test]
async fn a_failed_verify_s_label_keeps_every_other_key_of_the_metadata() {
    let (catalog, store) = memory();
    put(&*store, "web", 1, "-", 100, b"a", false).await;
    let meta_key = format!("_metadata/{}", uuid(1));
    let original = serde_json::json!({
        "uuid": uuid(1), "app_name": "web", "ts": 100, "labels": ["size:1", "owner:x"],
        "future_field": {"nested": [1, 2]}, "sha256": "ab",
    });
    store
        .put(
            &Path::from(meta_key.as_str()),
            PutPayload::from(serde_json::to_vec(&original).unwrap()),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(catalog.label_failed(&id(1)).await.unwrap());
    }
    let bytes = store
        .get(&Path::from(meta_key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let after: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut expected = original.clone();
    expected["labels"] = serde_json::json!(["size:1", "owner:x", VERIFY_FAILED_LABEL]);
    assert_eq!(after, expected, "labelled once, nothing else changed");
    assert!(!catalog.label_failed(&id(2)).await.unwrap(), "no metadata");
}
