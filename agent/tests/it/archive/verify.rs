//! Verifying archives: the restore's download, checksum and entry checks, writing nothing.
//! A good archive reports its entries and bytes; a flipped byte, a truncated object and every
//! entry a restore refuses make a verify that completes with `ok: false`, naming the problem
//! as the restore would; none of them writes a byte under the apps root or outside it.

use berth_agent::archive::{
    ArchiveError, ArchiveProgress, Archiver, CreateOutput, VerifyInput, VerifyOutput,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encrypted::{keys, restorer, sealing};
use super::hostile::{app_dir_cases, upload};
use super::tree::{build_sample, snapshot};
use super::{ALL, Backend, Env, chain, recorded};
use crate::hostile_tar::{dir, escaped, file, outside_dir, shown, tar_zst};

#[tokio::test]
async fn a_good_archive_verifies_reporting_entries_and_bytes_and_writes_nothing() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let created = env.create_app("web").await;
        let before = snapshot(env.apps.path());
        for rec in [Some(recorded(&created)), None] {
            let held = rec.is_some();
            let v = env.verify(&created.uuid, rec).await.unwrap();
            assert!(v.ok, "{backend:?} recorded={held}: {:?}", v.problem);
            assert_eq!(v.problem, None);
            assert_eq!(v.key, created.key);
            assert_eq!(v.entries, created.entries, "{backend:?}");
            assert_eq!(v.tar_bytes, created.tar_bytes, "{backend:?}");
            assert_eq!(v.bytes, created.size, "{backend:?}");
            assert_eq!(v.sha256, created.sha256, "{backend:?}");
            assert_eq!(v.sha256_verified, held);
        }
        assert_eq!(
            snapshot(env.apps.path()),
            before,
            "{backend:?}: a verify changed the apps root"
        );
        assert_eq!(env.apps_entries(), ["web"], "{backend:?}: no staging");
    }
}

#[tokio::test]
async fn a_flipped_byte_fails_the_verify_naming_the_checksum() {
    for backend in ALL {
        let env = Env::new(backend).await;
        build_sample(&env.app_dir("web"));
        let created = env.create_app("web").await;
        let before = snapshot(env.apps.path());
        let mut bytes = env.get(&created.key).await;
        bytes[created.size as usize / 2] ^= 0x01;
        env.put(&created.key, bytes).await;
        let v = env
            .verify(&created.uuid, Some(recorded(&created)))
            .await
            .unwrap();
        assert!(!v.ok, "{backend:?}");
        let problem = v.problem.unwrap();
        assert!(
            problem.contains("failed its checksum") || problem.contains("not a valid tar+zstd"),
            "{backend:?}: {problem}"
        );
        assert_ne!(v.sha256, created.sha256);
        assert_eq!(snapshot(env.apps.path()), before, "{backend:?}");
    }
}

#[tokio::test]
async fn a_truncated_object_fails_the_verify_naming_its_size() {
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let created = env.create_app("web").await;
    let mut bytes = env.get(&created.key).await;
    bytes.truncate(bytes.len() - 100);
    env.put(&created.key, bytes).await;
    let v = env
        .verify(&created.uuid, Some(recorded(&created)))
        .await
        .unwrap();
    assert!(!v.ok);
    let problem = v.problem.unwrap();
    assert!(
        problem.contains(&format!(
            "has {} bytes but the archive.create saga that made it records {}",
            created.size - 100,
            created.size
        )),
        "{problem}"
    );
    // Without a record, the object's size label catches it.
    let v = env.verify(&created.uuid, None).await.unwrap();
    assert!(!v.ok);
    assert!(
        v.problem
            .unwrap()
            .contains("its metadata in the bucket records"),
        "size label"
    );
}

