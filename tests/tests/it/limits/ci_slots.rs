//! A `ci` token cannot hold every engine slot: warm restores waiting on a host count against
//! the token's cap and the cap of all ci tokens together; a repeat of a start it made, and
//! other roles, are not refused; a finished saga frees its place.

use std::time::Duration;

use berth_coordinator::store::HostSession;
use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_tests::assert_contains;
use berth_tests::cluster::Bearer;
use berth_tests::{SagaStatused, TestCoordinator, TestDb, eventually};
use tonic::Code;
use tonic::transport::Channel;

type Warm = pb::warm_service_client::WarmServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

fn restore(app: &str, key: &str) -> pb::WarmRestoreRequest {
    pb::WarmRestoreRequest {
        target: Some(pb::AppTarget {
            host_id: "ci-1".into(),
            app: app.into(),
            domain: format!("{app}.example.org"),
            stack: String::new(),
        }),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn warm_as(c: &TestCoordinator, token: &str) -> Warm {
    pb::warm_service_client::WarmServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(token),
    )
}

#[tokio::test]
async fn a_ci_token_cannot_hold_every_engine_slot() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start_with(&db, None, |config| {
            config.limits.max_active_sagas_per_ci_token = 2;
            config.limits.max_active_ci_sagas = 3;
        })
        .await;
        // A host that is known but away: its restores wait for it, holding their slots.
        c.store()
            .host_connected(
                &HostSession {
                    host_id: "ci-1",
                    hostname: "ci-1",
                    agent_version: "test",
                    docker_version: "test",
                    capabilities: &["warm".to_owned()],
                    coordinator_id: "gone",
                    session_id: "gone",
                },
                0,
            )
            .await
            .unwrap();
        let (ci_a, ci_b) = (c.token(Role::Ci, None).await, c.token(Role::Ci, None).await);
        let (mut a, mut b) = (warm_as(&c, &ci_a).await, warm_as(&c, &ci_b).await);

        let mut started = Vec::new();
        for key in ["a1", "a2"] {
            let r = a.warm_restore(restore("kc", key)).await.unwrap();
            started.push(r.into_inner().saga_id);
        }
        let err = a.warm_restore(restore("kc", "a3")).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message()
                .contains("this ci token already has 2 sagas in progress")
                && err
                    .message()
                    .contains("limits.max_active_sagas_per_ci_token"),
            "{}",
            err.message()
        );
        // A repeat of a start it made answers with that saga.
        let again = a
            .warm_restore(restore("kc", "a1"))
            .await
            .unwrap()
            .into_inner();
        assert!(again.existing && again.saga_id == started[0], "{again:?}");

        // The second token takes the last ci place; then all ci tokens together are full.
        b.warm_restore(restore("kc", "b1")).await.unwrap();
        let err = b.warm_restore(restore("kc", "b2")).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert_contains(err.message(), "ci tokens together already have 3");
        // Operators are not held to it.
        let mut admin = warm_as(&c, &c.admin_token).await;
        admin.warm_restore(restore("kc", "op1")).await.unwrap();

        // The sagas hold their places while they wait on the host...
        for id in &started {
            eventually(Duration::from_secs(20), "the saga runs", || async {
                (c.get_saga(id).await.saga_status() == SagaStatus::Running).then_some(())
            })
            .await;
        }
        // ...and a saga that ends gives its place back.
        c.sagas()
            .await
            .cancel_saga(pb::SagaIdRequest {
                saga_id: started[0].clone(),
                reason: "test over".into(),
            })
            .await
            .unwrap();
        let ended = c.wait_saga(&started[0], Duration::from_secs(30)).await;
        assert_ne!(ended.saga_status(), SagaStatus::Running);
        a.warm_restore(restore("kc", "a3")).await.unwrap();
    }
}
