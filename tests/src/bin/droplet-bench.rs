//! `droplet-bench`: droplet sagas through a real coordinator against the simulator, with
//! DigitalOcean's realistic delays and 250-a-minute limit scaled in time. Reports the API calls
//! of each saga kind alone (and how many looks each wait took against the fewest its delays
//! allow), then a crowd of provisions sharing one token: calls per saga, refusals, time.
//!
//!   cargo run -p berth-tests --bin droplet-bench [-- --sagas 100 --scale 60]
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (see `.ci/pg-start.sh`); without it only SQLite runs.

use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_tests::cloud::crowd::{describe, provision_crowd, scale_config, scaled_sim};
use berth_tests::dosim::DoSim;
use berth_tests::{TestCoordinator, TestDb};
use clap::Parser;
use serde_json::{Value, json};

/// Measures droplet sagas against the simulator.
#[derive(Debug, Parser)]
#[command(name = "droplet-bench")]
struct Args {
    /// Provision sagas started at once in the crowd run.
    #[arg(long, default_value_t = 100)]
    sagas: usize,
    /// Time scale: DigitalOcean's delays and rate-limit windows last 1/scale as long.
    #[arg(long, default_value_t = 60.0)]
    scale: f64,
}

fn div_ceil(a: Duration, b: Duration) -> u64 {
    a.as_nanos().div_ceil(b.as_nanos().max(1)) as u64
}

/// Runs one saga alone and prints the calls it made, per operation.
async fn alone(c: &TestCoordinator, sim: &DoSim, kind: &str, inputs: Value) -> pb::Saga {
    sim.clear_log();
    let start = Instant::now();
    let id = c.start_saga(kind, inputs).await;
    let saga = c.wait_saga(&id, Duration::from_secs(300)).await;
    let calls = sim.calls_by_op();
    let line: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    println!(
        "  {kind:<18} {:<10} {:>6.2} s  {:>3} calls: {}",
        saga.status,
        start.elapsed().as_secs_f64(),
        calls.values().sum::<usize>(),
        line.join(", ")
    );
    saga
}

async fn run(db: &TestDb, args: &Args) -> anyhow::Result<()> {
    let sim = DoSim::start(scaled_sim(args.scale)).await?;
    let c = TestCoordinator::start_with_digitalocean_and(db, &sim, |config| {
        scale_config(config, args.scale, args.sagas);
    })
    .await;
    let t = sim.config().timings;
    let poll = Duration::from_millis(c.config.droplets.poll_interval_ms);
    println!(
        "## {:?}, scale {}: poll every {} ms, a minute's 250 requests in {} ms",
        db.kind,
        args.scale,
        poll.as_millis(),
        (60_000.0 / args.scale) as u64
    );
    println!("each kind alone:");
    let inputs = json!({"name": "bench-1", "region": "nyc3", "size_slug": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64"});
    let saga = alone(&c, &sim, "droplet.provision", inputs).await;
    let out: Value = serde_json::from_str(&saga.steps[1].output_json)?;
    let ready = t.active_after + t.ipv4_after_active;
    println!(
        "    wait_droplet_active: {} looks; delay/interval rounded up: {} (ready after {} ms)",
        out["polls"],
        div_ceil(ready, poll),
        ready.as_millis()
    );
    let droplet: Value = serde_json::from_str(&saga.steps[0].output_json)?;
    let id = droplet["droplet_id"].as_u64().unwrap_or_default();
    alone(&c, &sim, "droplet.snapshot", json!({"droplet_id": id})).await;
    println!(
        "    create_droplet_snapshot: {} action looks; delay/interval rounded up: {} (action {} ms)",
        sim.calls("actions_get"),
        div_ceil(t.snapshot_duration, poll),
        t.snapshot_duration.as_millis()
    );
    alone(
        &c,
        &sim,
        "droplet.resize",
        json!({"droplet_id": id, "size_slug": "s-2vcpu-2gb"}),
    )
    .await;
    println!(
        "    resize_droplet: {} looks for 3 actions; delay/interval rounded up: {} (each {} ms)",
        sim.calls("actions_get"),
        3 * div_ceil(t.action_duration, poll),
        t.action_duration.as_millis()
    );
    alone(&c, &sim, "droplet.destroy", json!({"droplet_id": id})).await;

    println!("{} provisions at once, one token:", args.sagas);
    let report = provision_crowd(&c, &sim, args.sagas, Duration::from_secs(600)).await;
    print!("{}", describe(&report));
    let violations = sim.violations();
    anyhow::ensure!(violations.is_empty(), "spec violations: {violations:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run(&TestDb::sqlite(), &args).await?;
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        run(&TestDb::postgres().await, &args).await?;
    } else {
        println!("PostgreSQL skipped: set TEST_DATABASE_URL (eval \"$(bash .ci/pg-start.sh)\")");
    }
    Ok(())
}
