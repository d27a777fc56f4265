//! `berth-coordinator`: parse arguments, load the config, then serve (or run an admin command).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_coordinator::config::{Config, Overrides};
use berth_coordinator::{auth, server, telemetry};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "berth-coordinator",
    version,
    about = "Berth's coordinator: sagas, hosts, cloud"
)]
struct Args {
    /// Config file (TOML).
    #[arg(
        long,
        env = "BERTH_COORDINATOR_CONFIG",
        default_value = "/etc/berth/coordinator.toml"
    )]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `data_dir`.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides the database URL (prefer `database_url_file` for URLs with a password).
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Manage API tokens directly in the store (bootstrap for the first admin token).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once on stdout.
    Create {
        /// admin, operator, ci or agent.
        #[arg(long)]
        role: berth_shared::Role,
        /// The host an agent token is bound to.
        #[arg(long)]
        host: Option<berth_shared::HostId>,
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
    };
    let result = Config::load(&args.config, &overrides).and_then(|config| {
        telemetry::init_logging(config.log_format);
        let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        rt.block_on(async move {
            match args.command.unwrap_or(Command::Serve) {
                Command::Serve => serve(config).await,
                Command::Token { command } => token(config, command).await,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-coordinator: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        telemetry::init_metrics(addr).map_err(anyhow::Error::msg)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        signal.cancel();
    });
    server::run(config, listener, shutdown, || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    })
    .await?;
    Ok(())
}

async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        role,
        host,
        description,
        ttl_secs,
    } = command;
    let store = server::open_store(&config).await?;
    let tokens = auth::Tokens::new(store.clone());
    let ttl = ttl_secs.map(std::time::Duration::from_secs);
    let (record, token) = tokens.issue(role, host.as_ref(), &description, ttl).await?;
    eprintln!(
        "created {} token {} (shown once; store it now)",
        record.role, record.token_id
    );
    println!("{token}");
    store.close().await;
    Ok(())
}
