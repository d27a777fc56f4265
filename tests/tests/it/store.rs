//! The store suite, run against SQLite and PostgreSQL alike.

use berth_coordinator::store::{
    Due, Fired, HostSession, LATEST_VERSION, NewAlert, NewRun, ScheduleRow, Store, StoreError,
    Trigger,
};
use berth_tests::TestDb;
use berth_tests::assert_contains;
use sqlx::Executor;

fn session<'a>(host: &'a str, session: &'a str, caps: &'a [String]) -> HostSession<'a> {
    HostSession {
        host_id: host,
        hostname: "h1.example.org",
        agent_version: "0.1.0",
        docker_version: "28.2.2",
        capabilities: caps,
        coordinator_id: "coord-a",
        session_id: session,
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_versioned() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            LATEST_VERSION,
            "{:?}",
            db.kind
        );
        store.close().await;
        // Opening again applies nothing and keeps the data.
        let store = Store::open(&db.url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), LATEST_VERSION);
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused_naming_both_versions() {
    for db in TestDb::each().await {
        Store::open(&db.url).await.unwrap().close().await;
        let pool = db.raw_pool().await;
        pool.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO berth_schema_migrations (version, name, applied_at_ms) VALUES ({}, 'future', 0)",
            LATEST_VERSION + 1
        )))
        .await
        .unwrap();
        let err = Store::open(&db.url).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Schema(_)), "{msg}");
        assert_contains(&msg, format!("version {}", LATEST_VERSION + 1));
        assert_contains(&msg, format!("up to {LATEST_VERSION}"));
    }
}

