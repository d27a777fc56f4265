//! An agent flooding progress reports costs the store a few writes per second per task, and
//! the saga's history a few events per second per step, while other callers are answered;
//! the last report before the result is still written.

use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg;
use berth_tests::fake_agent::warm_restore_by_hand;
use berth_tests::{TestCoordinator, TestDb, eventually};

#[tokio::test]
async fn a_flood_of_progress_is_written_a_few_times_per_second() {
    let _heavy = berth_tests::heavy().await;
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let (agent, saga_id, task) = warm_restore_by_hand(&c, "ci-1").await;
    let id = task.id.clone().unwrap();

    let start = Instant::now();
    let mut sent = 0u64;
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        for _ in 0..200 {
            let report = pb::TaskProgress {
                id: Some(id.clone()),
                progress: Some(pb::Progress {
                    bytes_done: sent,
                    bytes_total: 1 << 30,
                    phase: "flooding".into(),
                    ..Default::default()
                }),
            };
            assert!(agent.send(Msg::Progress(report)).await, "session closed");
            sent += 1;
        }
        let asked = Instant::now();
        c.get_saga(&saga_id).await;
        slowest = slowest.max(asked.elapsed());
    }
    assert!(
        agent
            .send(Msg::Result(pb::TaskResult {
                id: Some(id.clone()),
                ok: true,
                output_json: "{}".into(),
                ..Default::default()
            }))
            .await
    );
    let step = i64::from(id.step_index);
    let row = eventually(
        Duration::from_secs(20),
        "the result is recorded",
        || async {
            let row = c.store().agent_task(&saga_id, step).await.unwrap()?;
            row.ok.is_some().then_some(row)
        },
    )
    .await;
    let took = start.elapsed().as_secs_f64();
    let history = c.history(&saga_id).await;
    let relayed = history.iter().filter(|e| e.progress.is_some()).count();

    assert!(sent >= 3_000, "a flood: {sent} reports");
    // At most one write per 200 ms, one event per 250 ms, over the whole time it took.
    let writes = row.progress_seq as f64;
    assert!(
        writes <= took / 0.2 + 2.0,
        "{writes} progress writes for {sent} reports in {took:.1} s"
    );
    // The last report before the result is never the one held back.
    let last: serde_json::Value =
        serde_json::from_str(row.progress.as_deref().expect("progress recorded")).unwrap();
    assert_eq!(last["bytes_done"], sent - 1, "{last}");
    assert!(
        (relayed as f64) <= took / 0.25 + 2.0,
        "{relayed} progress events in the history in {took:.1} s"
    );
    assert!(relayed >= 1, "progress reached the history");
    assert!(slowest < Duration::from_secs(2), "GetSaga took {slowest:?}");
}
