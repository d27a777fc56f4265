//! The `berth` command: its arguments, and `run`, which carries one command out.
//!
//! `main.rs` only parses, captures the environment, runs and maps the error to an exit code,
//! so tests drive [`run`] in process against a real tonic server.

pub mod archive;
pub mod config;
pub mod connect;
pub mod credential;
pub mod drift;
pub mod droplets;
pub mod duration;
pub mod error;
pub mod hosts;
pub mod output;
pub mod sagas;
pub mod schedules;
pub mod tokens;
pub mod warm;
pub mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use berth_shared::HostId;
use clap::{Args, Parser, Subcommand};

pub use crate::config::ProcessEnv;
pub use crate::error::{CliError, EXIT_CODES_HELP, exit, exit_code};
pub use crate::output::OutputFormat;

use crate::config::Given;
use crate::connect::Connection;

/// Talk to a Berth coordinator from a terminal or a CI script.
#[derive(Debug, Parser)]
#[command(name = "berth", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
    /// BERTH_TOKEN, XDG_CONFIG_HOME and HOME: filled by `main` from the process, by tests by hand.
    #[arg(skip)]
    pub env: ProcessEnv,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Coordinator gRPC URL; https:// uses TLS [default: http://127.0.0.1:7400]
    #[arg(long, global = true, env = "BERTH_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// File holding the bearer token (or set BERTH_TOKEN to the token itself)
    #[arg(long, global = true, env = "BERTH_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the private CA that signed the coordinator's certificate
    #[arg(long, global = true, env = "BERTH_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/berth/cli.toml or ~/.config/berth/cli.toml]
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format: a table for people, JSON for scripts
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Docker hosts whose agents dialled in
    #[command(subcommand, visible_alias = "host")]
    Hosts(HostsCommand),
    /// API tokens with a role (admin only)
    #[command(subcommand, visible_alias = "tokens")]
    Token(TokenCommand),
    /// Durable sagas: list, show, watch, start, and steer them as an operator
    #[command(subcommand, visible_alias = "saga")]
    Sagas(sagas::SagasCommand),
    /// DigitalOcean droplets: provision, destroy, snapshot, resize (each a saga), list
    #[command(subcommand, visible_alias = "droplets")]
    Droplet(droplets::DropletCommand),
    /// Warm snapshots: an app's last-known-good volumes on a host, restored before CI runs
    #[command(subcommand)]
    Warm(warm::WarmCommand),
    /// App archives (tar + zstd) in object storage: create, restore, list, link, delete, prune
    #[command(subcommand, visible_alias = "archives")]
    Archive(archive::ArchiveCommand),
    /// The drift inbox (admin only): where live resources differ from their spec; settle it
    #[command(subcommand)]
    Drift(drift::DriftCommand),
    /// Schedules: archives and warm snapshots started by a cron expression
    #[command(subcommand, visible_alias = "schedules")]
    Schedule(schedules::ScheduleCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum HostsCommand {
    /// List hosts: id, hostname, online or offline, last heartbeat, versions
    List,
    /// Show one host and, when it is online, what its agent says of it
    Show {
        /// The host's id
        #[arg(value_name = "HOST")]
        host: HostId,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once, alone on stdout
    Create(tokens::CreateArgs),
    /// List tokens (revoked ones too with --all)
    List {
        /// Include revoked tokens
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id
    Revoke {
        #[arg(value_name = "TOKEN_ID")]
        token_id: String,
    },
}

/// Carries out one command, writing its result to `out`. Connection settings come from the
/// flags and environment in `cli`, then the config file, then defaults.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let Cli {
        global,
        command,
        env,
    } = cli;
    let file = config::load(global.config.as_deref(), &env)?;
    let given = Given {
        coordinator: global.coordinator,
        token_file: global.token_file,
        ca_file: global.ca_file,
    };
    let stdout_is_terminal = env.stdout_is_terminal;
    let settings = config::resolve(given, env.token, file);
    let format = global.output;
    let now_ms = berth_shared::time::unix_ms(SystemTime::now());

    match command {
        Command::Hosts(HostsCommand::List) => {
            let conn = Connection::open(&settings).await?;
            hosts::list(&conn, format, now_ms, out).await
        }
        Command::Hosts(HostsCommand::Show { host }) => {
            let conn = Connection::open(&settings).await?;
            hosts::show(&conn, &host, format, now_ms, out).await
        }
        Command::Token(TokenCommand::Create(args)) => {
            // Checked before connecting: a refused combination sends nothing.
            let req = tokens::create_request(&args)?;
            let conn = Connection::open(&settings).await?;
            tokens::create(&conn, req, format, out).await
        }
        Command::Token(TokenCommand::List { all }) => {
            let conn = Connection::open(&settings).await?;
            tokens::list(&conn, all, format, now_ms, out).await
        }
        Command::Token(TokenCommand::Revoke { token_id }) => {
            if token_id.trim().is_empty() {
                return Err(CliError::InvalidArgument(
                    "the token id is empty; `berth token list` shows the ids".to_owned(),
                ));
            }
            let conn = Connection::open(&settings).await?;
            tokens::revoke(&conn, &token_id, format, out).await
        }
        Command::Sagas(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            sagas::run(command, &settings, how, out).await
        }
        Command::Droplet(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            droplets::run(command, &settings, how, out).await
        }
        Command::Warm(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            warm::run(command, &settings, how, out).await
        }
        Command::Archive(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            archive::run(command, &settings, how, out).await
        }
        Command::Drift(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            drift::run(command, &settings, how, out).await
        }
        Command::Schedule(command) => {
            let how = sagas::Presentation {
                format,
                terminal: stdout_is_terminal,
                now_ms,
            };
            schedules::run(command, &settings, how, out).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "berth",
            "hosts",
            "list",
            "--output",
            "json",
            "--coordinator",
            "http://c:1",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.coordinator.as_deref(), Some("http://c:1"));
    }

    #[test]
    fn roles_host_ids_and_ttls_are_checked_by_the_parser() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["berth", "token", "create"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
        };
        let e = parse(&["--role", "root"]).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.to_string().contains("unknown role"), "{e}");
        let e = parse(&["--role", "agent", "--host", "../etc"]).unwrap_err();
        assert!(e.to_string().contains("host id"), "{e}");
        let e = parse(&["--role", "ci", "--ttl", "30"]).unwrap_err();
        assert!(e.to_string().contains("lacks a unit"), "{e}");
        let cli = parse(&["--role", "ci", "--ttl", "12h"]).unwrap();
        let Command::Token(TokenCommand::Create(args)) = cli.command else {
            panic!("not token create");
        };
        assert_eq!(args.ttl.map(|d| d.as_secs()), Some(43_200));
    }

    #[test]
    fn long_help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("3  cannot connect to the coordinator"),
            "{help}"
        );
        assert!(help.contains("BERTH_TOKEN"), "{help}");
    }
}
