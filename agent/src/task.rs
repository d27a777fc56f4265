//! Durable tasks the coordinator assigns for saga steps, keyed by `(saga id, step index)`;
//! each assignment names the step attempt it is for, `(epoch, attempt)`, ordered.
//!
//! - A new step runs once. Assigned again while running (any attempt), the running task is
//!   attached to, not started twice, and its progress is reported at once; its result goes
//!   out under the newest attempt seen.
//! - A stored success answers every later assignment: the work is done.
//! - A stored failure answers its own attempt; a newer attempt (the engine's retry, an
//!   operator's `retry`, a new owner) runs the step again. An older attempt is refused as
//!   stale. Results are kept in `state_dir/tasks/`, so a restarted agent still answers (a task
//!   cut by the restart answers a retryable failure to its attempt).
//! - `CancelTask` (only an operator's cancel sends it) cancels a running task; a cancel for a
//!   step this agent never started records it as cancelled, so a late assignment of that
//!   attempt does not start it. Progress goes up at most every 250 ms.
//! - Each record counts the runs it started and the ones that succeeded (`runs`,
//!   `succeeded`), so a test can prove a step never ran twice.
//!
//! Tasks outlive sessions: results go to whichever session is attached when they finish.

pub(crate) mod kinds;
mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg as Out;
use berth_shared::time::unix_ms;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::warm::Progress;
use kinds::{Executor, Failure};
use store::{Outcome, Record, Status, Store};

/// Least time between two progress messages of one task.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Tasks running at once; more wait (attached to, and cancellable) for a slot.
const MAX_RUNNING: usize = 4;

type StepKey = (String, u32);

/// A step attempt, ordered: a later claim (epoch) or a later try under one claim (attempt).
type Attempt = (u64, u64);

fn attempt_of(id: &pb::TaskId) -> Attempt {
    (id.epoch, id.attempt)
}

enum State {
    Running {
        cancel: CancellationToken,
        report: Arc<Notify>,
    },
    Done {
        outcome: Outcome,
    },
}

struct Step {
    /// The newest attempt seen for this step.
    at: Attempt,
    kind: String,
    state: State,
    /// Runs started, and runs that succeeded, over the agent's life (kept in the record).
    runs: u32,
    succeeded: u32,
}

struct Inner {
    steps: Mutex<HashMap<StepKey, Step>>,
    store: Store,
    executor: Arc<dyn Executor>,
    /// The attached session's outbound queue, with a number so a late detach of an old
    /// session cannot remove a newer one.
    outbound: Mutex<(u64, Option<mpsc::Sender<pb::AgentMessage>>)>,
    slots: Arc<Semaphore>,
    /// Held while a record is written.
    writing: Mutex<()>,
    /// Set when the agent stops: tasks cancelled then fail retryably.
    stopping: std::sync::atomic::AtomicBool,
}

/// The agent's task registry; cheap to clone.
#[derive(Clone)]
pub(crate) struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

/// Detaches its session from the runner when dropped.
pub(crate) struct Attached {
    runner: Runner,
    number: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut out = self.runner.inner.outbound.lock().expect("outbound lock");
        if out.0 == self.number {
            out.1 = None;
        }
    }
}

enum Decision {
    Reply(pb::TaskResult),
    Start(Arc<Progress>, CancellationToken, Arc<Notify>),
    Attached,
}

