//! Following a saga to its end (WatchSaga): `berth sagas watch` and every `--wait`.
//!
//! Three renderings of the same event stream: a live view of the steps on a terminal
//! ([`live`]), plain lines `<time> <kind> step=<i> <message>` when piped, and one JSON object
//! per event per line with `--output json`. The stream is resumed from the last event seen if
//! the connection drops; it ends with the coordinator's `watch_end` event, whose final status
//! [`SagaEnd::into_result`] turns into exit code 0 or 7.

mod live;

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use serde::Serialize;
use tonic::Code;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{OutputFormat, human_bytes, utc_time};

/// The kind of the last event of a watch; its `final_status` is set.
pub const WATCH_END: &str = berth_shared::saga::EventKind::WatchEnd.as_str();

/// How often the live view redraws its spinners while no event arrives.
const TICK: Duration = Duration::from_millis(100);
/// How many times in a row a dropped stream is resumed before giving up.
const MAX_RESUMES: u32 = 5;

/// How a watch is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// A live view of the steps, redrawn in place (stdout is a terminal).
    Live,
    /// One plain line per event (stdout is a pipe or a file).
    Lines,
    /// One JSON object per event per line (`--output json`).
    Json,
}

impl WatchMode {
    /// JSON when asked for; else live on a terminal and plain lines otherwise.
    pub fn pick(format: OutputFormat, stdout_is_terminal: bool) -> Self {
        match (format, stdout_is_terminal) {
            (OutputFormat::Json, _) => WatchMode::Json,
            (OutputFormat::Table, true) => WatchMode::Live,
            (OutputFormat::Table, false) => WatchMode::Lines,
        }
    }
}

/// How a watched saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaEnd {
    pub saga_id: String,
    pub final_status: String,
}

impl SagaEnd {
    pub fn completed(&self) -> bool {
        self.final_status == SagaStatus::Completed.as_str()
    }

    /// `Ok` when the saga completed; otherwise [`CliError::SagaNotCompleted`] (exit code 7).
    pub fn into_result(self) -> Result<(), CliError> {
        if self.completed() {
            Ok(())
        } else {
            Err(CliError::SagaNotCompleted {
                saga_id: self.saga_id,
                status: self.final_status,
            })
        }
    }
}

/// Follows saga `saga_id` (a checked id) until it ends, rendering its events to `out` as
/// `mode` says, and returns how it ended. The history is replayed first, so a saga that has
/// already ended is shown whole.
pub async fn watch_saga(
    conn: &Connection,
    saga_id: &str,
    mode: WatchMode,
    out: &mut dyn Write,
) -> Result<SagaEnd, CliError> {
    let mut render: Box<dyn Render> = match mode {
        WatchMode::Json => Box::new(Ndjson),
        WatchMode::Lines => Box::new(Lines),
        WatchMode::Live => {
            let saga = get_saga(conn, saga_id).await?;
            Box::new(live::LiveView::to_stdout(&saga, out)?)
        }
    };
    let mut after_seq = 0;
    let mut resumes = 0;
    loop {
        let dropped = match conn
            .sagas()
            .watch_saga(pb::WatchSagaRequest {
                saga_id: saga_id.to_owned(),
                after_seq,
            })
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut ticker = tokio::time::interval(TICK);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        _ = ticker.tick() => {
                            render.tick();
                            continue;
                        }
                    };
                    match message {
                        Ok(Some(event)) if event.kind == WATCH_END => {
                            let end = SagaEnd {
                                saga_id: saga_id.to_owned(),
                                final_status: event.final_status.clone(),
                            };
                            render.event(&event, now_ms(), out)?;
                            // The live view ends on the ledger itself (skips are not events).
                            let saga = match mode {
                                WatchMode::Live => get_saga(conn, saga_id).await.ok(),
                                _ => None,
                            };
                            render.finish(saga.as_ref(), &end, out)?;
                            out.flush()?;
                            return Ok(end);
                        }
                        Ok(Some(event)) => {
                            after_seq = after_seq.max(event.seq);
                            resumes = 0;
                            render.event(&event, now_ms(), out)?;
                            out.flush()?;
                        }
                        // Ended without `watch_end`: the coordinator went away mid-stream.
                        Ok(None) => break None,
                        Err(status) if resumable(status.code()) => break Some(status),
                        Err(status) => return Err(conn.rpc_error(status)),
                    }
                }
            }
            Err(status) if status.code() == Code::Unavailable => Some(status),
            Err(status) => return Err(conn.rpc_error(status)),
        };
        resumes += 1;
        if resumes > MAX_RESUMES {
            let status = dropped.unwrap_or_else(|| {
                tonic::Status::unavailable("the event stream ended before the saga did")
            });
            return Err(conn.rpc_error(status));
        }
        tokio::time::sleep(Duration::from_millis(250 << resumes)).await;
    }
}

/// Stream errors worth resuming after: the connection, not the request, failed.
fn resumable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Internal)
}

