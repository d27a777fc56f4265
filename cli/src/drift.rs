//! `berth drift list|accept|revert|history|spec|sync` (DriftService, admin only).
//!
//! A resource is named by its inventory id (`do:droplet:123`) or, for a droplet, by its number
//! alone. `revert` starts a saga and prints its id (`--wait` follows it as `berth sagas watch`
//! does); the drift closes `reverted` at the next detection that finds the field matching.

use std::io::Write;

use berth_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, relative_time, write_fields, write_json};
use crate::sagas::{Presentation, follow};

/// The statuses a drift row can have.
pub const DRIFT_STATUSES: [&str; 4] = ["open", "accepted", "reverted", "stale"];

#[derive(Debug, Clone, Subcommand)]
pub enum DriftCommand {
    /// List drift, newest first (open drift unless --status or --all)
    List(ListArgs),
    /// Accept a drift: the live value becomes the desired one
    Accept(SettleArgs),
    /// Revert a drift: start a saga that changes the resource back (size_slug only)
    Revert {
        #[command(flatten)]
        settle: SettleArgs,
        /// Follow the saga until it ends (exit 7 if it does not complete)
        #[arg(long)]
        wait: bool,
    },
    /// Show a resource's history: seen, changed, gone, spec recorded, drift found and settled
    History {
        /// do:droplet:<id>, or a droplet's id alone
        #[arg(value_name = "RESOURCE")]
        resource: String,
        /// Events per page (1 to 500)
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Fetch every page, not only the first
        #[arg(long)]
        all_pages: bool,
    },
    /// Record a resource's desired spec by hand (a JSON object of field to expected value)
    Spec {
        /// do:droplet:<id>, or a droplet's id alone
        #[arg(value_name = "RESOURCE")]
        resource: String,
        /// e.g. '{"size_slug": "s-1vcpu-1gb", "region": "fra1"}'
        #[arg(value_name = "SPEC_JSON")]
        spec: String,
    },
    /// Sync the inventory from DigitalOcean now, then detect drift
    Sync {
        /// Only sync; leave detection to its schedule
        #[arg(long)]
        skip_detection: bool,
    },
}

/// `berth drift list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only drift in this status; repeat it (or separate with commas) for several
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = DRIFT_STATUSES, conflicts_with = "all")]
    pub statuses: Vec<String>,
    /// Every status, settled drift too
    #[arg(long)]
    pub all: bool,
    /// Only drift of this resource (do:droplet:<id>, or a droplet's id alone)
    #[arg(long, value_name = "RESOURCE")]
    pub resource: Option<String>,
    /// Only drift of this field, e.g. size_slug
    #[arg(long, value_name = "FIELD")]
    pub field: Option<String>,
    /// Rows per page (1 to 500)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Fetch every page, not only the first
    #[arg(long)]
    pub all_pages: bool,
}

/// `berth drift accept|revert`.
#[derive(Debug, Clone, Args)]
pub struct SettleArgs {
    /// The drift's id, as `berth drift list` shows it
    #[arg(value_name = "DRIFT_ID")]
    pub drift_id: String,
    /// Why, for the resource's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// One drift in `--output json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftView {
    pub drift_id: String,
    pub resource_id: String,
    pub field: String,
    pub expected: Value,
    pub actual: Value,
    pub status: String,
    pub detected_at_ms: i64,
    pub updated_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    pub revert_saga_id: Option<String>,
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl From<&pb::Drift> for DriftView {
    fn from(d: &pb::Drift) -> Self {
        DriftView {
            drift_id: d.drift_id.clone(),
            resource_id: d.resource_id.clone(),
            field: d.field.clone(),
            expected: json_of(&d.expected_json),
            actual: json_of(&d.actual_json),
            status: d.status.clone(),
            detected_at_ms: d.detected_at_ms,
            updated_at_ms: d.updated_at_ms,
            resolved_at_ms: (d.resolved_at_ms > 0).then_some(d.resolved_at_ms),
            resolved_by: some(&d.resolved_by),
            reason: some(&d.reason),
            revert_saga_id: some(&d.revert_saga_id),
        }
    }
}

/// One event in `berth drift history --output json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub kind: String,
    pub at_ms: i64,
    pub saga_id: Option<String>,
    pub detail: Value,
}

/// `berth drift sync --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncView {
    pub seen: u32,
    pub created: u32,
    pub changed: u32,
    pub gone: u32,
    pub duration_ms: u64,
    pub detected: bool,
    pub drift_opened: u32,
    pub drift_updated: u32,
    pub drift_closed: u32,
    pub drift_open: u32,
}

