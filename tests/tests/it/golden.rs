//! Golden saga histories: the main kinds run against a real coordinator (the agent spoken by
//! hand where one is needed), and each history, as text, must match the file in `golden/`.
//! A change in the engine's behaviour shows as a diff of that file. Run with
//! `BERTH_BLESS=1` to write the files anew, then read the diff before committing it.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg;
use berth_shared::saga::{EventKind, SagaStatus};
use berth_tests::dosim::{ActionFailure, DoSim, SimConfig};
use berth_tests::fake_agent::{FakeAgent, saga_by_hand, warm_restore_by_hand};
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use serde_json::{Value, json};

/// A coordinator whose name in the histories is always the same.
async fn coordinator(db: &TestDb) -> TestCoordinator {
    TestCoordinator::start_with(db, None, |c| c.instance_id = Some("coord-golden".into())).await
}

/// A history as text: one line per event, `kind step message` (ids and times are left out).
/// Repeats of one progress line are one line: how many the owner relays depends on timing.
fn text(events: &[pb::SagaEvent]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for e in events {
        let step = match e.step_index {
            -1 => "-".to_owned(),
            i => i.to_string(),
        };
        let line = format!("{} {step} {}", e.kind, e.message);
        if e.progress.is_some() && lines.last() == Some(&line) {
            continue;
        }
        lines.push(line);
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Compares `got` with `golden/<name>.txt` (or writes it, with `BERTH_BLESS=1`).
#[track_caller]
fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with BERTH_BLESS=1 to write it",
            path.display()
        )
    });
    assert!(
        want == got,
        "the history of {name} changed; if that is meant, run with BERTH_BLESS=1 and review \
         the diff of {}\n--- want\n{want}--- got\n{got}",
        path.display()
    );
}

async fn demo_history(c: &TestCoordinator, steps: serde_json::Value) -> String {
    let id = c.start_demo(steps).await;
    c.wait_saga(&id, Duration::from_secs(30)).await;
    text(&c.history(&id).await)
}

#[tokio::test]
async fn demo_sagas_complete_compensate_and_retry_as_recorded() {
    let db = TestDb::sqlite();
    let c = coordinator(&db).await;
    golden(
        "demo_completes",
        &demo_history(&c, json!([{"step": "noop"}, {"step": "record"}])).await,
    );
    golden(
        "demo_compensates",
        &demo_history(
            &c,
            json!([{"step": "noop"}, {"step": "record"}, {"step": "fail"}]),
        )
        .await,
    );
    golden(
        "demo_fails_forward_after_a_pivot",
        &demo_history(
            &c,
            json!([{"step": "noop"}, {"step": "destroy_like"}, {"step": "fail"}]),
        )
        .await,
    );
    golden(
        "demo_retries",
        &demo_history(&c, json!([{"step": "flaky", "failures": 2}])).await,
    );
}

/// A warm restore as the coordinator runs it: the task goes to the host's agent, its
/// progress is relayed, its result completes the saga.
#[tokio::test]
async fn a_warm_restore_runs_on_its_agent_as_recorded() {
    let db = TestDb::sqlite();
    let c = coordinator(&db).await;
    let (agent, saga_id, task) = warm_restore_by_hand(&c, "ci-1").await;
    let id = task.id.clone();
    for (done, phase) in [(0, "restoring kc_db"), (4096, "restoring kc_db")] {
        let report = pb::TaskProgress {
            id: id.clone(),
            progress: Some(pb::Progress {
                bytes_done: done,
                bytes_total: 4096,
                phase: phase.into(),
                ..Default::default()
            }),
        };
        assert!(agent.send(Msg::Progress(report)).await);
        // Apart, so each is written and relayed.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(
        agent
            .send(Msg::Result(pb::TaskResult {
                id,
                ok: true,
                output_json: r#"{"volumes":["kc_db"]}"#.into(),
                ..Default::default()
            }))
            .await
    );
    let saga = c.wait_saga(&saga_id, Duration::from_secs(30)).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
    golden("warm_restore", &text(&c.history(&saga_id).await));
}

/// The task's result, sent as the agent would.
async fn answer(agent: &FakeAgent, task: &pb::TaskAssignment, result: pb::TaskResult) {
    let result = pb::TaskResult {
        id: task.id.clone(),
        ..result
    };
    assert!(agent.send(Msg::Result(result)).await, "the session is open");
}