/// The table of hostile archives restores refuse (`crate::hostile_tar`), plus what only an
/// app directory refuses: each verify fails naming the same entry and reason as a restore,
/// and nothing is written anywhere.
#[tokio::test]
async fn a_verify_refuses_every_entry_a_restore_refuses_and_writes_nothing() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let outside = outside_dir(&tag);
    std::fs::create_dir_all(&outside).unwrap();
    let cases = app_dir_cases(&tag);
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("src"));
    for case in &cases {
        let name = case.name;
        let uuid = upload(&env, tar_zst(&case.items), "").await;
        let before = snapshot(env.apps.path());
        let v = env.verify(&uuid, None).await.unwrap();
        assert_eq!(
            snapshot(env.apps.path()),
            before,
            "{name}: apps root changed"
        );
        assert!(!v.ok, "{name}: verified");
        let problem = v.problem.unwrap();
        assert!(problem.contains(case.reason), "{name}: {problem}");
        assert!(
            problem.starts_with(&format!("archive entry {} ", shown(&case.entry))),
            "{name}: {problem}"
        );
        // The restore refuses it in the same words.
        let restore = env.restore(&uuid, "victim").await.unwrap_err();
        assert_eq!(chain(&restore), problem, "{name}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{name}");
        let esc = escaped(&tag);
        let apps = env.apps.path();
        for dir in [apps, apps.parent().unwrap()] {
            assert!(!dir.join(&esc).exists(), "{name}: wrote {esc}");
        }
    }
    // A well-formed tar of the same shape passes.
    let uuid = upload(&env, tar_zst(&[dir("./"), file("./a", b"x")]), "").await;
    let v = env.verify(&uuid, None).await.unwrap();
    assert!(v.ok, "{:?}", v.problem);
    assert_eq!(v.entries, 2);
    std::fs::remove_dir(&outside).unwrap();
}

/// What keeps a verify from running is an error, not a verdict on the archive.
#[tokio::test]
async fn a_verify_that_cannot_run_is_an_error() {
    let env = Env::new(Backend::Memory).await;
    let err = env
        .verify("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::NotFound { .. }),
        "{}",
        chain(&err)
    );
}

async fn verify_on(
    archiver: &Archiver,
    created: &CreateOutput,
) -> Result<VerifyOutput, ArchiveError> {
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let input = VerifyInput {
        uuid: created.uuid.clone(),
        recorded: Some(recorded(created)),
    };
    archiver
        .verify(input, &progress, &CancellationToken::new())
        .await
}

/// An encrypted archive is opened with the verifying host's identity; a host without one
/// checks the stored object's checksum only and says so; a stranger's identity cannot run
/// the verify (an error, not a verdict); a flipped byte fails it either way.
#[tokio::test]
async fn an_encrypted_archive_verifies_where_the_identity_is() {
    let keys = keys();
    let env = sealing(&[&keys.a]).await;
    build_sample(&env.app_dir("web"));
    let created = env.create_app("web").await;
    let (none, _apps) = restorer(&env, None);
    let v = verify_on(&none, &created).await.unwrap();
    assert!(v.ok && v.checksum_only, "{v:?}");
    assert_eq!((v.entries, v.bytes), (0, created.size), "{v:?}");
    assert_eq!(v.sha256, created.sha256);
    let (stranger, _apps) = restorer(&env, Some(&keys.stranger.file));
    let err = verify_on(&stranger, &created).await.unwrap_err();
    assert!(
        matches!(err, ArchiveError::NotForThisHost { .. }),
        "{}",
        chain(&err)
    );
    let (holder, apps) = restorer(&env, Some(&keys.a.file));
    let v = verify_on(&holder, &created).await.unwrap();
    assert!(v.ok, "{:?}", v.problem);
    assert_eq!((v.entries, v.bytes), (created.entries, created.size));
    assert_eq!(
        std::fs::read_dir(apps.path()).unwrap().count(),
        0,
        "nothing written"
    );

    let mut bytes = env.get(&created.key).await;
    bytes[created.size as usize / 2] ^= 0x01;
    env.put(&created.key, bytes).await;
    let v = verify_on(&holder, &created).await.unwrap();
    assert!(!v.ok);
    assert!(v.problem.is_some(), "the problem is named");
    let v = verify_on(&none, &created).await.unwrap();
    assert!(!v.ok && v.checksum_only, "{v:?}");
    assert!(v.problem.unwrap().contains("checksum"));
}

/// A verify takes no lock: it runs while another operation holds the app's directory, where
/// a restore is refused naming the holder.
#[tokio::test]
async fn a_verify_runs_while_another_operation_holds_the_app() {
    use berth_agent::volume::lock::try_acquire;
    use berth_agent::volume::{Operation, Resource};
    let env = Env::new(Backend::Memory).await;
    build_sample(&env.app_dir("web"));
    let created = env.create_app("web").await;
    let op = Operation::new("warm_restore", "app web").on_behalf_of("a test");
    let dir = env.app_dir("web").display().to_string();
    let _held = try_acquire(&op, &[Resource::AppDir(dir)]).unwrap();
    let err = env.restore_recorded(&created, "web").await.unwrap_err();
    assert!(chain(&err).contains("a test"), "{}", chain(&err));
    let v = env
        .verify(&created.uuid, Some(recorded(&created)))
        .await
        .unwrap();
    assert!(v.ok, "{:?}", v.problem);
}
