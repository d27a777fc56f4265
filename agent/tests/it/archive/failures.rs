//! Failures: an S3 server failing mid-upload, a cancelled create, an agent killed mid-upload
//! (its journaled upload aborted when it starts again), a create dropped midway and retried
//! (the retry aborts the earlier upload), a corrupted or truncated archive. None leaves an
//! object, metadata, a pending upload or a changed target.

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_agent::ErrorKind;
use berth_agent::archive::{
    ArchiveConfig, ArchiveError, ArchiveProgress, Archiver, CreateInput, Witness,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tree::{build_sample, noise, snapshot};
use super::{ALL, Backend, Env, chain};

/// An app whose archive needs several 5 MiB parts.
fn big_app(env: &Env, app: &str) {
    let dir = env.app_dir(app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("noise.bin"), noise(3, 18 << 20)).unwrap();
    std::fs::write(dir.join("small.txt"), b"small").unwrap();
}

#[tokio::test]
async fn an_s3_server_failing_mid_upload_leaves_nothing_and_the_next_create_succeeds() {
    let env = Env::new(Backend::S3).await;
    let s3 = env.s3.as_ref().unwrap();
    big_app(&env, "web");
    s3.faults.fail_from_part.store(2, Ordering::SeqCst);
    let err = env
        .create(CreateInput {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Store { .. }), "{}", chain(&err));
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.retryable());
    assert!(s3.faults.parts_seen.load(Ordering::SeqCst) >= 2);
    assert!(env.keys().await.is_empty(), "no object, no metadata");
    assert!(
        s3.pending_parts().is_empty(),
        "the multipart upload was aborted"
    );

    s3.faults.fail_from_part.store(0, Ordering::SeqCst);
    let out = env.create_app("web").await;
    assert_eq!(env.keys().await.len(), 2);
    env.restore(&out.uuid, "web2").await.unwrap();
}

#[tokio::test]
async fn a_cancelled_create_leaves_nothing_and_the_next_create_succeeds() {
    for backend in ALL {
        let env = Env::new(backend).await;
        big_app(&env, "web");
        let (progress, mut watcher) = watch::channel(ArchiveProgress::default());
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                // Cancel once the store has acknowledged a first part.
                while watcher.changed().await.is_ok() {
                    if watcher.borrow().bytes_stored > 0 {
                        cancel.cancel();
                        return;
                    }
                }
            })
        };
        let input = CreateInput {
            app: "web".into(),
            ..Default::default()
        };
        let err = env
            .archiver
            .create(input, &progress, &cancel)
            .await
            .unwrap_err();
        canceller.await.unwrap();
        assert!(
            matches!(err, ArchiveError::Cancelled),
            "{backend:?}: {}",
            chain(&err)
        );
        assert!(!err.retryable());
        assert!(
            env.keys().await.is_empty(),
            "{backend:?}: {:?}",
            env.keys().await
        );
        if let Some(s3) = &env.s3 {
            assert!(
                s3.pending_parts().is_empty(),
                "the multipart upload was aborted"
            );
            assert_eq!(s3.uploads("berth/test").await, vec![]);
        }
        assert_eq!(
            env.archiver.journaled_uploads(),
            vec![],
            "{backend:?}: the abort is journaled complete"
        );
        env.create_app("web").await;
        assert_eq!(env.keys().await.len(), 2, "{backend:?}");
    }
}

const CHILD_ENV: &str = "BERTH_IT_KILLED_CHILD";

/// Run as a child process by the test below: starts a create that the parent kills.
#[tokio::test]
async fn child_create_that_gets_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // not a child: nothing to do
    };
    let [endpoint, secrets, apps, state] = spec.split('|').collect::<Vec<_>>()[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let mut config = ArchiveConfig::for_url(format!("s3://{}/berth/test", super::s3::BUCKET));
    config.endpoint = Some(endpoint.into());
    config.access_key_id_file = Some(format!("{secrets}/key-id").into());
    config.secret_access_key_file = Some(format!("{secrets}/secret").into());
    config.part_size_mib = 5;
    let archiver = Archiver::new(config, apps, std::path::Path::new(state)).unwrap();
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let input = CreateInput {
        app: "web".into(),
        ..Default::default()
    };
    let r = archiver
        .create(input, &progress, &CancellationToken::new())
        .await;
    panic!("the parent should have killed this process first: {r:?}");
}

