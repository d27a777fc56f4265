//! The saga engine through the API, on SQLite and PostgreSQL: compensation, pivots, retries,
//! cancellation, operator actions, idempotent start, watch, and precise refusals.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::assert_contains;
use berth_tests::{SagaStatused, StepStatused, TestCoordinator, TestDb};
use futures::StreamExt;
use serde_json::json;
use sqlx::Row;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn ledger(saga: &pb::Saga) -> Vec<(String, StepStatus)> {
    saga.steps
        .iter()
        .map(|s| (s.name.clone(), s.step_status()))
        .collect()
}

fn pairs(v: &[(&str, StepStatus)]) -> Vec<(String, StepStatus)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), *b)).collect()
}

/// (step, phase) → calls of the demo `record` step's side effect, read from the database.
async fn effects(db: &TestDb, saga_id: &str) -> Vec<(i64, String, i64)> {
    let pool = db.raw_pool().await;
    let rows = sqlx::query(
        "SELECT step_idx, phase, calls FROM saga_test_effects WHERE saga_id = $1 ORDER BY step_idx, phase",
    )
    .bind(saga_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| (r.get("step_idx"), r.get("phase"), r.get("calls")))
        .collect()
}

#[tokio::test]
async fn a_failure_compensates_completed_steps_in_reverse() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let id = c
            .start_demo(json!([{"step": "noop"}, {"step": "fail"}]))
            .await;
        let saga = c.wait_saga(&id, WAIT).await;
        assert_eq!(saga.saga_status(), SagaStatus::Compensated, "{:?}", db.kind);
        assert_eq!(
            ledger(&saga),
            pairs(&[
                ("noop", StepStatus::Compensated),
                ("fail", StepStatus::Failed)
            ])
        );
        assert_contains(&saga.steps[1].error, "failed on purpose");
        assert_eq!(
            saga.steps[1].attempts, 1,
            "a permanent failure is not retried"
        );

        let id = c
            .start_demo(
                json!([{"step": "record"}, {"step": "record"}, {"step": "noop"}, {"step": "fail"}]),
            )
            .await;
        let saga = c.wait_saga(&id, WAIT).await;
        assert_eq!(saga.saga_status(), SagaStatus::Compensated);
        let e = effects(&db, &id).await;
        assert_eq!(
            e,
            [
                (0, "compensate".into(), 1),
                (0, "execute".into(), 1),
                (1, "compensate".into(), 1),
                (1, "execute".into(), 1)
            ]
        );
        // Reverse order, from the history.
        let events = c.history(&id).await;
        let order: Vec<i32> = events
            .iter()
            .filter(|e| e.kind == "step_compensated")
            .map(|e| e.step_index)
            .collect();
        assert_eq!(order, [2, 1, 0]);
    }
}

#[tokio::test]
async fn a_failure_after_a_pivot_fails_forward_without_compensating_the_pivot() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let id = c
            .start_demo(json!([{"step": "noop"}, {"step": "destroy_like"}, {"step": "fail"}]))
            .await;
        let saga = c.wait_saga(&id, WAIT).await;
        assert_eq!(saga.saga_status(), SagaStatus::Failed, "{:?}", db.kind);
        assert_eq!(
            ledger(&saga),
            pairs(&[
                ("noop", StepStatus::Completed),
                ("destroy_like", StepStatus::Completed),
                ("fail", StepStatus::Failed)
            ])
        );
        assert!(saga.steps[1].pivot);
        assert_eq!(
            effects(&db, &id).await,
            [(1, "execute".into(), 1)],
            "the pivot is never compensated"
        );
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_and_exhaustion_compensates() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "record"}, {"step": "flaky", "failures": 2}]))
        .await;
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed);
    assert_eq!(saga.steps[1].attempts, 3);
    let flaky = &saga.steps[1];
    assert!(
        flaky.attempt_started_at_ms > flaky.started_at_ms
            && flaky.finished_at_ms >= flaky.attempt_started_at_ms,
        "the duration is the third attempt's, not the first's with the waits: {flaky:?}"
    );
    let events = c.history(&id).await;
    let retries: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "step_retrying")
        .collect();
    assert_eq!(retries.len(), 2);

    // The demo policy allows 4 attempts: 10 planned failures exhaust it.
    let id = c
        .start_demo(json!([{"step": "record"}, {"step": "flaky", "failures": 10}]))
        .await;
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Compensated);
    assert_eq!(saga.steps[1].attempts, 4);
    assert_contains(&saga.steps[1].error, "gave up after 4 attempts");
    assert_eq!(
        ledger(&saga),
        pairs(&[
            ("record", StepStatus::Compensated),
            ("flaky", StepStatus::Failed)
        ])
    );
}

