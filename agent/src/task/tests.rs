//! The runner against a scripted executor that counts its runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use kinds::TaskFuture;

/// Runs "script" tasks: counts them, reports some progress, then waits until released (or
/// cancelled) and answers `answer`.
struct Scripted {
    runs: AtomicUsize,
    release: Arc<Semaphore>,
    answer: Mutex<Result<String, Failure>>,
}

impl Scripted {
    fn new(answer: Result<String, Failure>) -> Arc<Self> {
        Arc::new(Self {
            runs: AtomicUsize::new(0),
            release: Arc::new(Semaphore::new(0)),
            answer: Mutex::new(answer),
        })
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Executor for Scripted {
    fn supports(&self, kind: &str) -> bool {
        kind == "script"
    }
    fn run(
        &self,
        _: String,
        inputs: String,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> TaskFuture {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let release = self.release.clone();
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move {
            progress.set_totals(1000, 10);
            progress.add_bytes(100);
            progress.add_entry();
            tokio::select! {
                p = release.acquire() => p.unwrap().forget(),
                () = cancel.cancelled() => return Err(Failure::permanent("stopped")),
            }
            answer.map(|a| format!("{a}:{inputs}"))
        })
    }
}

fn id(epoch: u64) -> pb::TaskId {
    at(epoch, 1)
}

fn at(epoch: u64, attempt: u64) -> pb::TaskId {
    pb::TaskId {
        saga_id: "saga-1".into(),
        step_index: 3,
        epoch,
        attempt,
    }
}

fn assign(runner: &Runner, epoch: u64, kind: &str) {
    assign_at(runner, at(epoch, 1), kind);
}

fn assign_at(runner: &Runner, id: pb::TaskId, kind: &str) {
    runner.assign(pb::TaskAssignment {
        id: Some(id),
        kind: kind.into(),
        inputs_json: "in".into(),
    });
}

fn record(dir: &std::path::Path) -> store::Record {
    serde_json::from_slice(&std::fs::read(dir.join("tasks/saga-1-3.json")).unwrap()).unwrap()
}

async fn next_result(rx: &mut mpsc::Receiver<pb::AgentMessage>) -> pb::TaskResult {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a result in time")
            .expect("open");
        if let Some(Out::Result(r)) = msg.msg {
            return r;
        }
    }
}

async fn next_progress(rx: &mut mpsc::Receiver<pb::AgentMessage>) -> pb::TaskProgress {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("progress in time")
            .expect("open");
        if let Some(Out::Progress(p)) = msg.msg {
            return p;
        }
    }
}

#[tokio::test]
async fn a_repeated_task_attaches_then_is_answered_from_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Ok("done".into()));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);

    assign(&runner, 1, "script");
    let p = next_progress(&mut rx).await;
    let progress = p.progress.unwrap();
    assert_eq!(
        (
            progress.bytes_total,
            progress.bytes_done,
            progress.entries_done
        ),
        (1000, 100, 1)
    );
    assign(&runner, 1, "script");
    assign(&runner, 2, "script");
    // Attaching re-reports at once, under the newest epoch.
    assert_eq!(next_progress(&mut rx).await.id.unwrap().epoch, 2);
    exec.release.add_permits(1);
    let r = next_result(&mut rx).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.output_json.as_str(), r.id.unwrap().epoch),
        ("done:in", 2)
    );
    assert_eq!(exec.runs(), 1);

    assign(&runner, 2, "script");
    let again = next_result(&mut rx).await;
    assert_eq!((again.ok, again.output_json.as_str()), (true, "done:in"));
    assert_eq!(exec.runs(), 1, "a finished task is not run again");

    // A restarted agent still knows the result.
    let exec2 = Scripted::new(Ok("other".into()));
    let restarted = Runner::open(dir.path(), exec2.clone());
    let (tx2, mut rx2) = mpsc::channel(64);
    let _attached2 = restarted.attach(tx2);
    assign(&restarted, 2, "script");
    assert_eq!(next_result(&mut rx2).await.output_json, "done:in");
    assert_eq!(exec2.runs(), 0);
}

#[tokio::test]
async fn a_success_answers_every_attempt_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Ok("done".into()));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    assign(&runner, 5, "script");
    assign(&runner, 4, "script");
    // Attached to the running task, not refused: the result goes out under epoch 5.
    exec.release.add_permits(1);
    let r = next_result(&mut rx).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.id.unwrap().epoch, 5);
    // A success answers any later or earlier attempt: the work is done.
    assign(&runner, 3, "script");
    assert!(next_result(&mut rx).await.ok);
    // The highest epoch survives a restart.
    let restarted = Runner::open(dir.path(), exec.clone());
    let (tx2, mut rx2) = mpsc::channel(64);
    let _attached2 = restarted.attach(tx2);
    assign(&restarted, 1, "script");
    assert!(next_result(&mut rx2).await.ok);
    assert_eq!(exec.runs(), 1);
    let r = record(dir.path());
    assert_eq!((r.runs, r.succeeded, r.epoch), (1, 1, 5));
}

