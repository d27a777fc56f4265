//! `berth archive prune`: retention's rules from flags, and what a prune deleted (or, dry,
//! would delete) and why each survivor stays.

use std::io::Write;

use berth_proto::v1 as pb;
use berth_shared::AppName;
use berth_shared::archive::{Tz, parse_timezone};
use clap::Args;
use serde::Serialize;

use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

/// Rules left out fall back to the coordinator's `[archive]` defaults; an archive any rule
/// keeps is kept, and an app's newest good archive always is.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The app (default: every app)
    #[arg(value_name = "APP")]
    pub app: Option<AppName>,
    /// The app (the older spelling of APP)
    #[arg(long = "app", value_name = "APP", conflicts_with = "app", hide = true)]
    pub app_flag: Option<AppName>,
    /// Keep the N newest archives
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_last: Option<u32>,
    /// Keep the newest archive of each of the last N hours that have one
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years
    #[arg(long, value_name = "N", value_parser = count)]
    pub keep_yearly: Option<u32>,
    /// Keep archives younger than this, e.g. 30d
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keep_within: Option<std::time::Duration>,
    /// The IANA zone the hours, days, weeks, months and years are counted in, e.g.
    /// Europe/Berlin (default: the coordinator's retention_timezone, else UTC)
    #[arg(long, value_name = "ZONE", value_parser = parse_timezone)]
    pub timezone: Option<Tz>,
    /// List what would be deleted, and what each survivor is kept by, deleting nothing
    #[arg(long)]
    pub dry_run: bool,
}

fn count(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a count; give a whole number from 1 (leave the flag out for no \
             such rule)"
        )),
    }
}

impl PruneArgs {
    pub fn request(&self) -> pb::PruneArchivesRequest {
        let n = |v: Option<u32>| v.unwrap_or(0);
        pb::PruneArchivesRequest {
            app: self
                .app
                .as_ref()
                .or(self.app_flag.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
            keep_last: n(self.keep_last),
            keep_within_secs: self.keep_within.map_or(0, |d| d.as_secs()),
            dry_run: self.dry_run,
            keep_hourly: n(self.keep_hourly),
            keep_daily: n(self.keep_daily),
            keep_weekly: n(self.keep_weekly),
            keep_monthly: n(self.keep_monthly),
            keep_yearly: n(self.keep_yearly),
            timezone: self
                .timezone
                .map(|z| z.name().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// One archive a prune went through, as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct PrunedView {
    uuid: String,
    app: String,
    key: String,
    ts_ms: i64,
    /// In the prune's zone, e.g. `2026-12-05 14:00 CET`.
    time: String,
    /// `rule` or `rule bucket`, e.g. `daily 2026-12-05`; empty for a deleted archive.
    kept_by: Vec<String>,
}

impl PrunedView {
    fn new(a: &pb::PrunedArchive, zone: Tz) -> Self {
        let time = chrono::DateTime::from_timestamp_millis(a.ts_ms).map_or_else(
            || a.ts_ms.to_string(),
            |t| {
                t.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            },
        );
        let kept_by = a
            .reasons
            .iter()
            .map(|r| {
                if r.bucket.is_empty() {
                    r.rule.clone()
                } else {
                    format!("{} {}", r.rule, r.bucket)
                }
            })
            .collect();
        Self {
            uuid: a.uuid.clone(),
            app: a.app.clone(),
            key: a.key.clone(),
            ts_ms: a.ts_ms,
            time,
            kept_by,
        }
    }
}

/// Writes a prune's answer: in a table, every archive newest first per app, each deleted one
/// marked (`would delete` in a dry run) and each kept one with its rules.
pub fn write(
    resp: &pb::DeleteArchivesResponse,
    dry_run: bool,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let zone = parse_timezone(&resp.timezone).unwrap_or(Tz::UTC);
    let views = |list: &[pb::PrunedArchive]| -> Vec<PrunedView> {
        list.iter().map(|a| PrunedView::new(a, zone)).collect()
    };
    let (deleted, kept) = (views(&resp.pruned), views(&resp.kept));
    match format {
        OutputFormat::Json => write_json(
            out,
            &serde_json::json!({
                "dry_run": dry_run,
                "timezone": zone.name(),
                "deleted": resp.deleted_uuids,
                "pruned": deleted,
                "kept": kept,
            }),
        )?,
        OutputFormat::Table => {
            let gone = if dry_run { "would delete" } else { "deleted" };
            let mut rows: Vec<(&str, &PrunedView)> = deleted
                .iter()
                .map(|v| (gone, v))
                .chain(kept.iter().map(|v| ("keep", v)))
                .collect();
            rows.sort_by(|a, b| {
                (a.1.app.as_str(), b.1.ts_ms, &b.1.uuid).cmp(&(
                    b.1.app.as_str(),
                    a.1.ts_ms,
                    &a.1.uuid,
                ))
            });
            let mut table = Table::new(&["ACTION", "APP", "TIME", "UUID", "KEPT BY"]);
            for (action, v) in rows {
                table.row(vec![
                    action.to_owned(),
                    v.app.clone(),
                    v.time.clone(),
                    v.uuid.clone(),
                    v.kept_by.join(", "),
                ]);
            }
            table.write(out)?;
            writeln!(
                out,
                "{} kept, {} {}{}",
                kept.len(),
                deleted.len(),
                gone,
                if dry_run {
                    " (dry run: nothing deleted)"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(uuid: &str, ts_ms: i64, reasons: &[(&str, &str)]) -> pb::PrunedArchive {
        pb::PrunedArchive {
            uuid: uuid.into(),
            app: "wiki".into(),
            key: format!("wiki:{uuid}:-:{}", ts_ms / 1000),
            ts_ms,
            reasons: reasons
                .iter()
                .map(|(rule, bucket)| pb::KeepReason {
                    rule: (*rule).into(),
                    bucket: (*bucket).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_dry_run_lists_each_archive_newest_first_with_its_rules_in_the_zone() {
        let resp = pb::DeleteArchivesResponse {
            deleted_uuids: vec!["b".into()],
            pruned: vec![archive("b", 1_796_385_600_000, &[])],
            kept: vec![
                archive(
                    "c",
                    1_796_472_000_000,
                    &[("last", ""), ("daily", "2026-12-05")],
                ),
                archive("a", 1_796_299_200_000, &[("daily", "2026-12-03")]),
            ],
            timezone: "Europe/Berlin".into(),
        };
        let mut out = Vec::new();
        write(&resp, true, OutputFormat::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ACTION"), "{text}");
        // 2026-12-05 12:00 UTC is 13:00 in Berlin.
        assert!(
            lines[1].starts_with("keep")
                && lines[1].contains("2026-12-05 13:00 CET")
                && lines[1].ends_with("last, daily 2026-12-05"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("would delete") && lines[2].contains(" b "),
            "{text}"
        );
        assert!(lines[3].ends_with("daily 2026-12-03"), "{text}");
        assert_eq!(
            lines[4],
            "2 kept, 1 would delete (dry run: nothing deleted)"
        );

        let mut out = Vec::new();
        write(&resp, true, OutputFormat::Json, &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["deleted"], serde_json::json!(["b"]));
        assert_eq!(
            json["kept"][0]["kept_by"],
            serde_json::json!(["last", "daily 2026-12-05"])
        );
    }

    #[test]
    fn counts_and_zones_are_checked_before_sending() {
        assert!(count("0").unwrap_err().contains("from 1"));
        assert_eq!(count("7"), Ok(7));
        assert!(parse_timezone("Europe/Berln").is_err());
    }
}
