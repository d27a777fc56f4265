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
use berth_tests::dosim::{DoSim, SimConfig};
use berth_tests::{SagaStatused, TestCoordinator};
use serde_json::{Value, json};

/// Long enough for any saga against the simulator's fast timings, even on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub async fn sim() -> DoSim {
    DoSim::start(SimConfig::fast())
        .await
        .expect("the simulator starts")
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
