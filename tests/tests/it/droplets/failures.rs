//! Droplet sagas when things go wrong: a failure after each step unwinds everything, errored
//! actions compensate, lagging listings and lost answers are waited out or adopted, a busy
//! droplet delays a resize, and an unmanaged droplet is not destroyed.

use std::time::Duration;

use berth_coordinator::digitalocean::DoApi;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::assert_contains;
use berth_tests::dosim::{ActionFailure, Fault, Timings};
use berth_tests::{StepStatused, TestDb};
use serde_json::json;

use super::{Scenario, assert_status, output, provision};

#[tokio::test]
async fn a_snapshot_then_a_failure_rolls_back_and_leaves_no_snapshot() {
    for db in TestDb::each().await {
        let s = Scenario::on(db, Timings::fast()).await;
        let sim = &s.sim;
        let id = s.provisioned("snap-fail").await;
        let drill = json!({"droplet_id": id, "steps": ["create_droplet_snapshot", "fail"]});
        let saga = s.run("droplet.drill", drill).await;
        assert_status(&saga, SagaStatus::Compensated);
        let steps: Vec<(&str, StepStatus)> = saga
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.step_status()))
            .collect();
        assert_eq!(
            steps,
            [
                ("create_droplet_snapshot", StepStatus::Compensated),
                ("fail", StepStatus::Failed)
            ]
        );
        assert!(output(&saga, 0)["snapshot_id"].as_u64().is_some());
        assert!(sim.snapshots().is_empty(), "{:?}", sim.snapshots());
        assert_eq!(sim.calls("snapshots_delete"), 1);
        assert_eq!(
            sim.droplets().len(),
            1,
            "the droplet was not the drill's to undo"
        );
    }
}

#[tokio::test]
async fn a_failure_after_each_provision_step_leaves_no_droplet_and_no_row() {
    let s = Scenario::start().await;
    let (sim, c) = (&s.sim, &s.c);
    let all = ["create_droplet", "wait_droplet_active", "register_droplet"];
    for n in 1..=all.len() {
        let mut steps: Vec<&str> = all[..n].to_vec();
        steps.push("fail");
        let drill = json!({"provision": provision(&format!("drill-{n}")), "steps": steps});
        let saga = s.run("droplet.drill", drill).await;
        assert_status(&saga, SagaStatus::Compensated);
        let id = output(&saga, 0)["droplet_id"].as_u64().unwrap();
        assert!(
            sim.droplet(id).is_none(),
            "droplet {id} destroyed after {steps:?}"
        );
        assert!(sim.droplets().is_empty());
        let rid = format!("do:droplet:{id}");
        let row = c.store().get_resource(&rid).await.unwrap();
        assert!(
            row.is_none(),
            "registration undone after {steps:?}: {row:?}"
        );
        assert!(c.store().get_desired_spec(&rid).await.unwrap().is_none());
        if n == 3 {
            let events: Vec<String> = c
                .store()
                .resource_events(&rid, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.kind)
                .collect();
            assert_eq!(events, ["created", "spec_recorded", "unregistered"]);
        }
    }
    assert_eq!(sim.calls("droplets_destroy"), 3);
}

#[tokio::test]
async fn an_errored_create_is_compensated_and_leaves_no_droplet() {
    let s = Scenario::start().await;
    let (sim, c) = (&s.sim, &s.c);
    sim.fail_next_action(ActionFailure {
        droplet: None,
        kind: Some("create".into()),
    });
    let saga = s.run("droplet.provision", provision("doomed")).await;
    assert_status(&saga, SagaStatus::Compensated);
    assert_eq!(saga.steps[1].step_status(), StepStatus::Failed);
    assert_contains(&saga.steps[1].error, "errored");
    assert_eq!(saga.steps[0].step_status(), StepStatus::Compensated);
    assert!(sim.droplets().is_empty(), "{:?}", sim.droplets());
    assert!(c.list_droplets(true).await.is_empty());
}

#[tokio::test]
async fn an_errored_snapshot_action_compensates_the_saga() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    sim.fail_next_action(ActionFailure {
        droplet: None,
        kind: Some("snapshot".into()),
    });
    let drill = json!({"provision": provision("snap-errored"),
        "steps": ["create_droplet", "wait_droplet_active", "create_droplet_snapshot"]});
    let saga = s.run("droplet.drill", drill).await;
    assert_status(&saga, SagaStatus::Compensated);
    assert_contains(&saga.steps[2].error, "errored");
    assert_eq!(
        saga.steps[2].attempts, 1,
        "an errored snapshot is not retried"
    );
    assert!(sim.droplets().is_empty());
    assert!(sim.snapshots().is_empty());
}

/// The snapshot shows in the listing 600 ms after its action completed: a dozen polls, one
/// attempt.
#[tokio::test]
async fn a_snapshot_listed_later_than_one_poll_is_still_found() {
    let s = Scenario::start_with(Timings {
        snapshot_listing_lag: Duration::from_millis(600),
        ..Timings::fast()
    })
    .await;
    let sim = &s.sim;
    let id = s.provisioned("laggy").await;
    let saga = s.run("droplet.snapshot", json!({"droplet_id": id})).await;
    assert_status(&saga, SagaStatus::Completed);
    assert_eq!(saga.steps[0].attempts, 1);
    assert!(
        sim.calls("droplets_list_snapshots") >= 3,
        "{}",
        sim.calls("droplets_list_snapshots")
    );
    assert_eq!(sim.snapshots().len(), 1);
    assert_eq!(
        output(&saga, 0)["snapshot_id"].as_u64(),
        Some(sim.snapshots()[0].id)
    );
}

