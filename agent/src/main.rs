//! The `berth-agent` binary: arguments, config, tracing, signals and systemd readiness
//! around [`berth_agent::Agent`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_agent::{Agent, Config, LogFormat, Overrides};
use clap::Parser;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Berth's host agent: connects this Docker host to the Berth coordinator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(
        long,
        env = "BERTH_AGENT_CONFIG",
        default_value = "/etc/berth/agent.toml"
    )]
    config: PathBuf,
    /// Overrides `coordinator_url`.
    #[arg(long, env = "BERTH_COORDINATOR_URL")]
    coordinator_url: Option<String>,
    /// Overrides `token_file`.
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Overrides `host_id`.
    #[arg(long, env = "BERTH_HOST_ID")]
    host_id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let agent = match start(args, shutdown.clone()) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("berth-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    tokio::spawn(cancel_on_signal(shutdown));
    match agent.join().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: {}", berth_agent::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args, shutdown: CancellationToken) -> anyhow::Result<Agent> {
    let overrides = Overrides {
        coordinator_url: args.coordinator_url,
        token_file: args.token_file,
        host_id: args.host_id,
    };
    let config = Config::load_with(&args.config, overrides)?;
    init_tracing(config.log_format);
    Agent::start(config, shutdown).context("cannot start")
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
    }
    shutdown.cancel();
}
