//! Encrypted archives on the real S3 server: sealed to two recipients, each identity alone
//! restores; a stranger's identity, or none, is refused before anything is written; a
//! flipped byte is refused with the target untouched; and interop both ways with Debian's
//! `age`, `zstd` and `tar`.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_agent::archive::{
    ArchiveConfig, ArchiveError, ArchiveProgress, Archiver, CreateOutput, RestoreInput,
    RestoreOutput,
};
use berth_shared::archive::ArchiveMeta;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tree::{assert_same, build_sample, snapshot};
use super::{Backend, Env, chain, recorded};

/// An age identity made by Debian's `age-keygen`: its file and its recipient.
pub(super) struct Key {
    pub file: PathBuf,
    pub recipient: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(name);
    tool("age-keygen", &["-o".as_ref(), file.as_os_str()]);
    let public = tool("age-keygen", &["-y".as_ref(), file.as_os_str()]);
    Key {
        file,
        recipient: String::from_utf8(public).unwrap().trim().to_owned(),
    }
}

/// Runs one of Debian's tools; its stdout, or a failure that says how to install it.
fn tool(program: &str, args: &[&OsStr]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; install it: apt-get install -y age zstd tar"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Two keys and a stranger's, in their own folder.
pub(super) struct Keys {
    _dir: TempDir,
    pub a: Key,
    pub b: Key,
    pub stranger: Key,
}

pub(super) fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    Keys {
        a: keygen(dir.path(), "a.key"),
        b: keygen(dir.path(), "b.key"),
        stranger: keygen(dir.path(), "stranger.key"),
        _dir: dir,
    }
}

/// An S3 environment whose agent encrypts to `recipients` and holds no identity.
pub(super) async fn sealing(recipients: &[&Key]) -> Env {
    let recipients: Vec<String> = recipients.iter().map(|k| k.recipient.clone()).collect();
    Env::with(Backend::S3, move |c| c.recipients = recipients).await
}

/// Another agent on the same bucket (a restoring host) holding `identity`, with its own
/// apps root.
pub(super) fn restorer(env: &Env, identity: Option<&Path>) -> (Archiver, TempDir) {
    let server = env.s3.as_ref().expect("an S3 environment");
    let mut config: ArchiveConfig = server.config("berth/test");
    config.part_size_mib = 5;
    config.identity_file = identity.map(Path::to_owned);
    let apps = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(config, apps.path(), env.state.path()).unwrap();
    (archiver, apps)
}

async fn restore(
    archiver: &Archiver,
    created: Option<&CreateOutput>,
    uuid: &str,
    target: &str,
) -> Result<RestoreOutput, ArchiveError> {
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let input = RestoreInput {
        uuid: uuid.into(),
        recorded: created.map(recorded),
        target_app: Some(target.into()),
        ..Default::default()
    };
    archiver
        .restore(input, &progress, &CancellationToken::new())
        .await
}

#[tokio::test]
async fn an_archive_sealed_to_two_recipients_restores_with_either_identity_alone() {
    let keys = keys();
    let env = sealing(&[&keys.a, &keys.b]).await;
    build_sample(&env.app_dir("web"));
    let source = snapshot(&env.app_dir("web"));
    let out = env.create_app("web").await;

    let stored = env.get(&out.key).await;
    assert!(
        stored.starts_with(b"age-encryption.org/v1\n"),
        "an age stream"
    );
    assert_eq!(hex::encode(Sha256::digest(&stored)), out.sha256);
    let meta = ArchiveMeta::from_json(&env.get(&format!("_metadata/{}", out.uuid)).await).unwrap();
    assert_eq!(meta.encryption.as_deref(), Some("age"));
    assert_eq!(
        meta.recipients,
        Some(vec![keys.a.recipient.clone(), keys.b.recipient.clone()])
    );
    assert_eq!(meta.sha256.as_deref(), Some(out.sha256.as_str()));
    let plaintext = meta
        .plaintext_sha256
        .clone()
        .expect("the plaintext's checksum");
    assert_ne!(plaintext, out.sha256);

    // The host that wrote it cannot read it.
    let err = restore(&env.archiver, Some(&out), &out.uuid, "web-copy")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::NoIdentity { .. }),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains(&keys.a.recipient), "{}", chain(&err));

    for key in [&keys.a, &keys.b] {
        let (host, apps) = restorer(&env, Some(&key.file));
        let restored = restore(&host, Some(&out), &out.uuid, "web").await.unwrap();
        assert!(restored.sha256_verified);
        assert_eq!(restored.entries, out.entries);
        assert_same(&source, &snapshot(&apps.path().join("web")));
        assert_eq!(crate::tree::names(apps.path()), ["web"], "no staging left");
    }
}

