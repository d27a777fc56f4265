//! `berth archive verify --wait` end to end: the CLI, the coordinator's `archive.verify`
//! saga, the agent on the host and the real S3 server. A good archive reports its entries and
//! bytes; a flipped byte fails the verify, which records the failure (`archive_checks`),
//! labels the archive's metadata `verify-failed`, and keeps retention from counting it as the
//! newest good archive; a later good verify clears it.

use std::time::Duration;

use berth_tests::cli::berth_at;
use berth_tests::s3::{S3Server, flip_middle_byte};
use berth_tests::{TestAgent, TestCoordinator, TestDb};

use super::build_app;

const PREFIX: &str = "verify";

/// The object under `PREFIX` whose key starts with `start`.
async fn key_of(s3: &S3Server, start: &str) -> String {
    let keys = s3.keys().await;
    let key = keys
        .iter()
        .find(|k| k.starts_with(&format!("{PREFIX}/{start}")))
        .unwrap_or_else(|| panic!("no {start}… in {keys:?}"));
    key.strip_prefix(&format!("{PREFIX}/")).unwrap().to_owned()
}

/// On SQLite and PostgreSQL (`archive_checks` is the coordinator's record).
#[tokio::test]
async fn a_flipped_byte_fails_the_verify_labels_the_archive_and_keeps_retention_off_it() {
    for db in TestDb::each().await {
        flipped_byte(&db).await;
    }
}

async fn flipped_byte(db: &TestDb) {
    let s3 = S3Server::start().await;
    let archive = s3.coordinator_config(PREFIX);
    let c = TestCoordinator::start_with(db, None, move |c| c.archive = archive).await;
    let token = c.token(berth_shared::Role::Agent, Some("web-1")).await;
    let agent_archive = s3.agent_config(PREFIX);
    let agent = TestAgent::start(&c, "web-1", &token, move |a| a.archive = agent_archive).await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let operator = c.token(berth_shared::Role::Operator, None).await;
    let url = c.url();
    build_app(&agent.dir.path().join("apps").join("web"));

    // Three archives, oldest first; each key's second differs, so newest first is certain.
    let mut made = Vec::new();
    for _ in 0..3 {
        let create = [
            "archive", "create", "--host", "web-1", "--app", "web", "--wait",
        ];
        let run = berth_at(&url, &operator, &create).await;
        assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
        made.push(run.stdout.lines().next().unwrap().trim().to_owned());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let [oldest, good, bad] = [&made[0], &made[1], &made[2]];
    let raw = s3.client(PREFIX);
    let apps_before = std::fs::read_dir(agent.dir.path().join("apps"))
        .unwrap()
        .count();

    // A good archive: entries and bytes printed, nothing written on the host.
    let verify = |uuid: &str| {
        let args = [
            "archive".to_owned(),
            "verify".to_owned(),
            uuid.to_owned(),
            "--host".to_owned(),
            "web-1".to_owned(),
            "--wait".to_owned(),
        ];
        let url = url.clone();
        let operator = operator.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            berth_at(&url, &operator, &args).await
        }
    };
    let run = verify(good).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert!(
        run.stdout.contains(&format!("archive {good} verified: ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(" entries, "), "{}", run.stdout);
    // Its progress reached the saga's history, as a restore's does.
    let saga = run.stdout.lines().next().unwrap().trim().to_owned();
    let progress: Vec<_> = c
        .history(&saga)
        .await
        .into_iter()
        .filter_map(|e| e.progress)
        .collect();
    let last = progress.last().expect("progress events in the history");
    assert!(last.bytes_done > 0 && last.entries_done >= 8, "{last:?}");
    assert_eq!(last.bytes_written, 0, "a verify writes nothing: {last:?}");
    assert_eq!(
        std::fs::read_dir(agent.dir.path().join("apps"))
            .unwrap()
            .count(),
        apps_before,
        "a verify writes nothing into the apps root"
    );

    // A flipped byte in the middle of the newest: exit 8, the problem named.
    let bad_key = key_of(&s3, &format!("web:{bad}:")).await;
    flip_middle_byte(&raw, &bad_key).await;
    let run = verify(bad).await;
    assert_eq!(run.code(), 8, "{}\n{}", run.stdout, run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!("archive {bad} failed verification: "))
            && (stderr.contains("failed its checksum") || stderr.contains("not a valid tar+zstd")),
        "{stderr}"
    );

    // The catalog shows it; the metadata in the bucket carries the label.
    let ci = c.token(berth_shared::Role::Ci, None).await;
    let shown = berth_at(&url, &ci, &["--output", "json", "archive", "show", bad]).await;
    assert_eq!(shown.code(), 0, "{}", shown.stderr());
    let shown = shown.json()[0].clone();
    assert_eq!(shown["last_check"]["ok"], false, "{shown}");
    assert_eq!(shown["last_check"]["host_id"], "web-1", "{shown}");
    assert!(
        shown["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "verify-failed"),
        "{shown}"
    );
    let listed = berth_at(
        &url,
        &ci,
        &["--output", "json", "archive", "list", "--app", "web"],
    )
    .await;
    let listed = listed.json();
    let good_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["uuid"] == good.as_str())
        .unwrap();
    assert_eq!(good_row["last_check"]["ok"], true, "{good_row}");

    // Retention: keep the last one. The newest failed its verification: it fills no slot and
    // goes, the older good one is kept as the last, and the oldest goes.
    let prune = [
        "--output",
        "json",
        "archive",
        "prune",
        "--app",
        "web",
        "--keep-last",
        "1",
        "--dry-run",
    ];
    let run = berth_at(&url, &operator, &prune).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.json()["deleted"],
        serde_json::json!([bad, oldest]),
        "the failed archive is not the newest good one"
    );

    // Put the byte back: a later good verify clears the failure (the latest row wins), and
    // the newest is the newest good again.
    flip_middle_byte(&raw, &bad_key).await;
    let run = verify(bad).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    let run = berth_at(&url, &operator, &prune).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let mut deleted: Vec<String> = serde_json::from_value(run.json()["deleted"].clone()).unwrap();
    deleted.sort();
    let mut expected = vec![oldest.clone(), good.clone()];
    expected.sort();
    assert_eq!(deleted, expected);
}