/// Longer than the step's whole lookup (10 × 100 ms): the step retries and finds it then.
#[tokio::test]
async fn a_snapshot_listed_later_than_the_lookup_is_found_by_a_retry() {
    let s = Scenario::start_with(Timings {
        snapshot_listing_lag: Duration::from_millis(2_500),
        ..Timings::fast()
    })
    .await;
    let sim = &s.sim;
    let id = s.provisioned("very-laggy").await;
    let saga = s.run("droplet.snapshot", json!({"droplet_id": id})).await;
    assert_status(&saga, SagaStatus::Completed);
    assert!(saga.steps[0].attempts >= 2, "{}", saga.steps[0].attempts);
    assert_eq!(
        sim.calls("dropletActions_post"),
        1,
        "the action was not posted again"
    );
    assert_eq!(sim.snapshots().len(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_not_repeated() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    sim.inject(Fault::drop_connection("droplets_create").after_processing());
    let saga = s.run("droplet.provision", provision("lost-answer")).await;
    assert_status(&saga, SagaStatus::Completed);
    assert_eq!(output(&saga, 0)["adopted"], true);
    assert_eq!(sim.calls("droplets_create"), 1);
    assert_eq!(sim.droplets().len(), 1);
}

#[tokio::test]
async fn a_lost_snapshot_answer_makes_one_snapshot() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    let id = s.provisioned("lost-snapshot").await;
    sim.inject(Fault::drop_connection("dropletActions_post").after_processing());
    let saga = s
        .run("droplet.snapshot", json!({"droplet_id": id, "label": "x"}))
        .await;
    assert_status(&saga, SagaStatus::Completed);
    let snapshots = sim.snapshots();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(
        output(&saga, 0)["snapshot_id"].as_u64(),
        Some(snapshots[0].id)
    );
}

#[tokio::test]
async fn a_busy_droplet_delays_the_resize_without_failing_it() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    let id = s.provisioned("busy").await;
    // Someone else's snapshot is running when the resize begins.
    let other = sim.client("dop_v1_someone_else");
    other
        .snapshot(id.into(), "not-berths")
        .await
        .expect("a snapshot starts");
    let saga = s
        .run(
            "droplet.resize",
            json!({"droplet_id": id, "size_slug": "s-2vcpu-2gb"}),
        )
        .await;
    assert_status(&saga, SagaStatus::Completed);
    assert!(sim.count_status(422) >= 1, "the droplet was busy at first");
    assert_eq!(sim.droplet(id).unwrap().size_slug, "s-2vcpu-2gb");
    assert_eq!(sim.droplet(id).unwrap().status, "active");
}

#[tokio::test]
async fn a_resize_is_undone_when_a_later_step_fails() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    let id = s.provisioned("undo-resize").await;
    let drill = json!({"droplet_id": id, "size_slug": "s-2vcpu-2gb",
        "steps": ["resize_droplet", "fail"]});
    let saga = s.run("droplet.drill", drill).await;
    assert_status(&saga, SagaStatus::Compensated);
    let live = sim.droplet(id).unwrap();
    assert_eq!(
        (live.size_slug.as_str(), live.status),
        ("s-1vcpu-1gb", "active")
    );
}

#[tokio::test]
async fn a_droplet_berth_does_not_manage_is_destroyed_only_by_force() {
    let s = Scenario::start().await;
    let sim = &s.sim;
    let id = sim.seed_droplets(1, &["someone-elses"])[0];
    let saga = s.run("droplet.destroy", json!({"droplet_id": id})).await;
    assert_status(&saga, SagaStatus::Compensated);
    assert_contains(&saga.error, "managed-by-berth");
    assert!(sim.droplet(id).is_some(), "still there");
    assert_eq!(sim.calls("droplets_destroy"), 0);

    let saga = s
        .run("droplet.destroy", json!({"droplet_id": id, "force": true}))
        .await;
    assert_status(&saga, SagaStatus::Completed);
    assert!(sim.droplet(id).is_none());
    // Destroying again: already gone is success.
    let saga = s
        .run("droplet.destroy", json!({"droplet_id": id, "force": true}))
        .await;
    assert_status(&saga, SagaStatus::Completed);
    assert_eq!(output(&saga, 0)["already_gone"], true);
}

#[tokio::test]
async fn a_cancel_while_waiting_for_the_droplet_destroys_it() {
    let s = Scenario::start_with(Timings {
        active_after: Duration::from_secs(20),
        ..Timings::fast()
    })
    .await;
    let (sim, c) = (&s.sim, &s.c);
    let id = c
        .start_saga("droplet.provision", provision("cancelled"))
        .await;
    berth_tests::eventually(super::WAIT, "the droplet to be created", || async {
        (sim.droplets().len() == 1).then_some(())
    })
    .await;
    c.sagas()
        .await
        .cancel_saga(berth_proto::v1::SagaIdRequest {
            saga_id: id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .expect("cancel");
    let saga = c.wait_saga(&id, super::WAIT).await;
    assert_status(&saga, SagaStatus::Cancelled);
    assert_eq!(saga.steps[0].step_status(), StepStatus::Compensated);
    assert!(sim.droplets().is_empty(), "{:?}", sim.droplets());
}