#[tokio::test]
async fn watch_streams_history_then_live_events_and_ends_with_the_final_status() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "sleep", "ms": 300}, {"step": "noop"}]))
        .await;
    let events = c.history(&id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"saga_started"));
    assert!(kinds.contains(&"step_succeeded"));
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.final_status.as_str()),
        ("watch_end", SagaStatus::Completed.as_str())
    );
    let seqs: Vec<u64> = events[..events.len() - 1].iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events arrive in order: {seqs:?}"
    );
}

#[tokio::test]
async fn cancel_stops_a_long_step_and_compensates_but_is_refused_after_a_pivot() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let id = c
            .start_demo(json!([{"step": "record"}, {"step": "sleep", "ms": 60_000}]))
            .await;
        c.wait_step(&id, 1, StepStatus::Running, WAIT).await;
        let started = std::time::Instant::now();
        c.sagas()
            .await
            .cancel_saga(pb::SagaIdRequest {
                saga_id: id.clone(),
                reason: "test".into(),
            })
            .await
            .unwrap();
        let saga = c.wait_saga(&id, WAIT).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sleep was interrupted"
        );
        assert_eq!(saga.saga_status(), SagaStatus::Cancelled, "{:?}", db.kind);
        assert_eq!(
            ledger(&saga),
            pairs(&[
                ("record", StepStatus::Compensated),
                ("sleep", StepStatus::Cancelled)
            ])
        );

        let id = c
            .start_demo(json!([{"step": "destroy_like"}, {"step": "sleep", "ms": 60_000}]))
            .await;
        c.wait_step(&id, 0, StepStatus::Completed, WAIT).await;
        let err = c
            .sagas()
            .await
            .cancel_saga(pb::SagaIdRequest {
                saga_id: id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_contains(err.message(), "pivot step 0 (destroy_like) completed");
        c.sagas()
            .await
            .abandon_saga(pb::SagaIdRequest {
                saga_id: id.clone(),
                reason: "test over".into(),
            })
            .await
            .unwrap();
        let saga = c.wait_saga(&id, WAIT).await;
        assert_eq!(saga.saga_status(), SagaStatus::Abandoned);
        let sleep = &saga.steps[1];
        assert_eq!(sleep.step_status(), StepStatus::Abandoned, "{:?}", db.kind);
        assert!(
            sleep.finished_at_ms >= sleep.attempt_started_at_ms && sleep.attempt_started_at_ms > 0,
            "an abandoned step's clock stops: {sleep:?}"
        );
    }
}

#[tokio::test]
async fn a_compensation_that_fails_waits_for_an_operator_who_can_resume_or_skip() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "record"}, {"step": "fail_compensate"}, {"step": "fail"}]))
        .await;
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::CompensationFailed);
    assert_contains(&saga.error, "compensation fails on purpose");
    assert_eq!(
        ledger(&saga),
        pairs(&[
            ("record", StepStatus::Completed),
            ("fail_compensate", StepStatus::Compensating),
            ("fail", StepStatus::Failed)
        ])
    );

    // Resuming tries again (and fails again: the step always fails).
    let mut sagas = c.sagas().await;
    sagas
        .resume_compensation(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: "try again".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.wait_saga(&id, WAIT).await.saga_status(),
        SagaStatus::CompensationFailed
    );

    // Skipping the stuck compensation lets the unwinding finish.
    let err = sagas
        .skip_step(pb::SkipStepRequest {
            saga_id: id.clone(),
            step_index: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    sagas
        .skip_step(pb::SkipStepRequest {
            saga_id: id.clone(),
            step_index: 1,
            reason: "cleaned by hand".into(),
        })
        .await
        .unwrap();
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Compensated);
    assert_eq!(
        ledger(&saga),
        pairs(&[
            ("record", StepStatus::Compensated),
            ("fail_compensate", StepStatus::Skipped),
            ("fail", StepStatus::Failed)
        ])
    );
}

