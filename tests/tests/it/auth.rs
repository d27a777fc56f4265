//! Tokens and roles, checked end to end through a real coordinator.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_tests::assert_contains;
use berth_tests::cluster::Bearer;
use berth_tests::{TestAgent, TestCoordinator, TestDb};
use sqlx::Row;
use tonic::Code;

#[tokio::test]
async fn calls_without_a_token_are_unauthenticated() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let mut client = pb::host_service_client::HostServiceClient::new(c.channel().await);
    let err = client
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_contains(err.message(), "authorization: Bearer");

    let mut client = c.hosts("berth_not-a-real-token").await;
    let err = client
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn roles_are_enforced_per_method() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let ci = c.token(Role::Ci, None).await;
    let operator = c.token(Role::Operator, None).await;
    let agent = c.token(Role::Agent, Some("host-a")).await;

    // ci may read hosts, but not manage tokens.
    c.hosts(&ci)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .expect("ci reads hosts");
    for token in [&ci, &operator, &agent] {
        let mut tokens = pb::token_service_client::TokenServiceClient::with_interceptor(
            c.channel().await,
            Bearer::new(token),
        );
        let err = tokens
            .list_tokens(pb::ListTokensRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    // An agent token is for the agent link only.
    let err = c
        .hosts(&agent)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_contains(err.message(), "role agent");

    // The drift inbox and droplet destroy are admin only: operator is refused before anything runs.
    let mut drift = pb::drift_service_client::DriftServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(&operator),
    );
    let err = drift
        .list_drift(pb::ListDriftRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_token_table_holds_no_plaintext_and_revoked_tokens_stop_working() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let mut tokens = pb::token_service_client::TokenServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(&c.admin_token),
    );
    let created = tokens
        .create_token(pb::CreateTokenRequest {
            role: "ci".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.token.clone();
    assert!(secret.starts_with("berth_") && secret.len() > 60);

    // Read the database itself: no column of any row contains a token's text.
    let pool = db.raw_pool().await;
    let rows = sqlx::query("SELECT token_id, token_hash, role, description FROM api_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        for col in 0..4 {
            let v: String = row.try_get(col).unwrap();
            assert!(
                !v.contains(&secret) && !v.contains(&c.admin_token),
                "plaintext token stored"
            );
            assert!(!v.contains(&secret["berth_".len()..]));
        }
    }

    c.hosts(&secret)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .expect("new token works");
    let id = created.info.unwrap().token_id;
    tokens
        .revoke_token(pb::RevokeTokenRequest { token_id: id })
        .await
        .unwrap();
    let err = c
        .hosts(&secret)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_agent_token_cannot_say_hello_as_another_host() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let token_for_a = c.token(Role::Agent, Some("host-a")).await;

    // On the wire: a hello naming another host is refused with PERMISSION_DENIED.
    let mut link = pb::agent_link_client::AgentLinkClient::with_interceptor(
        c.channel().await,
        Bearer::new(&token_for_a),
    );
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            host_id: "host-b".into(),
            ..Default::default()
        })),
    };
    let err = link
        .session(futures::stream::iter([hello]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_contains(err.message(), "bound to host host-a");

    // The real agent, misconfigured the same way, never gets recorded.
    let _impostor = TestAgent::start(&c, "host-b", &token_for_a, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.list_hosts().await.is_empty(),
        "host-b must not be recorded"
    );

    let honest = TestAgent::start(&c, "host-a", &token_for_a, |_| {}).await;
    honest.wait_connected(Duration::from_secs(5)).await;
    let hosts = c.list_hosts().await;
    assert_eq!(
        hosts.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(),
        ["host-a"]
    );
}
