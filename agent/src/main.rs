//! The `berth-agent` binary: arguments, config, tracing, signals, systemd readiness and
//! watchdog around [`berth_agent::Agent`]; `berth-agent enroll` around [`berth_agent::enroll`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_agent::{Agent, Config, LogFormat, Overrides};
use clap::{Parser, Subcommand};
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
        default_value = "/etc/berth/agent.toml",
        global = true
    )]
    config: PathBuf,
    /// Overrides `coordinator_url`. The agent's variables all start `BERTH_AGENT_`, so an
    /// agent started in a shell set up for the `berth` CLI does not take the CLI's values.
    #[arg(long, env = "BERTH_AGENT_COORDINATOR_URL")]
    coordinator_url: Option<String>,
    /// Overrides `token_file`.
    #[arg(long, env = "BERTH_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Overrides `host_id`.
    #[arg(long, env = "BERTH_AGENT_HOST_ID", global = true)]
    host_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Exchange a one-time enrollment token for this host's agent token, written to the
    /// config's `token_file` (mode 0600; a systemd credential path is written at its source).
    Enroll(EnrollArgs),
    /// The configuration file's keys, or a check of one file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every key with its type, default and meaning (read from the code).
    Reference {
        /// `text`, or `json` (an array of {table, key, type, default, doc}).
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Read the --config file (with the flags and environment over it) and check it as `run`
    /// does before it opens anything the file names; prints what is wrong, exit 2.
    Check,
}

#[derive(Debug, clap::Args)]
struct EnrollArgs {
    /// The coordinator, `https://host:port` (default: the config's `coordinator_url`).
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// A file holding the one-time enrollment token (`berth-coordinator token create --role
    /// agent --host H --enrollment`); `-` or absent: read it from standard input. Never on
    /// the command line or in the environment, where other users and logs can see it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA that signed the coordinator's certificate (default: the config's `[tls] ca_file`).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Where to write the agent token instead of the config's `token_file` (no environment
    /// variable on purpose: a stray one must not redirect a secret).
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let cut = berth_agent::volume::TestCut::ENV;
    if let Err(e) = berth_agent::volume::TestCut::apply_env(std::env::var(cut).ok()) {
        eprintln!("berth-agent: {e}");
        return ExitCode::from(2);
    }
    match args.command.take() {
        Some(Command::Enroll(enroll)) => return enroll_host(args, enroll).await,
        Some(Command::Config(ConfigCommand::Reference { output })) => {
            let entries = berth_shared::config_doc::reference::<Config>();
            let title = "berth-agent configuration (TOML; unknown keys are refused). \
                         Each key: `name = default  (type)`, then what it does.";
            return berth_shared::config_doc::print(title, &entries, output == "json");
        }
        Some(Command::Config(ConfigCommand::Check)) => {
            let path = args.config.clone();
            return match Config::load_with(&path, overrides(args)) {
                Ok(_) => {
                    println!("{}: valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth-agent: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Run) | None => {}
    }
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
    tokio::spawn(keep_watchdog(shutdown.clone()));
    tokio::spawn(cancel_on_signal(shutdown));
    match agent.join().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: {}", berth_agent::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn overrides(args: Args) -> Overrides {
    Overrides {
        coordinator_url: args.coordinator_url,
        token_file: args.token_file,
        host_id: args.host_id,
    }
}

fn start(args: Args, shutdown: CancellationToken) -> anyhow::Result<Agent> {
    let path = args.config.clone();
    let config = Config::load_with(&path, overrides(args))?;
    init_tracing(config.log_format);
    Agent::start(config, shutdown).context("cannot start")
}

/// `berth-agent enroll`: exit 0 enrolled, 2 bad config, 3 coordinator unreachable, 4 refused,
/// 1 anything else.
async fn enroll_host(args: Args, enroll: EnrollArgs) -> ExitCode {
    let config = match enroll_config(&args, enroll.agent_token_file.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    let url = enroll
        .coordinator
        .unwrap_or_else(|| config.coordinator_url.clone());
    let token = match berth_agent::enroll::read_enrollment_token(enroll.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berth-agent: {}", berth_agent::chain(&e));
            return ExitCode::from(2);
        }
    };
    let opts = berth_agent::enroll::EnrollOptions {
        coordinator_url: url.clone(),
        token,
        ca_file: enroll.ca_file,
    };
    match berth_agent::enroll::enroll(&config, &opts).await {
        Ok(done) => {
            eprintln!(
                "berth-agent: enrolled host {}; its agent token is in {} (mode 0600)",
                done.host_id,
                done.token_file.display()
            );
            if let Some(f) = &done.host_id_file {
                eprintln!("berth-agent: this host's id is now kept in {}", f.display());
            }
            if done.token_file != config.token_file {
                eprintln!(
                    "berth-agent: systemd hands it to the service as {}",
                    config.token_file.display()
                );
            }
            if config.coordinator_url.trim() != url.trim() {
                eprintln!(
                    "berth-agent: note: {} dials {:?}; set coordinator_url = {:?} there before \
                     starting the agent",
                    args.config.display(),
                    config.coordinator_url,
                    url.trim()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-agent: {}", berth_agent::chain(&e));
            let code = match &e {
                e if e.is_refusal() => 4,
                berth_agent::enroll::EnrollError::Agent(berth_agent::AgentError::Connect(_)) => 3,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// The config as enrollment needs it: parsed with the overrides, not checked for running.
fn enroll_config(args: &Args, token_file: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut config = Config::parse(&text, &path.display().to_string())?;
    config.apply(Overrides {
        coordinator_url: args.coordinator_url.clone(),
        token_file,
        host_id: args.host_id.clone(),
    });
    anyhow::ensure!(
        !config.token_file.as_os_str().is_empty(),
        "{}: token_file is required: it is where the agent token is written",
        path.display()
    );
    Ok(config)
}

/// With `WatchdogSec=` set, tells systemd every half interval that the runtime still turns.
async fn keep_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "cannot notify the systemd watchdog");
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
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
