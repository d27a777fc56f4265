//! Upgrades: an older coordinator binary refuses a database a newer build migrated, naming both
//! versions; an agent restarted mid-task reports the task failed-retryable and the saga runs
//! it again. (A coordinator stopped with SIGTERM hands its sagas back: `saga_crash.rs`.)

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_coordinator::store::{LATEST_VERSION, Store};
use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_tests::docker::{Container, Volume};
use berth_tests::{SagaStatused, TestAgent, TestCoordinator, TestDb, bin, eventually};
use sqlx::Executor;

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_stops_the_coordinator_binary_naming_both_versions() {
    for db in TestDb::each().await {
        Store::open(&db.url).await.unwrap().close().await;
        let newer = LATEST_VERSION + 1;
        db.raw_pool()
            .await
            .execute(sqlx::AssertSqlSafe(format!(
                "INSERT INTO berth_schema_migrations (version, name, applied_at_ms) \
                 VALUES ({newer}, 'from a newer build', 0)"
            )))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ninsecure_plaintext = true\ndata_dir = \"{}\"\n\
                 database_url = \"{}\"\n",
                dir.path().join("data").display(),
                db.url
            ),
        )
        .unwrap();
        let out = Command::new(bin::path("berth-coordinator"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", db.kind);
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        let line = lines[0];
        assert!(line.starts_with("berth-coordinator: "), "{line}");
        assert!(
            line.contains(&format!("schema is at version {newer}"))
                && line.contains(&format!("knows versions up to {LATEST_VERSION}"))
                && line.contains(env!("CARGO_PKG_VERSION"))
                && line.contains("newer build"),
            "{:?}: {line}",
            db.kind
        );
        // Nothing was written: the newer build's schema is untouched.
        let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM berth_schema_migrations")
            .fetch_one(&db.raw_pool().await)
            .await
            .unwrap();
        assert_eq!(version, newer);
    }
}

/// The task record the agent keeps for the saga's step, if any.
fn task_record(state_dir: &std::path::Path, saga_id: &str) -> Option<serde_json::Value> {
    let path: PathBuf = state_dir.join("tasks").join(format!("{saga_id}-0.json"));
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A warm snapshot whose task waits for its stack to be undeployed (a container still mounts
/// the volume). The agent is stopped in the middle; a new one with the same state dir and host
/// id answers the re-sent task with a retryable failure, and the saga runs the step again.
#[tokio::test]
async fn an_agent_restarted_mid_task_reports_it_failed_retryable_and_the_saga_retries_it() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let host = "restart-1";
    let token = c.token(Role::Agent, Some(host)).await;
    let mut first = TestAgent::start(&c, host, &token, |_| {}).await;
    first.wait_connected(Duration::from_secs(10)).await;

    let project = format!(
        "berthrestart{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let volume = Volume::create(&project, "data");
    std::fs::write(volume.mountpoint.join("state"), "v1\n").unwrap();
    let container = Container::mounting(&format!("{project}_app"), &volume.name);

    let inputs = serde_json::json!({
        "host_id": host,
        "app": "restartapp",
        "stack": project,
        "wait_undeployed_secs": 300,
    });
    let saga_id = c
        .sagas()
        .await
        .start_saga(pb::StartSagaRequest {
            kind: "warm.snapshot".into(),
            inputs_json: inputs.to_string(),
            idempotency_key: String::new(),
        })
        .await
        .expect("start warm snapshot")
        .into_inner()
        .saga_id;
    let state_dir = first.state_dir();
    eventually(
        Duration::from_secs(20),
        "the agent to be running the snapshot task (waiting for the container)",
        || async { task_record(&state_dir, &saga_id).filter(|r| r["status"] == "running") },
    )
    .await;

    // The agent stops mid-task, as when its process is restarted.
    first.stop().await;
    let record = task_record(&state_dir, &saga_id).expect("the task record survives");
    assert!(
        record["status"] == "running" || record["outcome"]["retryable"] == true,
        "{record}"
    );
    drop(container);

    let warm_root = first.dir.path().join("warm");
    let second = TestAgent::start(&c, host, &token, |config| {
        config.state_dir = state_dir.clone();
        config.warm_root = warm_root.clone();
    })
    .await;
    second.wait_connected(Duration::from_secs(10)).await;
    let started = Instant::now();
    let saga = c.wait_saga(&saga_id, Duration::from_secs(90)).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
    let step = &saga.steps[0];
    assert!(
        step.attempts > 1,
        "the step ran again after the restart: {step:?}"
    );
    eprintln!(
        "saga completed {:?} after the new agent connected, in {} attempts",
        started.elapsed(),
        step.attempts
    );
    let said: Vec<String> = c
        .history(&saga_id)
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.message))
        .collect();
    assert!(
        said.iter()
            .any(|e| e.contains("the agent stopped while this task was running")),
        "the restarted agent reported the interrupted task as a retryable failure:\n{}",
        said.join("\n")
    );
    let meta = warm_root.join("restartapp/snapshot/meta.json");
    assert!(
        meta.is_file(),
        "the retried snapshot completed: {}",
        meta.display()
    );
}
