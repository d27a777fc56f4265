//! `berth-warm`: warm snapshots from the command line on this host, without a coordinator —
//! for operators, for the agent's crash tests, and `bench`, the side-by-side benchmark
//! against GNU tar. Prints the outcome as JSON on stdout, progress and peak memory on stderr.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::warm::{
    AppTarget, Progress, RestoreRequest, SnapshotRequest, Warm, WarmConfig, WarmError,
    WarmErrorKind,
};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Warm snapshots of an app's Docker volumes on this host.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Snapshot every volume of the app's stack (the app must be undeployed).
    Snapshot {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        commit: Option<String>,
        #[arg(long)]
        version: Option<String>,
    },
    /// Restore the app's snapshot into its stack's volumes (the app must be undeployed).
    Restore {
        #[command(flatten)]
        target: Target,
        /// Extract the snapshot even where ready spares would be swapped in.
        #[arg(long)]
        no_spare: bool,
    },
    /// Build the ready spares of the app's snapshot now (the agent does it in the
    /// background); prints each spare's stamp.
    Spare {
        #[command(flatten)]
        target: Target,
        /// Upper bound of the build's writes in MiB a second (0: none).
        #[arg(long, default_value_t = 0)]
        max_mib_per_sec: u64,
        /// Build no spare that would leave less free than this on a volume's filesystem.
        #[arg(long, default_value_t = 0)]
        min_free_bytes: u64,
    },
    /// List the snapshots under the warm root.
    List {
        #[arg(long, default_value = "/var/lib/ci-warm")]
        warm_root: PathBuf,
        #[arg(long)]
        app: Option<String>,
    },
    /// Measure snapshot and restore against GNU tar, side by side.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct Target {
    #[arg(long, default_value = "/var/lib/ci-warm")]
    warm_root: PathBuf,
    /// The app's folder under the warm root.
    #[arg(long)]
    app: String,
    /// The app's domain (its stack is the domain with '.' replaced by '_').
    #[arg(long, default_value = "")]
    domain: String,
    /// The stack or compose project, when it is not derived from the domain.
    #[arg(long)]
    stack: Option<String>,
    /// Wait this long for a stack being removed to be gone.
    #[arg(long, default_value_t = 0)]
    wait_secs: u64,
    /// Volumes tarred or extracted at once (default: CPUs, 2 to 4).
    #[arg(long)]
    parallelism: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cut = berth_agent::volume::TestCut::ENV;
    if let Err(e) = berth_agent::volume::TestCut::apply_env(std::env::var(cut).ok()) {
        eprintln!("berth-warm: {e}");
        return ExitCode::from(2);
    }
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let code = match run(cli.command, cancel).await {
        Ok(json) => {
            if !json.is_empty() {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-warm: {}", berth_agent::chain(&e));
            ExitCode::from(exit_code(&e))
        }
    };
    eprintln!("peak_rss_kib {}", bench::peak_rss_kib().unwrap_or(0));
    code
}

async fn run(command: Command, cancel: CancellationToken) -> Result<String, WarmError> {
    match command {
        Command::Snapshot {
            target,
            commit,
            version,
        } => {
            let (warm, app) = open(&target).await?;
            let req = SnapshotRequest {
                target: app,
                commit,
                version,
                spare: true,
                wait_undeployed: Duration::from_secs(target.wait_secs),
            };
            let progress = Arc::new(Progress::new());
            let printer = tokio::spawn(print_progress(progress.clone()));
            let out = warm.snapshot(&req, progress, cancel).await;
            printer.abort();
            Ok(json(&out?))
        }
        Command::Spare {
            target,
            max_mib_per_sec,
            min_free_bytes,
        } => {
            let (warm, app) = open(&target).await?;
            let config = WarmConfig {
                spares: true,
                spare_min_free_bytes: min_free_bytes,
                spare_max_mib_per_sec: max_mib_per_sec,
            };
            let progress = Arc::new(Progress::paced(max_mib_per_sec << 20, cancel.clone()));
            let printer = tokio::spawn(print_progress(progress.clone()));
            let out = warm.build_spares(&app, &config, &progress, &cancel).await;
            printer.abort();
            let out = out?;
            Ok(
                serde_json::json!({ "state": out.state.to_string(), "built": out.built })
                    .to_string(),
            )
        }
        Command::Restore { target, no_spare } => {
            let (warm, app) = open(&target).await?;
            let req = RestoreRequest {
                target: app,
                use_spare: !no_spare,
                wait_undeployed: Duration::from_secs(target.wait_secs),
            };
            let progress = Arc::new(Progress::new());
            let printer = tokio::spawn(print_progress(progress.clone()));
            let started = std::time::Instant::now();
            let out = warm.restore(&req, progress, cancel).await;
            eprintln!("restore_ms {:.3}", started.elapsed().as_secs_f64() * 1000.0);
            printer.abort();
            // The volumes are restored: say so now, then wait for the old contents to go.
            println!("{}", json(&out?));
            warm.finish_cleanup().await;
            Ok(String::new())
        }
        Command::List { warm_root, app } => {
            let app = app
                .map(berth_shared::AppName::new)
                .transpose()
                .map_err(|source| WarmError::Name {
                    what: "app name",
                    source,
                })?;
            let listed = tokio::task::spawn_blocking(move || {
                berth_agent::warm::list_snapshots(&warm_root, app.as_ref())
            })
            .await??;
            Ok(json(&listed))
        }
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn open(t: &Target) -> Result<(Warm, AppTarget), WarmError> {
    let target = AppTarget::new(&t.app, &t.domain, t.stack.as_deref())?;
    let mut warm = Warm::connect(&t.warm_root).await?;
    if let Some(n) = t.parallelism {
        warm = warm.with_parallelism(n);
    }
    Ok((warm, target))
}

async fn print_progress(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let p = progress.snapshot();
        eprintln!(
            "progress phase={:?} bytes={}/{} entries={}/{}",
            p.phase, p.bytes_done, p.bytes_total, p.entries_done, p.entries_total
        );
    }
}

/// Exit codes a script can branch on.
fn exit_code(e: &WarmError) -> u8 {
    match e.kind() {
        WarmErrorKind::Invalid => 2,
        WarmErrorKind::Conflict => 3,
        WarmErrorKind::NotFound => 4,
        WarmErrorKind::NoSpace => 5,
        WarmErrorKind::Cancelled => 6,
        WarmErrorKind::Transient => 1,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("outcomes serialize")
}