#[tokio::test]
async fn an_agent_killed_mid_upload_leaves_nothing_once_it_starts_again() {
    let env = Env::new(Backend::S3).await;
    let s3 = env.s3.as_ref().unwrap();
    big_app(&env, "web");
    s3.faults.stall_from_part.store(2, Ordering::SeqCst);
    let spec = format!(
        "{}|{}|{}|{}",
        s3.endpoint,
        s3.secrets_dir().display(),
        env.apps.path().display(),
        env.state.path().display()
    );
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "archive::failures::child_create_that_gets_killed",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, spec)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s3.faults.parts_seen.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never reached part 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    assert!(env.keys().await.is_empty(), "{:?}", env.keys().await);
    // The kill left the upload pending, and journaled.
    let pending = s3.uploads("berth/test").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let journaled = env.archiver.journaled_uploads();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(journaled[0].key, pending[0].key);
    assert_eq!(journaled[0].upload_id.as_ref(), Some(&pending[0].upload_id));

    // The agent starts again on the same state dir: it aborts what the journal names.
    s3.faults.stall_from_part.store(0, Ordering::SeqCst);
    let mut config = s3.config("berth/test");
    config.part_size_mib = 5;
    let restarted = Archiver::new(config, env.apps.path(), env.state.path()).unwrap();
    restarted.recovered().await;
    assert_eq!(s3.uploads("berth/test").await, vec![]);
    assert_eq!(restarted.journaled_uploads(), vec![]);
    assert!(s3.pending_parts().is_empty(), "{:?}", s3.pending_parts());

    let (progress, _) = watch::channel(ArchiveProgress::default());
    let input = CreateInput {
        app: "web".into(),
        ..Default::default()
    };
    let out = restarted
        .create(input, &progress, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(env.keys().await.len(), 2);
    assert_eq!(s3.uploads("berth/test").await, vec![]);
    env.restore(&out.uuid, "web2").await.unwrap();
}

#[tokio::test]
async fn a_retried_create_aborts_the_upload_of_the_attempt_before() {
    let env = Env::new(Backend::S3).await;
    let s3 = env.s3.as_ref().unwrap();
    big_app(&env, "web");
    let uuid = "0190a5c4-0000-7000-8000-0000000000aa";
    let input = CreateInput {
        app: "web".into(),
        uuid: Some(uuid.into()),
        ..Default::default()
    };
    // The first attempt is dropped midway (its task lost, as when a step's deadline passes):
    // nothing of it runs to abort its upload.
    s3.faults.stall_from_part.store(2, Ordering::SeqCst);
    let first = {
        let (archiver, input) = (env.archiver.clone(), input.clone());
        tokio::spawn(async move {
            let (progress, _) = watch::channel(ArchiveProgress::default());
            archiver
                .create(input, &progress, &CancellationToken::new())
                .await
        })
    };
    while s3.faults.parts_seen.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let earlier = s3.uploads("berth/test").await;
    assert_eq!(earlier.len(), 1, "{earlier:?}");
    assert_eq!(env.archiver.journaled_uploads().len(), 1);

    s3.faults.stall_from_part.store(0, Ordering::SeqCst);
    let out = env.create(input).await.unwrap();
    assert_eq!(out.uuid, uuid);
    assert_eq!(
        s3.uploads("berth/test").await,
        vec![],
        "the earlier upload was aborted"
    );
    assert_eq!(env.archiver.journaled_uploads(), vec![]);
    assert_eq!(env.keys().await.len(), 2);
    env.restore(&out.uuid, "web2").await.unwrap();
}