#[tokio::test]
async fn an_operator_retries_or_skips_the_failed_step_of_a_saga_that_failed_forward() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "destroy_like"}, {"step": "fail"}, {"step": "record"}]))
        .await;
    assert_eq!(
        c.wait_saga(&id, WAIT).await.saga_status(),
        SagaStatus::Failed
    );
    let mut sagas = c.sagas().await;
    sagas
        .retry_saga(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap();
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(
        saga.saga_status(),
        SagaStatus::Failed,
        "the step fails again"
    );
    assert_eq!(
        saga.steps[1].attempts, 1,
        "attempts restart on an operator retry"
    );
    sagas
        .skip_step(pb::SkipStepRequest {
            saga_id: id.clone(),
            step_index: 1,
            reason: "not needed".into(),
        })
        .await
        .unwrap();
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed);
    assert_eq!(
        ledger(&saga),
        pairs(&[
            ("destroy_like", StepStatus::Completed),
            ("fail", StepStatus::Skipped),
            ("record", StepStatus::Completed)
        ])
    );
    let kinds: Vec<String> = c.history(&id).await.into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"operator_retry".into()) && kinds.contains(&"operator_skip".into()));
}

#[tokio::test]
async fn every_execute_and_compensate_run_twice_reach_the_same_end_state() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let steps = json!([{"step": "record"}, {"step": "record"}, {"step": "fail"}]);
        let once = c.start_demo(steps.clone()).await;
        let inputs = json!({ "steps": steps, "repeat": 2 }).to_string();
        let twice = c
            .sagas()
            .await
            .start_saga(pb::StartSagaRequest {
                kind: "demo".into(),
                inputs_json: inputs,
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .saga_id;
        let (a, b) = (
            c.wait_saga(&once, WAIT).await,
            c.wait_saga(&twice, WAIT).await,
        );
        assert_eq!(
            (a.status.as_str(), ledger(&a)),
            (b.status.as_str(), ledger(&b))
        );
        let strip =
            |v: Vec<(i64, String, i64)>| v.into_iter().map(|(i, p, _)| (i, p)).collect::<Vec<_>>();
        let (ea, eb) = (effects(&db, &once).await, effects(&db, &twice).await);
        assert_eq!(strip(ea.clone()), strip(eb.clone()), "same effects exist");
        assert!(
            eb.iter().all(|(_, _, calls)| *calls == 2),
            "each call happened twice: {eb:?}"
        );
    }
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_saga() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let mut sagas = c.sagas().await;
        let req = |steps: serde_json::Value| pb::StartSagaRequest {
            kind: "demo".into(),
            inputs_json: json!({ "steps": steps }).to_string(),
            idempotency_key: "ci-run-42".into(),
        };
        let first = sagas
            .start_saga(req(json!([{"step": "noop"}])))
            .await
            .unwrap()
            .into_inner();
        let again = sagas
            .start_saga(req(json!([{"step": "noop"}])))
            .await
            .unwrap()
            .into_inner();
        assert!(!first.existing && again.existing);
        assert_eq!(first.saga_id, again.saga_id);
        let err = sagas
            .start_saga(req(json!([{"step": "fail"}])))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_contains(err.message(), "ci-run-42");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM saga_runs")
            .fetch_one(&db.raw_pool().await)
            .await
            .unwrap();
        assert_eq!(n, 1, "{:?}", db.kind);
    }
}

