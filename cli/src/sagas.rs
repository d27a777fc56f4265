//! `berth sagas list|show|watch|start|cancel|retry|resume|abandon|skip` (SagaService).
//!
//! Saga ids and inputs are checked here before anything is sent; `view` shows sagas as tables
//! and JSON; following a saga to its end is [`crate::watch`]'s, shared with every command that
//! starts a saga and `--wait`s.

mod view;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_shared::{AppName, HostId};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::connect::Connection;
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::{OutputFormat, write_json};
use crate::watch::{self, WatchMode};

pub use view::{SagaView, StepView, write_saga_detail, write_saga_table};

/// Every status a saga can be in, as the coordinator names them.
fn saga_statuses() -> clap::builder::PossibleValuesParser {
    SagaStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .into()
}

#[derive(Debug, Clone, Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first: id, kind, status, steps done, age, error
    List(ListArgs),
    /// Show one saga: its fields, then each step with attempts, duration and error
    Show {
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
    },
    /// Follow a saga until it ends; exits 7 when it ends other than completed
    #[command(
        long_about = "Follow a saga until it ends.\n\nOn a terminal: a bar of the steps done with the time elapsed, then a live line per step: its own elapsed time while it runs, and a progress bar with rate and ETA where it reports bytes. Piped: one line per event, `<time> <kind> step=<i> <message>` (step=- for the saga's own events). With --output json: one JSON object per event per line.\n\nExits 0 when the saga completed, 7 when it ended otherwise (failed, compensated, cancelled, compensation_failed, paused, abandoned)."
    )]
    Watch {
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
    },
    /// Start a saga of a registered kind; prints its id alone (with --wait, then follows it)
    Start(StartArgs),
    /// Cancel a saga: its completed steps are undone (refused once a pivot step completed)
    Cancel(ActionArgs),
    /// Retry a failed or paused saga from its failed step
    Retry(ActionArgs),
    /// Resume compensation of a compensation_failed or paused saga
    Resume(ActionArgs),
    /// Give a stuck saga up: nothing more runs
    Abandon(ActionArgs),
    /// Skip one step of a failed, paused or compensation_failed saga, then go on
    Skip {
        #[arg(value_name = "SAGA_ID")]
        saga_id: String,
        /// The step's index, as `berth sagas show` lists it
        #[arg(value_name = "STEP_INDEX")]
        step_index: u32,
        /// Why, for the saga's history
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

/// `berth sagas list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only sagas in this status; repeat it (or separate with commas) for several
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = saga_statuses())]
    pub statuses: Vec<String>,
    /// Only sagas of this kind
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only sagas on this host (warm snapshots and restores, archives)
    #[arg(long, value_name = "HOST")]
    pub host: Option<HostId>,
    /// Only sagas of this app
    #[arg(long, value_name = "APP")]
    pub app: Option<AppName>,
    /// Only sagas created within this long, e.g. 30m, 12h, 7d or 1h30m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Sagas per page (1 to 500)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Fetch every page, not only the first
    #[arg(long, conflicts_with = "page_token")]
    pub all_pages: bool,
    /// Continue a listing: the next_page_token an earlier page gave
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// `berth sagas start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// The saga's kind, e.g. demo
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Inputs as a JSON object, e.g. '{"steps":[{"step":"noop"}]}'
    #[arg(long, value_name = "JSON", conflicts_with = "inputs_file")]
    pub inputs: Option<String>,
    /// File holding the inputs as a JSON object
    #[arg(long, value_name = "PATH")]
    pub inputs_file: Option<PathBuf>,
    /// Idempotency key: starting again with the same key returns the same saga
    #[arg(long = "key", value_name = "IDEMPOTENCY_KEY")]
    pub key: Option<String>,
    /// Follow the saga until it ends, as `berth sagas watch` does (exit 7 if it does not complete)
    #[arg(long)]
    pub wait: bool,
}

/// `berth sagas cancel|retry|resume|abandon`.
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    #[arg(value_name = "SAGA_ID")]
    pub saga_id: String,
    /// Why, for the saga's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// An operator's action on one saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cancel,
    Retry,
    Resume,
    Abandon,
    Skip(u32),
}

/// How `sagas` commands show their results.
#[derive(Debug, Clone, Copy)]
pub struct Presentation {
    pub format: OutputFormat,
    /// Whether stdout is a terminal (a live view for `watch`).
    pub terminal: bool,
    /// "Now" for relative times and `--since`.
    pub now_ms: i64,
}

