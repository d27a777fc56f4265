//! `do-bench`: the DigitalOcean client against the simulator, measured. Reports the API calls
//! and time of listing 1,000 droplets through the rate limiter, the calls per operation of a
//! droplet's life (create, wait, snapshot, find, delete, destroy), and a crowd of callers
//! sharing one token under a (time-scaled) 250-a-minute limit.
//! `cargo run -p berth-tests --bin do-bench -- --droplets 1000`

use std::time::{Duration, Instant};

use berth_coordinator::digitalocean::{
    ClientSettings, CreateDroplet, DoApi, HttpDoApi, ImageSpec, Patience, RateBudget, RetryPolicy,
    TokenPurpose, find_droplet_snapshot,
};
use berth_tests::dosim::{DoSim, RateLimits, SimConfig, Timings};
use clap::Parser;

/// Measures the DigitalOcean client against the simulator.
#[derive(Debug, Parser)]
#[command(name = "do-bench")]
struct Args {
    /// Droplets to list.
    #[arg(long, default_value_t = 1000)]
    droplets: usize,
    /// Concurrent callers sharing one token.
    #[arg(long, default_value_t = 100)]
    callers: usize,
    /// Requests each caller sends.
    #[arg(long, default_value_t = 5)]
    requests: usize,
    /// Time scale of the crowd run: DigitalOcean's minute window lasts 60/scale seconds.
    #[arg(long, default_value_t = 30.0)]
    scale: f64,
    /// Poll interval of the lifecycle run, in milliseconds.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
}

const TOKEN: &str = "dop_v1_bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    list_many(&args).await?;
    lifecycle(&args).await?;
    crowd(&args).await?;
    Ok(())
}

/// The production defaults (240 a minute, bursts of 10) against DigitalOcean's real limits.
fn production_settings(sim: &DoSim) -> ClientSettings {
    ClientSettings {
        retry: RetryPolicy::default(),
        budget: RateBudget::default(),
        ..ClientSettings::new(sim.url().parse().expect("url"))
    }
}

async fn list_many(args: &Args) -> anyhow::Result<()> {
    println!(
        "## listing {} droplets (client defaults: 240/min, burst 10; DigitalOcean's limits)",
        args.droplets
    );
    for validate in [true, false] {
        list_rounds(args, validate).await?;
    }
    Ok(())
}

async fn list_rounds(args: &Args, validate: bool) -> anyhow::Result<()> {
    let config = SimConfig {
        validate_responses: validate,
        ..SimConfig::fast()
    };
    let sim = DoSim::start(config).await?;
    sim.seed_droplets(args.droplets, &["fleet"]);
    let api = sim.client_with(TOKEN, production_settings(&sim));
    let check = if validate { "on" } else { "off" };
    println!("simulator's response validation {check}:");
    for round in 1..=3 {
        sim.clear_log();
        let start = Instant::now();
        let listed = api.list_droplets_by_tag("fleet").await?;
        anyhow::ensure!(listed.len() == args.droplets, "listed {}", listed.len());
        println!(
            "round {round}: {} calls, {:.0} ms, 429s {}",
            sim.calls("droplets_list"),
            start.elapsed().as_secs_f64() * 1000.0,
            sim.count_status(429)
        );
    }
    let stats = api.limiter_stats(TokenPurpose::Read).expect("limiter");
    println!(
        "limiter: {} permits, {} waited, {:.0} ms waited in all",
        stats.acquired,
        stats.waited,
        stats.waited_total.as_secs_f64() * 1000.0
    );
    anyhow::ensure!(
        sim.violations().is_empty(),
        "spec violations: {:?}",
        sim.violations()
    );
    Ok(())
}

async fn poll<T>(
    interval: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(interval).await;
    }
}

