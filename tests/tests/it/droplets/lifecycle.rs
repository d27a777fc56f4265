//! A droplet's life through the API: provision (active, addressed, registered with its desired
//! spec), snapshot, resize, destroy; idempotency keys, input checks, roles, and what happens
//! without `[digitalocean]`.

use berth_coordinator::digitalocean::{DoApi, DoErrorKind, DropletId};
use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_tests::assert_contains;
use berth_tests::cloud::DO_TOKEN;
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use serde_json::json;
use tonic::Code;

use super::{WAIT, assert_status, output, sim};

#[tokio::test]
async fn provision_snapshot_resize_and_destroy_through_the_api() {
    for db in TestDb::each().await {
        let sim = sim().await;
        let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
        let mut api = c.droplets().await;

        // Provision, twice with the same key: one saga.
        let request = pb::ProvisionDropletRequest {
            name: "web-1".into(),
            region: "nyc3".into(),
            size_slug: "s-1vcpu-1gb".into(),
            image: "ubuntu-24-04-x64".into(),
            tags: vec!["env:test".into()],
            idempotency_key: "provision-web-1".into(),
            ..Default::default()
        };
        let started = api
            .provision_droplet(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (started.kind.as_str(), started.existing),
            ("droplet.provision", false)
        );
        let again = api.provision_droplet(request).await.unwrap().into_inner();
        assert_eq!(
            (again.saga_id.as_str(), again.existing),
            (started.saga_id.as_str(), true)
        );
        let saga = c.wait_saga(&started.saga_id, WAIT).await;
        assert_status(&saga, SagaStatus::Completed);
        let id = output(&saga, 0)["droplet_id"].as_u64().unwrap();
        let ip = output(&saga, 1)["public_ipv4"].as_str().unwrap().to_owned();

        let live = sim.droplet(id).expect("the droplet exists");
        assert_eq!(live.status, "active");
        assert_eq!(live.public_ipv4.map(|i| i.to_string()), Some(ip.clone()));
        let saga_tag = format!("berth-saga-{}", saga.saga_id);
        for tag in [saga_tag.as_str(), "managed-by-berth", "env:test"] {
            assert!(
                live.tags.iter().any(|t| t == tag),
                "{tag} in {:?}",
                live.tags
            );
        }
        assert_eq!(sim.droplets().len(), 1);

        // Registered: the inventory row and the desired spec.
        let listed = c.list_droplets(false).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        let row = &listed[0];
        assert_eq!(row.droplet_id, id);
        assert_eq!(
            (
                row.name.as_str(),
                row.status.as_str(),
                row.public_ipv4.as_str()
            ),
            ("web-1", "active", ip.as_str())
        );
        assert_eq!(
            (
                row.region.as_str(),
                row.size_slug.as_str(),
                row.image.as_str()
            ),
            ("nyc3", "s-1vcpu-1gb", "ubuntu-24-04-x64")
        );
        let rid = format!("do:droplet:{id}");
        let spec = c
            .store()
            .get_desired_spec(&rid)
            .await
            .unwrap()
            .expect("a desired spec");
        assert_eq!(
            serde_json::Value::Object(spec.spec.clone()),
            json!({"size_slug": "s-1vcpu-1gb", "region": "nyc3", "image": "ubuntu-24-04-x64"})
        );
        assert_eq!(spec.spec_version, 1);
        assert_eq!(spec.saga_id.as_deref(), Some(saga.saga_id.as_str()));

        // Snapshot: it exists and its id is in the saga's output.
        let snap = api
            .snapshot_droplet(pb::SnapshotDropletRequest {
                droplet_id: id,
                label: "nightly".into(),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let snap = c.wait_saga(&snap.saga_id, WAIT).await;
        assert_status(&snap, SagaStatus::Completed);
        let snapshot_id = output(&snap, 0)["snapshot_id"].as_u64().unwrap();
        let snapshots = sim.snapshots();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].id, snapshot_id);
        assert_eq!(
            snapshots[0].name,
            format!("berth-snap-{id}-{}-nightly", snap.saga_id)
        );

        // Resize: power off, resize, power on; the desired spec follows.
        let resize = api
            .resize_droplet(pb::ResizeDropletRequest {
                droplet_id: id,
                size_slug: "s-2vcpu-2gb".into(),
                disk: false,
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let resize = c.wait_saga(&resize.saga_id, WAIT).await;
        assert_status(&resize, SagaStatus::Completed);
        let live = sim.droplet(id).unwrap();
        assert_eq!(
            (live.size_slug.as_str(), live.status),
            ("s-2vcpu-2gb", "active")
        );
        let kinds: Vec<String> = sim.actions().into_iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            ["create", "snapshot", "power_off", "resize", "power_on"]
        );
        let spec = c.store().get_desired_spec(&rid).await.unwrap().unwrap();
        assert_eq!(spec.spec["size_slug"], "s-2vcpu-2gb");
        assert_eq!(spec.spec_version, 2);
        assert_eq!(c.list_droplets(false).await[0].size_slug, "s-2vcpu-2gb");

        // Destroy: 404 afterwards, the row kept and marked deleted.
        let destroy = api
            .destroy_droplet(pb::DestroyDropletRequest {
                droplet_id: id,
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let destroy = c.wait_saga(&destroy.saga_id, WAIT).await;
        assert_status(&destroy, SagaStatus::Completed);
        assert!(destroy.steps[0].pivot);
        let err = sim
            .client("dop_v1_reader")
            .get_droplet(DropletId(id))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), DoErrorKind::NotFound, "{err}");
        assert!(sim.droplets().is_empty());
        assert!(c.list_droplets(false).await.is_empty());
        let all = c.list_droplets(true).await;
        assert_eq!(all.len(), 1);
        assert!(all[0].deleted && all[0].status == "deleted", "{:?}", all[0]);
        let events: Vec<String> = c
            .store()
            .resource_events(&rid, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            events,
            [
                "created",
                "spec_recorded",
                "spec_recorded",
                "changed",
                "deleted"
            ],
            "{:?}",
            db.kind
        );
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn without_digitalocean_changes_fail_their_precondition_and_listing_works() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let mut api = c.droplets().await;
    let err = api
        .provision_droplet(pb::ProvisionDropletRequest {
            name: "web-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_contains(err.message(), "[digitalocean]");
    let err = api
        .snapshot_droplet(pb::SnapshotDropletRequest {
            droplet_id: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(c.list_droplets(true).await.is_empty());

    // Started another way, the saga fails at once, saying what to configure.
    let id = c
        .start_saga("droplet.snapshot", json!({"droplet_id": 7}))
        .await;
    let saga = c.wait_saga(&id, WAIT).await;
    assert_eq!(saga.saga_status(), SagaStatus::Compensated);
    assert_contains(&saga.error, "[digitalocean]");
}

#[tokio::test]
async fn bad_inputs_are_refused_before_a_saga_starts_or_a_request_is_sent() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
    let mut api = c.droplets().await;
    let good = pb::ProvisionDropletRequest {
        name: "web-1".into(),
        region: "nyc3".into(),
        size_slug: "s-1vcpu-1gb".into(),
        image: "ubuntu-24-04-x64".into(),
        ..Default::default()
    };
    let cases = [
        (
            pb::ProvisionDropletRequest {
                name: "web_1".into(),
                ..good.clone()
            },
            "hostname",
        ),
        (
            pb::ProvisionDropletRequest {
                region: "".into(),
                ..good.clone()
            },
            "region",
        ),
        (
            pb::ProvisionDropletRequest {
                tags: vec!["managed-by-berth".into()],
                ..good.clone()
            },
            "reserved",
        ),
        (
            pb::ProvisionDropletRequest {
                ssh_keys: vec!["my key".into()],
                ..good.clone()
            },
            "ssh key",
        ),
    ];
    for (request, word) in cases {
        let err = api.provision_droplet(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(word), "{word}: {}", err.message());
    }
    let err = api
        .snapshot_droplet(pb::SnapshotDropletRequest {
            droplet_id: 5,
            label: "../etc".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = api
        .resize_droplet(pb::ResizeDropletRequest {
            droplet_id: 0,
            size_slug: "s-2vcpu-2gb".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_contains(err.message(), "droplet_id");
    let listed = c
        .sagas()
        .await
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sagas.is_empty(), "no saga was written");
    assert!(sim.request_log().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn only_an_admin_destroys_and_a_ci_token_only_lists() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
    let operator = c.token(Role::Operator, None).await;
    let ci = c.token(Role::Ci, None).await;
    let err = c
        .droplets_as(&operator)
        .await
        .destroy_droplet(pb::DestroyDropletRequest {
            droplet_id: 7,
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .droplets_as(&ci)
        .await
        .provision_droplet(pb::ProvisionDropletRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    c.droplets_as(&ci)
        .await
        .list_droplets(pb::ListDropletsRequest::default())
        .await
        .expect("ci may list");
    // Nor through the generic saga API.
    let err = c
        .sagas_as(&operator)
        .await
        .start_saga(pb::StartSagaRequest {
            kind: "droplet.destroy".into(),
            inputs_json: json!({"droplet_id": 7}).to_string(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(!err.message().contains(DO_TOKEN));
    assert!(sim.request_log().is_empty());
}
