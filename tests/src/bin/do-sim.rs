//! `do-sim`: the DigitalOcean simulator as a program, to demo Berth without an account:
//! `cargo run -p berth-tests --bin do-sim -- --listen 127.0.0.1:8800 --token-file /tmp/do-token`
//! then point the coordinator's `[digitalocean] api_url` at `http://127.0.0.1:8800`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_tests::dosim::{DoSim, RateLimits, Scope, SimConfig, Timings};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Roughly DigitalOcean's delays (30 s to active, a minute per snapshot).
    Realistic,
    /// Test speed (everything settles within half a second).
    Fast,
}

/// A DigitalOcean API simulator on loopback.
#[derive(Debug, Parser)]
#[command(name = "do-sim")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8800")]
    listen: SocketAddr,
    /// A file holding a token to accept for reads and writes (repeatable).
    #[arg(long = "token-file", required = true)]
    token_files: Vec<PathBuf>,
    /// A file holding a token to accept for reads only (repeatable).
    #[arg(long = "read-only-token-file")]
    read_only_token_files: Vec<PathBuf>,
    /// Delays to simulate.
    #[arg(long, value_enum, default_value = "realistic")]
    timings: Preset,
    /// Divide every delay by this factor (time acceleration).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Requests per token per minute (DigitalOcean: 250).
    #[arg(long, default_value_t = 250)]
    rate_per_minute: u32,
    /// Requests per token per hour (DigitalOcean: 5000).
    #[arg(long, default_value_t = 5000)]
    rate_per_hour: u32,
    /// Active droplets (tagged `seed`) to create at start.
    #[arg(long, default_value_t = 0)]
    seed: usize,
    /// The host named in pagination links.
    #[arg(long, default_value = "https://api.digitalocean.com")]
    links_base: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let timings = match args.timings {
        Preset::Realistic => Timings::realistic(),
        Preset::Fast => Timings::fast(),
    }
    .accelerated(args.speed);
    let config = SimConfig {
        timings,
        rate_limits: RateLimits {
            burst: args.rate_per_minute,
            long: args.rate_per_hour,
            ..RateLimits::digitalocean()
        },
        links_base: args.links_base.clone(),
        ..SimConfig::fast()
    };
    let sim = DoSim::bind(config, args.listen).await?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read token file {}", p.display()))
            .map(|t| t.trim().to_owned())
    };
    for p in &args.token_files {
        sim.add_token(&read(p)?, Scope::ReadWrite);
    }
    for p in &args.read_only_token_files {
        sim.add_token(&read(p)?, Scope::ReadOnly);
    }
    if args.seed > 0 {
        sim.seed_droplets(args.seed, &["seed"]);
    }
    println!("do-sim listening on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    let violations = sim.violations();
    println!(
        "do-sim stopping: {} droplet(s), {} snapshot(s), {} request(s), {} spec violation(s)",
        sim.droplets().len(),
        sim.snapshots().len(),
        sim.request_log().len(),
        violations.len()
    );
    for v in &violations {
        println!("  {v}");
    }
    sim.shutdown().await;
    anyhow::ensure!(violations.is_empty(), "requests broke DigitalOcean's spec");
    Ok(())
}
