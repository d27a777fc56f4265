//! Agent tasks on the stream side: the replica that holds a host's stream delivers that
//! host's open tasks to its agent, calls off closed ones, relays queries other replicas ask
//! of the host, and writes back what the agent reports (progress and results) for the saga's
//! owner, wherever that owner runs.
//!
//! Delivery is driven by the store: on every signal for the host, and on a slow poll, the
//! session reads the host's open and closed tasks and sends what this session has not sent
//! yet at the task's current `(epoch, attempt)`. A new session sends everything again; the
//! agent answers repeats from what it has, so nothing runs twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_shared::time::unix_ms;
use prost::Message;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Outbound;
use crate::store::{AgentTaskRow, Signal, Store, StoreError, TaskResultWrite};

/// Whether the session's agent token is still live (not revoked, not expired); a store
/// error counts as live (the next check decides).
pub(crate) async fn token_live(store: &Store, host_id: &str, token_id: &str) -> bool {
    match store
        .token_is_live(token_id, unix_ms(SystemTime::now()))
        .await
    {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(
                host_id,
                token_id,
                "agent token revoked or expired, closing its session"
            );
            false
        }
        Err(e) => {
            tracing::warn!(host_id, error = %e, "cannot check the agent token");
            true
        }
    }
}

/// How often a session looks for tasks when no signal arrives (the safety net).
pub const DELIVERY_POLL: Duration = Duration::from_secs(2);
/// This often a session sends every open task again, whether or not it changed: the agent
/// answers repeats from what it has, so a message or a result lost anywhere on the way is
/// asked for again.
const RESEND_EVERY: Duration = Duration::from_secs(30);

/// Longest saga id an agent may name (uuids are 36 characters).
const MAX_SAGA_ID: usize = 64;
/// Longest output or error an agent may report, in bytes.
const MAX_RESULT_BYTES: usize = 1 << 20;

/// What this session last told the agent about a step.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Told {
    epoch: i64,
    attempt: i64,
    cancel: bool,
}

fn task_id(row: &AgentTaskRow) -> pb::TaskId {
    pb::TaskId {
        saga_id: row.saga_id.clone(),
        step_index: row.step_idx as u32,
        epoch: row.epoch as u64,
        attempt: row.attempt as u64,
    }
}

fn message(row: &AgentTaskRow) -> pb::CoordinatorMessage {
    let msg = if row.cancel_requested {
        pb::coordinator_message::Msg::Cancel(pb::CancelTask {
            id: Some(task_id(row)),
        })
    } else {
        pb::coordinator_message::Msg::Task(pb::TaskAssignment {
            id: Some(task_id(row)),
            kind: row.kind.clone(),
            inputs_json: row.inputs.clone(),
        })
    };
    pb::CoordinatorMessage { msg: Some(msg) }
}

/// `row` with the secret inputs its task takes added back (an archive restore's one-off
/// identity): they stay sealed in `saga_secrets`, never in `agent_tasks`, and exist only in
/// the message sent to the agent.
async fn with_secrets(store: &Store, mut row: AgentTaskRow) -> Result<AgentTaskRow, StoreError> {
    if row.kind != "archive_restore" || row.cancel_requested {
        return Ok(row);
    }
    let field = berth_shared::task::IDENTITY_FIELD;
    let Some(identity) = store.saga_secret(&row.saga_id, field).await? else {
        return Ok(row);
    };
    let mut inputs: serde_json::Value = serde_json::from_str(&row.inputs).unwrap_or_default();
    if let Some(o) = inputs.as_object_mut() {
        o.insert(field.to_owned(), serde_json::Value::String(identity));
        row.inputs = inputs.to_string();
    }
    Ok(row)
}

