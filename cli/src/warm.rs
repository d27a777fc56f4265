//! `berth warm snapshot|restore|list`: an app's last-known-good volumes on a host, for CI
//! runners (`berth warm restore --host ci-1 --app keycloak --domain kc.example.org --wait`).

use std::io::Write;

use berth_proto::v1 as pb;
use berth_shared::{AppName, HostId};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Settings;
use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, human_bytes, relative_time, write_json};
use crate::sagas::{Presentation, follow, follow_to_end};

#[derive(Debug, Clone, Subcommand)]
pub enum WarmCommand {
    /// Snapshot an undeployed app's volumes into the host's warm root (replaces the last one)
    Snapshot(SnapshotArgs),
    /// Restore an undeployed app's volumes from the host's warm snapshot
    Restore(TargetArgs),
    /// List warm snapshots (of one host, or of every connected host)
    List {
        #[arg(long, value_name = "HOST")]
        host: Option<HostId>,
        #[arg(long, value_name = "APP")]
        app: Option<AppName>,
    },
}

/// Which app on which host.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The host whose agent does the work
    #[arg(long, value_name = "HOST")]
    pub host: HostId,
    /// The app's name in the warm root
    #[arg(long, value_name = "APP")]
    pub app: AppName,
    /// The app's domain; its stack is the domain with '.' replaced by '_'
    #[arg(long, value_name = "DOMAIN", required_unless_present = "stack")]
    pub domain: Option<String>,
    /// The stack (or compose project) name, instead of deriving it from the domain
    #[arg(long, value_name = "STACK")]
    pub stack: Option<String>,
    /// Wait this long for a stack that is being removed to be gone
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait_undeployed: u32,
}

/// Which app on which host, and how to start the saga.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Idempotency key: the same key returns the same saga
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Follow the saga to its end with a progress bar (exit 7 if it does not complete)
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub record: Recorded,
}

/// What a snapshot records in its meta.json.
#[derive(Debug, Clone, Args)]
pub struct Recorded {
    /// The app's commit, recorded in meta.json
    #[arg(long)]
    pub commit: Option<String>,
    /// The app's version, recorded in meta.json
    #[arg(long)]
    pub version: Option<String>,
    /// Keep no ready spare of this snapshot beside the volumes (a spare makes the next
    /// restore a rename, and takes as much disk as the volumes' data)
    #[arg(long)]
    pub no_spare: bool,
}

/// The snapshot request for `target` (a schedule sends it without a key).
pub fn snapshot_request(
    target: &Target,
    record: &Recorded,
    key: Option<&str>,
) -> pb::WarmSnapshotRequest {
    pb::WarmSnapshotRequest {
        target: Some(app_target(target)),
        commit: record.commit.clone().unwrap_or_default(),
        version: record.version.clone().unwrap_or_default(),
        wait_undeployed_secs: target.wait_undeployed,
        idempotency_key: key.unwrap_or_default().to_owned(),
        no_spare: record.no_spare,
    }
}

fn app_target(a: &Target) -> pb::AppTarget {
    pb::AppTarget {
        host_id: a.host.to_string(),
        app: a.app.to_string(),
        domain: a.domain.clone().unwrap_or_default(),
        stack: a.stack.clone().unwrap_or_default(),
    }
}

/// One warm snapshot as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarmView {
    pub host_id: String,
    pub app: String,
    pub volumes: Vec<String>,
    pub size_bytes: u64,
    pub taken_at_ms: i64,
    pub commit: String,
    pub version: String,
    pub domain: String,
    pub complete: bool,
    /// Where the snapshot's ready spares stand (`ready`, `building 40%`, `off`, ...).
    pub spare: String,
}

impl From<pb::WarmSnapshotInfo> for WarmView {
    fn from(s: pb::WarmSnapshotInfo) -> Self {
        WarmView {
            host_id: s.host_id,
            app: s.app,
            volumes: s.volumes,
            size_bytes: s.size_bytes,
            taken_at_ms: s.taken_at_ms,
            commit: s.commit,
            version: s.version,
            domain: s.domain,
            complete: s.complete,
            spare: s.spare,
        }
    }
}

/// The list as a table.
pub fn write_table(views: &[WarmView], now_ms: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let mut t = Table::new(&[
        "HOST", "APP", "VOLUMES", "SIZE", "TAKEN", "VERSION", "COMMIT", "COMPLETE", "SPARE",
    ]);
    for v in views {
        t.row(vec![
            v.host_id.clone(),
            v.app.clone(),
            v.volumes.join(","),
            human_bytes(v.size_bytes),
            relative_time(now_ms, v.taken_at_ms),
            v.version.clone(),
            v.commit.chars().take(12).collect(),
            if v.complete {
                "yes".into()
            } else {
                "NO".into()
            },
            v.spare.clone(),
        ]);
    }
    t.write(out)
}

