//! How sagas are shown: the `list` table, the `show` block with its steps table, and the
//! JSON views, whose inputs and outputs are JSON values rather than strings.

use std::io::Write;

use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use serde::Serialize;
use serde_json::Value;

use crate::output::{
    Table, attempt_start, human_duration_ms, relative_time, truncate, utc_time, write_fields,
};

/// How many characters of a saga's error `sagas list` shows.
const LIST_ERROR_WIDTH: usize = 60;

/// One saga as `--output json` shows it: inputs and outputs as JSON values, absent
/// fields null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaView {
    pub saga_id: String,
    pub kind: String,
    pub status: String,
    pub inputs: Value,
    pub output: Value,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The fencing epoch: how many times the saga was claimed.
    pub epoch: u64,
    /// The coordinator holding the saga's lease; null when none does.
    pub owner_id: Option<String>,
    /// When an operator asked to cancel it; null when nobody did.
    pub cancel_requested_at_ms: Option<i64>,
    pub steps: Vec<StepView>,
}

/// One step of a saga as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    pub index: u32,
    pub name: String,
    pub status: String,
    pub attempts: u32,
    pub pivot: bool,
    pub output: Value,
    pub error: Option<String>,
    /// When the first attempt began.
    pub started_at_ms: Option<i64>,
    /// When the latest attempt began; the step's duration is this attempt's.
    pub attempt_started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl From<&pb::Saga> for SagaView {
    fn from(s: &pb::Saga) -> Self {
        Self {
            saga_id: s.saga_id.clone(),
            kind: s.kind.clone(),
            status: s.status.clone(),
            inputs: json_value(&s.inputs_json),
            output: json_value(&s.output_json),
            error: non_empty(&s.error),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            epoch: s.epoch,
            owner_id: non_empty(&s.owner_id),
            cancel_requested_at_ms: (s.cancel_requested_at_ms > 0)
                .then_some(s.cancel_requested_at_ms),
            steps: s.steps.iter().map(StepView::from).collect(),
        }
    }
}

impl From<&pb::SagaStep> for StepView {
    fn from(s: &pb::SagaStep) -> Self {
        Self {
            index: s.index,
            name: s.name.clone(),
            status: s.status.clone(),
            attempts: s.attempts,
            pivot: s.pivot,
            output: json_value(&s.output_json),
            error: non_empty(&s.error),
            started_at_ms: (s.started_at_ms > 0).then_some(s.started_at_ms),
            attempt_started_at_ms: Some(attempt_start(s)).filter(|t| *t > 0),
            finished_at_ms: (s.finished_at_ms > 0).then_some(s.finished_at_ms),
        }
    }
}

/// JSON text as a value: null when empty, the text itself as a string if it does not parse.
fn json_value(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `done/total`: steps completed or skipped, out of all.
fn steps_done(s: &pb::Saga) -> String {
    let done = s
        .steps
        .iter()
        .filter(|st| {
            matches!(
                st.status.parse(),
                Ok(StepStatus::Completed | StepStatus::Skipped)
            )
        })
        .count();
    format!("{done}/{}", s.steps.len())
}

/// The `sagas list` table; `now_ms` makes times relative.
pub fn write_saga_table(
    sagas: &[pb::Saga],
    now_ms: i64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut table = Table::new(&[
        "SAGA ID", "KIND", "STATUS", "STEPS", "CREATED", "UPDATED", "ERROR",
    ]);
    for s in sagas {
        table.row(vec![
            s.saga_id.clone(),
            s.kind.clone(),
            s.status.clone(),
            steps_done(s),
            relative_time(now_ms, s.created_at_ms),
            relative_time(now_ms, s.updated_at_ms),
            truncate(&s.error, LIST_ERROR_WIDTH),
        ]);
    }
    table.write(out)
}

/// The `sagas show` block: the saga's fields, then a table of its steps.
/// A saga's status, `running (cancelling)` while a cancel it was asked is under way.
fn status_text(saga: &pb::Saga) -> String {
    let ended = saga
        .status
        .parse::<SagaStatus>()
        .is_ok_and(SagaStatus::is_final);
    if saga.cancel_requested_at_ms > 0 && !ended {
        format!("{} (cancelling)", saga.status)
    } else {
        saga.status.clone()
    }
}

pub fn write_saga_detail(saga: &pb::Saga, now_ms: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let when = |at_ms: i64| {
        if at_ms > 0 {
            format!("{} ({})", relative_time(now_ms, at_ms), utc_time(at_ms))
        } else {
            String::new()
        }
    };
    let compact = |text: &str| match json_value(text) {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    write_fields(
        out,
        0,
        &[
            ("saga id", saga.saga_id.clone()),
            ("kind", saga.kind.clone()),
            ("status", status_text(saga)),
            ("steps", steps_done(saga)),
            ("created", when(saga.created_at_ms)),
            ("updated", when(saga.updated_at_ms)),
            ("owner", saga.owner_id.clone()),
            ("epoch", saga.epoch.to_string()),
            ("error", saga.error.clone()),
            ("inputs", compact(&saga.inputs_json)),
            ("output", compact(&saga.output_json)),
        ],
    )?;
    writeln!(out)?;
    let mut table = Table::new(&[
        "INDEX", "NAME", "STATUS", "ATTEMPTS", "PIVOT", "DURATION", "ERROR",
    ]);
    for st in &saga.steps {
        table.row(vec![
            st.index.to_string(),
            st.name.clone(),
            st.status.clone(),
            st.attempts.to_string(),
            if st.pivot { "yes" } else { "" }.to_owned(),
            step_duration(st, now_ms),
            st.error.split_whitespace().collect::<Vec<_>>().join(" "),
        ]);
    }
    table.write(out)
}

/// How long a step's latest attempt ran: to its end, or so far while it runs; empty if it
/// never started.
fn step_duration(st: &pb::SagaStep, now_ms: i64) -> String {
    match (attempt_start(st), st.finished_at_ms) {
        (0, _) => String::new(),
        (start, end) if end >= start => human_duration_ms(end - start),
        (start, _)
            if matches!(
                st.status.parse(),
                Ok(StepStatus::Running | StepStatus::Compensating)
            ) =>
        {
            human_duration_ms(now_ms - start)
        }
        _ => String::new(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}