/// Carries out one `berth sagas …` command. Arguments are checked before connecting, so a
/// malformed saga id or inputs send nothing.
pub async fn run(
    command: SagasCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        SagasCommand::List(args) => {
            let conn = Connection::open(settings).await?;
            list(&conn, &args, how, out).await
        }
        SagasCommand::Show { saga_id } => {
            let id = parse_saga_id(&saga_id)?;
            let conn = Connection::open(settings).await?;
            let saga = conn
                .sagas()
                .get_saga(pb::GetSagaRequest { saga_id: id })
                .await
                .map_err(|s| conn.rpc_error(s))?
                .into_inner();
            write_saga(&saga, how, out)
        }
        SagasCommand::Watch { saga_id } => {
            let id = parse_saga_id(&saga_id)?;
            let conn = Connection::open(settings).await?;
            let mode = WatchMode::pick(how.format, how.terminal);
            watch::watch_saga(&conn, &id, mode, out)
                .await?
                .into_result()
        }
        SagasCommand::Start(args) => {
            let req = start_request(&args)?;
            let conn = Connection::open(settings).await?;
            start(&conn, req, args.wait, how, out).await
        }
        SagasCommand::Cancel(a) => {
            act(settings, &a.saga_id, Action::Cancel, a.reason, how, out).await
        }
        SagasCommand::Retry(a) => {
            act(settings, &a.saga_id, Action::Retry, a.reason, how, out).await
        }
        SagasCommand::Resume(a) => {
            act(settings, &a.saga_id, Action::Resume, a.reason, how, out).await
        }
        SagasCommand::Abandon(a) => {
            act(settings, &a.saga_id, Action::Abandon, a.reason, how, out).await
        }
        SagasCommand::Skip {
            saga_id,
            step_index,
            reason,
        } => {
            act(
                settings,
                &saga_id,
                Action::Skip(step_index),
                reason,
                how,
                out,
            )
            .await
        }
    }
}

/// A saga id as the coordinator writes it (a lowercase, hyphenated uuid), or why `text` is not one.
pub fn parse_saga_id(text: &str) -> Result<String, CliError> {
    uuid::Uuid::parse_str(text.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            CliError::InvalidArgument(format!(
                "saga id {text:?} is not a uuid; `berth sagas list` shows the ids"
            ))
        })
}

/// The `ListSagas` request for `args`; `--since` counts back from `now_ms`.
pub fn list_request(args: &ListArgs, now_ms: i64, page_token: String) -> pb::ListSagasRequest {
    let created_after_ms = args.since.map_or(0, |d| {
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(back).max(1)
    });
    pb::ListSagasRequest {
        statuses: args.statuses.clone(),
        kind: args.kind.clone().unwrap_or_default(),
        host_id: args
            .host
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        app: args
            .app
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        created_after_ms,
        created_before_ms: 0,
        page: Some(pb::PageRequest {
            page_size: args.limit,
            page_token,
        }),
    }
}

/// `berth sagas list --output json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaListView {
    pub sagas: Vec<SagaView>,
    /// Pass to `--page-token` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

async fn list(
    conn: &Connection,
    args: &ListArgs,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut sagas = Vec::new();
    let mut token = args.page_token.clone().unwrap_or_default();
    let next = loop {
        let page = conn
            .sagas()
            .list_sagas(list_request(args, how.now_ms, token))
            .await
            .map_err(|s| conn.rpc_error(s))?
            .into_inner();
        sagas.extend(page.sagas);
        match page.next_page_token {
            t if t.is_empty() => break None,
            t if args.all_pages => token = t,
            t => break Some(t),
        }
    };
    match how.format {
        OutputFormat::Table => {
            write_saga_table(&sagas, how.now_ms, out)?;
            if next.is_some() {
                writeln!(
                    out,
                    "more sagas: pass --all-pages, or --page-token with the next_page_token of --output json"
                )?;
            }
        }
        OutputFormat::Json => write_json(
            out,
            &SagaListView {
                sagas: sagas.iter().map(SagaView::from).collect(),
                next_page_token: next,
            },
        )?,
    }
    Ok(())
}

/// The `StartSaga` request for `args`, with the inputs read and checked to be a JSON object.
pub fn start_request(args: &StartArgs) -> Result<pb::StartSagaRequest, CliError> {
    if args.kind.trim().is_empty() {
        return Err(CliError::InvalidArgument(
            "the saga kind is empty; give one, e.g. `berth sagas start demo`".to_owned(),
        ));
    }
    let (text, from) = match (&args.inputs, &args.inputs_file) {
        (Some(text), _) => (text.clone(), "--inputs".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::InvalidArgument(format!(
                    "cannot read --inputs-file {}: {e}; check the path",
                    path.display()
                ))
            })?;
            (text, format!("--inputs-file {}", path.display()))
        }
        (None, None) => ("{}".to_owned(), String::new()),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(_)) => {}
        Ok(_) => {
            return Err(CliError::InvalidArgument(format!(
                "{from} must hold a JSON object, e.g. '{{\"steps\":[{{\"step\":\"noop\"}}]}}'"
            )));
        }
        Err(e) => {
            return Err(CliError::InvalidArgument(format!(
                "{from} is not valid JSON ({e}); give a JSON object, e.g. '{{\"steps\":[{{\"step\":\"noop\"}}]}}'"
            )));
        }
    }
    Ok(pb::StartSagaRequest {
        kind: args.kind.trim().to_owned(),
        inputs_json: text,
        idempotency_key: args.key.clone().unwrap_or_default(),
    })
}