/// An archive as the coordinator runs it: the agent's step, then retention; and one the
/// agent refuses for good, which fails the saga with the agent's words.
#[tokio::test]
async fn archive_creates_run_on_their_agent_as_recorded() {
    let db = TestDb::sqlite();
    let c = coordinator(&db).await;
    let inputs = json!({"host_id": "ci-1", "app": "kc"});
    let (agent, saga_id, task) = saga_by_hand(&c, "archive.create", inputs.clone()).await;
    let sha256 = "ab".repeat(32);
    let output = json!({"uuid": saga_id, "app": "kc", "size": 4096, "sha256": sha256,
        "tar_bytes": 10240, "entries": 3});
    let ok = pb::TaskResult {
        ok: true,
        output_json: output.to_string(),
        ..Default::default()
    };
    answer(&agent, &task, ok).await;
    let saga = c.wait_saga(&saga_id, Duration::from_secs(30)).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
    golden("archive_create", &text(&c.history(&saga_id).await));
    drop(agent);

    // Its restore carries what the create recorded, not what the bucket says.
    let restore = json!({"host_id": "ci-1", "uuid": saga_id, "target_app": "kc-copy"});
    let (agent, restore_id, task) = saga_by_hand(&c, "archive.restore", restore).await;
    let sent: Value = serde_json::from_str(&task.inputs_json).unwrap();
    assert_eq!(sent["recorded"]["sha256"], sha256.as_str(), "{sent}");
    let restored = pb::TaskResult {
        ok: true,
        output_json: json!({"uuid": saga_id, "app": "kc-copy"}).to_string(),
        ..Default::default()
    };
    answer(&agent, &task, restored).await;
    let saga = c.wait_saga(&restore_id, Duration::from_secs(30)).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
    golden("archive_restore", &text(&c.history(&restore_id).await));
    drop(agent);

    let (agent, saga_id, task) = saga_by_hand(&c, "archive.create", inputs).await;
    let refused = pb::TaskResult {
        ok: false,
        retryable: false,
        error: "app directory /srv/apps/kc does not exist or is not a directory".into(),
        ..Default::default()
    };
    answer(&agent, &task, refused).await;
    let saga = c.wait_saga(&saga_id, Duration::from_secs(30)).await;
    assert_ne!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
    golden("archive_create_refused", &text(&c.history(&saga_id).await));
}

/// A warm snapshot whose agent answers that the stack is deployed: the step fails and the
/// saga waits for an operator (nothing to undo: the agent swaps whole or not at all).
#[tokio::test]
async fn a_warm_snapshot_refused_by_its_agent_waits_for_an_operator_as_recorded() {
    let db = TestDb::sqlite();
    let c = coordinator(&db).await;
    let inputs = json!({"host_id": "ci-1", "app": "kc", "domain": "kc.example.org"});
    let (agent, saga_id, task) = saga_by_hand(&c, "warm.snapshot", inputs).await;
    let refused = pb::TaskResult {
        ok: false,
        retryable: false,
        error: "refusing to snapshot kc while stack kc_example_org is deployed (service \
                kc_example_org_db); undeploy it first"
            .into(),
        ..Default::default()
    };
    answer(&agent, &task, refused).await;
    let saga = c.wait_saga(&saga_id, Duration::from_secs(30)).await;
    assert_eq!(saga.saga_status(), SagaStatus::Failed, "{saga:?}");
    golden("warm_snapshot_refused", &text(&c.history(&saga_id).await));
}

/// A coordinator (always named the same) talking to a fresh DigitalOcean simulator.
async fn cloud(db: &TestDb) -> (DoSim, TestCoordinator) {
    let sim = DoSim::start(SimConfig::fast())
        .await
        .expect("the simulator starts");
    let c = TestCoordinator::start_with_digitalocean_and(db, &sim, |c| {
        c.instance_id = Some("coord-golden".into())
    })
    .await;
    (sim, c)
}

/// The history without its progress events: how many a cloud step writes (polls of an
/// action, of a listing) depends on timing.
fn without_progress(events: Vec<pb::SagaEvent>) -> Vec<pb::SagaEvent> {
    events
        .into_iter()
        .filter(|e| e.progress.is_none() && e.kind != EventKind::StepProgress.as_str())
        .collect()
}

/// Runs a saga of `kind` to its end; its history as text (progress left out), once it
/// ended `status`.
async fn cloud_history(
    c: &TestCoordinator,
    kind: &str,
    inputs: Value,
    status: SagaStatus,
) -> (String, pb::Saga) {
    let id = c.start_saga(kind, inputs).await;
    let saga = c.wait_saga(&id, Duration::from_secs(60)).await;
    assert_eq!(saga.saga_status(), status, "{saga:#?}");
    (text(&without_progress(c.history(&id).await)), saga)
}

/// A droplet's life, one saga per kind, and a provision whose create action errors (so the
/// saga compensates), each compared with its golden history.
#[tokio::test]
async fn droplet_sagas_run_as_recorded() {
    let db = TestDb::sqlite();
    let (sim, c) = cloud(&db).await;
    let provision = json!({
        "name": "golden", "region": "nyc3", "size_slug": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64", "tags": ["env:test"],
    });
    let completed = SagaStatus::Completed;
    let (history, saga) =
        cloud_history(&c, "droplet.provision", provision.clone(), completed).await;
    golden("droplet_provision", &history);
    let output: Value = serde_json::from_str(&saga.steps[0].output_json).unwrap();
    let id = output["droplet_id"].as_u64().expect("a droplet id");
    let droplet = json!({"droplet_id": id});
    let (history, _) = cloud_history(&c, "droplet.snapshot", droplet.clone(), completed).await;
    golden("droplet_snapshot", &history);
    let resize = json!({"droplet_id": id, "size_slug": "s-2vcpu-2gb"});
    let (history, _) = cloud_history(&c, "droplet.resize", resize, completed).await;
    golden("droplet_resize", &history);
    let (history, _) = cloud_history(&c, "droplet.destroy", droplet, completed).await;
    golden("droplet_destroy", &history);

    sim.fail_next_action(ActionFailure {
        droplet: None,
        kind: Some("create".into()),
    });
    let compensated = SagaStatus::Compensated;
    let (history, _) = cloud_history(&c, "droplet.provision", provision, compensated).await;
    golden("droplet_provision_compensated", &history);
    sim.assert_no_violations();
}
