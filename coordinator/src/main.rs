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
    /// The configuration file's keys, or a check of one file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every key with its type, default and meaning (read from the code).
    Reference {
        /// `text`, or `json` (an array of {table, key, type, default, doc}).
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Read the --config file and check it as `serve` does before it opens anything the file
    /// names; prints what is wrong, exit 2.
    Check,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once on stdout.
    Create {
        /// admin, operator, ci or agent.
        #[arg(long)]
        role: berth_shared::Role,
        /// The host an agent token is bound to; for a ci token, a host its warm restores may
        /// run on (repeat for several; none: any host).
        #[arg(long)]
        host: Vec<berth_shared::HostId>,
        /// For a ci token: an app its warm restores may restore (repeat for several; none:
        /// any app).
        #[arg(long)]
        app: Vec<berth_shared::AppName>,
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime: 90s, 30m, 12h, 7d, 2w or sums like 1h30m (default: no expiry; 1h for
        /// an enrollment token).
        #[arg(long, value_parser = parse_ttl, conflicts_with = "ttl_secs")]
        ttl: Option<std::time::Duration>,
        /// Lifetime in seconds.
        #[arg(long, hide = true)]
        ttl_secs: Option<u64>,
        /// A one-time enrollment token for `berth-agent enroll` on the --host: it buys that
        /// host's long-lived agent token once, and can do nothing else.
        #[arg(long, requires = "host")]
        enrollment: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Config {
        command: ConfigCommand::Reference { output },
    }) = &args.command
    {
        let entries = berth_shared::config_doc::reference::<Config>();
        let title = "berth-coordinator configuration (TOML; unknown keys are refused). \
                     Each key: `name = default  (type)`, then what it does.";
        return berth_shared::config_doc::print(title, &entries, output == "json");
    }
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
                Command::Config {
                    command: ConfigCommand::Check,
                } => {
                    println!("{}: valid", args.config.display());
                    Ok(())
                }
                Command::Config {
                    command: ConfigCommand::Reference { .. },
                } => unreachable!("answered above"),
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
    let watchdog = shutdown.clone();
    server::run(config, listener, shutdown, move || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tokio::spawn(keep_watchdog(watchdog));
    })
    .await?;
    Ok(())
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
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "cannot notify the systemd watchdog");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// `--ttl`: a positive duration made of `<number><unit>` parts (units s, m, h, d, w).
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration; use e.g. 30m, 12h, 7d or 1h30m");
    let (mut total, mut number) = (0u64, None::<u64>);
    for c in text.trim().chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total = number
            .take()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(bad)?;
    }
    if number.is_some() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        role,
        host,
        app,
        description,
        ttl,
        ttl_secs,
        enrollment,
    } = command;
    // An agent token is bound to one host; a ci token is scoped to its hosts and apps.
    let (host, scope) = match role {
        berth_shared::Role::Ci => (
            None,
            berth_coordinator::store::TokenScope {
                hosts: host.iter().map(|h| h.to_string()).collect(),
                apps: app.iter().map(|a| a.to_string()).collect(),
            },
        ),
        _ => {
            anyhow::ensure!(
                app.is_empty(),
                "--app scopes a ci token; a {role} token has no app scope"
            );
            anyhow::ensure!(host.len() <= 1, "a {role} token takes at most one --host");
            (host.into_iter().next(), Default::default())
        }
    };
    let ttl = ttl.or(ttl_secs.map(std::time::Duration::from_secs));
    let store = server::open_store(&config).await?;
    let tokens = auth::Tokens::new(store.clone());
    let (record, token) = match (enrollment, &host) {
        (true, Some(host)) => {
            anyhow::ensure!(
                role == berth_shared::Role::Agent,
                "an enrollment token buys an agent token: use --role agent"
            );
            let ttl = ttl.unwrap_or(std::time::Duration::from_secs(3600));
            tokens.issue_enrollment(host, &description, ttl).await?
        }
        _ => {
            tokens
                .issue_scoped(role, host.as_ref(), &scope, &description, ttl)
                .await?
        }
    };
    if enrollment {
        eprintln!(
            "created enrollment token {} for host {} (shown once; it works once), expires at {}; \
             on the host run: berth-agent enroll --coordinator URL --token-file FILE (or the \
             token on standard input)",
            record.token_id,
            record.host_id.as_deref().unwrap_or_default(),
            record
                .expires_at_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        );
    } else {
        let scope = match record.scope.is_unlimited() {
            true => String::new(),
            false => format!(
                ", scoped to hosts [{}] and apps [{}]",
                record.scope.hosts.join(", "),
                record.scope.apps.join(", ")
            ),
        };
        eprintln!(
            "created {} token {}{scope} (shown once; store it now)",
            record.role, record.token_id
        );
    }
    println!("{token}");
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_like_the_cli_durations() {
        assert_eq!(parse_ttl("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_ttl("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_ttl("30d").unwrap().as_secs(), 30 * 86_400);
        for bad in ["", "0s", "12", "1x", "h", "1h3", "99999999999999999999s"] {
            let err = parse_ttl(bad).unwrap_err();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
    }
}
