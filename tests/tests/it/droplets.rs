//! Droplet sagas end to end: a real coordinator (in process, or a process killed with
//! `kill -9`) on SQLite and PostgreSQL, talking to the DigitalOcean simulator, which checks
//! every request against DigitalOcean's spec and reports what is left in the cloud.

mod cli;
mod crash;
mod crowd;
mod failures;
mod inventory;
mod lifecycle;

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use berth_tests::dosim::{DoSim, SimConfig, Timings};
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use serde_json::{Value, json};

/// Long enough for any saga against the simulator's fast timings, even on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub async fn sim() -> DoSim {
    DoSim::start(SimConfig::fast())
        .await
        .expect("the simulator starts")
}

/// One scenario's world: a coordinator on a fresh SQLite database talking to a fresh
/// simulator. Dropping it (unless the test already failed) asserts that the simulator saw no
/// request DigitalOcean's spec forbids.
pub struct Scenario {
    pub sim: DoSim,
    pub c: TestCoordinator,
    _db: TestDb,
}

impl Scenario {
    pub async fn start() -> Self {
        Self::start_with(Timings::fast()).await
    }

    /// A scenario whose simulator keeps `timings` (how long actions and listings take).
    pub async fn start_with(timings: Timings) -> Self {
        Self::on(TestDb::sqlite(), timings).await
    }

    /// A scenario on `db` (SQLite or PostgreSQL).
    pub async fn on(db: TestDb, timings: Timings) -> Self {
        let sim = sim().await;
        sim.set_timings(timings);
        let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
        Scenario { sim, c, _db: db }
    }

    /// Runs a saga of `kind` to its end and returns it.
    pub async fn run(&self, kind: &str, inputs: Value) -> pb::Saga {
        run(&self.c, kind, inputs).await
    }

    /// Provisions a droplet named `name` and returns its id.
    pub async fn provisioned(&self, name: &str) -> u64 {
        provisioned(&self.c, name).await
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.sim.assert_no_violations();
        }
    }
}

/// Inputs of a `droplet.provision` saga.
pub fn provision(name: &str) -> Value {
    json!({
        "name": name,
        "region": "nyc3",
        "size_slug": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "tags": ["env:test"],
    })
}

/// Runs a saga of `kind` to its end and returns it.
pub async fn run(c: &TestCoordinator, kind: &str, inputs: Value) -> pb::Saga {
    let id = c.start_saga(kind, inputs).await;
    c.wait_saga(&id, WAIT).await
}

/// The output of step `index`, as JSON.
pub fn output(saga: &pb::Saga, index: usize) -> Value {
    let step = &saga.steps[index];
    serde_json::from_str(&step.output_json)
        .unwrap_or_else(|e| panic!("step {index} output is not JSON ({e}): {saga:#?}"))
}

/// Asserts the saga ended `status`, showing its steps otherwise.
#[track_caller]
pub fn assert_status(saga: &pb::Saga, status: SagaStatus) {
    let steps: Vec<String> = saga
        .steps
        .iter()
        .map(|s| format!("  {} {} {} {}", s.index, s.name, s.status, s.error))
        .collect();
    assert_eq!(
        saga.saga_status(),
        status,
        "saga {} ({}) error {:?}:\n{}",
        saga.saga_id,
        saga.kind,
        saga.error,
        steps.join("\n")
    );
}

/// Provisions a droplet and returns its id.
pub async fn provisioned(c: &TestCoordinator, name: &str) -> u64 {
    let saga = run(c, "droplet.provision", provision(name)).await;
    assert_status(&saga, SagaStatus::Completed);
    output(&saga, 0)["droplet_id"]
        .as_u64()
        .expect("a droplet id")
}
