//! A coordinator process killed with `kill -9` after its create (or snapshot) request reached
//! DigitalOcean and before it recorded the answer: restarted, the saga adopts what was made,
//! and the simulator holds exactly one.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::cloud::{digitalocean_toml, fast_droplets, write_token};
use berth_tests::dosim::{DoSim, Fault};
use berth_tests::process::{CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{SagaStatused, TestDb, eventually};
use serde_json::{Value, json};
use sqlx::Row;

use super::{WAIT, assert_status, output, provision, sim};

/// How long the simulator holds back the answer of the request the test kills during.
const HELD: Duration = Duration::from_secs(30);

async fn start(p: &CoordinatorProcess, token: &str, kind: &str, inputs: Value) -> String {
    p.sagas(token)
        .await
        .start_saga(pb::StartSagaRequest {
            kind: kind.into(),
            inputs_json: inputs.to_string(),
            idempotency_key: String::new(),
        })
        .await
        .expect("start saga")
        .into_inner()
        .saga_id
}

async fn wait_final(p: &CoordinatorProcess, token: &str, id: &str) -> pb::Saga {
    eventually(WAIT, &format!("saga {id} to finish"), || async {
        let saga = p
            .sagas(token)
            .await
            .get_saga(pb::GetSagaRequest {
                saga_id: id.to_owned(),
            })
            .await
            .ok()?
            .into_inner();
        saga.saga_status().is_final().then_some(saga)
    })
    .await
}

/// The step's checkpoint as the dead coordinator left it.
async fn checkpoint(db: &TestDb, saga_id: &str, step: i64) -> (StepStatus, Value) {
    let pool = db.raw_pool().await;
    let row = sqlx::query(
        "SELECT status, checkpoint FROM saga_step_results WHERE saga_id = $1 AND step_idx = $2",
    )
    .bind(saga_id)
    .bind(step)
    .fetch_one(&pool)
    .await
    .unwrap();
    let cp: Option<String> = row.get("checkpoint");
    let cp = cp.map_or(Value::Null, |c| serde_json::from_str(&c).unwrap());
    let status: String = row.get("status");
    let status = status
        .parse()
        .unwrap_or_else(|e| panic!("saga {saga_id} step {step}: {e}"));
    (status, cp)
}

async fn coordinator(db: &TestDb, sim: &DoSim, tokens: &tempfile::TempDir) -> CoordinatorProcess {
    let token_file = write_token(sim, tokens.path());
    let extra = digitalocean_toml(sim, &token_file, &fast_droplets());
    CoordinatorProcess::start_with("coord-do", &db.url, SagaTiming::default(), &extra).await
}

#[tokio::test]
async fn a_coordinator_killed_between_create_and_its_record_adopts_the_droplet() {
    for db in TestDb::each().await {
        let sim = sim().await;
        let tokens = tempfile::tempdir().unwrap();
        let admin = admin_token(&db.url).await;
        let p = coordinator(&db, &sim, &tokens).await;
        sim.inject(Fault::delay("droplets_create", HELD).after_processing());
        let id = start(&p, &admin, "droplet.provision", provision("crash-create")).await;
        eventually(WAIT, "the droplet to be created", || async {
            (sim.droplets().len() == 1).then_some(())
        })
        .await;
        p.kill9();
        let (status, cp) = checkpoint(&db, &id, 0).await;
        assert_eq!(status, StepStatus::Running, "{:?}", db.kind);
        assert_eq!(cp["create_sent"], true, "{cp}");
        assert!(
            cp["droplet_id"].is_null(),
            "the answer was never recorded: {cp}"
        );

        p.restart().await;
        let saga = wait_final(&p, &admin, &id).await;
        assert_status(&saga, SagaStatus::Completed);
        assert_eq!(output(&saga, 0)["adopted"], true);
        assert_eq!(
            sim.droplets().len(),
            1,
            "exactly one droplet: {:?}",
            sim.droplets()
        );
        assert_eq!(sim.calls("droplets_create"), 1, "{}", p.log());
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn a_coordinator_killed_after_posting_a_snapshot_adopts_it() {
    let db = TestDb::postgres().await;
    let sim = sim().await;
    let tokens = tempfile::tempdir().unwrap();
    let admin = admin_token(&db.url).await;
    let p = coordinator(&db, &sim, &tokens).await;
    let provision = start(&p, &admin, "droplet.provision", provision("crash-snap")).await;
    let saga = wait_final(&p, &admin, &provision).await;
    assert_status(&saga, SagaStatus::Completed);
    let droplet = output(&saga, 0)["droplet_id"].as_u64().unwrap();

    sim.inject(Fault::delay("dropletActions_post", HELD).after_processing());
    let id = start(
        &p,
        &admin,
        "droplet.snapshot",
        json!({"droplet_id": droplet}),
    )
    .await;
    eventually(WAIT, "the snapshot action to start", || async {
        sim.actions()
            .iter()
            .any(|a| a.kind == "snapshot")
            .then_some(())
    })
    .await;
    p.kill9();
    let (_, cp) = checkpoint(&db, &id, 0).await;
    assert!(
        cp["action_id"].is_null(),
        "the action id was never recorded: {cp}"
    );

    p.restart().await;
    let saga = wait_final(&p, &admin, &id).await;
    assert_status(&saga, SagaStatus::Completed);
    let snapshots = sim.snapshots();
    assert_eq!(snapshots.len(), 1, "exactly one snapshot: {snapshots:?}");
    assert_eq!(
        output(&saga, 0)["snapshot_id"].as_u64(),
        Some(snapshots[0].id)
    );
    assert_eq!(sim.calls("dropletActions_post"), 1, "{}", p.log());
    sim.assert_no_violations();
}
