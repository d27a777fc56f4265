//! The inventory sync: 1,000 droplets through the paginated, rate-limited API; droplets gone
//! out of band (marked deleted, drift on `status`) versus destroyed by Berth (not drift); the
//! job lease that lets one coordinator sync at a time and fences a stale holder.

use std::time::{Duration, Instant};

use berth_coordinator::digitalocean::{DoApi, DropletId};
use berth_coordinator::store::{Due, GoneMark, ObservedResource, ResourceFilter, Store, Writer};
use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use berth_tests::cloud::DO_TOKEN;
use berth_tests::eventually;
use berth_tests::{SagaStatused, TestDb};
use serde_json::json;

use super::{WAIT, coordinator, drift, event_kinds, list, record_spec, rid, sim, sync};

#[tokio::test]
async fn a_sync_of_1000_droplets_pages_through_the_rate_limited_api() {
    for db in TestDb::each().await {
        let sim = sim().await;
        sim.seed_droplets(1000, &["fleet"]);
        // The production budget (240 a minute, bursts of 10) against DigitalOcean's limits.
        let c = berth_tests::TestCoordinator::start_with_digitalocean_and(&db, &sim, |c| {
            c.inventory.sync_interval_secs = 0;
            let d = c.digitalocean.as_mut().unwrap();
            d.requests_per_minute = 240;
            d.burst = 10;
        })
        .await;
        let started = Instant::now();
        let first = sync(&c).await;
        let took = started.elapsed();
        assert_eq!(
            (first.seen, first.created, first.changed, first.gone),
            (1000, 1000, 0, 0)
        );
        assert_eq!(sim.calls("droplets_list"), 5, "200 a page");
        assert_eq!(sim.count_status(429), 0);
        let all = ResourceFilter {
            kind: Some("droplet".into()),
            limit: 5000,
            ..ResourceFilter::default()
        };
        assert_eq!(c.store().list_resources(&all).await.unwrap().len(), 1000);
        let again = sync(&c).await;
        assert_eq!(
            (again.seen, again.created, again.changed, again.gone),
            (1000, 0, 0, 0)
        );
        assert_eq!(sim.calls("droplets_list"), 10);
        println!("{:?}: first sync of 1000 droplets took {took:?}", db.kind);
        assert!(took < Duration::from_secs(120), "{took:?}");
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn a_droplet_deleted_out_of_band_is_gone_and_drifts_but_one_berth_destroyed_does_not() {
    for db in TestDb::each().await {
        let sim = sim().await;
        let ids = sim.seed_droplets(2, &["managed-by-berth"]);
        let (outside, ours) = (ids[0], ids[1]);
        let c = coordinator(&db, &sim).await;
        sync(&c).await;
        for id in ids.iter().copied() {
            record_spec(&c, &rid(id), json!({"size_slug": "s-1vcpu-1gb"})).await;
        }
        // One is destroyed behind Berth's back, the other by a droplet.destroy saga.
        let api = sim.client(DO_TOKEN);
        api.destroy_droplet(DropletId(outside)).await.unwrap();
        let saga = c
            .start_saga("droplet.destroy", json!({"droplet_id": ours}))
            .await;
        assert_eq!(
            c.wait_saga(&saga, WAIT).await.saga_status(),
            SagaStatus::Completed
        );

        let gone = eventually(WAIT, "the sync to find the droplet gone", || async {
            let r = sync(&c).await;
            (r.gone == 1).then_some(r)
        })
        .await;
        assert_eq!(gone.drift_open, 1, "{gone:?}");
        let row = c
            .store()
            .get_resource(&rid(outside))
            .await
            .unwrap()
            .unwrap();
        assert!(row.deleted_at_ms.is_some(), "marked deleted, not removed");
        assert_eq!(row.status, "deleted");
        assert!(
            event_kinds(&c, &rid(outside))
                .await
                .contains(&"deleted".to_owned())
        );
        let open = list(&c, &rid(outside), &[]).await;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].field, "status");
        assert_eq!(super::json(&open[0].actual_json), json!("deleted"));
        assert!(list(&c, &rid(ours), &["open", "stale"]).await.is_empty());

        // Accepting the deletion records it in the spec: no more drift.
        drift(&c)
            .await
            .accept_drift(pb::DriftIdRequest {
                drift_id: open[0].drift_id.clone(),
                reason: "decommissioned by hand".into(),
            })
            .await
            .unwrap();
        let after = sync(&c).await;
        assert_eq!(
            (after.gone, after.drift_opened, after.drift_open),
            (0, 0, 0),
            "{after:?}"
        );
        sim.assert_no_violations();
    }
}

