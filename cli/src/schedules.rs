//! `berth schedule create|list|show|pause|resume|delete|run-now`: sagas started by the clock.

use std::io::Write;

use berth_proto::v1 as pb;
use clap::{ArgAction, Args, Subcommand};
use serde::Serialize;

use crate::archive::ArchiveWhat;
use crate::config::Settings;
use crate::connect::Connection;
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, relative_time, utc_time, write_fields, write_json};
use crate::sagas::Presentation;
use crate::warm::{Recorded, Target};

#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleCommand {
    /// Make a schedule: a cron expression in a time zone, and what each occurrence runs
    Create(Box<CreateArgs>),
    /// Every schedule with its last run and next run
    List,
    /// One schedule: its next five runs and its last ten
    Show { name: String },
    /// Stop firing (runs in progress go on)
    Pause { name: String },
    /// Fire again from now on (occurrences during the pause are not caught up)
    Resume { name: String },
    /// Delete a schedule and its run history (the sagas it started stay)
    Delete { name: String },
    /// Start one run now, apart from the cron expression
    RunNow { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Letters, digits, '-', '_', '.', e.g. nightly-keycloak
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *" (or six,
    /// seconds first)
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. Europe/Berlin
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub timezone: String,
    /// Fire each occurrence up to this late (fixed per schedule), e.g. 10m
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub jitter: Option<std::time::Duration>,
    /// Occurrences missed while no coordinator ran: run once on return (true) or record them
    /// as missed (false)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub catch_up: bool,
    /// Alert when no run succeeded for this long (default: twice the longest gap between runs)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub alert_after: Option<std::time::Duration>,
    /// Create it paused
    #[arg(long)]
    pub paused: bool,
    /// For archives: a run whose source did not change since the newest good archive (a
    /// stat walk of paths, sizes, modes, owners and times) writes nothing (true), or every
    /// run archives (false)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub skip_unchanged: bool,
    #[command(flatten)]
    pub retention: Keep,
    #[command(subcommand)]
    pub action: Action,
}

/// Retention after each archive the schedule makes (restic `forget` rules, in --timezone);
/// rules left out fall back to the coordinator's [archive] defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct Keep {
    /// Keep the N newest archives
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest archive of each of the last N hours
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every archive younger than this, e.g. 30d
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keep_within: Option<std::time::Duration>,
}

impl Keep {
    fn rules(&self) -> Option<pb::Retention> {
        let r = pb::Retention {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within_secs: self.keep_within.map_or(0, |d| d.as_secs()),
        };
        (r != pb::Retention::default()).then_some(r)
    }
}

/// What each occurrence runs.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Archive an app's directory (or, with --volumes, its stack's volumes) into object storage
    Archive(ArchiveWhat),
    /// Verify the app's newest good archive on a host (as `berth archive verify`)
    Verify {
        #[arg(long, value_name = "HOST")]
        host: berth_shared::HostId,
        #[arg(long, value_name = "APP")]
        app: berth_shared::AppName,
    },
    /// Snapshot an app's volumes into the host's warm root
    WarmSnapshot {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        record: Recorded,
    },
}

/// A run as `--output json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub slot_ms: i64,
    pub trigger: String,
    pub saga_id: String,
    pub started_at_ms: i64,
    pub outcome: String,
    pub finished_at_ms: i64,
    pub detail: String,
    pub fired_by: String,
}

/// A schedule as `--output json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub jitter_secs: u32,
    pub catch_up: bool,
    pub alert_after_secs: u64,
    pub paused: bool,
    pub kind: String,
    pub inputs: serde_json::Value,
    pub created_at_ms: i64,
    pub last_success_ms: i64,
    pub next_runs_ms: Vec<i64>,
    pub runs: Vec<RunView>,
    pub skip_unchanged: bool,
}

impl From<pb::ScheduleRun> for RunView {
    fn from(r: pb::ScheduleRun) -> Self {
        RunView {
            slot_ms: r.slot_ms,
            trigger: r.trigger,
            saga_id: r.saga_id,
            started_at_ms: r.started_at_ms,
            outcome: if r.outcome.is_empty() {
                "running".into()
            } else {
                r.outcome
            },
            finished_at_ms: r.finished_at_ms,
            detail: r.detail,
            fired_by: r.fired_by,
        }
    }
}

impl From<pb::Schedule> for ScheduleView {
    fn from(s: pb::Schedule) -> Self {
        ScheduleView {
            inputs: serde_json::from_str(&s.inputs_json).unwrap_or(serde_json::Value::Null),
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            jitter_secs: s.jitter_secs,
            catch_up: s.catch_up,
            alert_after_secs: s.alert_after_secs,
            paused: s.paused,
            kind: s.kind,
            created_at_ms: s.created_at_ms,
            last_success_ms: s.last_success_ms,
            next_runs_ms: s.next_runs_ms,
            runs: s.runs.into_iter().map(RunView::from).collect(),
            skip_unchanged: s.skip_unchanged,
        }
    }
}

fn state(v: &ScheduleView) -> &'static str {
    if v.paused { "paused" } else { "active" }
}

fn write_list(views: &[ScheduleView], now_ms: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let mut t = Table::new(&[
        "NAME", "CRON", "ZONE", "RUNS", "STATE", "LAST RUN", "OUTCOME", "NEXT RUN",
    ]);
    for v in views {
        let last = v.runs.first();
        t.row(vec![
            v.name.clone(),
            v.cron.clone(),
            v.timezone.clone(),
            v.kind.clone(),
            state(v).into(),
            last.map_or("never".into(), |r| relative_time(now_ms, r.started_at_ms)),
            last.map_or(String::new(), |r| r.outcome.clone()),
            v.next_runs_ms
                .first()
                .map_or("-".into(), |&n| relative_time(now_ms, n)),
        ]);
    }
    t.write(out)
}