async fn get_saga(conn: &Connection, saga_id: &str) -> Result<pb::Saga, CliError> {
    Ok(conn
        .sagas()
        .get_saga(pb::GetSagaRequest {
            saga_id: saga_id.to_owned(),
        })
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner())
}

fn now_ms() -> i64 {
    berth_shared::time::unix_ms(SystemTime::now())
}

/// One rendering of the event stream.
trait Render {
    /// Shows one event; `now_ms` stands in for the time of events that carry none.
    fn event(&mut self, e: &pb::SagaEvent, now_ms: i64, out: &mut dyn Write) -> io::Result<()>;
    /// Called while no event arrives, to keep spinners turning.
    fn tick(&mut self) {}
    /// Called once after the last event, with the saga as it ended when it could be read.
    fn finish(
        &mut self,
        _saga: Option<&pb::Saga>,
        _end: &SagaEnd,
        _out: &mut dyn Write,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Plain lines, for pipes and CI logs.
struct Lines;

impl Render for Lines {
    fn event(&mut self, e: &pb::SagaEvent, now_ms: i64, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", plain_line(e, now_ms))
    }
}

/// One JSON object per event per line.
struct Ndjson;

impl Render for Ndjson {
    fn event(&mut self, e: &pb::SagaEvent, now_ms: i64, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, &EventView::new(e, now_ms))?;
        writeln!(out)
    }
}

/// The time of an event, or `now_ms` for one that carries none (`watch_end`).
fn event_time(e: &pb::SagaEvent, now_ms: i64) -> i64 {
    if e.at_ms > 0 { e.at_ms } else { now_ms }
}

/// `<time> <kind> step=<i> <message>`: the line for one event when stdout is not a terminal.
/// Events of the saga itself say `step=-`; progress adds its phase, bytes and entries.
pub fn plain_line(e: &pb::SagaEvent, now_ms: i64) -> String {
    let step = if e.step_index >= 0 {
        e.step_index.to_string()
    } else {
        "-".to_owned()
    };
    let mut text: Vec<String> = Vec::new();
    let message = one_line(&e.message);
    if !message.is_empty() {
        text.push(message);
    }
    if let Some(p) = &e.progress {
        let progress = progress_text(p);
        if !progress.is_empty() {
            text.push(progress);
        }
    }
    format!(
        "{} {} step={step} {}",
        utc_time(event_time(e, now_ms)),
        e.kind,
        text.join(" ")
    )
    .trim_end()
    .to_owned()
}

/// Progress in words: `[uploading] 1.5 MiB/8.0 MiB (18%) 3/40 entries`.
pub fn progress_text(p: &pb::Progress) -> String {
    let mut parts = Vec::new();
    if !p.phase.is_empty() {
        parts.push(format!("[{}]", one_line(&p.phase)));
    }
    match (p.bytes_done, p.bytes_total) {
        (0, 0) => {}
        (done, 0) => parts.push(human_bytes(done)),
        (done, total) => parts.push(format!(
            "{}/{} ({}%)",
            human_bytes(done),
            human_bytes(total),
            percent(done, total)
        )),
    }
    match (p.entries_done, p.entries_total) {
        (0, 0) => {}
        (done, 0) => parts.push(format!("{done} entries")),
        (done, total) => parts.push(format!("{done}/{total} entries")),
    }
    if p.bytes_written > 0 {
        parts.push(format!("{} written", human_bytes(p.bytes_written)));
    }
    parts.join(" ")
}

fn percent(done: u64, total: u64) -> u64 {
    (u128::from(done) * 100 / u128::from(total.max(1))).min(100) as u64
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::output::escape_controls(&joined).into_owned()
}

/// One event as `--output json` prints it (one object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub saga_id: String,
    pub kind: String,
    /// The step the event is about; null for events of the saga itself.
    pub step_index: Option<u32>,
    pub message: String,
    /// When it happened; for `watch_end`, when the watch saw the end.
    pub at_ms: i64,
    pub progress: Option<ProgressView>,
    /// Set only on `watch_end`: the saga's final status.
    pub final_status: Option<String>,
}

/// Progress of a step as `--output json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressView {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub entries_done: u64,
    pub entries_total: u64,
    pub bytes_written: u64,
}

impl EventView {
    pub fn new(e: &pb::SagaEvent, now_ms: i64) -> Self {
        Self {
            seq: e.seq,
            saga_id: e.saga_id.clone(),
            kind: e.kind.clone(),
            step_index: u32::try_from(e.step_index).ok(),
            message: e.message.clone(),
            at_ms: event_time(e, now_ms),
            progress: e.progress.as_ref().map(|p| ProgressView {
                phase: p.phase.clone(),
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                entries_done: p.entries_done,
                entries_total: p.entries_total,
                bytes_written: p.bytes_written,
            }),
            final_status: (!e.final_status.is_empty()).then(|| e.final_status.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