#[tokio::test]
async fn a_stranger_s_identity_or_none_is_refused_before_anything_is_written() {
    let keys = keys();
    let env = sealing(&[&keys.a, &keys.b]).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;

    let (host, apps) = restorer(&env, Some(&keys.stranger.file));
    std::fs::create_dir(apps.path().join("web")).unwrap();
    std::fs::write(apps.path().join("web/live.txt"), b"live data").unwrap();
    let before = snapshot(apps.path());
    let err = restore(&host, Some(&out), &out.uuid, "web")
        .await
        .unwrap_err();
    let message = chain(&err);
    assert!(
        matches!(err, ArchiveError::NotForThisHost { .. }),
        "{message}"
    );
    for named in [&keys.a.recipient, &keys.b.recipient] {
        assert!(message.contains(named.as_str()), "{message}");
    }
    assert!(message.contains("stranger.key"), "{message}");
    assert_same(&before, &snapshot(apps.path()));

    let (host, apps) = restorer(&env, None);
    let err = restore(&host, Some(&out), &out.uuid, "web")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::NoIdentity { .. }),
        "{}",
        chain(&err)
    );
    assert!(
        crate::tree::names(apps.path()).is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_flipped_byte_is_refused_and_the_target_is_untouched() {
    let keys = keys();
    let env = sealing(&[&keys.a]).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;
    let mut stored = env.get(&out.key).await;
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    env.put(&out.key, stored).await;

    let (host, apps) = restorer(&env, Some(&keys.a.file));
    let target = apps.path().join("web");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("live.txt"), b"live data").unwrap();
    let before = snapshot(&target);
    // Held to the saga's checksum, and without it (only age's authentication).
    for created in [Some(&out), None] {
        let err = restore(&host, created, &out.uuid, "web").await.unwrap_err();
        let message = chain(&err);
        assert!(
            matches!(
                err,
                ArchiveError::Checksum { .. } | ArchiveError::Format { .. }
            ),
            "{message}"
        );
        assert_same(&before, &snapshot(&target));
        assert_eq!(crate::tree::names(apps.path()), ["web"], "no staging left");
    }
}

/// What Berth sealed, `age -d -i key | zstd -d | tar -t` reads; its plaintext is the
/// checksum the metadata records.
#[tokio::test]
async fn debian_s_age_and_zstd_read_what_berth_sealed() {
    let keys = keys();
    let env = sealing(&[&keys.a]).await;
    build_sample(&env.app_dir("web"));
    let out = env.create_app("web").await;
    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("archive.age");
    std::fs::write(&sealed, env.get(&out.key).await).unwrap();

    let args = [
        "-d".as_ref(),
        "-i".as_ref(),
        keys.a.file.as_os_str(),
        sealed.as_os_str(),
    ];
    let plain = tool("age", &args);
    let meta = ArchiveMeta::from_json(&env.get(&format!("_metadata/{}", out.uuid)).await).unwrap();
    assert_eq!(
        Some(hex::encode(Sha256::digest(&plain))),
        meta.plaintext_sha256
    );
    let listing = String::from_utf8(pipe("zstd -d | tar -t", &plain)).unwrap();
    assert!(
        listing.lines().any(|l| l.ends_with("README.md")),
        "{listing}"
    );
    assert_eq!(listing.lines().count() as u64, out.entries, "{listing}");
}

/// What `tar | zstd | age -r` made and a script uploaded with the Go tool's metadata,
/// Berth restores with the identity.
#[tokio::test]
async fn berth_restores_what_tar_zstd_and_age_made() {
    let keys = keys();
    let env = sealing(&[&keys.a]).await;
    build_sample(&env.app_dir("legacy"));
    let source = snapshot(&env.app_dir("legacy"));
    let script = format!(
        "tar -C {} -c . | zstd -q | age -r {}",
        env.app_dir("legacy").display(),
        keys.a.recipient
    );
    let sealed = pipe(&script, b"");
    let uuid = uuid::Uuid::new_v4().to_string();
    let ts = 1_700_000_000;
    let meta = format!(
        r#"{{"uuid":"{uuid}","app_name":"legacy","ts":{ts},"labels":["size:{}"]}}"#,
        sealed.len()
    );
    env.put(&format!("_metadata/{uuid}"), meta.into_bytes())
        .await;
    env.put(&format!("legacy:{uuid}:-:{ts}"), sealed).await;

    let (host, apps) = restorer(&env, Some(&keys.a.file));
    let restored = restore(&host, None, &uuid, "legacy").await.unwrap();
    assert!(!restored.sha256_verified, "no saga recorded it");
    assert_same(&source, &snapshot(&apps.path().join("legacy")));
}

/// Runs `script` in sh with `input` on stdin; its stdout.
fn pipe(script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}\n(needs Debian's tar, zstd and age: apt-get install -y tar zstd age)",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
