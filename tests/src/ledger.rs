//! Checks of a saga ledger read straight from the database, used after crash and chaos tests:
//! final statuses, epochs that never go back, effects that match the steps, and a ledger that
//! agrees with the event history. Also the ledger's enums read from the API's sagas and steps,
//! which carry statuses as strings.

use std::collections::HashMap;

use berth_proto::v1 as pb;
use berth_shared::saga::{EventKind, SagaStatus, StepStatus};
use sqlx::{AnyPool, Row};

/// A saga as the API shows it, its status (a string on the wire) read as the ledger's enum.
pub trait SagaStatused {
    /// The saga's status; panics naming the value if the ledger has no such status.
    fn saga_status(&self) -> SagaStatus;
}

impl SagaStatused for pb::Saga {
    #[track_caller]
    fn saga_status(&self) -> SagaStatus {
        self.status
            .parse()
            .unwrap_or_else(|e| panic!("saga {} ({}): {e}", self.saga_id, self.kind))
    }
}

/// A step of a saga as the API shows it, its status read as the ledger's enum.
pub trait StepStatused {
    /// The step's status; panics naming the value if the ledger has no such status.
    fn step_status(&self) -> StepStatus;
}

impl StepStatused for pb::SagaStep {
    #[track_caller]
    fn step_status(&self) -> StepStatus {
        self.status
            .parse()
            .unwrap_or_else(|e| panic!("step {} ({}): {e}", self.index, self.name))
    }
}

/// What a check found wrong, one line per problem.
pub type Problems = Vec<String>;

/// The status a step must have, given the last event about it (the shared table).
fn status_after(event: &str) -> Option<StepStatus> {
    event.parse::<EventKind>().ok()?.step_status()
}

/// Checks every saga in the database; `allowed` lists the final statuses that may appear.
pub async fn check(pool: &AnyPool, allowed: &[SagaStatus]) -> Problems {
    let mut problems = Vec::new();
    let sagas = sqlx::query("SELECT id, status, epoch FROM saga_runs")
        .fetch_all(pool)
        .await
        .unwrap();
    let steps =
        sqlx::query("SELECT saga_id, step_idx, name, status, written_epoch FROM saga_step_results")
            .fetch_all(pool)
            .await
            .unwrap();
    let events =
        sqlx::query("SELECT saga_id, seq, kind, step_idx, epoch FROM saga_events ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap();
    let effects = sqlx::query("SELECT saga_id, step_idx, phase, epoch FROM saga_test_effects")
        .fetch_all(pool)
        .await
        .unwrap();

    let mut saga_epoch = HashMap::new();
    for s in &sagas {
        let (id, status, epoch): (String, String, i64) =
            (s.get("id"), s.get("status"), s.get("epoch"));
        match status.parse::<SagaStatus>() {
            Ok(s) if allowed.contains(&s) => {}
            Ok(_) => problems.push(format!("saga {id} ended {status}")),
            Err(e) => problems.push(format!("saga {id}: {e}")),
        }
        saga_epoch.insert(id, epoch);
    }
    let mut last_epoch: HashMap<String, i64> = HashMap::new();
    let mut last_step_event: HashMap<(String, i64), String> = HashMap::new();
    for e in &events {
        let (id, seq, kind, idx, epoch): (String, i64, String, i64, i64) = (
            e.get("saga_id"),
            e.get("seq"),
            e.get("kind"),
            e.get("step_idx"),
            e.get("epoch"),
        );
        let prev = last_epoch.insert(id.clone(), epoch).unwrap_or(0);
        if epoch < prev {
            problems.push(format!("saga {id}: event {seq} ({kind}) written under epoch {epoch} after epoch {prev}: a stale owner wrote"));
        }
        if idx >= 0 && status_after(&kind).is_some() {
            last_step_event.insert((id, idx), kind);
        }
    }
    let mut executed: HashMap<(String, i64), i64> = HashMap::new();
    for f in &effects {
        let (id, idx, phase, epoch): (String, i64, String, i64) = (
            f.get("saga_id"),
            f.get("step_idx"),
            f.get("phase"),
            f.get("epoch"),
        );
        if epoch > saga_epoch.get(&id).copied().unwrap_or(0) {
            problems.push(format!(
                "saga {id} step {idx}: effect written under a future epoch {epoch}"
            ));
        }
        if phase == "execute" {
            executed.insert((id, idx), epoch);
        }
    }
    for s in &steps {
        let (id, idx, name, status, written): (String, i64, String, String, i64) = (
            s.get("saga_id"),
            s.get("step_idx"),
            s.get("name"),
            s.get("status"),
            s.get("written_epoch"),
        );
        if written > saga_epoch.get(&id).copied().unwrap_or(0) {
            problems.push(format!(
                "saga {id} step {idx}: written under a future epoch {written}"
            ));
        }
        let status = match status.parse::<StepStatus>() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("saga {id} step {idx}: {e}"));
                continue;
            }
        };
        let expected = last_step_event
            .get(&(id.clone(), idx))
            .and_then(|k| status_after(k))
            .unwrap_or(StepStatus::Pending);
        // Operators skip a step, or abandon the saga with a step in flight, without a step
        // event.
        if expected != status && !matches!(status, StepStatus::Skipped | StepStatus::Abandoned) {
            problems.push(format!(
                "saga {id} step {idx} ({name}) is {status} but its history says {expected}"
            ));
        }
        let needs_effect = name == "record"
            && matches!(
                status,
                StepStatus::Completed | StepStatus::Compensating | StepStatus::Compensated
            );
        if needs_effect && !executed.contains_key(&(id.clone(), idx)) {
            problems.push(format!(
                "saga {id} step {idx}: {status} but its side effect never happened"
            ));
        }
    }
    problems
}

/// Panics listing every problem, with a hint (e.g. the chaos seed) to replay it.
pub fn assert_clean(problems: &Problems, hint: &str) {
    assert!(
        problems.is_empty(),
        "{} ledger problems ({hint}):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