/// Delivers `host_id`'s tasks down `tx` until `stop` fires or the stream closes.
pub async fn deliver(
    store: Store,
    host_id: String,
    token_id: String,
    tx: Outbound,
    stop: CancellationToken,
) {
    let mut signals = store.subscribe();
    let mut told: HashMap<(String, i64), Told> = HashMap::new();
    let mut asked: HashSet<String> = HashSet::new();
    let mut resent_at = tokio::time::Instant::now();
    loop {
        if resent_at.elapsed() >= RESEND_EVERY {
            told.clear();
            resent_at = tokio::time::Instant::now();
        }
        match store.agent_tasks_for_host(&host_id).await {
            Ok(rows) => {
                let live: HashSet<(String, i64)> = rows
                    .iter()
                    .map(|r| (r.saga_id.clone(), r.step_idx))
                    .collect();
                told.retain(|k, _| live.contains(k));
                let news = rows.iter().any(|r| {
                    told.get(&(r.saga_id.clone(), r.step_idx))
                        != Some(&Told {
                            epoch: r.epoch,
                            attempt: r.attempt,
                            cancel: r.cancel_requested,
                        })
                });
                // A task goes only to a session whose token is still live: checked before
                // each batch, so a revoked or expired agent token gets nothing more.
                if news && !token_live(&store, &host_id, &token_id).await {
                    stop.cancel();
                    return;
                }
                for row in rows {
                    let key = (row.saga_id.clone(), row.step_idx);
                    let now = Told {
                        epoch: row.epoch,
                        attempt: row.attempt,
                        cancel: row.cancel_requested,
                    };
                    if told.get(&key) == Some(&now) {
                        continue;
                    }
                    tracing::info!(
                        host_id,
                        saga_id = row.saga_id,
                        step = row.step_idx,
                        epoch = row.epoch,
                        attempt = row.attempt,
                        cancel = row.cancel_requested,
                        "sending task to agent"
                    );
                    let sent = match with_secrets(&store, row.clone()).await {
                        Ok(row) => message(&row),
                        Err(e) => {
                            tracing::warn!(host_id, saga_id = row.saga_id, error = %e, "cannot read the task's sealed inputs; sending it again later");
                            continue;
                        }
                    };
                    if tx.send(Ok(sent)).await.is_err() {
                        return;
                    }
                    told.insert(key, now);
                }
            }
            Err(e) => tracing::warn!(host_id, error = %e, "cannot read the host's agent tasks"),
        }
        if !relay_queries(&store, &host_id, &tx, &mut asked).await {
            return;
        }
        // Wait for a signal about this host, the poll, or the end of the session.
        let poll = tokio::time::sleep(DELIVERY_POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                s = signals.recv() => match s {
                    Ok(Signal::Host(h)) if h == host_id => break,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
                () = &mut poll => break,
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Sends the agent the queries other replicas asked of this host; false when the stream is
/// gone.
async fn relay_queries(
    store: &Store,
    host_id: &str,
    tx: &Outbound,
    asked: &mut HashSet<String>,
) -> bool {
    let now = unix_ms(SystemTime::now());
    let pending = match store.pending_agent_queries(host_id, now).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(host_id, error = %e, "cannot read the host's queries");
            return true;
        }
    };
    asked.retain(|id| pending.iter().any(|(p, _)| p == id));
    for (id, request) in pending {
        if asked.contains(&id) {
            continue;
        }
        let query = hex::decode(&request)
            .ok()
            .and_then(|b| pb::Query::decode(b.as_slice()).ok());
        let Some(query) = query else {
            tracing::warn!(
                host_id,
                query_id = id,
                "an unreadable query in the store; skipped"
            );
            asked.insert(id);
            continue;
        };
        let msg = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Query(query)),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
        asked.insert(id);
    }
    true
}

fn checked_id(host_id: &str, id: Option<&pb::TaskId>) -> Option<(String, i64, i64, i64)> {
    let Some(id) = id else {
        tracing::warn!(host_id, "agent report without a task id; ignored");
        return None;
    };
    if id.saga_id.is_empty() || id.saga_id.len() > MAX_SAGA_ID {
        tracing::warn!(host_id, "agent report with an invalid saga id; ignored");
        return None;
    }
    let as_i64 = |v: u64| i64::try_from(v).ok();
    Some((
        id.saga_id.clone(),
        i64::from(id.step_index),
        as_i64(id.epoch)?,
        as_i64(id.attempt)?,
    ))
}

/// Least time between two progress writes of one task: an agent reporting faster (or a
/// hostile one flooding) costs the store at most a few writes per second per task.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Per session: when each task's progress was last written, and the newest report held back
/// since. A report that comes sooner than [`PROGRESS_EVERY`] after the last write is held;
/// the next one replaces it, and the result or the next heartbeat writes it, so the last
/// report before a result (its totals) is never lost.
#[derive(Debug, Default)]
pub(crate) struct ProgressGate {
    last: HashMap<(String, u32), tokio::time::Instant>,
    held: HashMap<(String, u32), pb::TaskProgress>,
}

impl ProgressGate {
    /// The report to write now, if any (`p` is held otherwise).
    pub fn admit(&mut self, p: pb::TaskProgress) -> Option<pb::TaskProgress> {
        let id = p.id.as_ref()?;
        let key = (id.saga_id.clone(), id.step_index);
        let now = tokio::time::Instant::now();
        // Tasks that stopped reporting are forgotten (an agent runs a handful at once).
        if self.last.len() > 256 {
            self.last.retain(|_, at| now - *at < PROGRESS_EVERY);
        }
        if self
            .last
            .get(&key)
            .is_some_and(|at| now - *at < PROGRESS_EVERY)
        {
            if self.held.len() < 1024 || self.held.contains_key(&key) {
                self.held.insert(key, p);
            }
            return None;
        }
        self.held.remove(&key);
        self.last.insert(key, now);
        Some(p)
    }

    /// The report held back for the task `r` answers, to write before the result.
    pub fn before_result(&mut self, r: &pb::TaskResult) -> Option<pb::TaskProgress> {
        let id = r.id.as_ref()?;
        let key = (id.saga_id.clone(), id.step_index);
        self.last.remove(&key);
        self.held.remove(&key)
    }

    /// Every report held back (at a heartbeat).
    pub fn drain(&mut self) -> Vec<pb::TaskProgress> {
        let now = tokio::time::Instant::now();
        let held: Vec<_> = self.held.drain().map(|(_, p)| p).collect();
        for p in &held {
            if let Some(id) = &p.id {
                self.last.insert((id.saga_id.clone(), id.step_index), now);
            }
        }
        held
    }
}

/// Writes an agent's progress report for the saga's owner to relay.
pub async fn record_progress(store: &Store, host_id: &str, p: pb::TaskProgress) {
    let Some((saga_id, step_idx, _, _)) = checked_id(host_id, p.id.as_ref()) else {
        return;
    };
    let Some(p) = p.progress else { return };
    let mut phase = p.phase;
    phase.truncate(phase.floor_char_boundary(256));
    let detail = json!({
        "bytes_done": p.bytes_done,
        "bytes_total": p.bytes_total,
        "entries_done": p.entries_done,
        "entries_total": p.entries_total,
        "bytes_written": p.bytes_written,
        "phase": phase,
    })
    .to_string();
    let now = unix_ms(SystemTime::now());
    if let Err(e) = store
        .agent_task_progress(host_id, &saga_id, step_idx, &detail, now)
        .await
    {
        tracing::debug!(host_id, saga_id, error = %e, "cannot record task progress");
    }
}

/// Writes an agent's result for the saga's owner.
pub async fn record_result(store: &Store, host_id: &str, r: pb::TaskResult) {
    let Some((saga_id, step_idx, epoch, attempt)) = checked_id(host_id, r.id.as_ref()) else {
        return;
    };
    let too_big = r.output_json.len() > MAX_RESULT_BYTES || r.error.len() > MAX_RESULT_BYTES;
    let (ok, output, error) = if too_big {
        (
            false,
            String::new(),
            format!("the agent's result is larger than {MAX_RESULT_BYTES} bytes; refused"),
        )
    } else {
        (r.ok, r.output_json, r.error)
    };
    let write = TaskResultWrite {
        host_id,
        saga_id: &saga_id,
        step_idx,
        epoch,
        attempt,
        ok,
        output: &output,
        error: &error,
        retryable: r.retryable && !too_big,
        now_ms: unix_ms(SystemTime::now()),
    };
    // A store that is briefly unavailable must not lose a result: retry for a while.
    for wait_ms in [0, 200, 500, 1000, 2000, 4000] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match store.agent_task_result(&write).await {
            Ok(recorded) => {
                let what = if recorded {
                    "task result recorded"
                } else {
                    "task result for no open attempt (stale or already recorded)"
                };
                tracing::info!(
                    host_id,
                    saga_id,
                    step = step_idx,
                    epoch,
                    attempt,
                    ok,
                    "{what}"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(host_id, saga_id, error = %e, "cannot record a task result; retrying")
            }
        }
    }
    // Still open: the periodic resend asks the agent again, and it answers from its record.
    tracing::warn!(
        host_id,
        saga_id,
        step = step_idx,
        "gave up recording a task result for now"
    );
}
