//! One connection opening 2,000 streams with random bearer tokens, while an admin works and
//! demo sagas hold short leases: the admin's calls stay quick and no saga loses its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::cluster::Bearer;
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::json;
use tonic::Code;

/// The bound for an authorized call or a lease renewal under the flood.
const QUICK: Duration = Duration::from_secs(2);
const FLOOD_STREAMS: usize = 2_000;

/// A well-formed token nobody issued: it passes the format check and reaches the lookup.
fn random_token() -> String {
    format!(
        "berth_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// One round of the flood: `FLOOD_STREAMS` calls at once on one connection, each with its own
/// random token. Every one must be refused as unauthenticated (or refused by the stream cap).
async fn flood_round(channel: tonic::transport::Channel) {
    let mut calls: FuturesUnordered<_> = (0..FLOOD_STREAMS)
        .map(|_| {
            let mut hosts = pb::host_service_client::HostServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new(&random_token()),
            );
            async move { hosts.list_hosts(pb::ListHostsRequest {}).await }
        })
        .collect();
    while let Some(answer) = calls.next().await {
        let code = answer.expect_err("an unknown token is refused").code();
        assert!(
            matches!(code, Code::Unauthenticated | Code::Unavailable),
            "flood call answered {code:?}"
        );
    }
}

async fn flood_while_sagas_run(db: TestDb) {
    let _heavy = berth_tests::heavy().await;
    let c = TestCoordinator::start_with(&db, None, |config| {
        // Short leases: a renewal delayed past ~1.6 s loses the saga to a reclaim.
        config.sagas.lease_ms = 2_000;
        config.sagas.renew_ms = 200;
    })
    .await;
    let sagas: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(c.start_demo(json!([{"step": "sleep", "ms": 4000}])).await);
        }
        ids
    };
    for id in &sagas {
        c.wait_step(id, 0, StepStatus::Running, Duration::from_secs(10))
            .await;
    }

    let done = Arc::new(AtomicBool::new(false));
    let flood_channel = c.channel().await;
    let flood = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut rounds = 0;
            // Bounded: a few rounds, or until the sagas finished.
            while rounds < 6 && !done.load(Ordering::Relaxed) {
                flood_round(flood_channel.clone()).await;
                rounds += 1;
            }
            rounds
        })
    };

    // The authorized client on its own connection, timing every call.
    let mut admin = c.sagas().await;
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let list = admin
            .list_sagas(pb::ListSagasRequest::default())
            .await
            .expect("admin lists sagas during the flood")
            .into_inner();
        slowest = slowest.max(t.elapsed());
        calls += 1;
        let finished = list
            .sagas
            .iter()
            .filter(|s| sagas.contains(&s.saga_id))
            .all(|s| !matches!(s.saga_status(), SagaStatus::Pending | SagaStatus::Running));
        if finished {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sagas did not finish within 60 s under the flood"
        );
    }
    done.store(true, Ordering::Relaxed);
    let rounds = flood.await.expect("flood task");
    eprintln!(
        "flood ({:?}): {rounds} rounds of {FLOOD_STREAMS} streams; {calls} admin calls, slowest {slowest:?}",
        db.kind
    );
    assert!(rounds >= 1, "the flood ran");
    assert!(
        slowest < QUICK,
        "an authorized call took {slowest:?} under the flood (bound {QUICK:?})"
    );
    for id in &sagas {
        let saga = c.get_saga(id).await;
        assert_eq!(
            saga.saga_status(),
            SagaStatus::Completed,
            "saga {id}: {saga:?}"
        );
        let row = c.store().get_saga(id).await.expect("saga row");
        assert_eq!(
            (row.reclaim_count, row.epoch),
            (0, 1),
            "saga {id} lost its lease under the flood (reclaimed)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_tokens_does_not_delay_the_admin_or_the_leases_sqlite() {
    flood_while_sagas_run(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_tokens_does_not_delay_the_admin_or_the_leases_postgres() {
    flood_while_sagas_run(TestDb::postgres().await).await;
}
