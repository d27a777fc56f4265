//! `sync-bench`: the inventory sync and drift detection against the simulator, measured. Lists
//! N droplets through the production rate budget (240 a minute, bursts of 10) against
//! DigitalOcean's own limits, and reports API calls and time for a cold sync, a warm sync, a
//! sync that finds droplets gone, and detection over the specs, beside the bare listing (what
//! `doctl compute droplet list` does) as a ratio.
//! `cargo run --release -p berth-tests --bin sync-bench -- --droplets 1000 [--postgres]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_coordinator::digitalocean::{ClientSettings, DoApi, DropletId, RateBudget, RetryPolicy};
use berth_coordinator::drift::{Inventory, InventoryConfig, SyncOutcome, detect_all};
use berth_coordinator::store::{Store, Writer};
use berth_tests::TestDb;
use berth_tests::dosim::{DoSim, SimConfig};
use clap::Parser;
use serde_json::json;

/// Measures the inventory sync and drift detection against the simulator.
#[derive(Debug, Parser)]
#[command(name = "sync-bench")]
struct Args {
    /// Droplets in the simulated account.
    #[arg(long, default_value_t = 1000)]
    droplets: usize,
    /// Droplets given a desired spec (detection compares these).
    #[arg(long, default_value_t = 200)]
    specs: usize,
    /// Of those, how many are resized behind Berth's back (drift).
    #[arg(long, default_value_t = 20)]
    drifted: usize,
    /// Droplets destroyed out of band before the last sync.
    #[arg(long, default_value_t = 10)]
    gone: usize,
    /// Use PostgreSQL at TEST_DATABASE_URL instead of a SQLite file.
    #[arg(long)]
    postgres: bool,
}

const TOKEN: &str = "dop_v1_sync_bench";

fn line(what: &str, took: Duration, calls: &std::collections::BTreeMap<String, usize>) {
    let total: usize = calls.values().sum();
    let by_op: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    println!(
        "{what:<34} {:>8.0} ms  {total:>5} calls  ({})",
        took.as_secs_f64() * 1000.0,
        by_op.join(", ")
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.specs <= args.droplets && args.drifted + args.gone <= args.specs);
    let sim = DoSim::start(SimConfig::fast()).await?;
    let ids = sim.seed_droplets(args.droplets, &["fleet"]);
    let settings = ClientSettings {
        retry: RetryPolicy::default(),
        budget: RateBudget::default(),
        ..ClientSettings::new(sim.url().parse()?)
    };
    let api = Arc::new(sim.client_with(TOKEN, settings));
    let db = match args.postgres {
        true => TestDb::postgres().await,
        false => TestDb::sqlite(),
    };
    let store = Store::open(&db.url).await?;
    let inventory = Inventory::new(
        store.clone(),
        Some(api.clone() as Arc<dyn DoApi>),
        InventoryConfig::default(),
        "sync-bench",
    );
    println!(
        "## {} droplets, {} with a spec; {:?}; client budget 240/min, burst 10; DigitalOcean's limits",
        args.droplets, args.specs, db.kind
    );

    sim.clear_log();
    let start = Instant::now();
    let listed = api.list_droplets().await?;
    let bare = start.elapsed();
    anyhow::ensure!(listed.len() == args.droplets);
    line("bare listing (doctl's work)", bare, &sim.calls_by_op());

    let run = async |what: &str, skip_detection: bool| -> anyhow::Result<SyncOutcome> {
        sim.clear_log();
        let start = Instant::now();
        let outcome = inventory.sync_now(skip_detection).await?;
        let took = start.elapsed();
        line(what, took, &sim.calls_by_op());
        println!(
            "{:<34} sync {:?} ({:.1}x the bare listing)",
            "",
            outcome.sync,
            took.as_secs_f64() / bare.as_secs_f64()
        );
        Ok(outcome)
    };
    let cold = run("cold sync (every droplet new)", true).await?;
    anyhow::ensure!(cold.sync.created as usize == args.droplets);
    run("warm sync (nothing changed)", true).await?;

    let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
    let writer = Writer {
        fence: None,
        saga_id: None,
        now_ms: now,
    };
    for id in &ids[..args.specs] {
        let spec = json!({"size_slug": "s-1vcpu-1gb", "region": "nyc3", "tags": ["fleet"]});
        let spec = spec.as_object().expect("an object").clone();
        store
            .record_desired_spec(writer, &format!("do:droplet:{id}"), &spec, "bench")
            .await?;
    }
    for id in &ids[..args.drifted] {
        sim.set_droplet_size(*id, "s-2vcpu-2gb");
    }
    let gone = &ids[args.drifted..args.drifted + args.gone];
    for id in gone {
        api.destroy_droplet(DropletId(*id)).await?;
    }
    // Past the simulator's delete linger, so the listing no longer shows them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = run("sync + detection (drift, gone)", false).await?;
    let d = found.detect.expect("detection ran");
    println!("{:<34} detection {d:?}", "");
    anyhow::ensure!(found.sync.gone as usize == args.gone, "{found:?}");
    anyhow::ensure!(d.opened as usize == args.drifted + args.gone, "{d:?}");

    let start = Instant::now();
    let again = detect_all(&store).await?;
    println!(
        "{:<34} {:>8.0} ms  {again:?}",
        "detection alone (nothing new)",
        start.elapsed().as_secs_f64() * 1000.0
    );
    anyhow::ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    store.close().await;
    Ok(())
}
