//! End to end: `berth archive create|restore --wait` from the CLI through the coordinator's
//! saga engine to the agent on the host, into the real S3 server and back; the archive's
//! uuid is the saga's id, progress reaches the saga's history, retention follows each create,
//! and what cannot be done is refused before anything runs. Volume archives use the real
//! Docker engine's volumes.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::assert_contains;
use berth_tests::cli::{archive_uuids, berth_at};
use berth_tests::docker::{Container, Volume};
use berth_tests::s3::S3Server;
use berth_tests::{TestAgent, TestCoordinator, TestDb};

use super::{assert_same_tree, build_app};

/// A coordinator and the agent of `host`, both on `prefix` of a real S3 server.
struct Rig {
    s3: S3Server,
    c: TestCoordinator,
    agent: TestAgent,
    /// An operator's token, and the coordinator's URL, for the CLI.
    operator: String,
    url: String,
    _db: TestDb,
}

async fn rig(prefix: &str, host: &str, keep_last: Option<u32>) -> Rig {
    let db = TestDb::sqlite();
    let s3 = S3Server::start().await;
    let mut archive = s3.coordinator_config(prefix);
    archive.keep_last = keep_last;
    let c = TestCoordinator::start_with(&db, None, move |c| c.archive = archive).await;
    let token = c.token(berth_shared::Role::Agent, Some(host)).await;
    let agent_archive = s3.agent_config(prefix);
    let agent = TestAgent::start(&c, host, &token, move |a| a.archive = agent_archive).await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let operator = c.token(berth_shared::Role::Operator, None).await;
    Rig {
        s3,
        url: c.url(),
        c,
        agent,
        operator,
        _db: db,
    }
}

/// The saga id a `--wait` run printed first.
fn saga_of(stdout: &str) -> String {
    stdout.lines().next().unwrap_or_default().trim().to_owned()
}