#[tokio::test]
async fn a_failure_answers_its_attempt_a_newer_attempt_runs_again_an_older_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Err(Failure::permanent("stack is deployed")));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    assign_at(&runner, at(2, 1), "script");
    exec.release.add_permits(1);
    let r = next_result(&mut rx).await;
    assert!(!r.ok && r.error == "stack is deployed", "{r:?}");
    // The same attempt again (a new session): the stored failure, not a second run.
    assign_at(&runner, at(2, 1), "script");
    assert_eq!(next_result(&mut rx).await.error, "stack is deployed");
    assert_eq!(exec.runs(), 1);
    // An operator's retry (a higher epoch): the step runs afresh.
    *exec.answer.lock().unwrap() = Ok("restored".into());
    assign_at(&runner, at(3, 1), "script");
    exec.release.add_permits(1);
    let r = next_result(&mut rx).await;
    assert_eq!((r.ok, r.output_json.as_str()), (true, "restored:in"));
    assert_eq!(exec.runs(), 2);
    // An older attempt of a failed step is refused as stale; here the step succeeded, so it
    // is answered with the success.
    assign_at(&runner, at(2, 1), "script");
    assert!(next_result(&mut rx).await.ok);
    let rec = record(dir.path());
    assert_eq!((rec.runs, rec.succeeded), (2, 1));
}

#[tokio::test]
async fn an_older_attempt_of_a_failed_step_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Err(Failure::permanent("nope")));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    assign_at(&runner, at(4, 2), "script");
    exec.release.add_permits(1);
    assert_eq!(next_result(&mut rx).await.error, "nope");
    assign_at(&runner, at(4, 1), "script");
    let r = next_result(&mut rx).await;
    assert!(
        !r.ok && r.error.starts_with("stale attempt (epoch 4, attempt 1)"),
        "{r:?}"
    );
    assert_eq!(exec.runs(), 1);
}

#[tokio::test]
async fn a_cancel_before_the_assignment_keeps_the_attempt_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Ok("never".into()));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    runner.cancel(id(1));
    let r = next_result(&mut rx).await;
    assert!(!r.ok && r.error.contains("before it started"), "{r:?}");
    assign(&runner, 1, "script");
    assert!(
        next_result(&mut rx)
            .await
            .error
            .contains("before it started")
    );
    assert_eq!(exec.runs(), 0);
}

#[tokio::test]
async fn cancel_stops_a_running_task() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Ok("never".into()));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    assign(&runner, 1, "script");
    next_progress(&mut rx).await;
    runner.cancel(id(1));
    let r = next_result(&mut rx).await;
    assert!(!r.ok && !r.retryable);
    assert!(r.error.contains("cancelled"), "{}", r.error);
}

#[tokio::test]
async fn a_task_cut_by_a_restart_fails_retryably_then_its_next_attempt_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Ok("done".into()));
    {
        let runner = Runner::open(dir.path(), exec.clone());
        assign(&runner, 1, "script");
        // Wait until the running record is on disk, then "crash" (drop everything).
        let path = dir.path().join("tasks/saga-1-3.json");
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(std::fs::read_to_string(&path).unwrap().contains("running"));
    }
    let exec2 = Scripted::new(Ok("second".into()));
    let runner = Runner::open(dir.path(), exec2.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    assign(&runner, 1, "script");
    let r = next_result(&mut rx).await;
    assert!(!r.ok && r.retryable, "{r:?}");
    assert!(r.error.contains("agent stopped"), "{}", r.error);
    assert_eq!(exec2.runs(), 0);
    // The coordinator's next attempt runs it.
    assign_at(&runner, at(1, 2), "script");
    exec2.release.add_permits(1);
    let r = next_result(&mut rx).await;
    assert_eq!((r.ok, r.output_json.as_str()), (true, "second:in"));
    assert_eq!(exec2.runs(), 1);
}

#[tokio::test]
async fn unknown_kinds_are_refused_and_results_wait_for_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Scripted::new(Err(Failure {
        error: "flaky".into(),
        retryable: true,
    }));
    let runner = Runner::open(dir.path(), exec.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let attached = runner.attach(tx);
    runner.assign(pb::TaskAssignment {
        id: Some(id(1)),
        kind: "frobnicate".into(),
        inputs_json: String::new(),
    });
    let r = next_result(&mut rx).await;
    assert!(
        !r.ok && !r.retryable && r.error.contains("\"frobnicate\" is not supported"),
        "{r:?}"
    );

    // Finished with no session: the failure is kept to answer the same attempt.
    drop(attached);
    runner.assign(pb::TaskAssignment {
        id: Some(pb::TaskId {
            step_index: 4,
            ..id(1)
        }),
        kind: "script".into(),
        inputs_json: "x".into(),
    });
    exec.release.add_permits(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx, mut rx) = mpsc::channel(64);
    let _attached = runner.attach(tx);
    runner.assign(pb::TaskAssignment {
        id: Some(pb::TaskId {
            step_index: 4,
            ..id(1)
        }),
        kind: "script".into(),
        inputs_json: "x".into(),
    });
    let r = next_result(&mut rx).await;
    assert!(!r.ok && r.retryable && r.error == "flaky", "{r:?}");
    assert_eq!(exec.runs(), 1);
}