fn write_one(v: &ScheduleView, now_ms: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let at = |ms: i64| {
        if ms <= 0 {
            "never".to_owned()
        } else {
            format!("{} ({})", utc_time(ms), relative_time(now_ms, ms))
        }
    };
    write_fields(
        out,
        0,
        &[
            ("name", v.name.clone()),
            ("cron", format!("{} ({})", v.cron, v.timezone)),
            ("runs", format!("{} {}", v.kind, v.inputs)),
            ("state", state(v).into()),
            ("catch up", v.catch_up.to_string()),
            ("skip unchanged", v.skip_unchanged.to_string()),
            ("jitter", format!("{} s", v.jitter_secs)),
            (
                "alert after",
                format!("{} s without a success", v.alert_after_secs),
            ),
            ("last success", at(v.last_success_ms)),
        ],
    )?;
    writeln!(out, "next runs:")?;
    if v.next_runs_ms.is_empty() {
        writeln!(out, "  none (paused: `berth schedule resume {}`)", v.name)?;
    }
    for &n in &v.next_runs_ms {
        writeln!(out, "  {}", at(n))?;
    }
    if v.runs.is_empty() {
        return Ok(());
    }
    writeln!(out, "recent runs:")?;
    let mut t = Table::new(&["OCCURRENCE", "TRIGGER", "OUTCOME", "SAGA", "BY", "DETAIL"]);
    for r in &v.runs {
        t.row(vec![
            utc_time(r.slot_ms),
            r.trigger.clone(),
            r.outcome.clone(),
            r.saga_id.clone(),
            r.fired_by.clone(),
            crate::output::truncate(&r.detail, 80),
        ]);
    }
    t.write(out)
}

/// Carries out one `berth schedule …` command.
pub async fn run(
    command: ScheduleCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let conn = Connection::open(settings).await?;
    let mut client = conn.schedules();
    let err = |s| conn.rpc_error(s);
    let show = |s: pb::Schedule, out: &mut dyn Write| -> Result<(), CliError> {
        let v = ScheduleView::from(s);
        match how.format {
            OutputFormat::Json => write_json(out, &v)?,
            OutputFormat::Table => write_one(&v, how.now_ms, out)?,
        }
        Ok(())
    };
    let name = |n: String| pb::ScheduleNameRequest { name: n };
    match command {
        ScheduleCommand::Create(a) => {
            use pb::create_schedule_request::Action as A;
            let a = *a;
            let action = match a.action {
                Action::Archive(what) => A::ArchiveCreate(what.request(None)),
                Action::WarmSnapshot { target, record } => {
                    A::WarmSnapshot(crate::warm::snapshot_request(&target, &record, None))
                }
                Action::Verify { host, app } => A::ArchiveVerify(pb::ScheduledVerify {
                    host_id: host.to_string(),
                    app: app.to_string(),
                }),
            };
            let req = pb::CreateScheduleRequest {
                name: a.name,
                cron: a.cron,
                timezone: a.timezone,
                jitter_secs: a.jitter.map_or(0, |d| d.as_secs() as u32),
                catch_up: a.catch_up,
                alert_after_secs: a.alert_after.map_or(0, |d| d.as_secs()),
                paused: a.paused,
                retention: a.retention.rules(),
                archive_unchanged: !a.skip_unchanged,
                action: Some(action),
            };
            show(
                client.create_schedule(req).await.map_err(err)?.into_inner(),
                out,
            )
        }
        ScheduleCommand::List => {
            let list = client
                .list_schedules(pb::ListSchedulesRequest {})
                .await
                .map_err(err)?
                .into_inner();
            let views: Vec<ScheduleView> =
                list.schedules.into_iter().map(ScheduleView::from).collect();
            match how.format {
                OutputFormat::Json => write_json(out, &views)?,
                OutputFormat::Table => write_list(&views, how.now_ms, out)?,
            }
            Ok(())
        }
        ScheduleCommand::Show { name: n } => {
            let req = pb::GetScheduleRequest { name: n };
            show(
                client.get_schedule(req).await.map_err(err)?.into_inner(),
                out,
            )
        }
        ScheduleCommand::Pause { name: n } => show(
            client
                .pause_schedule(name(n))
                .await
                .map_err(err)?
                .into_inner(),
            out,
        ),
        ScheduleCommand::Resume { name: n } => show(
            client
                .resume_schedule(name(n))
                .await
                .map_err(err)?
                .into_inner(),
            out,
        ),
        ScheduleCommand::Delete { name: n } => show(
            client
                .delete_schedule(name(n))
                .await
                .map_err(err)?
                .into_inner(),
            out,
        ),
        ScheduleCommand::RunNow { name: n } => {
            let run = RunView::from(
                client
                    .run_schedule_now(name(n))
                    .await
                    .map_err(err)?
                    .into_inner(),
            );
            match how.format {
                OutputFormat::Json => write_json(out, &run)?,
                OutputFormat::Table if run.saga_id.is_empty() => {
                    writeln!(out, "{}: {}", run.outcome, run.detail)?
                }
                OutputFormat::Table => writeln!(out, "{}", run.saga_id)?,
            }
            Ok(())
        }
    }
}