#[tokio::test]
async fn bad_requests_get_precise_errors_and_write_nothing() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let mut sagas = c.sagas().await;
    let start = |kind: &str, inputs: &str| pb::StartSagaRequest {
        kind: kind.into(),
        inputs_json: inputs.into(),
        idempotency_key: String::new(),
    };
    let cases = [
        (
            start("provision_everything", "{}"),
            "unknown saga kind \"provision_everything\"",
        ),
        (start("demo", "{\"steps\": ["), "not valid JSON"),
        (start("demo", "{}"), "missing field `steps`"),
        (
            start("demo", r#"{"steps":[{"step":"sleep","ms":"long"}]}"#),
            "invalid type",
        ),
        (
            start("demo", r#"{"steps":[{"step":"teleport"}]}"#),
            "unknown variant `teleport`",
        ),
    ];
    for (req, expected) in cases {
        let err = sagas.start_saga(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(expected),
            "{} should contain {expected}",
            err.message()
        );
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = sagas
        .get_saga(pb::GetSagaRequest {
            saga_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = sagas
        .get_saga(pb::GetSagaRequest {
            saga_id: "x'; drop table".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = sagas
        .retry_saga(pb::SagaIdRequest {
            saga_id: unknown,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM saga_runs")
        .fetch_one(&db.raw_pool().await)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing was written");

    let id = c.start_demo(json!([{"step": "noop"}])).await;
    assert_eq!(
        c.wait_saga(&id, WAIT).await.saga_status(),
        SagaStatus::Completed
    );
    let err = sagas
        .retry_saga(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_contains(err.message(), "is completed");
    let err = sagas
        .skip_step(pb::SkipStepRequest {
            saga_id: id,
            step_index: 7,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_contains(err.message(), "has 1 steps");
}

#[tokio::test]
async fn sagas_are_listed_with_filters_and_pages_and_ci_may_read_but_not_start() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let steps = if i % 2 == 0 {
                json!([{"step": "noop"}])
            } else {
                json!([{"step": "fail"}])
            };
            ids.push(c.start_demo(steps).await);
        }
        for id in &ids {
            c.wait_saga(id, WAIT).await;
        }
        let ci = c.token(Role::Ci, None).await;
        let mut sagas = c.sagas_as(&ci).await;
        let page = |token: &str, statuses: Vec<String>| pb::ListSagasRequest {
            statuses,
            page: Some(pb::PageRequest {
                page_size: 2,
                page_token: token.into(),
            }),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let r = sagas
                .list_sagas(page(&token, vec![]))
                .await
                .unwrap()
                .into_inner();
            seen.extend(r.sagas.into_iter().map(|s| s.saga_id));
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(seen, expected, "newest first, every saga once");
        let done = sagas
            .list_sagas(pb::ListSagasRequest {
                statuses: vec![SagaStatus::Completed.as_str().into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(done.into_inner().sagas.len(), 3);
        let err = sagas
            .list_sagas(pb::ListSagasRequest {
                statuses: vec!["done".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = sagas
            .start_saga(pb::StartSagaRequest {
                kind: "demo".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn a_graceful_stop_ends_open_watch_streams_instead_of_waiting_for_them() {
    let db = TestDb::sqlite();
    let mut c = TestCoordinator::start(&db).await;
    let id = c.start_demo(json!([{"step": "sleep", "ms": 60_000}])).await;
    let mut stream = c
        .sagas()
        .await
        .watch_saga(pb::WatchSagaRequest {
            saga_id: id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.is_some(), "the watch is open");
    // Claimed first, so the stop has a saga to hand back (on a loaded machine the claim can
    // come after the first event).
    c.wait_step(&id, 0, StepStatus::Running, Duration::from_secs(20))
        .await;
    c.restart().await; // panics if the stop waits for the stream
    let saga = c
        .sagas()
        .await
        .cancel_saga(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: "end of test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saga.saga_id, id);
    let kinds: Vec<String> = c.history(&id).await.into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"saga_released".to_owned()),
        "the stop handed the saga back: {kinds:?}"
    );
    assert!(kinds.contains(&"cancel_requested".to_owned()));
    assert_eq!(kinds.last().map(String::as_str), Some("watch_end"));
}

/// A row holding a status no build writes is corrupt: the API answers `INTERNAL` (never a
/// made-up status), and the engine leaves the saga alone.
#[tokio::test]
async fn a_saga_row_with_an_unknown_status_is_answered_internal() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let id = c.start_demo(json!([{"step": "noop"}])).await;
        c.wait_saga(&id, Duration::from_secs(20)).await;
        let pool = db.raw_pool().await;
        sqlx::query("UPDATE saga_runs SET status = 'done' WHERE id = $1")
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        let err = c
            .sagas()
            .await
            .get_saga(pb::GetSagaRequest {
                saga_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert!(
            !err.message().contains("done"),
            "no detail leaks: {}",
            err.message()
        );
    }
}