#[tokio::test]
async fn the_cli_archives_an_app_into_s3_and_restores_it_under_a_new_name() {
    let Rig {
        s3,
        c,
        agent,
        operator,
        url,
        _db,
    } = rig("e2e", "web-1", Some(2)).await;
    let apps = agent.dir.path().join("apps");
    build_app(&apps.join("web"));
    let ci = c.token(berth_shared::Role::Ci, None).await;
    let create = [
        "archive",
        "create",
        "--host",
        "web-1",
        "--app",
        "web",
        "--label",
        "owner:alice",
        "--index-label",
        "nightly",
        "--wait",
    ];
    let run = berth_at(&url, &operator, &create).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    let uuid = saga_of(&run.stdout);

    // The archive is in the bucket under the saga's id, with its metadata beside it.
    let keys = s3.keys().await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("e2e/web:{uuid}:nightly:"))),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("e2e/_metadata/{uuid}")), "{keys:?}");

    let shown = berth_at(&url, &ci, &["--output", "json", "archive", "show", &uuid]).await;
    assert_eq!(shown.code(), 0, "{}", shown.stderr());
    let shown = shown.json()[0].clone();
    assert_eq!(shown["app"], "web");
    assert_eq!(shown["index_label"], "nightly");
    assert_eq!(shown["sha256"].as_str().map(str::len), Some(64));
    let labels: Vec<&str> = shown["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(labels.contains(&"owner:alice"), "{labels:?}");
    assert!(labels.iter().any(|l| l.starts_with("size:")), "{labels:?}");

    // The create's progress reached the saga's history: totals from the pre-scan, bytes read,
    // bytes uploaded and the compression ratio.
    let progress: Vec<_> = c
        .history(&uuid)
        .await
        .into_iter()
        .filter_map(|e| e.progress)
        .collect();
    let last = progress.last().expect("progress events in the history");
    assert!(
        last.bytes_total > 1 << 20 && last.bytes_done == last.bytes_total,
        "{last:?}"
    );
    assert!(last.entries_total >= 8, "{last:?}");
    assert!(last.phase.contains("ratio"), "{last:?}");

    // Restored under a new name on the same host: the trees match, .chowned is gone.
    let restore = [
        "archive", "restore", &uuid, "--host", "web-1", "--as", "web2", "--wait",
    ];
    let run = berth_at(&url, &operator, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert_same_tree(&apps.join("web"), &apps.join("web2"));
    let restore_saga = c.get_saga(&saga_of(&run.stdout)).await;
    let output: serde_json::Value =
        serde_json::from_str(&restore_saga.steps[0].output_json).unwrap();
    assert_eq!(output["sha256_verified"], true, "{output}");
    assert_eq!(output["app"], "web2");

    // Asking again with the same key is the same saga, so the same archive.
    let keyed = [
        "archive",
        "create",
        "--host",
        "web-1",
        "--app",
        "web",
        "--key",
        "nightly-1",
        "--wait",
    ];
    let first = berth_at(&url, &operator, &keyed).await;
    let again = berth_at(&url, &operator, &keyed).await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert_eq!(saga_of(&first.stdout), saga_of(&again.stdout));

    // Retention (keep_last = 2) ran after each create: the third archive pruned the first.
    let run = berth_at(&url, &operator, &create).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let third = saga_of(&run.stdout);
    let uuids = archive_uuids(&url, &ci, "web").await;
    assert_eq!(uuids, vec![third.clone(), saga_of(&first.stdout)]);
    let retention = c.get_saga(&third).await;
    let pruned: serde_json::Value = serde_json::from_str(&retention.steps[1].output_json).unwrap();
    assert_eq!(pruned["deleted"], serde_json::json!([uuid]), "{pruned}");
    assert!(
        !s3.keys().await.iter().any(|k| k.contains(&uuid)),
        "the pruned archive's data and metadata are gone"
    );
}

#[tokio::test]
async fn what_cannot_be_archived_or_restored_is_refused_before_anything_runs() {
    let Rig {
        s3,
        c,
        operator,
        url,
        agent: _agent,
        _db,
    } = rig("refuse", "web-1", None).await;

    // An app directory that is not there: the saga fails, naming the path, and nothing is
    // stored.
    let run = berth_at(
        &url,
        &operator,
        &[
            "archive", "create", "--host", "web-1", "--app", "ghost", "--wait",
        ],
    )
    .await;
    assert_eq!(run.code(), 7, "{}\n{}", run.stdout, run.stderr());
    let all = format!("{}{}", run.stdout, run.stderr());
    assert_contains(&all, "ghost");
    assert!(s3.keys().await.is_empty(), "{:?}", s3.keys().await);

    // An archive that is not in the store is refused at once.
    let missing = uuid::Uuid::now_v7().to_string();
    let run = berth_at(
        &url,
        &operator,
        &["archive", "restore", &missing, "--host", "web-1"],
    )
    .await;
    assert_eq!(run.code(), 5, "{}\n{}", run.stdout, run.stderr());

    // App names that could escape the apps root or split a key never reach the agent.
    let mut client = pb::archive_service_client::ArchiveServiceClient::with_interceptor(
        c.channel().await,
        berth_tests::cluster::Bearer::new(&operator),
    );
    for app in ["../etc", "a:b", "a/b", "a\u{0}b", ".."] {
        let err = client
            .create_archive(pb::CreateArchiveRequest {
                host_id: "web-1".into(),
                app: app.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{app:?}: {err:?}");
        assert!(err.message().contains("app name"), "{app:?}: {err:?}");
    }
    let err = client
        .create_archive(pb::CreateArchiveRequest {
            host_id: "web-1".into(),
            app: "web".into(),
            zstd_level: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A CI token reads archives but does not make or restore them.
    let ci = c.token(berth_shared::Role::Ci, None).await;
    let run = berth_at(
        &url,
        &ci,
        &["archive", "create", "--host", "web-1", "--app", "web"],
    )
    .await;
    assert_eq!(run.code(), 4, "{}\n{}", run.stdout, run.stderr());
}

#[tokio::test]
async fn a_stacks_volumes_are_archived_and_restored_into_the_same_or_another_stack() {
    let Rig {
        s3,
        c,
        operator,
        url,
        agent: _agent,
        _db,
    } = rig("vol", "db-1", None).await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let project = format!("berthva{suffix}");
    let db_vol = Volume::create(&project, "db");
    let files_vol = Volume::create(&project, "files");
    std::fs::write(db_vol.mountpoint.join("PG_VERSION"), "15\n").unwrap();
    build_app(&files_vol.mountpoint.join("site"));
    // Volumes are kept as they are: only an app directory's own `.chowned` goes on restore.
    std::fs::remove_file(files_vol.mountpoint.join("site/.chowned")).unwrap();
    super::run(
        std::process::Command::new("touch")
            .args(["-d", "@1600000000"])
            .arg(files_vol.mountpoint.join("site")),
    );

    // While a container mounts one of the stack's volumes, the create is refused, naming it.
    let create = [
        "archive", "create", "--host", "db-1", "--app", "kc", "--stack", &project, "--wait",
    ];
    {
        let running = Container::mounting(&format!("{project}_app"), &db_vol.name);
        let run = berth_at(&url, &operator, &create).await;
        assert_eq!(run.code(), 7, "{}\n{}", run.stdout, run.stderr());
        let all = format!("{}{}", run.stdout, run.stderr());
        assert!(all.contains(&running.name), "names what runs: {all}");
    }
    let run = berth_at(&url, &operator, &create).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    let uuid = saga_of(&run.stdout);
    let meta = s3.metadata("vol", &uuid).await;
    assert_eq!(meta["source"], "volumes");
    assert_eq!(meta["stack"], project.as_str());
    assert_eq!(
        meta["volumes"],
        serde_json::json!([db_vol.name, files_vol.name])
    );

    // The test run dirties the volumes; the archive brings them back whole.
    let expected = tempfile::tempdir().unwrap();
    run_cp(
        &files_vol.mountpoint.join("site"),
        &expected.path().join("site"),
    );
    std::fs::write(db_vol.mountpoint.join("PG_VERSION"), "dirty\n").unwrap();
    std::fs::write(files_vol.mountpoint.join("junk"), "x").unwrap();
    let restore = ["archive", "restore", &uuid, "--host", "db-1", "--wait"];
    let run = berth_at(&url, &operator, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert_eq!(
        std::fs::read_to_string(db_vol.mountpoint.join("PG_VERSION")).unwrap(),
        "15\n"
    );
    assert!(!files_vol.mountpoint.join("junk").exists());
    assert_same_tree(
        &expected.path().join("site"),
        &files_vol.mountpoint.join("site"),
    );
    let saga = c.get_saga(&saga_of(&run.stdout)).await;
    let output: serde_json::Value = serde_json::from_str(&saga.steps[0].output_json).unwrap();
    assert_eq!(
        output["volumes"],
        serde_json::json!([db_vol.name, files_vol.name]),
        "{output}"
    );

    // Into another stack (moving the app): volumes map by short name.
    let other = format!("berthvb{suffix}");
    let other_db = Volume::create(&other, "db");
    let other_files = Volume::create(&other, "files");
    let moved = [
        "archive", "restore", &uuid, "--host", "db-1", "--as", "kc2", "--stack", &other, "--wait",
    ];
    let run = berth_at(&url, &operator, &moved).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert_eq!(
        std::fs::read_to_string(other_db.mountpoint.join("PG_VERSION")).unwrap(),
        "15\n"
    );
    assert_same_tree(
        &expected.path().join("site"),
        &other_files.mountpoint.join("site"),
    );

    // A stack missing one of the volumes is refused before anything is written.
    let partial = format!("berthvc{suffix}");
    let partial_db = Volume::create(&partial, "db");
    std::fs::write(partial_db.mountpoint.join("mine"), "keep").unwrap();
    let run = berth_at(
        &url,
        &operator,
        &[
            "archive", "restore", &uuid, "--host", "db-1", "--stack", &partial, "--wait",
        ],
    )
    .await;
    assert_eq!(run.code(), 7, "{}\n{}", run.stdout, run.stderr());
    let all = format!("{}{}", run.stdout, run.stderr());
    assert_contains(&all, format!("{partial}_files"));
    assert_eq!(
        std::fs::read_to_string(partial_db.mountpoint.join("mine")).unwrap(),
        "keep"
    );
    assert!(!partial_db.mountpoint.join("PG_VERSION").exists());

    // A corrupted archive is refused by its checksum; the volumes keep what they hold and
    // no staging is left beside them.
    let object = std::fs::read_dir(s3.root.path().join(berth_tests::s3::BUCKET).join("vol"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&uuid))
        .expect("the archive object on the server's disk");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&object, bytes).unwrap();
    std::fs::write(db_vol.mountpoint.join("PG_VERSION"), "dirty\n").unwrap();
    let run = berth_at(&url, &operator, &restore).await;
    assert_eq!(run.code(), 7, "{}\n{}", run.stdout, run.stderr());
    let all = format!("{}{}", run.stdout, run.stderr());
    assert_contains(&all, "checksum");
    assert_eq!(
        std::fs::read_to_string(db_vol.mountpoint.join("PG_VERSION")).unwrap(),
        "dirty\n"
    );
    let beside: Vec<String> = std::fs::read_dir(db_vol.mountpoint.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, vec!["_data".to_owned()], "no staging left behind");
}

/// `cp -a`, keeping owners, modes, times and links.
fn run_cp(from: &std::path::Path, to: &std::path::Path) {
    super::run(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

/// `berth archive create --recipient` seals the archive to an age key the archiving host
/// does not hold: that host's restore is refused naming the recipient and writes nothing; a
/// host whose agent holds the identity restores it.
#[tokio::test]
async fn an_archive_sealed_from_the_cli_is_restored_only_where_the_identity_is() {
    use age::secrecy::ExposeSecret;

    let r = rig("sealed", "web-1", None).await;
    let apps = r.agent.dir.path().join("apps");
    build_app(&apps.join("web"));
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("age-identity");
    std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
    let vault_token = r.c.token(berth_shared::Role::Agent, Some("vault-1")).await;
    let mut vault_archive = r.s3.agent_config("sealed");
    vault_archive.identity_file = Some(key_file);
    let vault = TestAgent::start(&r.c, "vault-1", &vault_token, move |a| {
        a.archive = vault_archive
    })
    .await;
    vault.wait_connected(Duration::from_secs(10)).await;

    let create = [
        "archive",
        "create",
        "--host",
        "web-1",
        "--app",
        "web",
        "--recipient",
        &recipient,
        "--wait",
    ];
    let run = berth_at(&r.url, &r.operator, &create).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    let uuid = saga_of(&run.stdout);
    let meta = r.s3.metadata("sealed", &uuid).await;
    assert_eq!(meta["encryption"], "age", "{meta}");
    assert_eq!(meta["recipients"], serde_json::json!([recipient]), "{meta}");

    let restore = [
        "archive", "restore", &uuid, "--host", "web-1", "--as", "web2", "--wait",
    ];
    let refused = berth_at(&r.url, &r.operator, &restore).await;
    assert_eq!(
        refused.code(),
        7,
        "{}\n{}",
        refused.stdout,
        refused.stderr()
    );
    let saga = r.c.get_saga(&saga_of(&refused.stdout)).await;
    assert_contains(&saga.error, "no archive.identity_file");
    assert_contains(&saga.error, &recipient);
    assert!(!apps.join("web2").exists(), "nothing written");

    let restore = [
        "archive", "restore", &uuid, "--host", "vault-1", "--as", "web", "--wait",
    ];
    let run = berth_at(&r.url, &r.operator, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert_same_tree(&apps.join("web"), &vault.dir.path().join("apps/web"));

    // A one-off identity from a credential file: the archiving host restores this once. The
    // key shows nowhere: not in the saga's inputs, not in the agent task the store keeps,
    // not on the agent's disk, and it is forgotten when the saga is over.
    let key_path = key_dir.path().join("age-identity").display().to_string();
    let restore = [
        "archive",
        "restore",
        &uuid,
        "--host",
        "web-1",
        "--as",
        "web3",
        "--identity-file",
        &key_path,
        "--wait",
    ];
    let run = berth_at(&r.url, &r.operator, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert_same_tree(&apps.join("web"), &apps.join("web3"));
    let secret = identity.to_string();
    let secret = secret.expose_secret();
    let saga_id = saga_of(&run.stdout);
    let saga = r.c.get_saga(&saga_id).await;
    assert!(!saga.inputs_json.contains(secret), "{}", saga.inputs_json);
    assert_contains(&saga.inputs_json, r#""identity":"(set,"#);
    let task = r.c.store().agent_task(&saga_id, 0).await.unwrap().unwrap();
    assert!(!task.inputs.contains("AGE-SECRET-KEY"), "{}", task.inputs);
    let field = berth_shared::task::IDENTITY_FIELD;
    assert_eq!(
        r.c.store().saga_secret(&saga_id, field).await.unwrap(),
        None
    );
    let shown = berth_at(&r.url, &r.operator, &["sagas", "show", &saga_id]).await;
    assert!(!shown.stdout.contains("AGE-SECRET-KEY"), "{}", shown.stdout);
    assert_eq!(
        grep_tree(r.agent.dir.path(), secret.as_bytes()),
        None::<std::path::PathBuf>
    );
}

/// The first file under `dir` holding `needle`, if any.
fn grep_tree(dir: &std::path::Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.is_dir() {
            if let Some(found) = grep_tree(&path, needle) {
                return Some(found);
            }
        } else if meta.is_file()
            && std::fs::read(&path)
                .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
        {
            return Some(path);
        }
    }
    None
}