/// How one volume was restored, from the `warm.restore` saga's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RestoredView {
    pub name: String,
    /// `spare` (a ready spare swapped in), `swap` (extracted beside, swapped in) or `clear`
    /// (emptied and extracted in place).
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare_age_secs: Option<u64>,
}

/// After `warm restore --wait`: one line per volume saying how it was restored (a JSON line
/// `{"volumes": [...]}` with `--output json`). Output from an older agent may not say.
fn report_restored(
    output_json: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    #[derive(serde::Deserialize)]
    struct Output {
        #[serde(default)]
        volumes: Vec<RestoredView>,
    }
    let Ok(output) = serde_json::from_str::<Output>(output_json) else {
        return Ok(());
    };
    if format == OutputFormat::Json {
        writeln!(out, "{}", serde_json::json!({ "volumes": output.volumes }))?;
        return Ok(());
    }
    for v in &output.volumes {
        let mut line = format!("restored {}: {}", v.name, v.method);
        if let Some(us) = v.swap_us {
            line.push_str(&format!(", swapped in {:.1} ms", us as f64 / 1000.0));
        }
        if let Some(age) = v.spare_age_secs {
            line.push_str(&format!(", the spare was {age} s old"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Carries out one `berth warm …` command.
pub async fn run(
    command: WarmCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let conn = Connection::open(settings).await?;
    match command {
        WarmCommand::Snapshot(a) => {
            let req = snapshot_request(&a.target.target, &a.record, a.target.key.as_deref());
            let started = conn
                .warm()
                .warm_snapshot(req)
                .await
                .map_err(|s| conn.rpc_error(s))?
                .into_inner();
            follow(&conn, started, a.target.wait, how, out).await
        }
        WarmCommand::Restore(a) => {
            let req = pb::WarmRestoreRequest {
                target: Some(app_target(&a.target)),
                wait_undeployed_secs: a.target.wait_undeployed,
                idempotency_key: a.key.clone().unwrap_or_default(),
            };
            let started = conn
                .warm()
                .warm_restore(req)
                .await
                .map_err(|s| conn.rpc_error(s))?
                .into_inner();
            let Some(saga) = follow_to_end(&conn, started, a.wait, how, out).await? else {
                return Ok(());
            };
            // The agent's step says how each volume was restored.
            let output = saga
                .steps
                .iter()
                .rev()
                .find(|s| s.name == "warm_restore")
                .map_or(saga.output_json.as_str(), |s| s.output_json.as_str());
            report_restored(output, how.format, out)
        }
        WarmCommand::List { host, app } => {
            let req = pb::ListWarmSnapshotsRequest {
                host_id: host.map(|h| h.to_string()).unwrap_or_default(),
                app: app.map(|a| a.to_string()).unwrap_or_default(),
            };
            let list = conn
                .warm()
                .list_warm_snapshots(req)
                .await
                .map_err(|s| conn.rpc_error(s))?
                .into_inner();
            let views: Vec<WarmView> = list.snapshots.into_iter().map(WarmView::from).collect();
            match how.format {
                OutputFormat::Json => write_json(out, &views)?,
                OutputFormat::Table => write_table(&views, how.now_ms, out)?,
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_table_shows_size_age_and_completeness() {
        let v = WarmView {
            host_id: "ci-1".into(),
            app: "keycloak".into(),
            volumes: vec!["kc_db".into(), "kc_data".into()],
            size_bytes: 3 * 1024 * 1024,
            taken_at_ms: 1_000,
            commit: "0123456789abcdef".into(),
            version: "1.2.3".into(),
            domain: "kc.example.org".into(),
            complete: false,
            spare: "building 40%".into(),
        };
        let mut out = Vec::new();
        write_table(&[v], 61_000, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("kc_db,kc_data"), "{text}");
        assert!(text.contains("3.0 MiB") || text.contains("3 MiB"), "{text}");
        assert!(
            text.contains("0123456789ab ") || text.contains("0123456789ab\n"),
            "{text}"
        );
        assert!(text.contains("NO"), "{text}");
        assert!(
            text.contains("SPARE") && text.contains("building 40%"),
            "{text}"
        );
    }

    #[test]
    fn a_restore_says_how_each_volume_was_restored() {
        let output = r#"{"app":"kc","volumes":[{"name":"kc_db","method":"spare","swap_us":412,"spare_age_secs":90},{"name":"kc_files","method":"swap","swap_us":1500}],"bytes":1,"entries":1}"#;
        let mut out = Vec::new();
        report_restored(output, OutputFormat::Table, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "restored kc_db: spare, swapped in 0.4 ms, the spare was 90 s old\n\
             restored kc_files: swap, swapped in 1.5 ms\n"
        );
        let mut out = Vec::new();
        report_restored(output, OutputFormat::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["volumes"][0]["method"], "spare");
        let mut out = Vec::new();
        report_restored("not json", OutputFormat::Table, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
