//! Warm snapshots and restores as durable tasks, through the real agent and the scripted
//! fake coordinator: progress flows, repeats are answered without redoing the work, stale
//! epochs are refused, cancel works, a restarted agent fails a cut task retryably, and the
//! list query answers.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_agent::{Agent, Config};
use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg as FromAgent;
use berth_proto::v1::coordinator_message::Msg as ToAgent;
use tokio_util::sync::CancellationToken;

use crate::env::{Labels, TestStack, require_docker_as_root};
use crate::fake::{FakeCoordinator, Session};
use crate::tree::{assert_same, fill, mutate, reference};

const TOKEN: &str = "warm-task-token-0123";

fn config(dir: &Path, url: &str) -> Config {
    let token_file = dir.join("token");
    fs::write(&token_file, TOKEN).unwrap();
    let mut config = Config::new(url, token_file);
    config.state_dir = dir.join("state");
    config.warm_root = dir.join("warm");
    config.reconnect_max_backoff_ms = 200;
    // Restores here extract (their method is asserted); ready spares have their own tests.
    config.warm.spares = false;
    config
}

async fn connect(coordinator: &mut FakeCoordinator) -> Session {
    let mut session = coordinator.next_session().await;
    assert!(
        matches!(session.recv().await, FromAgent::Hello(h) if h.capabilities.contains(&"warm".to_owned()))
    );
    session
        .send(ToAgent::Welcome(pb::Welcome {
            coordinator_id: "fake".into(),
            heartbeat_interval_secs: 30,
        }))
        .await;
    session
}

fn task_id(step: u32, epoch: u64) -> pb::TaskId {
    pb::TaskId {
        saga_id: "saga-warm".into(),
        step_index: step,
        epoch,
        attempt: 1,
    }
}

async fn assign(session: &Session, id: pb::TaskId, kind: &str, inputs: serde_json::Value) {
    session
        .send(ToAgent::Task(pb::TaskAssignment {
            id: Some(id),
            kind: kind.into(),
            inputs_json: inputs.to_string(),
        }))
        .await;
}

