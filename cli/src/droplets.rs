//! `berth droplet provision|destroy|snapshot|resize|list` (DropletService).
//!
//! Each change starts a saga and prints its id alone (with `--output json`, the saga
//! reference); `--wait` then follows it as `berth sagas watch` does, exiting 7 when it does
//! not complete. Arguments are checked here before anything is sent.

use std::io::Write;
use std::path::PathBuf;

use berth_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Settings;
use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, relative_time, write_json};
use crate::sagas::{Presentation, follow};

#[derive(Debug, Clone, Subcommand)]
pub enum DropletCommand {
    /// Create a droplet, wait until it is active with an address, and register it
    Provision(ProvisionArgs),
    /// Destroy a droplet Berth manages (admin only; cannot be undone)
    Destroy {
        #[arg(value_name = "DROPLET_ID")]
        droplet_id: u64,
        #[command(flatten)]
        start: StartArgs,
    },
    /// Snapshot a droplet; the snapshot's id is in the saga's output
    Snapshot {
        #[arg(value_name = "DROPLET_ID")]
        droplet_id: u64,
        /// Appended to the snapshot's name (berth-snap-<droplet>-<saga id>-<label>)
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        #[command(flatten)]
        start: StartArgs,
    },
    /// Resize a droplet: power off, resize, power on
    Resize {
        #[arg(value_name = "DROPLET_ID")]
        droplet_id: u64,
        /// The new size slug, e.g. s-2vcpu-4gb
        #[arg(long = "size", value_name = "SIZE_SLUG")]
        size_slug: String,
        /// Grow the disk too (permanent: the droplet can never shrink back)
        #[arg(long)]
        disk: bool,
        #[command(flatten)]
        start: StartArgs,
    },
    /// List the droplets in the inventory
    List(ListArgs),
}

/// What every change takes.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Idempotency key: the same key returns the saga it started, instead of a new one
    #[arg(long = "key", value_name = "IDEMPOTENCY_KEY")]
    pub key: Option<String>,
    /// Follow the saga until it ends (exit 7 if it does not complete)
    #[arg(long)]
    pub wait: bool,
}

/// `berth droplet provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// The droplet's hostname
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Region slug, e.g. fra1
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// Size slug, e.g. s-1vcpu-1gb
    #[arg(long = "size", value_name = "SIZE_SLUG")]
    pub size_slug: String,
    /// Image slug (ubuntu-24-04-x64) or numeric image or snapshot id
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// An SSH key on the account, by id or fingerprint (repeatable)
    #[arg(long = "ssh-key", value_name = "KEY")]
    pub ssh_keys: Vec<String>,
    /// An extra tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// File of cloud-init user data (at most 64 KiB)
    #[arg(long, value_name = "PATH")]
    pub user_data_file: Option<PathBuf>,
    #[command(flatten)]
    pub start: StartArgs,
}

/// `berth droplet list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only droplets carrying this tag
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Include droplets that were destroyed
    #[arg(long)]
    pub all: bool,
}

/// One droplet in `berth droplet list --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropletView {
    pub droplet_id: u64,
    pub name: String,
    pub region: String,
    pub size_slug: String,
    pub image: String,
    pub status: String,
    pub public_ipv4: Option<String>,
    pub tags: Vec<String>,
    pub last_seen_ms: i64,
    pub deleted: bool,
}

impl From<&pb::Droplet> for DropletView {
    fn from(d: &pb::Droplet) -> Self {
        DropletView {
            droplet_id: d.droplet_id,
            name: d.name.clone(),
            region: d.region.clone(),
            size_slug: d.size_slug.clone(),
            image: d.image.clone(),
            status: d.status.clone(),
            public_ipv4: (!d.public_ipv4.is_empty()).then(|| d.public_ipv4.clone()),
            tags: d.tags.clone(),
            last_seen_ms: d.last_seen_ms,
            deleted: d.deleted,
        }
    }
}

fn key(start: &StartArgs) -> String {
    start.key.clone().unwrap_or_default()
}

