//! The saga engine against real coordinator processes that are killed (`kill -9`), frozen past
//! their lease (SIGSTOP, then SIGCONT), stopped (SIGTERM) and killed at random (chaos).

use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use berth_tests::ledger;
use berth_tests::process::{CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{TestDb, eventually};
use serde_json::{Value, json};
use sqlx::Row;

const FINAL_OK: &[SagaStatus] = &[
    SagaStatus::Completed,
    SagaStatus::Compensated,
    SagaStatus::Cancelled,
];

async fn start(p: &CoordinatorProcess, token: &str, steps: Value) -> String {
    let inputs = json!({ "steps": steps }).to_string();
    p.sagas(token)
        .await
        .start_saga(pb::StartSagaRequest {
            kind: "demo".into(),
            inputs_json: inputs,
            idempotency_key: String::new(),
        })
        .await
        .expect("start saga")
        .into_inner()
        .saga_id
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn wait_all_final(pool: &sqlx::AnyPool, n: i64, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let active = count(
            pool,
            "SELECT COUNT(*) FROM saga_runs WHERE status IN ('pending','running','compensating')",
        )
        .await;
        let all = count(pool, "SELECT COUNT(*) FROM saga_runs").await;
        if active == 0 && all == n {
            return;
        }
        if Instant::now() > deadline {
            let rows = sqlx::query("SELECT id, status, owner_id, epoch, lease_expires_at_ms, reclaim_count FROM saga_runs WHERE status IN ('pending','running','compensating')")
                .fetch_all(pool)
                .await
                .unwrap();
            let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
            let stuck: Vec<String> = rows
                .iter()
                .map(|r| {
                    let lease: i64 = r.get("lease_expires_at_ms");
                    format!(
                        "{} {} owner={:?} epoch={} lease_in={}ms reclaims={}",
                        r.get::<String, _>("id"),
                        r.get::<String, _>("status"),
                        r.get::<Option<String>, _>("owner_id"),
                        r.get::<i64, _>("epoch"),
                        lease - now,
                        r.get::<i64, _>("reclaim_count")
                    )
                })
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}; {active} active:\n{}",
                stuck.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_coordinator_killed_mid_saga_is_taken_over_and_every_saga_completes() {
    for db in TestDb::each().await {
        let token = admin_token(&db.url).await;
        let a = CoordinatorProcess::start("coord-a", &db.url, SagaTiming::default()).await;
        let steps = json!([{"step": "record"}, {"step": "sleep", "ms": 400}, {"step": "record"}, {"step": "sleep", "ms": 400}, {"step": "record"}]);
        for _ in 0..20 {
            start(&a, &token, steps.clone()).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.kill9();
        let pool = db.raw_pool().await;
        let running = count(
            &pool,
            "SELECT COUNT(*) FROM saga_runs WHERE status = 'running'",
        )
        .await;
        assert!(running > 0, "the kill landed mid-saga ({:?})", db.kind);

        let b = CoordinatorProcess::start("coord-b", &db.url, SagaTiming::default()).await;
        wait_all_final(
            &pool,
            20,
            Duration::from_secs(30),
            "every saga to finish on coord-b",
        )
        .await;
        let completed = count(
            &pool,
            "SELECT COUNT(*) FROM saga_runs WHERE status = 'completed'",
        )
        .await;
        assert_eq!(completed, 20, "{}", b.log());
        let effects = count(
            &pool,
            "SELECT COUNT(*) FROM saga_test_effects WHERE phase = 'execute'",
        )
        .await;
        assert_eq!(effects, 60, "one effect per record step");
        let taken = count(&pool, "SELECT COUNT(*) FROM saga_runs WHERE epoch >= 2").await;
        assert!(taken > 0, "coord-b took sagas over from coord-a");
        ledger::assert_clean(
            &ledger::check(&pool, &[SagaStatus::Completed]).await,
            "kill -9",
        );
        let dup = duplicated_effects(&pool).await;
        assert!(dup.is_empty(), "duplicated side effects: {dup:?}");
    }
}

#[tokio::test]
async fn a_coordinator_frozen_past_its_lease_cannot_write_when_it_wakes() {
    let db = TestDb::postgres().await;
    let token = admin_token(&db.url).await;
    let a = CoordinatorProcess::start("coord-a", &db.url, SagaTiming::default()).await;
    let steps = json!([{"step": "record"}, {"step": "sleep", "ms": 2500}, {"step": "record"}]);
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(start(&a, &token, steps.clone()).await);
    }
    let pool = db.raw_pool().await;
    eventually(
        Duration::from_secs(10),
        "coord-a to hold the sagas",
        || async {
            let n = count(
                &pool,
                "SELECT COUNT(*) FROM saga_runs WHERE owner_id = 'coord-a' AND status = 'running'",
            )
            .await;
            (n == 8).then_some(())
        },
    )
    .await;
    a.signal("-STOP");
    let b = CoordinatorProcess::start("coord-b", &db.url, SagaTiming::default()).await;
    eventually(
        Duration::from_secs(15),
        "coord-b to take every saga over",
        || async {
            let n = count(
                &pool,
                "SELECT COUNT(*) FROM saga_runs WHERE owner_id = 'coord-b' OR status = 'completed'",
            )
            .await;
            (n == 8).then_some(())
        },
    )
    .await;
    // coord-a wakes up in the middle of its sleep steps, still believing it owns them.
    a.signal("-CONT");
    wait_all_final(&pool, 8, Duration::from_secs(30), "every saga to finish").await;
    tokio::time::sleep(Duration::from_secs(3)).await; // give coord-a every chance to write late
    let completed = count(
        &pool,
        "SELECT COUNT(*) FROM saga_runs WHERE status = 'completed'",
    )
    .await;
    assert_eq!(completed, 8, "{}", b.log());
    let by_a_late = count(
        &pool,
        "SELECT COUNT(*) FROM saga_events e JOIN saga_runs r ON r.id = e.saga_id \
         WHERE e.kind = 'step_succeeded' AND e.epoch < r.epoch AND e.step_idx >= 1",
    )
    .await;
    assert_eq!(
        by_a_late, 0,
        "no step after the takeover was recorded under coord-a's old epoch"
    );
    assert!(
        a.log().contains("lease lost"),
        "coord-a noticed it lost its leases:\n{}",
        a.log()
    );
    ledger::assert_clean(
        &ledger::check(&pool, &[SagaStatus::Completed]).await,
        "SIGSTOP",
    );
    let dup = duplicated_effects(&pool).await;
    assert!(dup.is_empty(), "duplicated side effects: {dup:?}");
}

#[tokio::test]
async fn a_coordinator_stopped_with_sigterm_hands_its_sagas_back_at_once() {
    let db = TestDb::postgres().await;
    let token = admin_token(&db.url).await;
    // Long leases: only a hand-back (not a lease expiry) lets coord-b continue quickly.
    let timing = SagaTiming {
        lease_ms: 60_000,
        renew_ms: 10_000,
        max_reclaims: 5,
        ..SagaTiming::default()
    };
    let a = CoordinatorProcess::start("coord-a", &db.url, timing).await;
    let b = CoordinatorProcess::start("coord-b", &db.url, timing).await;
    let steps = json!([{"step": "sleep", "ms": 1500}, {"step": "record"}]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(start(&a, &token, steps.clone()).await);
    }
    let pool = db.raw_pool().await;
    eventually(
        Duration::from_secs(10),
        "coord-a to hold a saga",
        || async {
            let n = count(
                &pool,
                "SELECT COUNT(*) FROM saga_runs WHERE owner_id = 'coord-a'",
            )
            .await;
            (n > 0).then_some(())
        },
    )
    .await;
    // What coord-a holds at the stop, and under which epoch: coord-b's claim raises it.
    let held: Vec<(String, i64)> = sqlx::query(
        "SELECT id, epoch FROM saga_runs WHERE owner_id = 'coord-a' AND status = 'running'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("id"), r.get("epoch")))
    .collect();
    let stopped = Instant::now();
    let stopped_ms = berth_shared::time::unix_ms(std::time::SystemTime::now());
    a.signal("-TERM");
    eventually(
        Duration::from_secs(10),
        "coord-a's sagas to move",
        || async {
            let n = count(
                &pool,
                "SELECT COUNT(*) FROM saga_runs WHERE owner_id = 'coord-a'",
            )
            .await;
            (n == 0).then_some(())
        },
    )
    .await;
    wait_all_final(
        &pool,
        6,
        Duration::from_secs(20),
        "every saga to finish on coord-b",
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "sagas finished {took:?} after the stop, not after a 60 s lease"
    );
    // From the SIGTERM to the first event coord-b wrote for each saga coord-a held.
    let mut delays = Vec::new();
    for (id, epoch) in &held {
        let first: Option<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT MIN(at_ms) AS first_ms FROM saga_events WHERE saga_id = '{id}' AND epoch > {epoch}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("first_ms");
        if let Some(first) = first {
            delays.push(first - stopped_ms);
        }
    }
    delays.sort_unstable();
    eprintln!("SIGTERM to coord-b's first event, per handed-back saga (ms): {delays:?}");
    assert!(
        !delays.is_empty(),
        "coord-b continued none of {held:?}:\n{}",
        b.log()
    );
    assert!(
        delays.iter().all(|d| *d < 1_000),
        "coord-b continued the handed-back sagas {delays:?} ms after the SIGTERM; a hand-back \
         should continue them within a second, not after a lease timeout"
    );
    let released = count(
        &pool,
        "SELECT COUNT(*) FROM saga_events WHERE kind = 'saga_released'",
    )
    .await;
    assert!(released > 0, "coord-a handed sagas back:\n{}", a.log());
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM saga_runs WHERE status = 'completed'"
        )
        .await,
        6,
        "{}",
        b.log()
    );
    ledger::assert_clean(
        &ledger::check(&pool, &[SagaStatus::Completed]).await,
        "SIGTERM",
    );
}

/// A tiny deterministic generator, so a failing chaos run can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn chaos_steps(rng: &mut Rng) -> Value {
    let n = 2 + rng.below(4);
    let mut steps: Vec<Value> = (0..n)
        .map(|_| match rng.below(5) {
            0 => json!({"step": "noop"}),
            1 | 2 => json!({"step": "record"}),
            3 => json!({"step": "sleep", "ms": 100 + rng.below(500)}),
            _ => json!({"step": "flaky", "failures": 1}),
        })
        .collect();
    if rng.below(5) == 0 {
        steps.push(json!({"step": "fail"}));
    }
    Value::Array(steps)
}

#[tokio::test]
async fn chaos_two_hundred_sagas_while_coordinators_are_killed_at_random() {
    let _heavy = berth_tests::heavy().await;
    let seed: u64 = std::env::var("BERTH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| berth_shared::time::unix_ms(std::time::SystemTime::now()) as u64 | 1);
    eprintln!("chaos seed {seed} (replay with BERTH_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let db = TestDb::postgres().await;
    let token = admin_token(&db.url).await;
    // Reclaims are expected here (that is the point), so the pause threshold is raised.
    let timing = SagaTiming {
        lease_ms: 1_200,
        renew_ms: 250,
        max_reclaims: 100,
        ..SagaTiming::default()
    };
    let coords = [
        CoordinatorProcess::start("chaos-a", &db.url, timing).await,
        CoordinatorProcess::start("chaos-b", &db.url, timing).await,
    ];
    let pool = db.raw_pool().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    // Start the sagas in batches, killing and restarting a coordinator between batches, and
    // cancel one saga in ten along the way.
    for batch in 0..10 {
        let victim = rng.below(2) as usize;
        let alive = 1 - victim;
        for _ in 0..20 {
            let id = start(&coords[alive], &token, chaos_steps(&mut rng)).await;
            if rng.below(10) == 0 {
                // A cancel may be refused (the saga passed a pivot or finished): either way
                // the saga must end cleanly.
                let _ = coords[alive]
                    .sagas(&token)
                    .await
                    .cancel_saga(pb::SagaIdRequest {
                        saga_id: id,
                        reason: "chaos".into(),
                    })
                    .await;
            }
        }
        if batch % 2 == 0 {
            coords[victim].kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            coords[victim].restart().await;
        }
    }
    loop {
        let active = count(
            &pool,
            "SELECT COUNT(*) FROM saga_runs WHERE status IN ('pending','running','compensating')",
        )
        .await;
        if active == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {active} sagas still active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        if kills < 15 {
            let victim = rng.below(2) as usize;
            coords[victim].kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            coords[victim].restart().await;
        }
    }
    eprintln!("chaos: {kills} kills");
    assert!(
        kills >= 3,
        "seed {seed}: the sagas finished before the chaos really started"
    );
    let problems = ledger::check(&pool, FINAL_OK).await;
    ledger::assert_clean(&problems, &format!("replay with BERTH_CHAOS_SEED={seed}"));
    let dup = duplicated_effects(&pool).await;
    assert!(
        dup.is_empty(),
        "seed {seed}: duplicated side effects: {dup:?}"
    );
}

/// Side effects of the `record` step that ran more than once without cause. A repeat is
/// legitimate only from a higher epoch (a takeover) whose predecessor never recorded the
/// step's result; two calls under one epoch, or a repeat after the result was recorded under
/// the earlier call's epoch, are duplicates.
async fn duplicated_effects(pool: &sqlx::AnyPool) -> Vec<String> {
    let same_epoch = sqlx::query(
        "SELECT saga_id, step_idx, phase, epoch, COUNT(*) AS n FROM saga_test_effect_calls \
         GROUP BY saga_id, step_idx, phase, epoch HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let after_result = sqlx::query(
        "SELECT c.saga_id, c.step_idx, c.phase, c.epoch, 0 AS n FROM saga_test_effect_calls c \
         WHERE EXISTS (SELECT 1 FROM saga_test_effect_calls later \
                       WHERE later.saga_id = c.saga_id AND later.step_idx = c.step_idx \
                         AND later.phase = c.phase AND later.epoch > c.epoch) \
           AND EXISTS (SELECT 1 FROM saga_events e \
                       WHERE e.saga_id = c.saga_id AND e.step_idx = c.step_idx \
                         AND e.epoch = c.epoch \
                         AND e.kind = CASE WHEN c.phase = 'execute' THEN 'step_succeeded' \
                                           ELSE 'step_compensated' END)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    same_epoch
        .iter()
        .chain(&after_result)
        .map(|r| {
            format!(
                "{} step {} {} epoch {} ({} calls in that epoch)",
                r.get::<String, _>("saga_id"),
                r.get::<i64, _>("step_idx"),
                r.get::<String, _>("phase"),
                r.get::<i64, _>("epoch"),
                r.get::<i64, _>("n"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_coordinator_killed_during_compensation_is_taken_over_and_the_unwinding_finishes() {
    let db = TestDb::postgres().await;
    let token = admin_token(&db.url).await;
    let a = CoordinatorProcess::start("coord-a", &db.url, SagaTiming::default()).await;
    let steps = json!([
        {"step": "record"},
        {"step": "sleep", "ms": 10, "compensate_ms": 3000},
        {"step": "fail"}
    ]);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(start(&a, &token, steps.clone()).await);
    }
    let pool = db.raw_pool().await;
    eventually(
        Duration::from_secs(15),
        "the slow compensations to start",
        || async {
            let n = count(
            &pool,
            "SELECT COUNT(*) FROM saga_step_results WHERE step_idx = 1 AND status = 'compensating'",
        )
        .await;
            (n == 5).then_some(())
        },
    )
    .await;
    a.kill9();
    let _b = CoordinatorProcess::start("coord-b", &db.url, SagaTiming::default()).await;
    wait_all_final(
        &pool,
        5,
        Duration::from_secs(30),
        "the unwinding to finish on coord-b",
    )
    .await;
    let compensated = count(
        &pool,
        "SELECT COUNT(*) FROM saga_runs WHERE status = 'compensated'",
    )
    .await;
    assert_eq!(compensated, 5);
    let undone = count(
        &pool,
        "SELECT COUNT(*) FROM saga_test_effects WHERE step_idx = 0 AND phase = 'compensate'",
    )
    .await;
    assert_eq!(undone, 5, "every record step was undone, once each");
    let resumed = count(
        &pool,
        "SELECT COUNT(*) FROM saga_events WHERE kind = 'compensation_step_started' AND step_idx = 1 AND epoch >= 2",
    )
    .await;
    assert_eq!(resumed, 5, "coord-b resumed each interrupted compensation");
    ledger::assert_clean(
        &ledger::check(&pool, &[SagaStatus::Compensated]).await,
        "kill -9 during compensation",
    );
}

/// A cancel sent to the replica that does not run the saga reaches its running step at once
/// (PostgreSQL's NOTIFY wakes the owner's lease keeper), not at the owner's next lease
/// renewal: renewals here are 10 s apart, as in production, and the step is stopped and the
/// saga compensated within 3 s.
#[tokio::test]
async fn a_cancel_sent_to_another_replica_stops_the_running_step_at_once() {
    let db = TestDb::postgres().await;
    let token = admin_token(&db.url).await;
    let timing = SagaTiming {
        lease_ms: 30_000,
        renew_ms: 10_000,
        ..SagaTiming::default()
    };
    let a = CoordinatorProcess::start("cancel-a", &db.url, timing).await;
    let b = CoordinatorProcess::start("cancel-b", &db.url, timing).await;
    let id = start(
        &a,
        &token,
        json!([{"step": "record"}, {"step": "sleep", "ms": 120_000}]),
    )
    .await;
    let mut sagas = a.sagas(&token).await;
    let owner = eventually(Duration::from_secs(30), "the sleep step to run", || {
        let mut sagas = sagas.clone();
        let id = id.clone();
        async move {
            let s = sagas
                .get_saga(pb::GetSagaRequest { saga_id: id })
                .await
                .ok()?
                .into_inner();
            (s.steps[1].status == "running").then_some(s.owner_id)
        }
    })
    .await;
    let other = if owner == "cancel-a" { &b } else { &a };
    let asked = Instant::now();
    other
        .sagas(&token)
        .await
        .cancel_saga(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: "wrong branch".into(),
        })
        .await
        .expect("cancel through the other replica");
    let ended = loop {
        let s = sagas
            .get_saga(pb::GetSagaRequest {
                saga_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.status == SagaStatus::Cancelled.as_str() {
            let step = &s.steps[1];
            assert_eq!(
                step.status, "cancelled",
                "the stopped step says why: {step:?}"
            );
            assert!(
                step.finished_at_ms >= step.attempt_started_at_ms && step.attempt_started_at_ms > 0
            );
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "the cancel did not reach {owner} within 3 s (its renewals are 10 s apart): {s:?}\n{}",
            if owner == "cancel-a" {
                a.log()
            } else {
                b.log()
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("cancelled through the other replica in {ended:?}");
}