#[tokio::test]
async fn hosts_record_sessions_heartbeats_and_disconnects() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        let caps = vec!["describe".to_owned()];
        store
            .host_connected(&session("h1", "s1", &caps), 1_000)
            .await
            .unwrap();
        let h = store.get_host("h1").await.unwrap();
        assert_eq!((h.first_seen_ms, h.last_heartbeat_ms), (1_000, 1_000));
        assert_eq!(h.capabilities, caps);
        assert!(h.is_online(2_000, 3_000));
        assert!(!h.is_online(5_000, 3_000), "a stale heartbeat is offline");

        assert!(
            store
                .host_heartbeat("h1", "s1", 4_000, Some(7 << 30))
                .await
                .unwrap()
        );
        // A heartbeat that could not measure the warm root keeps the last figure.
        assert!(store.host_heartbeat("h1", "s1", 4_000, None).await.unwrap());
        let h = store.get_host("h1").await.unwrap();
        assert_eq!(h.warm_root_free_bytes, Some(7 << 30));
        // A newer session replaces the old one; the old one's heartbeats and close do nothing.
        store
            .host_connected(&session("h1", "s2", &caps), 5_000)
            .await
            .unwrap();
        assert!(!store.host_heartbeat("h1", "s1", 6_000, None).await.unwrap());
        store.host_disconnected("h1", "s1").await.unwrap();
        let h = store.get_host("h1").await.unwrap();
        assert_eq!(h.first_seen_ms, 1_000, "first seen is kept");
        assert_eq!(h.last_heartbeat_ms, 5_000);
        assert!(h.is_online(5_500, 3_000));

        store.host_disconnected("h1", "s2").await.unwrap();
        assert!(!store.get_host("h1").await.unwrap().is_online(5_500, 3_000));
        assert!(matches!(
            store.get_host("nope").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.list_hosts().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn tokens_are_found_by_hash_until_revoked_or_expired() {
    use berth_coordinator::store::{NewToken, TokenScope};
    static NO_SCOPE: TokenScope = TokenScope {
        hosts: Vec::new(),
        apps: Vec::new(),
    };
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        let new = |id: &'static str, hash: &'static str, expires| NewToken {
            token_id: id,
            token_hash: hash,
            role: "ci",
            host_id: None,
            description: "",
            created_at_ms: 1_000,
            expires_at_ms: expires,
            scope: &NO_SCOPE,
        };
        store.insert_token(&new("t1", "hash1", None)).await.unwrap();
        store
            .insert_token(&new("t2", "hash2", Some(2_000)))
            .await
            .unwrap();
        assert!(matches!(
            store.insert_token(&new("t3", "hash1", None)).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store
                .find_live_token("hash1", 1_500)
                .await
                .unwrap()
                .unwrap()
                .token_id,
            "t1"
        );
        assert!(
            store
                .find_live_token("hash2", 1_500)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .find_live_token("hash2", 2_000)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!(
            store
                .find_live_token("nope", 1_500)
                .await
                .unwrap()
                .is_none()
        );
        let revoked = store.revoke_token("t1", 1_600).await.unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(1_600));
        assert!(
            store
                .find_live_token("hash1", 1_700)
                .await
                .unwrap()
                .is_none(),
            "revoked"
        );
        assert_eq!(store.list_tokens(false).await.unwrap().len(), 1);
        assert_eq!(store.list_tokens(true).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn coordinators_starting_together_migrate_once_on_postgres() {
    let db = TestDb::postgres().await;
    let opens = (0..4).map(|_| Store::open(&db.url));
    for store in futures::future::join_all(opens).await {
        assert_eq!(
            store.unwrap().schema_version().await.unwrap(),
            LATEST_VERSION
        );
    }
    let pool = db.raw_pool().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM berth_schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, LATEST_VERSION);
}

fn schedule(name: &str) -> ScheduleRow {
    ScheduleRow {
        name: name.to_owned(),
        kind: "archive.create".into(),
        inputs: "{}".into(),
        cron: "* * * * *".into(),
        timezone: "UTC".into(),
        jitter_secs: 0,
        catch_up: true,
        skip_unchanged: true,
        alert_after_secs: 0,
        paused: false,
        created_at_ms: 0,
        since_ms: 0,
        cursor_ms: 0,
        last_success_ms: None,
        overdue_alerted_ms: None,
    }
}

fn run<'a>(schedule: &'a str, slot_ms: i64, outcome: Option<&'a str>) -> NewRun<'a> {
    NewRun {
        schedule,
        slot_ms,
        trigger: Trigger::Scheduled,
        saga_id: None,
        fired_by: "coord-a",
        outcome,
        detail: None,
        now_ms: slot_ms,
    }
}

/// A fire recorded under a lost lease writes nothing; each occurrence is recorded once; old
/// ended runs and delivered alerts are forgotten, open runs and undelivered alerts are not.
#[tokio::test]
async fn schedule_runs_are_fenced_recorded_once_and_forgotten_when_old() {
    for db in TestDb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        store.insert_schedule(&schedule("s")).await.unwrap();
        let err = store.insert_schedule(&schedule("s")).await.unwrap_err();
        assert_contains(err.to_string(), "already exists");
        let claim = store
            .claim_job("schedule.fire", "coord-a", 1_000, 1_000, 0, Due::WhenDue)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .record_fire(Some(&claim), &run("s", 1_000, Some("succeeded")))
                .await
                .unwrap(),
            Fired::Recorded
        );
        assert_eq!(
            store
                .record_fire(Some(&claim), &run("s", 1_000, Some("succeeded")))
                .await
                .unwrap(),
            Fired::AlreadyRecorded
        );
        // Another coordinator takes the job once the lease ran out: the first writes nothing.
        let mut late = run("s", 2_000, Some("succeeded"));
        late.now_ms = 5_000;
        store
            .claim_job("schedule.fire", "coord-b", 5_000, 1_000, 0, Due::Now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.record_fire(Some(&claim), &late).await.unwrap(),
            Fired::LeaseLost
        );
        assert_eq!(store.get_schedule("s").await.unwrap().cursor_ms, 1_000);
        for slot in [3_000, 4_000, 5_000, 6_000] {
            store
                .record_fire(None, &run("s", slot, Some("failed")))
                .await
                .unwrap();
        }
        store
            .record_fire(None, &run("s", 7_000, None))
            .await
            .unwrap();
        assert_eq!(store.prune_schedule_runs(3).await.unwrap(), 3);
        let left: Vec<i64> = store
            .schedule_runs("s", 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.slot_ms)
            .collect();
        assert_eq!(left, vec![7_000, 6_000, 5_000]);
        assert_eq!(store.prune_schedule_runs(3).await.unwrap(), 0);

        for id in ["a1", "a2"] {
            let alert = NewAlert {
                event_id: id.into(),
                kind: "schedule.run_failed".into(),
                body: "{}".into(),
            };
            store.queue_alert(&alert, 100).await.unwrap();
            store.queue_alert(&alert, 100).await.unwrap();
        }
        let first = store
            .claim_alert("coord-a", 100, 1_000)
            .await
            .unwrap()
            .unwrap();
        // Claimed: no other sender takes it while the lease lasts.
        let second = store
            .claim_alert("coord-b", 100, 1_000)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(first.event_id, second.event_id);
        assert!(
            store
                .claim_alert("coord-c", 100, 1_000)
                .await
                .unwrap()
                .is_none()
        );
        store
            .alert_attempted(&first.event_id, "coord-a", 200, Ok(()))
            .await
            .unwrap();
        store
            .alert_attempted(&second.event_id, "coord-b", 200, Err(("503", 10_000)))
            .await
            .unwrap();
        assert_eq!(store.undelivered_alerts().await.unwrap(), 1);
        assert_eq!(store.prune_alerts(300).await.unwrap(), 1);
        let left = store.list_alerts(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event_id, second.event_id);
        assert_eq!(left[0].attempts, 1);
        assert_eq!(left[0].last_error.as_deref(), Some("503"));
    }
}