/// `berth sagas start --output json` (without --wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaRefView {
    pub saga_id: String,
    pub kind: String,
    /// True when the idempotency key had already started this saga.
    pub existing: bool,
}

async fn start(
    conn: &Connection,
    req: pb::StartSagaRequest,
    wait: bool,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let started = conn
        .sagas()
        .start_saga(req)
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner();
    follow(conn, started, wait, how, out).await
}

/// Prints a saga that a command started (its id, or its reference as JSON) and, with
/// `wait`, follows it to its end as `berth sagas watch` does.
pub async fn follow(
    conn: &Connection,
    started: pb::SagaRef,
    wait: bool,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if started.saga_id.is_empty() {
        return Err(CliError::Protocol("the started saga's id"));
    }
    let mode = WatchMode::pick(how.format, how.terminal);
    match (how.format, wait) {
        (OutputFormat::Json, false) => write_json(
            out,
            &SagaRefView {
                saga_id: started.saga_id.clone(),
                kind: started.kind,
                existing: started.existing,
            },
        )?,
        // Every event names its saga: the stream is only events. The live view names it too.
        (OutputFormat::Json, true) => {}
        (OutputFormat::Table, true) if mode == WatchMode::Live => {}
        // The id alone comes first, so `head -1` finds it in a log.
        (OutputFormat::Table, _) => {
            writeln!(out, "{}", started.saga_id)?;
            out.flush()?;
        }
    }
    if !wait {
        return Ok(());
    }
    watch::watch_saga(conn, &started.saga_id, mode, out)
        .await?
        .into_result()
}

/// [`follow`]s a saga, then, with `wait`, reads it as it ended (for commands that report what
/// it did); `None` without `wait`.
pub async fn follow_to_end(
    conn: &Connection,
    started: pb::SagaRef,
    wait: bool,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<Option<pb::Saga>, CliError> {
    let saga_id = started.saga_id.clone();
    follow(conn, started, wait, how, out).await?;
    if !wait {
        return Ok(None);
    }
    let saga = conn
        .sagas()
        .get_saga(pb::GetSagaRequest { saga_id })
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner();
    Ok(Some(saga))
}

/// Applies `action` to a saga, then shows the saga as `show` does.
async fn act(
    settings: &Settings,
    saga_id: &str,
    action: Action,
    reason: Option<String>,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = parse_saga_id(saga_id)?;
    let reason = reason.unwrap_or_default();
    let conn = Connection::open(settings).await?;
    let mut client = conn.sagas();
    let by_id = pb::SagaIdRequest {
        saga_id: id.clone(),
        reason: reason.clone(),
    };
    let answer = match action {
        Action::Cancel => client.cancel_saga(by_id).await,
        Action::Retry => client.retry_saga(by_id).await,
        Action::Resume => client.resume_compensation(by_id).await,
        Action::Abandon => client.abandon_saga(by_id).await,
        Action::Skip(step_index) => {
            client
                .skip_step(pb::SkipStepRequest {
                    saga_id: id,
                    step_index,
                    reason,
                })
                .await
        }
    };
    let saga = answer.map_err(|s| conn.rpc_error(s))?.into_inner();
    if how.format == OutputFormat::Table {
        writeln!(out, "{}", what_follows(&saga, action))?;
    }
    write_saga(&saga, how, out)
}

/// One line on what the action set going, before the saga as it now stands.
fn what_follows(saga: &pb::Saga, action: Action) -> String {
    let id = &saga.saga_id;
    let step = |want: &str| {
        saga.steps
            .iter()
            .find(|s| s.status == want)
            .map(|s| format!("step {} ({})", s.index, s.name))
    };
    match action {
        Action::Cancel => format!(
            "saga {id}: cancelling: its running step is stopped and its completed steps are \
             undone; `berth sagas watch {id}` follows it"
        ),
        Action::Retry => match step(StepStatus::Pending.as_str()) {
            Some(s) => format!("saga {id}: retrying from {s}"),
            None => format!("saga {id}: retrying"),
        },
        Action::Skip(i) => {
            let name = saga.steps.get(i as usize).map_or("", |s| s.name.as_str());
            format!("saga {id}: step {i} ({name}) skipped; going on with the next")
        }
        Action::Resume => match step(StepStatus::Compensating.as_str()) {
            Some(s) => format!("saga {id}: undoing again from {s}"),
            None => format!("saga {id}: resuming compensation"),
        },
        Action::Abandon => {
            format!("saga {id}: abandoned: nothing more runs, and nothing is undone")
        }
    }
}

fn write_saga(saga: &pb::Saga, how: Presentation, out: &mut dyn Write) -> Result<(), CliError> {
    match how.format {
        OutputFormat::Table => write_saga_detail(saga, how.now_ms, out)?,
        OutputFormat::Json => write_json(out, &SagaView::from(saga))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests;
