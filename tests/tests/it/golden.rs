//! Golden saga histories: the main kinds run against a real coordinator (the agent spoken by
//! hand where one is needed), and each history, as text, must match the file in `golden/`.
//! A change in the engine's behaviour shows as a diff of that file. Run with
//! `BERTH_BLESS=1` to write the files anew, then read the diff before committing it.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg;
use berth_shared::saga::SagaStatus;
use berth_tests::fake_agent::warm_restore_by_hand;
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use serde_json::json;

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
