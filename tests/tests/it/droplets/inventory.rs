//! The inventory tables on SQLite and PostgreSQL: upserts that say what changed and write one
//! event per change, desired specs whose version moves only when they change, fenced writes
//! refused once the claim is gone, and listing by tag and page.

use berth_coordinator::store::{
    Fence, NewSaga, ObservedResource, ResourceFilter, Store, StoreError, Upserted, Writer,
};
use berth_tests::TestDb;
use serde_json::{Map, Value, json};

fn droplet(id: u64, tags: &[&str], size: &str) -> ObservedResource {
    ObservedResource {
        resource_id: format!("do:droplet:{id}"),
        provider: "digitalocean".into(),
        kind: "droplet".into(),
        provider_id: id.to_string(),
        name: format!("web-{id}"),
        region: Some("nyc3".into()),
        size_slug: Some(size.into()),
        image: Some("ubuntu-24-04-x64".into()),
        status: "active".into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        public_ipv4: Some("100.64.0.1".into()),
        attributes: json!({"id": id, "size_slug": size}),
    }
}

fn plain(now_ms: i64) -> Writer<'static> {
    Writer {
        fence: None,
        saga_id: None,
        now_ms,
    }
}

fn spec(size: &str) -> Map<String, Value> {
    match json!({"size_slug": size, "region": "nyc3"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

async fn event_kinds(store: &Store, rid: &str) -> Vec<String> {
    store
        .resource_events(rid, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn upserts_specs_events_fencing_and_listing_on_both_databases() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        let rid = "do:droplet:1";

        // Created, seen again unchanged, changed (one event per change, naming the field).
        let d = droplet(1, &["web"], "s-1vcpu-1gb");
        assert_eq!(
            store.upsert_resource(plain(10), &d).await.unwrap(),
            Upserted::Created
        );
        assert_eq!(
            store.upsert_resource(plain(20), &d).await.unwrap(),
            Upserted::Unchanged
        );
        let row = store.get_resource(rid).await.unwrap().unwrap();
        assert_eq!(
            (row.first_seen_ms, row.last_seen_ms, row.changed_at_ms),
            (10, 20, 10)
        );
        let resized = droplet(1, &["web"], "s-2vcpu-2gb");
        assert_eq!(
            store.upsert_resource(plain(30), &resized).await.unwrap(),
            Upserted::Changed
        );
        let events = store.resource_events(rid, 0, 10).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].detail["changes"]["size_slug"],
            json!({"from": "s-1vcpu-1gb", "to": "s-2vcpu-2gb"})
        );

        // Specs: version 1, unchanged on the same spec, 2 on a change; one field at a time.
        let s = store
            .record_desired_spec(plain(40), rid, &spec("s-1vcpu-1gb"), "test")
            .await
            .unwrap();
        assert_eq!(s.spec_version, 1);
        let s = store
            .record_desired_spec(plain(50), rid, &spec("s-1vcpu-1gb"), "test")
            .await
            .unwrap();
        assert_eq!((s.spec_version, s.updated_at_ms), (1, 40));
        let (previous, s) = store
            .set_desired_field(plain(60), rid, "size_slug", "s-2vcpu-2gb".into(), "test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(previous, Some(json!("s-1vcpu-1gb")));
        assert_eq!(s.spec_version, 2);
        assert!(
            store
                .set_desired_field(plain(60), "do:droplet:404", "size_slug", "x".into(), "test")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.list_desired_specs().await.unwrap().len(), 1);

        // Deleted once; the row stays.
        assert!(
            store
                .mark_resource_deleted(plain(70), rid, &json!({}))
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_resource_deleted(plain(80), rid, &json!({}))
                .await
                .unwrap()
        );
        let row = store.get_resource(rid).await.unwrap().unwrap();
        assert_eq!(
            (row.deleted_at_ms, row.status.as_str()),
            (Some(70), "deleted")
        );
        assert_eq!(
            event_kinds(&store, rid).await,
            [
                "created",
                "changed",
                "spec_recorded",
                "spec_recorded",
                "deleted"
            ]
        );

        // A write under a claim that is gone changes nothing.
        let (saga_id, _) = store
            .insert_saga(&NewSaga {
                id: "01a00000-0000-7000-8000-000000000001",
                kind: "demo",
                inputs: "{}",
                start_key: None,
                steps: &[("noop", false)],
                now_ms: 1,
                started_by: None,
            })
            .await
            .unwrap();
        let claimed = store.claim_saga("me", 2, 60_000).await.unwrap().unwrap();
        let stale = Fence {
            saga_id: saga_id.clone(),
            owner_id: "me".into(),
            epoch: claimed.epoch - 1,
            lease_ms: 60_000,
        };
        let w = Writer {
            fence: Some(&stale),
            saga_id: Some(&saga_id),
            now_ms: 90,
        };
        let err = store
            .register_resource(w, &droplet(2, &[], "s-1vcpu-1gb"), &spec("s"), "test")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
        assert!(store.get_resource("do:droplet:2").await.unwrap().is_none());
        let held = Fence {
            epoch: claimed.epoch,
            ..stale.clone()
        };
        let w = Writer {
            fence: Some(&held),
            ..w
        };
        let (outcome, s) = store
            .register_resource(w, &droplet(2, &[], "s-1vcpu-1gb"), &spec("s"), "test")
            .await
            .unwrap();
        assert_eq!(
            (outcome, s.saga_id.as_deref()),
            (Upserted::Created, Some(saga_id.as_str()))
        );
        assert!(store.unregister_resource(w, "do:droplet:2").await.unwrap());
        assert!(
            store
                .get_desired_spec("do:droplet:2")
                .await
                .unwrap()
                .is_none()
        );

        // Listing: by tag exactly (`_` is no wildcard), deleted ones on request, by pages.
        for (id, tag) in [(3, "a_b"), (4, "axb"), (5, "a_b"), (6, "other")] {
            store
                .upsert_resource(plain(100), &droplet(id, &[tag], "s"))
                .await
                .unwrap();
        }
        let ids = |rows: Vec<berth_coordinator::store::CloudResource>| -> Vec<String> {
            rows.into_iter().map(|r| r.provider_id).collect()
        };
        let by_tag = ResourceFilter {
            kind: Some("droplet".into()),
            tag: Some("a_b".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_resources(&by_tag).await.unwrap()),
            ["3", "5"]
        );
        let live = ResourceFilter {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_resources(&live).await.unwrap()),
            ["3", "4", "5", "6"]
        );
        let all = ResourceFilter {
            include_deleted: true,
            limit: 2,
            ..Default::default()
        };
        let first = store.list_resources(&all).await.unwrap();
        assert_eq!(ids(first.clone()), ["1", "3"]);
        let next = ResourceFilter {
            after_id: Some(first[1].resource_id.clone()),
            ..all
        };
        assert_eq!(ids(store.list_resources(&next).await.unwrap()), ["4", "5"]);
        store.close().await;
    }
}