async fn lifecycle(args: &Args) -> anyhow::Result<()> {
    let sim = DoSim::start(SimConfig::fast()).await?;
    let t = Timings::fast();
    let api: HttpDoApi = sim.client_with(TOKEN, production_settings(&sim));
    let interval = Duration::from_millis(args.poll_ms);
    let start = Instant::now();
    let created = api
        .create_droplet(&CreateDroplet {
            name: "bench-1".into(),
            region: Some("nyc3".into()),
            size: "s-1vcpu-1gb".into(),
            image: ImageSpec::Slug("ubuntu-24-04-x64".into()),
            ssh_keys: vec![],
            tags: vec!["berth-saga-bench0001".into(), "managed-by-berth".into()],
            user_data: None,
            vpc_uuid: None,
            monitoring: false,
            ipv6: false,
        })
        .await?;
    let id = created.droplet.id;
    poll(interval, async || {
        Ok(api.get_droplet(id).await?.is_ready().then_some(()))
    })
    .await?;
    let action = api.snapshot(id, "berth-snap-bench").await?;
    let done = poll(interval, async || {
        let a = api.get_action(action.id).await?;
        Ok(a.is_done().then_some(a))
    })
    .await?;
    let snap = find_droplet_snapshot(
        &api,
        id,
        "berth-snap-bench",
        done.started_at,
        Patience::new(100, interval),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("snapshot not found"))?;
    api.delete_snapshot(&snap.snapshot_id()).await?;
    api.destroy_droplet(id).await?;
    let took = start.elapsed();
    anyhow::ensure!(
        sim.droplets().is_empty() && sim.snapshots().is_empty(),
        "leftovers"
    );

    let minimum = |delay: Duration| delay.as_millis().div_ceil(interval.as_millis()) as usize + 1;
    println!();
    println!(
        "## a droplet's life, polling every {} ms (simulated delays: active {:?} + ip {:?}, snapshot {:?} + listing lag {:?})",
        args.poll_ms,
        t.active_after,
        t.ipv4_after_active,
        t.snapshot_duration,
        t.snapshot_listing_lag
    );
    for (op, n) in sim.calls_by_op() {
        println!("{op:<26} {n:>3} calls");
    }
    println!(
        "polls the delays alone call for (delay / interval + 1): droplet {} + action {} + listing {}; total {:.0} ms",
        minimum(t.active_after + t.ipv4_after_active),
        minimum(t.snapshot_duration),
        minimum(t.snapshot_listing_lag),
        took.as_secs_f64() * 1000.0
    );
    anyhow::ensure!(
        sim.violations().is_empty(),
        "spec violations: {:?}",
        sim.violations()
    );
    Ok(())
}

async fn crowd(args: &Args) -> anyhow::Result<()> {
    let scale = args.scale;
    let sim = DoSim::start(SimConfig::fast()).await?;
    sim.set_rate_limits(RateLimits {
        burst_window: Duration::from_secs_f64(60.0 / scale),
        ..RateLimits::digitalocean()
    });
    let mut settings = production_settings(&sim);
    settings.budget.per_minute = (240.0 * scale) as u32;
    settings.budget.max_pause = Duration::from_secs_f64(60.0 / scale);
    settings.retry.initial = Duration::from_millis(50);
    let api = sim.client_with(TOKEN, settings);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.callers)
        .map(|_| {
            let api = api.clone();
            let n = args.requests;
            tokio::spawn(async move {
                let t = Instant::now();
                for _ in 0..n {
                    api.get_account().await?;
                }
                Ok::<_, anyhow::Error>(t.elapsed())
            })
        })
        .collect();
    let mut finish = Vec::new();
    for t in tasks {
        finish.push(t.await??);
    }
    finish.sort();
    let took = start.elapsed();
    let sent = sim.request_log().len();
    println!();
    println!(
        "## {} callers × {} requests on one token, 250/min scaled ×{scale} (window {:.1} s), client 240/min scaled",
        args.callers,
        args.requests,
        60.0 / scale
    );
    println!(
        "{sent} requests in {:.2} s ({:.1}/s; the limit allows {:.1}/s), 429s {}, retries {}",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        250.0 * scale / 60.0,
        sim.count_status(429),
        api.stats().retries
    );
    println!(
        "callers finished: first {:.2} s, median {:.2} s, last {:.2} s",
        finish[0].as_secs_f64(),
        finish[finish.len() / 2].as_secs_f64(),
        finish[finish.len() - 1].as_secs_f64()
    );
    anyhow::ensure!(
        sim.violations().is_empty(),
        "spec violations: {:?}",
        sim.violations()
    );
    Ok(())
}