/// A resource argument as the coordinator names it: a bare number is a droplet.
pub fn resource_id(arg: &str) -> Result<String, CliError> {
    let arg = arg.trim();
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("do:droplet:{arg}"));
    }
    if arg.split(':').count() == 3 && arg.split(':').all(|p| !p.is_empty()) {
        return Ok(arg.to_owned());
    }
    Err(CliError::InvalidArgument(format!(
        "resource {arg:?} is not one: give do:droplet:<id> or a droplet's id"
    )))
}

fn check_drift_id(id: &str) -> Result<(), CliError> {
    let ok = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(CliError::InvalidArgument(format!(
            "drift id {id:?} is not one; `berth drift list` shows the ids"
        ))),
    }
}

/// Carries out one `berth drift …` command; arguments are checked before connecting.
pub async fn run(
    command: DriftCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        DriftCommand::List(args) => {
            let resource = args.resource.as_deref().map(resource_id).transpose()?;
            let conn = Connection::open(settings).await?;
            list(&conn, &args, resource, how, out).await
        }
        DriftCommand::Accept(args) => {
            check_drift_id(&args.drift_id)?;
            let conn = Connection::open(settings).await?;
            let req = pb::DriftIdRequest {
                drift_id: args.drift_id,
                reason: args.reason.unwrap_or_default(),
            };
            let d = conn.drift().accept_drift(req).await;
            let d = d.map_err(|s| conn.rpc_error(s))?.into_inner();
            write_drift(&d, how, out)
        }
        DriftCommand::Revert { settle, wait } => {
            check_drift_id(&settle.drift_id)?;
            let conn = Connection::open(settings).await?;
            let req = pb::DriftIdRequest {
                drift_id: settle.drift_id,
                reason: settle.reason.unwrap_or_default(),
            };
            let started = conn.drift().revert_drift(req).await;
            let started = started.map_err(|s| conn.rpc_error(s))?.into_inner();
            follow(&conn, started, wait, how, out).await
        }
        DriftCommand::History {
            resource,
            limit,
            all_pages,
        } => {
            let rid = resource_id(&resource)?;
            let conn = Connection::open(settings).await?;
            history(&conn, &rid, limit, all_pages, how, out).await
        }
        DriftCommand::Spec { resource, spec } => {
            let rid = resource_id(&resource)?;
            let parsed: Value = serde_json::from_str(&spec).map_err(|e| {
                CliError::InvalidArgument(format!("SPEC_JSON is not JSON ({e}); give an object"))
            })?;
            if !parsed.is_object() {
                return Err(CliError::InvalidArgument(
                    "SPEC_JSON must be a JSON object of field to expected value".into(),
                ));
            }
            let conn = Connection::open(settings).await?;
            let req = pb::RecordDesiredSpecRequest {
                resource_id: rid,
                spec_json: parsed.to_string(),
            };
            let s = conn.drift().record_desired_spec(req).await;
            let s = s.map_err(|e| conn.rpc_error(e))?.into_inner();
            match how.format {
                OutputFormat::Json => write_json(
                    out,
                    &serde_json::json!({
                        "resource_id": s.resource_id, "spec": json_of(&s.spec_json),
                        "spec_version": s.spec_version, "recorded_by": s.recorded_by,
                    }),
                )?,
                OutputFormat::Table => write_fields(
                    out,
                    0,
                    &[
                        ("resource", s.resource_id),
                        ("spec", s.spec_json),
                        ("version", s.spec_version.to_string()),
                        ("recorded by", s.recorded_by),
                    ],
                )?,
            }
            Ok(())
        }
        DriftCommand::Sync { skip_detection } => {
            let conn = Connection::open(settings).await?;
            let req = pb::SyncInventoryRequest { skip_detection };
            let r = conn.drift().sync_inventory(req).await;
            let r = r.map_err(|s| conn.rpc_error(s))?.into_inner();
            let v = SyncView {
                seen: r.seen,
                created: r.created,
                changed: r.changed,
                gone: r.gone,
                duration_ms: r.duration_ms,
                detected: r.detected,
                drift_opened: r.drift_opened,
                drift_updated: r.drift_updated,
                drift_closed: r.drift_closed,
                drift_open: r.drift_open,
            };
            match how.format {
                OutputFormat::Json => write_json(out, &v)?,
                OutputFormat::Table => {
                    writeln!(
                        out,
                        "synced {} droplets in {} ms: {} new, {} changed, {} gone",
                        v.seen, v.duration_ms, v.created, v.changed, v.gone
                    )?;
                    if v.detected {
                        writeln!(
                            out,
                            "drift: {} opened, {} updated, {} closed; {} open",
                            v.drift_opened, v.drift_updated, v.drift_closed, v.drift_open
                        )?;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn list(
    conn: &Connection,
    args: &ListArgs,
    resource: Option<String>,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let statuses = match args.all {
        true => DRIFT_STATUSES.iter().map(|s| (*s).to_owned()).collect(),
        false => args.statuses.clone(),
    };
    let mut rows = Vec::new();
    let mut page_token = String::new();
    let next = loop {
        let page = conn
            .drift()
            .list_drift(pb::ListDriftRequest {
                statuses: statuses.clone(),
                resource_id: resource.clone().unwrap_or_default(),
                field: args.field.clone().unwrap_or_default(),
                page: Some(pb::PageRequest {
                    page_size: args.limit,
                    page_token,
                }),
            })
            .await
            .map_err(|s| conn.rpc_error(s))?
            .into_inner();
        rows.extend(page.drift);
        match page.next_page_token {
            t if t.is_empty() => break None,
            t if args.all_pages => page_token = t,
            t => break Some(t),
        }
    };
    match how.format {
        OutputFormat::Json => write_json(
            out,
            &serde_json::json!({
                "drift": rows.iter().map(DriftView::from).collect::<Vec<_>>(),
                "next_page_token": next,
            }),
        )?,
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "ID", "RESOURCE", "FIELD", "EXPECTED", "ACTUAL", "STATUS", "DETECTED", "REVERT",
            ]);
            for d in &rows {
                t.row(vec![
                    d.drift_id.clone(),
                    d.resource_id.clone(),
                    d.field.clone(),
                    d.expected_json.clone(),
                    d.actual_json.clone(),
                    d.status.clone(),
                    relative_time(how.now_ms, d.detected_at_ms),
                    d.revert_saga_id.clone(),
                ]);
            }
            t.write(out)?;
            if next.is_some() {
                writeln!(out, "more drift: pass --all-pages")?;
            }
        }
    }
    Ok(())
}

fn write_drift(d: &pb::Drift, how: Presentation, out: &mut dyn Write) -> Result<(), CliError> {
    match how.format {
        OutputFormat::Json => write_json(out, &DriftView::from(d))?,
        OutputFormat::Table => write_fields(
            out,
            0,
            &[
                ("drift", d.drift_id.clone()),
                ("resource", d.resource_id.clone()),
                ("field", d.field.clone()),
                ("expected", d.expected_json.clone()),
                ("actual", d.actual_json.clone()),
                ("status", d.status.clone()),
                ("resolved by", d.resolved_by.clone()),
            ],
        )?,
    }
    Ok(())
}

async fn history(
    conn: &Connection,
    rid: &str,
    limit: u32,
    all_pages: bool,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let page = conn
            .drift()
            .resource_history(pb::ResourceHistoryRequest {
                resource_id: rid.to_owned(),
                page: Some(pb::PageRequest {
                    page_size: limit,
                    page_token,
                }),
            })
            .await
            .map_err(|s| conn.rpc_error(s))?
            .into_inner();
        events.extend(page.events);
        match page.next_page_token {
            t if t.is_empty() => break false,
            t if all_pages => page_token = t,
            _ => break true,
        }
    };
    let views: Vec<EventView> = events
        .iter()
        .map(|e| EventView {
            seq: e.seq,
            kind: e.kind.clone(),
            at_ms: e.at_ms,
            saga_id: some(&e.saga_id),
            detail: json_of(&e.detail_json),
        })
        .collect();
    match how.format {
        OutputFormat::Json => write_json(out, &serde_json::json!({ "events": views }))?,
        OutputFormat::Table => {
            let mut t = Table::new(&["SEQ", "WHEN", "EVENT", "SAGA", "DETAIL"]);
            for e in &views {
                t.row(vec![
                    e.seq.to_string(),
                    relative_time(how.now_ms, e.at_ms),
                    e.kind.clone(),
                    e.saga_id.clone().unwrap_or_default(),
                    e.detail.to_string(),
                ]);
            }
            t.write(out)?;
            if more {
                writeln!(out, "more events: pass --all-pages")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_a_droplet() {
        assert_eq!(resource_id("42").unwrap(), "do:droplet:42");
        assert_eq!(resource_id("do:droplet:42").unwrap(), "do:droplet:42");
        assert!(resource_id("droplet-42").is_err());
        assert!(check_drift_id("0190a1b2-c3d4-7e5f-8a9b-0123456789ab").is_ok());
        assert!(check_drift_id("nope").is_err());
    }
}
