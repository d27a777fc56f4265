//! `berth archive create|restore|verify|list|show|link|delete|prune`: app archives (tar + zstd) in
//! object storage, made and restored by a host's agent, listed and linked by the coordinator.

use std::io::Write;

use berth_proto::v1 as pb;
use berth_shared::{AppName, HostId, StackName};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Settings;
use crate::connect::Connection;
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, human_bytes, relative_time, write_json};
use crate::sagas::{Presentation, follow, follow_to_end};

mod prune;

#[derive(Debug, Clone, Subcommand)]
pub enum ArchiveCommand {
    /// Archive an app's directory (or, with --volumes, its stack's volumes) on a host into
    /// object storage
    Create(CreateArgs),
    /// Restore an archive onto a host (under its own app name, or another with --as)
    Restore(RestoreArgs),
    /// Check an archive on a host as a restore would (checksum, every entry), writing nothing
    Verify(VerifyArgs),
    /// List archives, newest first (of some apps, or by index label)
    List {
        #[arg(long = "app", value_name = "APP")]
        apps: Vec<AppName>,
        #[arg(long, value_name = "VALUE")]
        index_label: Option<String>,
    },
    /// Show one archive
    Show { uuid: String },
    /// A download link for one archive (presigned on S3)
    Link {
        uuid: String,
        /// How long the link works, e.g. 15m, 2h
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        expires: std::time::Duration,
    },
    /// Delete one archive (data and metadata), or with --all-of every archive of an app
    Delete {
        #[arg(required_unless_present = "all_of")]
        uuid: Option<String>,
        #[arg(long, value_name = "APP", conflicts_with = "uuid")]
        all_of: Option<AppName>,
    },
    /// Apply retention to an app's archives (or every app's): keep the last N, the newest of
    /// each of the last N hours/days/weeks/months/years, those younger than a duration
    Prune(prune::PruneArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub what: ArchiveWhat,
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Follow the saga with a progress bar (exit 7 if it does not complete)
    #[arg(long)]
    pub wait: bool,
}

/// What an archive create archives, and how (also a schedule's archive action).
#[derive(Debug, Clone, Args)]
pub struct ArchiveWhat {
    #[arg(long, value_name = "HOST")]
    pub host: HostId,
    #[arg(long, value_name = "APP")]
    pub app: AppName,
    /// Archive the stack's volumes instead of the app directory (nothing of the stack may run)
    #[arg(long)]
    pub volumes: bool,
    /// The swarm stack or compose project of the volumes (implies --volumes; default: the
    /// app's name)
    #[arg(long, value_name = "STACK")]
    pub stack: Option<StackName>,
    /// A label to record (repeatable), e.g. owner:alice
    #[arg(long = "label", value_name = "KEY:VALUE")]
    pub labels: Vec<String>,
    /// The index label's value, the key's third field (listable without reading metadata)
    #[arg(long, value_name = "VALUE")]
    pub index_label: Option<String>,
    /// zstd level, 1 to 19 (default: the agent's, 3)
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    /// Also encrypt to this age recipient (repeatable): a public key, `age1…` or
    /// `ssh-ed25519 …`, beside the agent's [archive] recipients
    #[arg(long = "recipient", value_name = "PUBLIC_KEY")]
    pub recipients: Vec<String>,
}

impl ArchiveWhat {
    /// The create request (a schedule sends it without a key).
    pub fn request(self, key: Option<String>) -> pb::CreateArchiveRequest {
        pb::CreateArchiveRequest {
            host_id: self.host.to_string(),
            app: self.app.to_string(),
            volumes: self.volumes,
            stack: self.stack.map(|s| s.to_string()).unwrap_or_default(),
            labels: self.labels,
            index_label: self.index_label.unwrap_or_default(),
            zstd_level: self.zstd_level.unwrap_or(0),
            idempotency_key: key.unwrap_or_default(),
            recipients: self.recipients,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    pub uuid: String,
    #[arg(long, value_name = "HOST")]
    pub host: HostId,
    /// Restore under this app name instead of the archive's own
    #[arg(long = "as", value_name = "APP")]
    pub target_app: Option<AppName>,
    /// For a volume archive: the stack whose volumes receive it (default: the one it was
    /// made of)
    #[arg(long, value_name = "STACK")]
    pub stack: Option<StackName>,
    /// For an encrypted archive, when the host holds no identity of its own: a file (e.g. a
    /// credential) with the age identity or unencrypted SSH private key for this one restore
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<std::path::PathBuf>,
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    pub uuid: String,
    /// The host that downloads and checks it (it needs the identity of an encrypted archive)
    #[arg(long, value_name = "HOST")]
    pub host: HostId,
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Follow the saga, then print the entries and bytes checked (exit 8 if the archive is
    /// bad, 7 if the verify could not run)
    #[arg(long)]
    pub wait: bool,
}

/// What an `archive.verify` saga found, from its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyView {
    pub uuid: String,
    pub ok: bool,
    pub entries: u64,
    pub tar_bytes: u64,
    pub bytes: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Only the stored object's checksum was checked (an encrypted archive, and no identity
    /// on the verifying host).
    pub checksum_only: bool,
}

impl VerifyView {
    /// The verdict in a completed `archive.verify` saga's `output_json`.
    pub fn from_output(uuid: &str, output_json: &str) -> Result<VerifyView, CliError> {
        let output: serde_json::Value = serde_json::from_str(output_json)
            .map_err(|_| CliError::Protocol("the verify saga's output"))?;
        let v = &output["0:archive_verify"];
        let ok = v["ok"]
            .as_bool()
            .ok_or(CliError::Protocol("the verify's verdict"))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(VerifyView {
            uuid: uuid.to_owned(),
            ok,
            entries: n("entries"),
            tar_bytes: n("tar_bytes"),
            bytes: n("bytes"),
            sha256: v["sha256"].as_str().unwrap_or_default().to_owned(),
            problem: v["problem"].as_str().map(str::to_owned),
            checksum_only: v["checksum_only"].as_bool().unwrap_or(false),
        })
    }

    /// Prints a good verdict; a bad one is [`CliError::VerifyFailed`].
    fn report(self, format: OutputFormat, out: &mut dyn Write) -> Result<(), CliError> {
        match format {
            OutputFormat::Json => write_json(out, &self)?,
            OutputFormat::Table if self.ok && self.checksum_only => writeln!(
                out,
                "archive {} checksum verified: {} (sha256 {}); it is encrypted and the host \
                 holds no identity, so its contents were not checked",
                self.uuid,
                human_bytes(self.bytes),
                self.sha256
            )?,
            OutputFormat::Table if self.ok => writeln!(
                out,
                "archive {} verified: {} entries, {} of tar in {} (sha256 {})",
                self.uuid,
                self.entries,
                human_bytes(self.tar_bytes),
                human_bytes(self.bytes),
                self.sha256
            )?,
            OutputFormat::Table => {}
        }
        if self.ok {
            return Ok(());
        }
        Err(CliError::VerifyFailed {
            uuid: self.uuid,
            problem: self
                .problem
                .unwrap_or_else(|| "no problem was named".to_owned()),
        })
    }
}

/// The one-off identity in `path` (never echoed: it is a private key).
fn read_identity(path: &std::path::Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::InvalidArgument(format!(
            "cannot read the identity file {}: {e}",
            path.display()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(CliError::InvalidArgument(format!(
            "the identity file {} is empty",
            path.display()
        )));
    }
    Ok(text)
}

/// One archive as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveView {
    pub uuid: String,
    pub app: String,
    pub key: String,
    pub index_label: String,
    pub ts_ms: i64,
    pub size_bytes: u64,
    pub sha256: String,
    pub labels: Vec<String>,
    /// The latest verification (`berth archive verify`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckView>,
}

/// An archive's latest verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckView {
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub problem: String,
    pub checked_at_ms: i64,
    pub host_id: String,
    pub saga_id: String,
}

impl From<pb::Archive> for ArchiveView {
    fn from(a: pb::Archive) -> Self {
        ArchiveView {
            uuid: a.uuid,
            app: a.app,
            key: a.key,
            index_label: a.index_label,
            ts_ms: a.ts_ms,
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            labels: a.labels,
            last_check: a.last_check.map(|c| CheckView {
                ok: c.ok,
                problem: c.problem,
                checked_at_ms: c.checked_at_ms,
                host_id: c.host_id,
                saga_id: c.saga_id,
            }),
        }
    }
}

/// Archives as a table, newest first as given.
pub fn write_table(views: &[ArchiveView], now_ms: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let mut t = Table::new(&[
        "UUID", "APP", "INDEX", "SIZE", "TAKEN", "SHA256", "VERIFIED",
    ]);
    for v in views {
        let verified = match &v.last_check {
            None => String::new(),
            Some(c) if c.ok => format!("ok {}", relative_time(now_ms, c.checked_at_ms)),
            Some(c) => format!("FAILED {}", relative_time(now_ms, c.checked_at_ms)),
        };
        t.row(vec![
            v.uuid.clone(),
            v.app.clone(),
            v.index_label.clone(),
            human_bytes(v.size_bytes),
            relative_time(now_ms, v.ts_ms),
            v.sha256.chars().take(12).collect(),
            verified,
        ]);
    }
    t.write(out)
}

fn uuid(text: &str) -> Result<String, CliError> {
    uuid::Uuid::parse_str(text.trim())
        .map(|u| u.to_string())
        .map_err(|_| {
            CliError::InvalidArgument(format!(
                "{text:?} is not an archive uuid; `berth archive list` shows them"
            ))
        })
}

/// Carries out one `berth archive …` command.
pub async fn run(
    command: ArchiveCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // Arguments are checked before connecting: a refused one sends nothing.
    let uuid_arg = match &command {
        ArchiveCommand::Show { uuid: u } | ArchiveCommand::Link { uuid: u, .. } => Some(uuid(u)?),
        ArchiveCommand::Restore(a) => Some(uuid(&a.uuid)?),
        ArchiveCommand::Verify(a) => Some(uuid(&a.uuid)?),
        ArchiveCommand::Delete { uuid: Some(u), .. } => Some(uuid(u)?),
        _ => None,
    };
    let conn = Connection::open(settings).await?;
    let mut client = conn.archives();
    let err = |s| conn.rpc_error(s);
    let archives = |list: Vec<pb::Archive>, out: &mut dyn Write| -> Result<(), CliError> {
        let views: Vec<ArchiveView> = list.into_iter().map(ArchiveView::from).collect();
        match how.format {
            OutputFormat::Json => write_json(out, &views)?,
            OutputFormat::Table => write_table(&views, how.now_ms, out)?,
        }
        Ok(())
    };
    match command {
        ArchiveCommand::Create(a) => {
            let req = a.what.request(a.key);
            let started = client.create_archive(req).await.map_err(err)?.into_inner();
            follow(&conn, started, a.wait, how, out).await
        }
        ArchiveCommand::Restore(a) => {
            let identity = match &a.identity_file {
                None => String::new(),
                Some(path) => read_identity(path)?,
            };
            let req = pb::RestoreArchiveRequest {
                host_id: a.host.to_string(),
                uuid: uuid_arg.unwrap_or_default(),
                target_app: a.target_app.map(|t| t.to_string()).unwrap_or_default(),
                stack: a.stack.map(|s| s.to_string()).unwrap_or_default(),
                idempotency_key: a.key.unwrap_or_default(),
                identity,
            };
            let started = client.restore_archive(req).await.map_err(err)?.into_inner();
            follow(&conn, started, a.wait, how, out).await
        }
        ArchiveCommand::Verify(a) => {
            let uuid = uuid_arg.unwrap_or_default();
            let req = pb::VerifyArchiveRequest {
                host_id: a.host.to_string(),
                uuid: uuid.clone(),
                idempotency_key: a.key.unwrap_or_default(),
            };
            let started = client.verify_archive(req).await.map_err(err)?.into_inner();
            let Some(saga) = follow_to_end(&conn, started, a.wait, how, out).await? else {
                return Ok(());
            };
            VerifyView::from_output(&uuid, &saga.output_json)?.report(how.format, out)
        }
        ArchiveCommand::List { apps, index_label } => {
            let req = pb::ListArchivesRequest {
                apps: apps.iter().map(ToString::to_string).collect(),
                index_label: index_label.unwrap_or_default(),
                page: None,
            };
            let list = client.list_archives(req).await.map_err(err)?.into_inner();
            archives(list.archives, out)
        }
        ArchiveCommand::Show { .. } => {
            let a = client
                .get_archive(pb::GetArchiveRequest {
                    uuid: uuid_arg.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner();
            archives(vec![a], out)
        }
        ArchiveCommand::Link { expires, .. } => {
            let req = pb::GetArchiveLinkRequest {
                uuid: uuid_arg.unwrap_or_default(),
                expires_secs: u32::try_from(expires.as_secs()).unwrap_or(u32::MAX),
            };
            let link = client
                .get_archive_link(req)
                .await
                .map_err(err)?
                .into_inner();
            match how.format {
                OutputFormat::Json => write_json(
                    out,
                    &serde_json::json!({ "url": link.url, "expires_at_ms": link.expires_at_ms }),
                )?,
                OutputFormat::Table => writeln!(out, "{}", link.url)?,
            }
            Ok(())
        }
        ArchiveCommand::Delete { all_of, .. } => {
            let deleted = match all_of {
                Some(app) => {
                    client
                        .delete_app_archives(pb::DeleteAppArchivesRequest {
                            app: app.to_string(),
                        })
                        .await
                }
                None => {
                    client
                        .delete_archive(pb::DeleteArchiveRequest {
                            uuid: uuid_arg.unwrap_or_default(),
                        })
                        .await
                }
            }
            .map_err(err)?
            .into_inner();
            deleted_list(&deleted.deleted_uuids, how.format, out)
        }
        ArchiveCommand::Prune(a) => {
            let resp = client
                .prune_archives(a.request())
                .await
                .map_err(err)?
                .into_inner();
            prune::write(&resp, a.dry_run, how.format, out)
        }
    }
}

fn deleted_list(
    uuids: &[String],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => write_json(out, &serde_json::json!({ "deleted": uuids }))?,
        OutputFormat::Table => {
            for u in uuids {
                writeln!(out, "{u}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_render_newest_first_with_short_digests() {
        let v = ArchiveView {
            uuid: "0b5c6f3e-2f0a-4c1e-9d6e-1a2b3c4d5e6f".into(),
            app: "wiki".into(),
            key: "wiki:0b5c…:-:1700000000".into(),
            index_label: String::new(),
            ts_ms: 1_000,
            size_bytes: 2048,
            sha256: "abcdef0123456789".into(),
            labels: vec!["size:2048".into()],
            last_check: Some(CheckView {
                ok: false,
                problem: "archive x failed its checksum".into(),
                checked_at_ms: 1_000,
                host_id: "h".into(),
                saga_id: "s".into(),
            }),
        };
        let mut out = Vec::new();
        write_table(&[v], 3_601_000, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("wiki")
                && text.contains("abcdef012345")
                && !text.contains("abcdef0123456")
                && text.contains("FAILED"),
            "{text}"
        );
        assert!(uuid("not-a-uuid").is_err());
    }

    #[test]
    fn a_verify_s_verdict_is_read_from_its_saga_output() {
        let u = "0b5c6f3e-2f0a-4c1e-9d6e-1a2b3c4d5e6f";
        let good = r#"{"0:archive_verify":{"ok":true,"entries":7,"tar_bytes":10240,"bytes":900,"sha256":"ab"},"1:archive_check":{"ok":true}}"#;
        let v = VerifyView::from_output(u, good).unwrap();
        assert_eq!((v.ok, v.entries, v.bytes), (true, 7, 900));
        let mut out = Vec::new();
        v.report(OutputFormat::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("7 entries") && text.contains("10.0 KiB"),
            "{text}"
        );
        let bad = r#"{"0:archive_verify":{"ok":false,"problem":"archive x failed its checksum"}}"#;
        let e = VerifyView::from_output(u, bad)
            .unwrap()
            .report(OutputFormat::Table, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            crate::error::exit_code(&e),
            crate::error::exit::VERIFY_FAILED
        );
        assert!(e.to_string().contains("failed its checksum"), "{e}");
        assert!(VerifyView::from_output(u, "{}").is_err());
    }
}
