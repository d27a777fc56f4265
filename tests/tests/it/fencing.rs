//! Leases and fencing at the store, on SQLite and PostgreSQL: a stale owner's write changes
//! nothing, and coordinators racing for sagas claim each epoch exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use berth_coordinator::saga::{Deps, Engine, EngineConfig, Registry};
use berth_coordinator::store::{Fence, NewEvent, NewSaga, StepWrite, Store, StoreError};
use berth_shared::saga::{EventKind, StepStatus};
use berth_tests::TestDb;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

fn now() -> i64 {
    berth_shared::time::unix_ms(std::time::SystemTime::now())
}

async fn insert_demo(store: &Store, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        let inputs = r#"{"steps":[{"step":"record"},{"step":"noop"},{"step":"record"}]}"#;
        let steps = [("record", false), ("noop", false), ("record", false)];
        store
            .insert_saga(&NewSaga {
                id: &id,
                kind: "demo",
                inputs,
                start_key: None,
                steps: &steps,
                now_ms: now(),
                started_by: None,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// A coordinator claims only sagas of kinds it runs, on both databases: one of another kind
/// waits for a replica that has it, instead of being failed by one that does not.
#[tokio::test]
async fn a_saga_is_claimed_only_by_a_coordinator_that_runs_its_kind() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        let id = insert_demo(&store, 1).await.remove(0);
        for kinds in [&[][..], &["droplet.provision", "warm.restore"][..]] {
            let claimed = store
                .claim_saga_of("no-demo", now(), 30_000, kinds)
                .await
                .unwrap();
            assert!(
                claimed.is_none(),
                "{:?}: {kinds:?} claimed {claimed:?}",
                db.kind
            );
        }
        let claimed = store
            .claim_saga_of("demo", now(), 30_000, &["demo", "it's"])
            .await
            .unwrap()
            .expect("the replica with the kind claims it");
        assert_eq!((claimed.id.as_str(), claimed.epoch), (id.as_str(), 1));
    }
}

#[tokio::test]
async fn a_stale_owner_cannot_write_after_another_claims_the_saga() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        let id = insert_demo(&store, 1).await.remove(0);
        let a = store
            .claim_saga("coord-a", now(), 30_000)
            .await
            .unwrap()
            .expect("a claims");
        assert_eq!(a.epoch, 1);
        assert!(
            store
                .claim_saga("coord-b", now(), 30_000)
                .await
                .unwrap()
                .is_none(),
            "a live lease blocks others"
        );

        // Push A's lease into the past, as if A had stalled; B claims.
        let pool = db.raw_pool().await;
        sqlx::query("UPDATE saga_runs SET lease_expires_at_ms = 1 WHERE id = $1")
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        let b = store
            .claim_saga("coord-b", now(), 30_000)
            .await
            .unwrap()
            .expect("b claims");
        assert_eq!((b.epoch, b.reclaim_count), (2, 1));

        let stale = Fence {
            saga_id: id.clone(),
            owner_id: "coord-a".into(),
            epoch: 1,
            lease_ms: 30_000,
        };
        let event = NewEvent {
            kind: EventKind::StepStarted,
            step_idx: 0,
            message: "stale",
            detail: None,
        };
        let write = StepWrite::to(StepStatus::Running);
        let err = store
            .write_step(&stale, 0, &write, event, now())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseLost { .. }),
            "{err:?} on {:?}",
            db.kind
        );
        assert!(store.renew_lease(&stale, now()).await.unwrap().is_none());
        let err = store
            .record_test_effect(&stale, 0, "execute", now())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost { .. }));

        let steps = store.get_steps(&id).await.unwrap();
        assert_eq!(
            steps[0].status,
            StepStatus::Pending,
            "the stale write changed nothing"
        );
        let stale_events: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM saga_events WHERE message = 'stale'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stale_events, 0);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM saga_test_effects")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0);

        let fresh = Fence {
            saga_id: id.clone(),
            owner_id: "coord-b".into(),
            epoch: 2,
            lease_ms: 30_000,
        };
        let event = NewEvent {
            kind: EventKind::StepStarted,
            step_idx: 0,
            message: "fresh",
            detail: None,
        };
        store
            .write_step(&fresh, 0, &write, event, now())
            .await
            .unwrap();
        assert_eq!(store.get_steps(&id).await.unwrap()[0].written_epoch, 2);
    }
}

#[tokio::test]
async fn racing_claimers_on_postgres_get_each_epoch_exactly_once() {
    let db = TestDb::postgres().await;
    let store = Store::open(&db.url).await.unwrap();
    let ids = insert_demo(&store, 60).await;
    // Eight claimers race; every claim is remembered as (saga, epoch).
    let claims = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, claims) = (store.clone(), claims.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("racer-{i}");
            while let Some(row) = store.claim_saga(&owner, now(), 60_000).await.unwrap() {
                claims
                    .lock()
                    .unwrap()
                    .push((row.id, row.epoch, owner.clone()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claims = claims.lock().unwrap().clone();
    let unique: HashSet<_> = claims
        .iter()
        .map(|(id, epoch, _)| (id.clone(), *epoch))
        .collect();
    assert_eq!(
        unique.len(),
        claims.len(),
        "no (saga, epoch) was claimed twice"
    );
    assert_eq!(
        claims.len(),
        ids.len(),
        "each saga claimed once while its lease lives"
    );
    let owners: HashSet<_> = claims.iter().map(|(_, _, o)| o.clone()).collect();
    assert!(owners.len() > 1, "the claimers really raced");
}

/// Engines in this process on one database, sharing the work.
async fn engines(db: &TestDb, n: usize, shutdown: &CancellationToken) -> Store {
    let store = Store::open(&db.url).await.unwrap();
    for i in 0..n {
        let mut config = EngineConfig::new(format!("engine-{i}"));
        config.poll_interval = Duration::from_millis(20);
        config.lease = Duration::from_secs(5);
        config.renew_every = Duration::from_secs(1);
        let engine = Engine::new(
            store.clone(),
            {
                let mut registry = Registry::default();
                registry.enable_demo();
                registry
            },
            Deps::new(store.clone()),
            config,
        );
        tokio::spawn(engine.run(shutdown.clone()));
    }
    store
}

#[tokio::test]
async fn several_engines_on_postgres_run_every_saga_once_without_duplicate_transitions() {
    let db = TestDb::postgres().await;
    let shutdown = CancellationToken::new();
    let store = engines(&db, 3, &shutdown).await;
    let ids = insert_demo(&store, 90).await;
    let pool = db.raw_pool().await;
    berth_tests::eventually(Duration::from_secs(60), "all sagas to complete", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM saga_runs WHERE status = 'completed'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (n == ids.len() as i64).then_some(())
    })
    .await;
    shutdown.cancel();
    // Every record step's effect once, from one call; every step succeeded exactly once.
    let calls: Vec<i64> = sqlx::query("SELECT calls FROM saga_test_effects")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("calls"))
        .collect();
    assert_eq!(calls.len(), ids.len() * 2);
    assert!(calls.iter().all(|c| *c == 1), "{calls:?}");
    let dup: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT saga_id, step_idx FROM saga_events WHERE kind = 'step_succeeded' \
         GROUP BY saga_id, step_idx HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(dup, 0, "no step transition was written twice");
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT message) FROM saga_events WHERE kind = 'saga_running'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(owners > 1, "the engines shared the work");
}
