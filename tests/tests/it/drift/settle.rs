//! Detection and settling: a wrong size is flagged alone and accepted; a wrong size reverted by
//! a resize saga; a resize behind Berth's back opens drift and resizing back closes it stale;
//! loose equality; roles.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_tests::assert_contains;
use berth_tests::dosim::Timings;
use berth_tests::{SagaStatused, TestCoordinator, TestDb, eventually};
use serde_json::json;
use tonic::Code;

use super::{
    WAIT, coordinator, drift, drift_as, event_kinds, json, list, record_spec, rid, sim, spec_of,
    sync,
};

#[tokio::test]
async fn a_wrong_size_is_flagged_alone_and_accepting_it_updates_the_spec() {
    for db in TestDb::each().await {
        let sim = sim().await;
        let id = sim.seed_droplets(1, &["web"])[0];
        let c = coordinator(&db, &sim).await;
        let first = sync(&c).await;
        assert_eq!((first.seen, first.created, first.drift_opened), (1, 1, 0));
        let r = rid(id);
        // A wrong size and the right region.
        let spec = record_spec(
            &c,
            &r,
            json!({"size_slug": "s-2vcpu-2gb", "region": "nyc3"}),
        )
        .await;
        assert_eq!(spec.spec_version, 1);

        let found = sync(&c).await;
        assert_eq!((found.drift_opened, found.drift_open), (1, 1), "{found:?}");
        let open = list(&c, &r, &[]).await;
        assert_eq!(open.len(), 1, "{open:#?}");
        let d = &open[0];
        assert_eq!((d.field.as_str(), d.status.as_str()), ("size_slug", "open"));
        assert_eq!(json(&d.expected_json), json!("s-2vcpu-2gb"));
        assert_eq!(json(&d.actual_json), json!("s-1vcpu-1gb"));
        assert!(
            event_kinds(&c, &r)
                .await
                .contains(&"drift_detected".to_owned())
        );

        // Detecting again changes nothing and writes no second event.
        let again = sync(&c).await;
        assert_eq!(
            (again.drift_opened, again.drift_updated, again.drift_open),
            (0, 0, 1)
        );
        let detected = event_kinds(&c, &r).await;
        assert_eq!(
            detected.iter().filter(|k| *k == "drift_detected").count(),
            1
        );

        let accepted = drift(&c)
            .await
            .accept_drift(pb::DriftIdRequest {
                drift_id: d.drift_id.clone(),
                reason: "the bigger size was never needed".into(),
            })
            .await
            .expect("accept")
            .into_inner();
        assert_eq!(accepted.status, "accepted");
        assert!(accepted.resolved_by.starts_with("admin:"), "{accepted:?}");
        let (spec, version) = spec_of(&c, &r).await;
        assert_eq!(spec.get("size_slug"), Some(&json!("s-1vcpu-1gb")));
        assert_eq!(spec.get("region"), Some(&json!("nyc3")));
        assert_eq!(version, 2, "accepting bumps the spec's version");
        let kinds = event_kinds(&c, &r).await;
        assert!(
            kinds.ends_with(&["spec_recorded".into(), "drift_accepted".into()]),
            "{kinds:?}"
        );

        // Accepting twice is refused; the next detection finds nothing.
        let err = drift(&c)
            .await
            .accept_drift(pb::DriftIdRequest {
                drift_id: d.drift_id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_contains(err.message(), "accepted, not open");
        let clean = sync(&c).await;
        assert_eq!((clean.drift_opened, clean.drift_open), (0, 0), "{clean:?}");
        assert!(list(&c, &r, &[]).await.is_empty());
        assert_eq!(
            list(&c, &r, &["accepted"]).await.len(),
            1,
            "history is kept"
        );
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn reverting_resizes_the_droplet_and_the_next_detection_closes_it_reverted() {
    for db in TestDb::each().await {
        let sim = sim().await;
        let id = sim.seed_droplets(1, &[])[0];
        let c = coordinator(&db, &sim).await;
        sync(&c).await;
        let r = rid(id);
        record_spec(
            &c,
            &r,
            json!({"size_slug": "s-2vcpu-2gb", "region": "fra1"}),
        )
        .await;
        let found = sync(&c).await;
        assert_eq!(found.drift_opened, 2);
        let open = list(&c, &r, &[]).await;
        let by_field = |f: &str| open.iter().find(|d| d.field == f).unwrap().drift_id.clone();

        // A region cannot be reverted: the error names the field and what can be.
        let err = drift(&c)
            .await
            .revert_drift(pb::DriftIdRequest {
                drift_id: by_field("region"),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("field region") && err.message().contains("only size_slug"),
            "{}",
            err.message()
        );

        // Slow actions, so the resize saga is still running when we ask again.
        sim.set_timings(Timings {
            action_duration: Duration::from_millis(800),
            ..Timings::fast()
        });
        let size_drift = by_field("size_slug");
        let request = pb::DriftIdRequest {
            drift_id: size_drift.clone(),
            reason: "keep the size we asked for".into(),
        };
        let started = drift(&c)
            .await
            .revert_drift(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (started.kind.as_str(), started.existing),
            ("droplet.resize", false)
        );
        // Asking again while the saga runs returns it; accepting meanwhile is refused.
        let again = drift(&c)
            .await
            .revert_drift(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (again.saga_id.as_str(), again.existing),
            (started.saga_id.as_str(), true)
        );
        let err = drift(&c)
            .await
            .accept_drift(pb::DriftIdRequest {
                drift_id: size_drift.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_contains(err.message(), "being reverted");
        let saga = c.wait_saga(&started.saga_id, WAIT).await;
        assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:#?}");
        assert_eq!(sim.droplet(id).unwrap().size_slug, "s-2vcpu-2gb");
        // The saga refreshed the inventory: asking again now says the next detection closes it.
        let err = drift(&c)
            .await
            .revert_drift(pb::DriftIdRequest {
                drift_id: size_drift.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_contains(err.message(), "already matches");
        let marked = &list(&c, &r, &[]).await;
        let marked = marked.iter().find(|d| d.drift_id == size_drift).unwrap();
        assert_eq!(marked.revert_saga_id, started.saga_id);

        let confirmed = sync(&c).await;
        assert_eq!(confirmed.drift_closed, 1, "{confirmed:?}");
        let reverted = list(&c, &r, &["reverted"]).await;
        assert_eq!(reverted.len(), 1);
        assert_eq!(reverted[0].drift_id, size_drift);
        assert!(reverted[0].resolved_by.starts_with("admin:"));
        let (spec, version) = spec_of(&c, &r).await;
        assert_eq!(spec.get("size_slug"), Some(&json!("s-2vcpu-2gb")));
        assert_eq!(version, 1, "a revert keeps the spec");
        let kinds = event_kinds(&c, &r).await;
        for k in ["drift_revert_started", "drift_reverted"] {
            assert!(kinds.contains(&k.to_owned()), "{k} in {kinds:?}");
        }
        // Only the region is still open.
        let open = list(&c, &r, &[]).await;
        assert_eq!(
            open.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["region"]
        );
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn a_resize_behind_berths_back_opens_drift_and_resizing_back_closes_it_stale() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    // The periodic jobs on, fast: nobody calls SyncInventory in this test.
    let c = TestCoordinator::start_with_digitalocean_and(&db, &sim, |c| {
        c.inventory.sync_interval_secs = 1;
        c.inventory.drift_delay_secs = 0;
        c.inventory.start_delay_secs = 0;
        c.inventory.retry_secs = 1;
    })
    .await;
    let id = c
        .start_saga(
            "droplet.provision",
            json!({"name": "web-1", "region": "nyc3", "size_slug": "s-1vcpu-1gb",
                   "image": "ubuntu-24-04-x64"}),
        )
        .await;
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:#?}");
    let droplet: u64 = serde_json::from_str::<serde_json::Value>(&saga.steps[0].output_json)
        .unwrap()["droplet_id"]
        .as_u64()
        .unwrap();
    let r = rid(droplet);
    let (spec, _) = spec_of(&c, &r).await;
    assert_eq!(
        spec.get("size_slug"),
        Some(&json!("s-1vcpu-1gb")),
        "RegisterDroplet's spec"
    );

    assert!(sim.set_droplet_size(droplet, "s-2vcpu-2gb"));
    let opened = eventually(WAIT, "the periodic jobs to open drift", || async {
        list(&c, &r, &[]).await.into_iter().next()
    })
    .await;
    assert_eq!(opened.field, "size_slug");
    assert_eq!(json(&opened.actual_json), json!("s-2vcpu-2gb"));

    assert!(sim.set_droplet_size(droplet, "s-1vcpu-1gb"));
    let closed = eventually(WAIT, "the drift to close stale", || async {
        list(&c, &r, &["stale"]).await.into_iter().next()
    })
    .await;
    assert_eq!(closed.drift_id, opened.drift_id);
    assert_eq!(closed.resolved_by, "detection");
    assert!(list(&c, &r, &[]).await.is_empty());
    let kinds = event_kinds(&c, &r).await;
    assert!(kinds.contains(&"drift_stale".to_owned()), "{kinds:?}");
    let job = c.store().get_job("inventory.sync").await.unwrap().unwrap();
    assert!(job.last_finished_at_ms.is_some(), "{job:?}");
    sim.assert_no_violations();
}

#[tokio::test]
async fn tags_in_another_order_and_numbers_as_strings_are_not_drift() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let id = sim.seed_droplets(1, &["web", "env:prod", "team:a"])[0];
    let c = coordinator(&db, &sim).await;
    sync(&c).await;
    let r = rid(id);
    record_spec(
        &c,
        &r,
        json!({
            "size_slug": "s-1vcpu-1gb",
            "tags": ["team:a", "web", "env:prod"],
            "vcpus": "1",
            "memory": "1024",
            "disk": 25.0,
            "region.slug": "nyc3",
            "locked": "false",
        }),
    )
    .await;
    let r1 = sync(&c).await;
    assert_eq!(
        (r1.drift_opened, r1.drift_open),
        (0, 0),
        "{r1:?}: {:#?}",
        list(&c, &rid(id), &[]).await
    );
    // A real difference in a list is still drift.
    record_spec(&c, &r, json!({"tags": ["web", "env:prod"]})).await;
    let r2 = sync(&c).await;
    assert_eq!(r2.drift_opened, 1, "{r2:?}");
    let d = &list(&c, &r, &[]).await[0];
    assert_eq!(d.field, "tags");
}

#[tokio::test]
async fn operator_and_ci_tokens_are_denied_every_drift_rpc() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let c = coordinator(&db, &sim).await;
    let id = "0190a1b2-c3d4-7e5f-8a9b-0123456789ab".to_owned();
    for role in [Role::Operator, Role::Ci] {
        let token = c.token(role, None).await;
        let mut d = drift_as(&c, &token).await;
        let denied = [
            d.list_drift(pb::ListDriftRequest::default()).await.err(),
            d.accept_drift(pb::DriftIdRequest {
                drift_id: id.clone(),
                reason: String::new(),
            })
            .await
            .err(),
            d.revert_drift(pb::DriftIdRequest {
                drift_id: id.clone(),
                reason: String::new(),
            })
            .await
            .err(),
            d.resource_history(pb::ResourceHistoryRequest {
                resource_id: "do:droplet:1".into(),
                page: None,
            })
            .await
            .err(),
            d.record_desired_spec(pb::RecordDesiredSpecRequest {
                resource_id: "do:droplet:1".into(),
                spec_json: "{\"size_slug\": \"s-1vcpu-1gb\"}".into(),
            })
            .await
            .err(),
            d.sync_inventory(pb::SyncInventoryRequest::default())
                .await
                .err(),
        ];
        for (i, e) in denied.into_iter().enumerate() {
            let e = e.unwrap_or_else(|| panic!("{role:?}: rpc {i} was allowed"));
            assert_eq!(e.code(), Code::PermissionDenied, "{role:?} rpc {i}: {e:?}");
        }
    }
    assert_eq!(sim.calls("droplets_list"), 0, "nothing ran");
}