impl Runner {
    /// A runner keeping its records in `state_dir/tasks/`.
    pub fn open(state_dir: &Path, executor: Arc<dyn Executor>) -> Self {
        let (store, records) = Store::open(state_dir.join("tasks"));
        let steps = records
            .into_iter()
            .filter_map(|r| {
                let outcome = r.outcome?;
                Some((
                    (r.saga_id, r.step_index),
                    Step {
                        at: (r.epoch, r.attempt),
                        kind: r.kind,
                        state: State::Done { outcome },
                        runs: r.runs,
                        succeeded: r.succeeded,
                    },
                ))
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                steps: Mutex::new(steps),
                store,
                executor,
                outbound: Mutex::new((0, None)),
                slots: Arc::new(Semaphore::new(MAX_RUNNING)),
                writing: Mutex::new(()),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sends results and progress to `tx` until the returned guard is dropped.
    pub fn attach(&self, tx: mpsc::Sender<pb::AgentMessage>) -> Attached {
        let mut out = self.inner.outbound.lock().expect("outbound lock");
        out.0 += 1;
        out.1 = Some(tx);
        Attached {
            runner: self.clone(),
            number: out.0,
        }
    }

    fn outbound(&self) -> Option<mpsc::Sender<pb::AgentMessage>> {
        self.inner.outbound.lock().expect("outbound lock").1.clone()
    }

    /// Handles an assignment: starts, attaches, answers from the record, or refuses.
    pub fn assign(&self, a: pb::TaskAssignment) {
        let Some(id) = a.id.clone() else {
            warn!(kind = %a.kind, "ignoring a task assignment without an id");
            return;
        };
        let key = (id.saga_id.clone(), id.step_index);
        let at = attempt_of(&id);
        let decision = {
            let mut steps = self.inner.steps.lock().expect("steps lock");
            let existing = steps.get_mut(&key);
            match existing {
                Some(step) if matches!(step.state, State::Running { .. }) => {
                    if at > step.at {
                        step.at = at;
                        self.persist(key.clone());
                    }
                    if let State::Running { report, .. } = &step.state {
                        report.notify_one();
                    }
                    Decision::Attached
                }
                Some(step) => {
                    let State::Done { outcome } = &step.state else {
                        unreachable!("running matched above")
                    };
                    if outcome.ok || at == step.at {
                        let outcome = outcome.clone();
                        if at > step.at {
                            step.at = at;
                            self.persist(key.clone());
                        }
                        Decision::Reply(result(&id, &outcome))
                    } else if at < step.at {
                        Decision::Reply(result(
                            &id,
                            &Outcome::failed(format!(
                                "stale attempt (epoch {}, attempt {}): this agent has seen \
                                 (epoch {}, attempt {}) for saga {} step {}",
                                at.0, at.1, step.at.0, step.at.1, id.saga_id, id.step_index
                            )),
                        ))
                    } else {
                        // A newer attempt of a failed step: run it again.
                        self.begin(step, at, &a.kind)
                    }
                }
                None if !self.inner.executor.supports(&a.kind) => Decision::Reply(result(
                    &id,
                    &Outcome::failed(format!(
                        "task kind {:?} is not supported by this agent",
                        a.kind
                    )),
                )),
                None => {
                    let mut step = Step {
                        at,
                        kind: a.kind.clone(),
                        state: State::Done {
                            outcome: Outcome::failed(String::new()),
                        },
                        runs: 0,
                        succeeded: 0,
                    };
                    let decision = self.begin(&mut step, at, &a.kind);
                    steps.insert(key.clone(), step);
                    decision
                }
            }
        };
        match decision {
            Decision::Reply(r) => {
                debug!(saga_id = %id.saga_id, step = id.step_index, epoch = id.epoch, attempt = id.attempt, ok = r.ok, "answering a task from its record");
                self.send_result(r);
            }
            Decision::Attached => {
                info!(saga_id = %id.saga_id, step = id.step_index, epoch = id.epoch, attempt = id.attempt, "task assigned again while running; attached to it");
            }
            Decision::Start(progress, cancel, report) => {
                info!(saga_id = %id.saga_id, step = id.step_index, epoch = id.epoch, attempt = id.attempt, kind = %a.kind, "starting task");
                let runner = self.clone();
                tokio::spawn(async move {
                    runner.run(key, a, progress, cancel, report).await;
                });
            }
        }
    }

    /// Marks `step` running for attempt `at` and counts the run.
    fn begin(&self, step: &mut Step, at: Attempt, kind: &str) -> Decision {
        let progress = Arc::new(Progress::new());
        let cancel = CancellationToken::new();
        let report = Arc::new(Notify::new());
        step.at = at;
        kind.clone_into(&mut step.kind);
        step.runs += 1;
        step.state = State::Running {
            cancel: cancel.clone(),
            report: report.clone(),
        };
        Decision::Start(progress, cancel, report)
    }

    /// An operator's cancel: stops the running task of `id`'s step. A step this agent has not
    /// started is recorded as cancelled, so a late assignment of the same attempt does not
    /// start it; a finished one answers with its result.
    pub fn cancel(&self, id: pb::TaskId) {
        let key = (id.saga_id.clone(), id.step_index);
        let at = attempt_of(&id);
        let reply = {
            let mut steps = self.inner.steps.lock().expect("steps lock");
            match steps.get_mut(&key) {
                Some(Step {
                    state: State::Running { cancel, .. },
                    ..
                }) => {
                    info!(saga_id = %id.saga_id, step = id.step_index, "cancelling task");
                    cancel.cancel();
                    None
                }
                Some(Step {
                    state: State::Done { outcome },
                    at: seen,
                    ..
                }) => Some(result(
                    &pb::TaskId {
                        epoch: seen.0,
                        attempt: seen.1,
                        ..id.clone()
                    },
                    outcome,
                )),
                None => {
                    let outcome = Outcome::failed("cancelled by an operator before it started");
                    steps.insert(
                        key.clone(),
                        Step {
                            at,
                            kind: String::new(),
                            state: State::Done {
                                outcome: outcome.clone(),
                            },
                            runs: 0,
                            succeeded: 0,
                        },
                    );
                    self.persist(key);
                    Some(result(&id, &outcome))
                }
            }
        };
        if let Some(r) = reply {
            self.send_result(r);
        }
    }

    /// Stops every running task because the agent stops; each fails retryably, so the
    /// coordinator sends it again (to this agent once it is back).
    pub fn shutdown(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let steps = self.inner.steps.lock().expect("steps lock");
        for step in steps.values() {
            if let State::Running { cancel, .. } = &step.state {
                cancel.cancel();
            }
        }
    }

    async fn run(
        self,
        key: StepKey,
        a: pb::TaskAssignment,
        progress: Arc<Progress>,
        cancel: CancellationToken,
        report: Arc<Notify>,
    ) {
        if !self.save(key.clone()).await {
            warn!(saga_id = %key.0, step = key.1, "cannot record a running task; a restart will not know of it");
        }
        let reporter = tokio::spawn(self.clone().report(key.clone(), progress.clone(), report));
        let work = async {
            let slots = self.inner.slots.clone();
            let _slot = tokio::select! {
                slot = slots.acquire_owned() => slot.expect("never closed"),
                () = cancel.cancelled() => return Err(Failure::permanent("cancelled")),
            };
            self.inner
                .executor
                .run(
                    a.kind.clone(),
                    a.inputs_json.clone(),
                    progress.clone(),
                    cancel.clone(),
                )
                .await
        };
        let ran = work.await;
        reporter.abort();
        self.send_progress(&key, &progress);
        let mut outcome = match ran {
            Ok(output_json) => Outcome {
                ok: true,
                output_json,
                error: String::new(),
                retryable: false,
            },
            Err(f) => Outcome {
                ok: false,
                output_json: String::new(),
                error: f.error,
                retryable: f.retryable,
            },
        };
        if !outcome.ok && cancel.is_cancelled() {
            if self
                .inner
                .stopping
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                outcome.error = store::INTERRUPTED.to_owned();
                outcome.retryable = true;
            } else {
                outcome.error = format!("cancelled by an operator ({})", outcome.error);
                outcome.retryable = false;
            }
        }
        let id = {
            let mut steps = self.inner.steps.lock().expect("steps lock");
            let Some(step) = steps.get_mut(&key) else {
                return;
            };
            step.state = State::Done {
                outcome: outcome.clone(),
            };
            if outcome.ok {
                step.succeeded += 1;
            }
            pb::TaskId {
                saga_id: key.0.clone(),
                step_index: key.1,
                epoch: step.at.0,
                attempt: step.at.1,
            }
        };
        if outcome.ok {
            info!(saga_id = %key.0, step = key.1, "task done");
        } else {
            warn!(saga_id = %key.0, step = key.1, error = %outcome.error, retryable = outcome.retryable, "task failed");
        }
        if !self.save(key.clone()).await {
            warn!(saga_id = %key.0, step = key.1, "cannot record a task result; a restart will not know it");
        }
        // With no session now, the coordinator sends the task again on the next one, and
        // the record answers it.
        self.deliver(result(&id, &outcome)).await;
    }

    /// Sends progress every `PROGRESS_EVERY` when it changed, and at once when asked.
    async fn report(self, key: StepKey, progress: Arc<Progress>, now: Arc<Notify>) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                () = now.notified() => true,
            };
            let snap = progress.snapshot();
            if forced || last.as_ref() != Some(&snap) {
                self.send_progress(&key, &progress);
                last = Some(snap);
            }
        }
    }

    fn send_progress(&self, key: &StepKey, progress: &Progress) {
        let (epoch, attempt) = {
            let steps = self.inner.steps.lock().expect("steps lock");
            steps.get(key).map_or((0, 0), |s| s.at)
        };
        let msg = Out::Progress(pb::TaskProgress {
            id: Some(pb::TaskId {
                saga_id: key.0.clone(),
                step_index: key.1,
                epoch,
                attempt,
            }),
            progress: Some(progress.snapshot().into()),
        });
        if let Some(tx) = self.outbound() {
            // Progress is best effort: a full queue drops it, the next one follows soon.
            let _ = tx.try_send(pb::AgentMessage { msg: Some(msg) });
        }
    }

    /// Sends a result to the attached session in the background (an answer from `assign`).
    fn send_result(&self, r: pb::TaskResult) {
        if let Some(tx) = self.outbound() {
            let msg = pb::AgentMessage {
                msg: Some(Out::Result(r)),
            };
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Sends a result, waiting for room, if a session is attached.
    async fn deliver(&self, r: pb::TaskResult) {
        if let Some(tx) = self.outbound() {
            let _ = tx
                .send(pb::AgentMessage {
                    msg: Some(Out::Result(r)),
                })
                .await;
        }
    }

    /// Records the step's current state in the background.
    fn persist(&self, key: StepKey) {
        let runner = self.clone();
        tokio::task::spawn_blocking(move || runner.save_now(&key));
    }

    /// Records the step's current state; false when that failed.
    async fn save(&self, key: StepKey) -> bool {
        let runner = self.clone();
        matches!(
            tokio::task::spawn_blocking(move || runner.save_now(&key)).await,
            Ok(true)
        )
    }

    /// Writes the step's state as it is when the write happens: writes are serialized, so
    /// the last one always holds the newest state.
    fn save_now(&self, key: &StepKey) -> bool {
        let _writing = self.inner.writing.lock().expect("writing lock");
        let record = {
            let steps = self.inner.steps.lock().expect("steps lock");
            steps.get(key).map(|s| record_of(key, s))
        };
        match record.map(|r| self.inner.store.save(&r)) {
            Some(Err(e)) => {
                warn!(saga_id = %key.0, step = key.1, error = %e, "cannot record a task");
                false
            }
            _ => true,
        }
    }
}

fn result(id: &pb::TaskId, o: &Outcome) -> pb::TaskResult {
    pb::TaskResult {
        id: Some(id.clone()),
        ok: o.ok,
        output_json: o.output_json.clone(),
        error: o.error.clone(),
        retryable: o.retryable,
    }
}

fn record_of(key: &StepKey, step: &Step) -> Record {
    let (status, outcome) = match &step.state {
        State::Running { .. } => (Status::Running, None),
        State::Done { outcome } => (Status::Done, Some(outcome.clone())),
    };
    Record {
        saga_id: key.0.clone(),
        step_index: key.1,
        epoch: step.at.0,
        attempt: step.at.1,
        kind: step.kind.clone(),
        status,
        outcome,
        runs: step.runs,
        succeeded: step.succeeded,
        updated_ms: unix_ms(SystemTime::now()),
    }
}

#[cfg(test)]
mod tests;
