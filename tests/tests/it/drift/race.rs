//! Races the database must settle: detections running at once (as on two coordinators) never
//! leave two open rows for one (resource, field), nor write an event twice; two coordinators
//! asked to sync at once take turns.

use berth_coordinator::drift::{DetectReport, detect_all};
use berth_coordinator::store::Store;
use berth_tests::TestDb;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::sync::writer;
use super::{coordinator, list, record_spec, rid, sim, sync};

const RESOURCES: u64 = 6;
const ROUNDS: usize = 30;

/// Open rows that share a (resource, field), read straight from the table.
async fn duplicate_open_rows(pool: &sqlx::AnyPool) -> Vec<(String, String, i64)> {
    sqlx::query(
        "SELECT resource_id, field, COUNT(*) AS n FROM cloud_drift WHERE status = 'open' \
         GROUP BY resource_id, field HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("resource_id"), r.get("field"), r.get("n")))
    .collect()
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

fn observed(id: u64, size: &str, region: &str) -> berth_coordinator::store::ObservedResource {
    berth_coordinator::store::ObservedResource {
        resource_id: rid(id),
        provider: "digitalocean".into(),
        kind: "droplet".into(),
        provider_id: id.to_string(),
        name: format!("d-{id}"),
        region: Some(region.into()),
        size_slug: Some(size.into()),
        image: Some("ubuntu-24-04-x64".into()),
        status: "active".into(),
        tags: vec!["a".into(), "b".into()],
        public_ipv4: None,
        attributes: json!({"id": id}),
    }
}

#[tokio::test]
async fn detections_at_once_never_open_two_rows_for_one_field() {
    for db in TestDb::each().await {
        // Three handles, as three coordinators on one database.
        let stores = [
            Store::open(&db.url).await.unwrap(),
            Store::open(&db.url).await.unwrap(),
            Store::open(&db.url).await.unwrap(),
        ];
        let pool = db.raw_pool().await;
        let spec: Map<String, Value> = json!({
            "size_slug": "s-1vcpu-1gb", "region": "nyc3", "tags": ["b", "a"],
        })
        .as_object()
        .unwrap()
        .clone();
        for id in 1..=RESOURCES {
            stores[0]
                .upsert_resource(writer(1), &observed(id, "s-1vcpu-1gb", "nyc3"))
                .await
                .unwrap();
            stores[0]
                .record_desired_spec(writer(1), &rid(id), &spec, "test")
                .await
                .unwrap();
        }
        let mut totals = DetectReport::default();
        for round in 0..ROUNDS {
            // Sizes drift, move and match again; regions drift every third round.
            let size = ["s-1vcpu-1gb", "s-2vcpu-2gb", "s-4vcpu-8gb", "s-1vcpu-1gb"][round % 4];
            let region = if round % 3 == 2 { "fra1" } else { "nyc3" };
            for id in 1..=RESOURCES {
                stores[0]
                    .upsert_resource(writer(round as i64 + 2), &observed(id, size, region))
                    .await
                    .unwrap();
            }
            let (a, b, c) = tokio::join!(
                detect_all(&stores[0]),
                detect_all(&stores[1]),
                detect_all(&stores[2]),
            );
            for r in [a.unwrap(), b.unwrap(), c.unwrap()] {
                totals.opened += r.opened;
                totals.updated += r.updated;
                totals.already_open += r.already_open;
                totals.closed_stale += r.closed_stale;
            }
            let dups = duplicate_open_rows(&pool).await;
            assert!(dups.is_empty(), "{:?} round {round}: {dups:?}", db.kind);
            let expected_open = (size != "s-1vcpu-1gb") as i64 + (region != "nyc3") as i64;
            let open = count(
                &pool,
                "SELECT COUNT(*) FROM cloud_drift WHERE status = 'open'",
            )
            .await;
            assert_eq!(open, expected_open * RESOURCES as i64, "round {round}");
        }
        // Every row was opened once, with one event; no race wrote twice.
        let rows = count(&pool, "SELECT COUNT(*) FROM cloud_drift").await;
        assert_eq!(i64::from(totals.opened), rows, "{totals:?}");
        let detected = count(
            &pool,
            "SELECT COUNT(*) FROM cloud_resource_events WHERE kind = 'drift_detected'",
        )
        .await;
        assert_eq!(detected, rows + i64::from(totals.updated), "{totals:?}");
        let stale = count(
            &pool,
            "SELECT COUNT(*) FROM cloud_resource_events WHERE kind = 'drift_stale'",
        )
        .await;
        assert_eq!(stale, i64::from(totals.closed_stale));
        println!("{:?}: {totals:?}", db.kind);
        for s in &stores {
            s.close().await;
        }
    }
}

#[tokio::test]
async fn two_coordinators_asked_to_sync_at_once_on_postgres_take_turns() {
    let db = TestDb::postgres().await;
    let sim = sim().await;
    let ids = sim.seed_droplets(20, &[]);
    let one = coordinator(&db, &sim).await;
    let two = coordinator(&db, &sim).await;
    sync(&one).await;
    for id in &ids[..5] {
        record_spec(&one, &rid(*id), json!({"size_slug": "s-1vcpu-1gb"})).await;
    }
    let epoch_before = one
        .store()
        .get_job("inventory.sync")
        .await
        .unwrap()
        .unwrap()
        .epoch;
    let rounds = 6;
    for round in 0..rounds {
        let size = if round % 2 == 0 {
            "s-2vcpu-2gb"
        } else {
            "s-1vcpu-1gb"
        };
        for id in &ids[..5] {
            assert!(sim.set_droplet_size(*id, size));
        }
        let (a, b) = tokio::join!(sync(&one), sync(&two));
        assert_eq!(a.seen + b.seen, 40, "both synced");
        let open: usize = {
            let mut n = 0;
            for id in &ids[..5] {
                n += list(&one, &rid(*id), &[]).await.len();
            }
            n
        };
        assert_eq!(open, if round % 2 == 0 { 5 } else { 0 }, "round {round}");
        let pool = db.raw_pool().await;
        assert!(duplicate_open_rows(&pool).await.is_empty());
        pool.close().await;
    }
    let job = one
        .store()
        .get_job("inventory.sync")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.epoch,
        epoch_before + 2 * rounds,
        "one claim per sync, one sync at a time"
    );
    assert!(job.owner_id.is_none());
    sim.assert_no_violations();
}
