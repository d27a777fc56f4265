//! `berth hosts list|show`: the Docker hosts whose agents dialled in (HostService).

use std::io::Write;

use berth_proto::v1 as pb;
use berth_shared::HostId;
use serde::Serialize;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, human_bytes, relative_time, write_fields, write_json};

/// One host as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub host_id: String,
    pub hostname: String,
    pub online: bool,
    pub last_heartbeat_ms: i64,
    pub first_seen_ms: i64,
    pub agent_version: String,
    pub docker_version: String,
    pub capabilities: Vec<String>,
    /// The coordinator instance holding the agent's stream; null when offline.
    pub connected_to: Option<String>,
}

impl From<&pb::Host> for HostView {
    fn from(h: &pb::Host) -> Self {
        Self {
            host_id: h.host_id.clone(),
            hostname: h.hostname.clone(),
            online: h.online,
            last_heartbeat_ms: h.last_heartbeat_ms,
            first_seen_ms: h.first_seen_ms,
            agent_version: h.agent_version.clone(),
            docker_version: h.docker_version.clone(),
            capabilities: h.capabilities.clone(),
            connected_to: non_empty(&h.connected_to),
        }
    }
}

/// What the host's agent said of it, as `--output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DescriptionView {
    pub docker_version: String,
    pub docker_api_version: String,
    pub os: String,
    pub kernel_version: String,
    pub architecture: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub containers_running: u32,
    pub containers_total: u32,
    pub swarm_active: bool,
    pub storage_driver: String,
    pub warm_root: String,
    pub warm_root_free_bytes: u64,
    pub warm_root_total_bytes: u64,
}

impl From<&pb::HostDescription> for DescriptionView {
    fn from(d: &pb::HostDescription) -> Self {
        Self {
            docker_version: d.docker_version.clone(),
            docker_api_version: d.docker_api_version.clone(),
            os: d.os.clone(),
            kernel_version: d.kernel_version.clone(),
            architecture: d.architecture.clone(),
            cpus: d.cpus,
            memory_bytes: d.memory_bytes,
            containers_running: d.containers_running,
            containers_total: d.containers_total,
            swarm_active: d.swarm_active,
            storage_driver: d.storage_driver.clone(),
            warm_root: d.warm_root.clone(),
            warm_root_free_bytes: d.warm_root_free_bytes,
            warm_root_total_bytes: d.warm_root_total_bytes,
        }
    }
}

/// `berth hosts show --output json`: the host and its description, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDetailView {
    pub host: HostView,
    pub description: Option<DescriptionView>,
    pub description_error: Option<String>,
}

impl TryFrom<&pb::HostDetail> for HostDetailView {
    type Error = CliError;
    fn try_from(d: &pb::HostDetail) -> Result<Self, CliError> {
        let host = d.host.as_ref().ok_or(CliError::Protocol("the host"))?;
        Ok(Self {
            host: host.into(),
            description: d.description.as_ref().map(DescriptionView::from),
            description_error: non_empty(&d.description_error),
        })
    }
}

/// `berth hosts list`.
pub async fn list(
    conn: &Connection,
    format: OutputFormat,
    now_ms: i64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let hosts = conn
        .hosts()
        .list_hosts(pb::ListHostsRequest {})
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner()
        .hosts;
    match format {
        OutputFormat::Table => write_host_table(&hosts, now_ms, out)?,
        OutputFormat::Json => {
            let views: Vec<HostView> = hosts.iter().map(HostView::from).collect();
            write_json(out, &views)?;
        }
    }
    Ok(())
}

/// `berth hosts show HOST`.
pub async fn show(
    conn: &Connection,
    host: &HostId,
    format: OutputFormat,
    now_ms: i64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let detail = conn
        .hosts()
        .get_host(pb::GetHostRequest {
            host_id: host.to_string(),
        })
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner();
    let view = HostDetailView::try_from(&detail)?;
    match format {
        OutputFormat::Table => write_host_detail(&view, now_ms, out)?,
        OutputFormat::Json => write_json(out, &view)?,
    }
    Ok(())
}

/// The `hosts list` table; `now_ms` makes heartbeats relative.
pub fn write_host_table(
    hosts: &[pb::Host],
    now_ms: i64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut table = Table::new(&[
        "HOST ID",
        "HOSTNAME",
        "STATUS",
        "LAST HEARTBEAT",
        "AGENT",
        "DOCKER",
    ]);
    for h in hosts {
        table.row(vec![
            h.host_id.clone(),
            h.hostname.clone(),
            status(h.online).to_owned(),
            relative_time(now_ms, h.last_heartbeat_ms),
            h.agent_version.clone(),
            h.docker_version.clone(),
        ]);
    }
    table.write(out)
}

/// The `hosts show` block: the host's fields, then its description or why there is none.
pub fn write_host_detail(
    view: &HostDetailView,
    now_ms: i64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let h = &view.host;
    let status = match &h.connected_to {
        Some(c) if h.online => format!("online (connected to {c})"),
        _ => status(h.online).to_owned(),
    };
    write_fields(
        out,
        0,
        &[
            ("host id", h.host_id.clone()),
            ("hostname", h.hostname.clone()),
            ("status", status),
            ("last heartbeat", relative_time(now_ms, h.last_heartbeat_ms)),
            ("first seen", relative_time(now_ms, h.first_seen_ms)),
            ("agent", h.agent_version.clone()),
            ("docker", h.docker_version.clone()),
            ("capabilities", h.capabilities.join(", ")),
        ],
    )?;
    match (&view.description, &view.description_error) {
        (Some(d), _) => {
            writeln!(out, "description:")?;
            write_fields(out, 2, &description_fields(d))
        }
        (None, Some(why)) => writeln!(out, "description:  unavailable: {why}"),
        (None, None) => writeln!(out, "description:  unavailable"),
    }
}

fn description_fields(d: &DescriptionView) -> Vec<(&'static str, String)> {
    let api = if d.docker_api_version.is_empty() {
        String::new()
    } else {
        format!(" (api {})", d.docker_api_version)
    };
    let warm_root = if d.warm_root.is_empty() {
        String::new()
    } else {
        format!(
            "{} ({} free of {})",
            d.warm_root,
            human_bytes(d.warm_root_free_bytes),
            human_bytes(d.warm_root_total_bytes)
        )
    };
    vec![
        ("docker", format!("{}{api}", d.docker_version)),
        ("os", d.os.clone()),
        ("kernel", d.kernel_version.clone()),
        ("arch", d.architecture.clone()),
        ("cpus", d.cpus.to_string()),
        ("memory", human_bytes(d.memory_bytes)),
        (
            "containers",
            format!("{} running of {}", d.containers_running, d.containers_total),
        ),
        (
            "swarm",
            if d.swarm_active { "active" } else { "inactive" }.to_owned(),
        ),
        ("storage driver", d.storage_driver.clone()),
        ("warm root", warm_root),
    ]
}

fn status(online: bool) -> &'static str {
    if online { "online" } else { "offline" }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests;
