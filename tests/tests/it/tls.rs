//! TLS and mTLS with a throwaway CA, through real tonic servers.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_tests::{Pki, TestAgent, TestCoordinator, TestDb};
use tonic::transport::Endpoint;

#[tokio::test]
async fn with_tls_a_client_trusting_the_ca_connects_and_plaintext_is_refused() {
    let db = TestDb::sqlite();
    let pki = Arc::new(Pki::new());
    let c = TestCoordinator::start_tls(&db, pki, false).await;
    assert!(c.url().starts_with("https://"));
    let hosts = c.list_hosts().await; // over TLS, trusting the test CA
    assert!(hosts.is_empty());

    // A plaintext HTTP/2 client gets no gRPC answer from the TLS port.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{}", c.addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let result = match plain.connect().await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => pb::host_service_client::HostServiceClient::new(ch)
            .list_hosts(pb::ListHostsRequest {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    assert!(
        result.is_err(),
        "plaintext call must fail against a TLS port"
    );

    // An agent trusting the CA connects over TLS.
    let agent = c.agent("tls-host").await;
    agent.wait_connected(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn with_mtls_an_agent_needs_a_client_certificate() {
    let db = TestDb::sqlite();
    let pki = Arc::new(Pki::new());
    let c = TestCoordinator::start_tls(&db, pki.clone(), true).await;

    let token = c.token(Role::Agent, Some("no-cert")).await;
    let _without = TestAgent::start(&c, "no-cert", &token, |_| {}).await;

    let token = c.token(Role::Agent, Some("with-cert")).await;
    let (cert, key) = pki.client_for("with-cert");
    let with = TestAgent::start(&c, "with-cert", &token, |cfg| {
        let tls = cfg.tls.as_mut().unwrap();
        tls.client_cert_file = Some(cert);
        tls.client_key_file = Some(key);
    })
    .await;
    with.wait_connected(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<_> = c
        .list_hosts()
        .await
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert_eq!(
        ids,
        ["with-cert"],
        "the agent without a client certificate must be refused"
    );

    // Operators' clients may still use a bearer token alone over TLS.
    let ci = c.token(Role::Ci, None).await;
    c.hosts(&ci)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .expect("ci without cert");
}
