//! Saga engine benchmark: 1,000 sagas of 5 no-op steps on SQLite and PostgreSQL, run by one
//! and by two engines. Reports sagas per second and the engine's own overhead per step (the
//! time from the end of one step's `execute` to the start of the next: the ledger writes and
//! reads in between), p50 and p99.
//!
//!   cargo run --release -p berth-tests --bin saga-bench [-- --sagas 1000]
//!
//! Concurrency 1 measures the engine's own cost per step; 32 measures throughput.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (see `.ci/pg-start.sh`); without it only SQLite runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_coordinator::saga::{Deps, Engine, EngineConfig, Registry, Step, StepCtx, StepError};
use berth_coordinator::store::Store;
use berth_tests::TestDb;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const STEPS: usize = 5;

/// When each (saga, step) began executing.
fn stamps() -> &'static Mutex<HashMap<(String, usize), Instant>> {
    static STAMPS: OnceLock<Mutex<HashMap<(String, usize), Instant>>> = OnceLock::new();
    STAMPS.get_or_init(Default::default)
}

struct Stamp;

#[async_trait::async_trait]
impl Step for Stamp {
    fn name(&self) -> &'static str {
        "noop"
    }
    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        stamps()
            .lock()
            .unwrap()
            .insert((ctx.saga_id.clone(), ctx.step_index), Instant::now());
        Ok(Value::Null)
    }
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

fn build(_: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    Ok((0..STEPS)
        .map(|_| Arc::new(Stamp) as Arc<dyn Step>)
        .collect())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(db: &TestDb, engines: usize, concurrency: usize, sagas: usize) -> String {
    stamps().lock().unwrap().clear();
    let store = Store::open(&db.url).await.expect("open store");
    let mut registry = Registry::default();
    registry.register("bench", build);
    let shutdown = CancellationToken::new();
    let mut all = Vec::new();
    for i in 0..engines {
        let mut config = EngineConfig::new(format!("bench-{i}"));
        config.poll_interval = Duration::from_millis(20);
        config.max_concurrent = concurrency;
        all.push(Engine::new(
            store.clone(),
            registry.clone(),
            Deps::new(store.clone()),
            config,
        ));
    }
    let started = Instant::now();
    for i in 0..sagas {
        all[i % engines]
            .start("bench", "{}", None)
            .await
            .expect("start");
    }
    for e in &all {
        tokio::spawn(e.clone().run(shutdown.clone()));
    }
    loop {
        let counts = store.saga_status_counts().await.expect("counts");
        let done: i64 = counts
            .iter()
            .filter(|(s, _)| *s == berth_shared::saga::SagaStatus::Completed)
            .map(|(_, n)| n)
            .sum();
        if done as usize == sagas {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let stamps = stamps().lock().unwrap().clone();
    let mut gaps: Vec<Duration> = stamps
        .iter()
        .filter(|((_, step), _)| *step > 0)
        .filter_map(|((saga, step), t)| {
            stamps
                .get(&(saga.clone(), step - 1))
                .map(|prev| t.duration_since(*prev))
        })
        .collect();
    gaps.sort();
    format!(
        "{:<9} engines={} concurrency={:<3} sagas={} steps={}  {:>7.1} sagas/s  overhead/step p50={:>6.2} ms p99={:>7.2} ms",
        format!("{:?}", db.kind),
        engines,
        concurrency,
        sagas,
        STEPS,
        sagas as f64 / elapsed.as_secs_f64(),
        percentile(&gaps, 0.5).as_secs_f64() * 1e3,
        percentile(&gaps, 0.99).as_secs_f64() * 1e3,
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sagas = args
        .iter()
        .position(|a| a == "--sagas")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let pg = std::env::var("TEST_DATABASE_URL").is_ok();
    // Concurrency 1 shows the engine's own cost per step; 32 shows throughput (and the
    // queueing for the database that comes with it).
    for concurrency in [1, 32] {
        for engines in [1, 2] {
            println!(
                "{}",
                run(&TestDb::sqlite(), engines, concurrency, sagas).await
            );
            if pg {
                println!(
                    "{}",
                    run(&TestDb::postgres().await, engines, concurrency, sagas).await
                );
            }
        }
    }
    if !pg {
        println!("PostgreSQL skipped: set TEST_DATABASE_URL (eval \"$(bash .ci/pg-start.sh)\")");
    }
}