/// Messages until the next result: the progress seen on the way, and the result.
async fn until_result(session: &mut Session) -> (Vec<pb::Progress>, pb::TaskResult) {
    let mut progress = Vec::new();
    loop {
        match session.recv_skipping_heartbeats().await {
            FromAgent::Progress(p) => progress.push(p.progress.unwrap()),
            FromAgent::Result(r) => return (progress, r),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn first_progress(session: &mut Session) -> pb::TaskProgress {
    match session.recv_skipping_heartbeats().await {
        FromAgent::Progress(p) => p,
        other => panic!("expected progress, got {other:?}"),
    }
}

#[tokio::test]
async fn warm_tasks_report_progress_and_answer_repeats_from_their_record() {
    require_docker_as_root().await;
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = FakeCoordinator::start(TOKEN).await;
    let shutdown = CancellationToken::new();
    let agent = Agent::start(config(dir.path(), &coordinator.url), shutdown.clone()).unwrap();
    let mut session = connect(&mut coordinator).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("db", Labels::Swarm);
    fill(&mp, 8);
    let inputs = serde_json::json!({"app": "kc", "domain": "", "stack": stack.name, "commit": "abc", "version": "2.0", "wait_undeployed_secs": 5});

    assign(&session, task_id(0, 1), "warm_snapshot", inputs.clone()).await;
    let (progress, result) = until_result(&mut session).await;
    assert!(result.ok, "{}", result.error);
    assert_eq!(result.id, Some(task_id(0, 1)));
    let out: serde_json::Value = serde_json::from_str(&result.output_json).unwrap();
    assert_eq!(out["app"], "kc");
    assert_eq!(
        out["volumes"],
        serde_json::json!([format!("{}_db", stack.name)])
    );
    assert!(
        out["bytes"].as_u64().unwrap() > 300_000 && out["entries"].as_u64().unwrap() > 20,
        "{out}"
    );
    let last = progress.last().expect("progress was reported");
    assert!(
        last.bytes_total > 0 && last.bytes_done == last.bytes_total,
        "{last:?}"
    );
    assert_eq!(last.entries_done, last.entries_total);

    // The same task again: answered from the record, nothing tarred again.
    let meta = dir.path().join("warm/kc/snapshot/meta.json");
    let before = fs::metadata(&meta).unwrap();
    assign(&session, task_id(0, 1), "warm_snapshot", inputs.clone()).await;
    let (_, again) = until_result(&mut session).await;
    assert_eq!((again.ok, &again.output_json), (true, &result.output_json));
    let after = fs::metadata(&meta).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (before.ino(), before.mtime_nsec())
    );
    // An older attempt of the same step: the work is done, so it gets the stored success.
    assign(&session, task_id(0, 0), "warm_snapshot", inputs.clone()).await;
    let (_, older) = until_result(&mut session).await;
    assert_eq!((older.ok, &older.output_json), (true, &result.output_json));
    let after = fs::metadata(&meta).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (before.ino(), before.mtime_nsec())
    );

    // Restore as the next step.
    mutate(&mp);
    let restore = serde_json::json!({"app": "kc", "domain": "", "stack": stack.name});
    assign(&session, task_id(1, 1), "warm_restore", restore).await;
    let (_, restored) = until_result(&mut session).await;
    assert!(restored.ok, "{}", restored.error);
    let out: serde_json::Value = serde_json::from_str(&restored.output_json).unwrap();
    let volumes = out["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{out}");
    assert_eq!(volumes[0]["name"], format!("{}_db", stack.name), "{out}");
    assert_eq!(volumes[0]["method"], "swap", "{out}");
    assert!(volumes[0]["swap_us"].as_u64().is_some(), "{out}");
    assert_same(&mp, reference(8).path(), true);

    // The list query.
    session
        .send(ToAgent::Query(pb::Query {
            query_id: "q-warm".into(),
            kind: Some(pb::query::Kind::ListWarmSnapshots(
                pb::ListWarmSnapshotsQuery { app: String::new() },
            )),
        }))
        .await;
    let reply = match session.recv_skipping_heartbeats().await {
        FromAgent::QueryReply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    };
    let Some(pb::query_reply::Reply::WarmSnapshots(list)) = reply.reply else {
        panic!("{reply:?}")
    };
    assert_eq!(list.snapshots.len(), 1);
    let s = &list.snapshots[0];
    assert_eq!(
        (s.app.as_str(), s.host_id.as_str(), s.complete),
        ("kc", agent.host_id().as_str(), true)
    );
    assert_eq!((s.commit.as_str(), s.version.as_str()), ("abc", "2.0"));
    assert!(s.size_bytes > 0 && s.taken_at_ms > 0);

    shutdown.cancel();
    agent.join().await.unwrap();
}

#[tokio::test]
async fn warm_tasks_cancel_and_a_restarted_agent_fails_a_cut_task_retryably() {
    require_docker_as_root().await;
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = FakeCoordinator::start(TOKEN).await;
    let mut stack = TestStack::new("");
    let mp = stack.volume("db", Labels::Swarm);
    fs::write(mp.join("f"), "x").unwrap();
    let running = stack.container("app", "db");
    // Waits for the container to go: running until cancelled.
    let inputs = serde_json::json!({"app": "busy", "domain": "", "stack": stack.name, "wait_undeployed_secs": 600});

    let shutdown = CancellationToken::new();
    let agent = Agent::start(config(dir.path(), &coordinator.url), shutdown.clone()).unwrap();
    let mut session = connect(&mut coordinator).await;
    assign(&session, task_id(0, 1), "warm_snapshot", inputs.clone()).await;
    let p = first_progress(&mut session).await;
    assert_eq!(p.id, Some(task_id(0, 1)));
    session
        .send(ToAgent::Cancel(pb::CancelTask {
            id: Some(task_id(0, 1)),
        }))
        .await;
    let (_, cancelled) = until_result(&mut session).await;
    assert!(
        !cancelled.ok && !cancelled.retryable && cancelled.error.contains("cancelled"),
        "{cancelled:?}"
    );

    // A task cut by the agent stopping fails retryably after the restart…
    assign(&session, task_id(1, 1), "warm_snapshot", inputs.clone()).await;
    first_progress(&mut session).await;
    shutdown.cancel();
    agent.join().await.unwrap();
    drop(session);
    let record = dir.path().join("state/tasks/saga-warm-1.json");
    for _ in 0..200 {
        if fs::read_to_string(&record).is_ok_and(|r| r.contains("\"done\"")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let shutdown = CancellationToken::new();
    let agent = Agent::start(config(dir.path(), &coordinator.url), shutdown.clone()).unwrap();
    let mut session = connect(&mut coordinator).await;
    assign(&session, task_id(1, 1), "warm_snapshot", inputs.clone()).await;
    let (_, cut) = until_result(&mut session).await;
    assert!(
        !cut.ok && cut.retryable && cut.error.contains("agent stopped"),
        "{cut:?}"
    );
    // …and runs when its next attempt comes, here once the app is undeployed.
    stack.remove_container(&running);
    let next = pb::TaskId {
        attempt: 2,
        ..task_id(1, 1)
    };
    assign(&session, next, "warm_snapshot", inputs).await;
    let (_, done) = until_result(&mut session).await;
    assert!(done.ok, "{}", done.error);
    shutdown.cancel();
    agent.join().await.unwrap();
}