/// The provision request for `args`, with the user data read.
pub fn provision_request(args: &ProvisionArgs) -> Result<pb::ProvisionDropletRequest, CliError> {
    let user_data = match &args.user_data_file {
        None => String::new(),
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::InvalidArgument(format!(
                "cannot read --user-data-file {}: {e}; check the path",
                path.display()
            ))
        })?,
    };
    Ok(pb::ProvisionDropletRequest {
        name: args.name.clone(),
        region: args.region.clone(),
        size_slug: args.size_slug.clone(),
        image: args.image.clone(),
        ssh_keys: args.ssh_keys.clone(),
        tags: args.tags.clone(),
        user_data,
        idempotency_key: key(&args.start),
    })
}

/// Carries out one `berth droplet …` command.
pub async fn run(
    command: DropletCommand,
    settings: &Settings,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if let DropletCommand::List(args) = &command {
        let conn = Connection::open(settings).await?;
        return list(&conn, args, how, out).await;
    }
    if let DropletCommand::Provision(args) = &command {
        // Read before connecting: a missing file sends nothing.
        let req = provision_request(args)?;
        let conn = Connection::open(settings).await?;
        let answer = conn.droplets().provision_droplet(req).await;
        let started = answer.map_err(|s| conn.rpc_error(s))?.into_inner();
        return follow(&conn, started, args.start.wait, how, out).await;
    }
    let conn = Connection::open(settings).await?;
    let mut client = conn.droplets();
    let (answer, wait) = match command {
        DropletCommand::Destroy { droplet_id, start } => {
            let req = pb::DestroyDropletRequest {
                droplet_id,
                idempotency_key: key(&start),
            };
            (client.destroy_droplet(req).await, start.wait)
        }
        DropletCommand::Snapshot {
            droplet_id,
            label,
            start,
        } => {
            let req = pb::SnapshotDropletRequest {
                droplet_id,
                label: label.unwrap_or_default(),
                idempotency_key: key(&start),
            };
            (client.snapshot_droplet(req).await, start.wait)
        }
        DropletCommand::Resize {
            droplet_id,
            size_slug,
            disk,
            start,
        } => {
            let req = pb::ResizeDropletRequest {
                droplet_id,
                size_slug,
                disk,
                idempotency_key: key(&start),
            };
            (client.resize_droplet(req).await, start.wait)
        }
        DropletCommand::Provision(_) | DropletCommand::List(_) => unreachable!("handled above"),
    };
    let started = answer.map_err(|s| conn.rpc_error(s))?.into_inner();
    follow(&conn, started, wait, how, out).await
}

/// `berth droplet list --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropletListView {
    pub droplets: Vec<DropletView>,
}

async fn list(
    conn: &Connection,
    args: &ListArgs,
    how: Presentation,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut droplets = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = conn
            .droplets()
            .list_droplets(pb::ListDropletsRequest {
                tag: args.tag.clone().unwrap_or_default(),
                include_deleted: args.all,
                page: Some(pb::PageRequest {
                    page_size: 500,
                    page_token,
                }),
            })
            .await
            .map_err(|s| conn.rpc_error(s))?
            .into_inner();
        droplets.extend(page.droplets);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    match how.format {
        OutputFormat::Json => write_json(
            out,
            &DropletListView {
                droplets: droplets.iter().map(DropletView::from).collect(),
            },
        )?,
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "ID",
                "NAME",
                "REGION",
                "SIZE",
                "IMAGE",
                "STATUS",
                "IPV4",
                "LAST SEEN",
            ]);
            for d in &droplets {
                t.row(vec![
                    d.droplet_id.to_string(),
                    d.name.clone(),
                    d.region.clone(),
                    d.size_slug.clone(),
                    d.image.clone(),
                    d.status.clone(),
                    d.public_ipv4.clone(),
                    relative_time(how.now_ms, d.last_seen_ms),
                ]);
            }
            t.write(out)?;
        }
    }
    Ok(())
}