#[tokio::test]
async fn a_flipped_byte_is_refused_with_a_checksum_error_and_the_target_is_untouched() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let out = env.create_app("web").await;
        // The live app has other contents; they must survive the refused restore.
        let live = env.app_dir("live");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("keep.txt"), b"live data").unwrap();
        let before = snapshot(&live);

        for at in [out.size as usize / 2, 20, out.size as usize - 3] {
            let mut bytes = env.get(&out.key).await;
            bytes[at] ^= 0x01;
            env.put(&out.key, bytes).await;
            let err = env.restore(&out.uuid, "live").await.unwrap_err();
            assert!(
                matches!(err, ArchiveError::Checksum { .. }),
                "{backend:?} byte {at}: {}",
                chain(&err)
            );
            assert!(chain(&err).contains("checksum"), "{}", chain(&err));
            assert_eq!(err.kind(), ErrorKind::Invalid);
            assert_eq!(snapshot(&live), before, "{backend:?}: target unchanged");
            assert_eq!(env.apps_entries(), vec!["live", "web"], "no staging left");
            // Put the byte back for the next position.
            let mut bytes = env.get(&out.key).await;
            bytes[at] ^= 0x01;
            env.put(&out.key, bytes).await;
        }
        env.restore(&out.uuid, "live").await.unwrap();
    }
}

/// Whoever can write the bucket can rewrite an archive's metadata to match a changed object;
/// a restore holds it to what its `archive.create` saga recorded instead, and the target is
/// left as it was.
#[tokio::test]
async fn a_checksum_rewritten_in_the_metadata_does_not_pass() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let out = env.create_app("web").await;
        let meta_key = format!("_metadata/{}", out.uuid);
        let meta = String::from_utf8(env.get(&meta_key).await).unwrap();
        let before = snapshot(&env.app_dir("web"));

        // Same length, one byte changed, the metadata's checksum rewritten to match.
        let mut bytes = env.get(&out.key).await;
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        let forged = hex::encode(Sha256::digest(&bytes));
        env.put(&out.key, bytes).await;
        env.put(&meta_key, meta.replace(&out.sha256, &forged).into_bytes())
            .await;
        let err = env.restore_recorded(&out, "web").await.unwrap_err();
        assert!(
            matches!(
                &err,
                ArchiveError::Checksum { expected, found, by: Witness::Saga, .. }
                    if *expected == out.sha256 && *found == forged
            ),
            "{backend:?}: {}",
            chain(&err)
        );
        assert!(
            chain(&err).contains("the archive.create saga that made it"),
            "{}",
            chain(&err)
        );
        assert_eq!(snapshot(&env.app_dir("web")), before, "{backend:?}");
        assert_eq!(env.apps_entries(), vec!["web"], "no staging left");

        // A whole other archive, with metadata to match: refused by the recorded size.
        let other = super::hostile::tiny_archive();
        let size_label = format!("size:{}", out.size);
        env.put(&out.key, other.clone()).await;
        let rewritten = meta
            .replace(&out.sha256, &hex::encode(Sha256::digest(&other)))
            .replace(&size_label, &format!("size:{}", other.len()));
        env.put(&meta_key, rewritten.into_bytes()).await;
        let err = env.restore_recorded(&out, "web").await.unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::SizeMismatch {
                    by: Witness::Saga,
                    ..
                }
            ),
            "{backend:?}: {}",
            chain(&err)
        );
        assert_eq!(snapshot(&env.app_dir("web")), before, "{backend:?}");
    }
}

/// The recorded tar length must fit above the free-space floor: refused before anything is
/// downloaded or written.
#[tokio::test]
async fn a_restore_that_would_go_below_the_free_space_floor_is_refused_up_front() {
    let env = Env::with(Backend::Memory, |c| c.keep_free_bytes = u64::MAX / 2).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;
    let err = env.restore_recorded(&out, "web2").await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::NoSpace { needed, .. } if needed == out.tar_bytes),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("keep_free_bytes"), "{}", chain(&err));
    assert_eq!(env.apps_entries(), vec!["web"]);
}

#[tokio::test]
async fn a_truncated_archive_is_refused_by_its_recorded_size() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;
    let mut bytes = env.get(&out.key).await;
    bytes.truncate(bytes.len() - 100);
    env.put(&out.key, bytes).await;
    let err = env.restore(&out.uuid, "web2").await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::SizeMismatch { .. }),
        "{}",
        chain(&err)
    );
    assert!(!env.app_dir("web2").exists());
}

#[tokio::test]
async fn missing_archives_are_named() {
    let env = Env::new(Backend::Memory).await;
    let err = env
        .restore("0190a5c4-0000-7000-8000-000000000009", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("0190a5c4-0000-7000-8000-000000000009")
    );
    let err = env
        .create(CreateInput {
            app: "absent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::SourceMissing { .. }), "{err}");
}