fn droplet(id: u64, size: &str) -> ObservedResource {
    ObservedResource {
        resource_id: rid(id),
        provider: "digitalocean".into(),
        kind: "droplet".into(),
        provider_id: id.to_string(),
        name: format!("d-{id}"),
        region: Some("nyc3".into()),
        size_slug: Some(size.into()),
        image: Some("ubuntu-24-04-x64".into()),
        status: "active".into(),
        tags: vec![],
        public_ipv4: None,
        attributes: json!({"id": id, "size_slug": size}),
    }
}

pub fn writer(now_ms: i64) -> Writer<'static> {
    Writer {
        fence: None,
        saga_id: None,
        now_ms,
    }
}

#[tokio::test]
async fn one_holder_of_the_sync_lease_at_a_time_and_a_stale_holder_writes_nothing() {
    for db in TestDb::each().await {
        let a = Store::open(&db.url).await.unwrap();
        let b = Store::open(&db.url).await.unwrap();
        let now = 1_000_000;
        let lease = 60_000;
        a.upsert_resource(writer(now - 10), &droplet(7, "s-1vcpu-1gb"))
            .await
            .unwrap();

        let held = a
            .claim_job("inventory.sync", "a", now, lease, now, Due::WhenDue)
            .await
            .unwrap()
            .expect("a claims the due job");
        assert!(
            b.claim_job("inventory.sync", "b", now + 1, lease, now, Due::Now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(a.renew_job(&held, now + 10).await.unwrap());

        // a stalls past its lease; b takes over with a higher epoch.
        let later = now + 10 + lease + 1;
        let taken = b
            .claim_job("inventory.sync", "b", later, lease, now, Due::WhenDue)
            .await
            .unwrap()
            .expect("b claims an expired lease");
        assert_eq!(taken.epoch, held.epoch + 1);
        assert!(!a.renew_job(&held, later + 1).await.unwrap());
        let detail = json!({"by": "test"});
        let stale = a
            .mark_gone_fenced(&held, &rid(7), later, &detail, later + 2)
            .await
            .unwrap();
        assert_eq!(stale, GoneMark::LeaseLost);
        assert!(
            b.get_resource(&rid(7))
                .await
                .unwrap()
                .unwrap()
                .deleted_at_ms
                .is_none()
        );
        // Seen after b's sync began: not marked, even by the holder.
        let seen_before = now - 20;
        let r7 = rid(7);
        let skipped = b.mark_gone_fenced(&taken, &r7, seen_before, &detail, later + 3);
        assert_eq!(skipped.await.unwrap(), GoneMark::Skipped);
        let marked = b.mark_gone_fenced(&taken, &r7, later, &detail, later + 4);
        assert_eq!(marked.await.unwrap(), GoneMark::Marked);
        assert!(
            b.get_resource(&rid(7))
                .await
                .unwrap()
                .unwrap()
                .deleted_at_ms
                .is_some()
        );

        assert!(
            !a.finish_job(&held, later + 5, later + 900_000, &json!({}))
                .await
                .unwrap()
        );
        assert!(
            b.finish_job(&taken, later + 5, later + 900_000, &json!({"seen": 1}))
                .await
                .unwrap()
        );
        // Not due again until the interval passed, unless forced.
        assert!(
            a.claim_job("inventory.sync", "a", later + 10, lease, 0, Due::WhenDue)
                .await
                .unwrap()
                .is_none()
        );
        let forced = a
            .claim_job("inventory.sync", "a", later + 10, lease, 0, Due::Now)
            .await
            .unwrap();
        assert_eq!(forced.map(|c| c.epoch), Some(taken.epoch + 1));
        let job = a.get_job("inventory.sync").await.unwrap().unwrap();
        assert_eq!(job.owner_id.as_deref(), Some("a"));
        a.close().await;
        b.close().await;
    }
}
