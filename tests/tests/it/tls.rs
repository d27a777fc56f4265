//! TLS and mTLS with a throwaway CA, through real tonic servers.

use std::sync::Arc;
use std::time::Duration;

use berth_cli::exit;
use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_tests::cli::berth_at;
use berth_tests::process::{
    AgentProcess, CoordinatorProcess, SagaTiming, admin_token, agent_token,
};
use berth_tests::{Pki, TestAgent, TestCoordinator, TestDb, assert_contains};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// TLS set up half right, through the real coordinator and agent binaries and the CLI: each
/// side says what is wrong and what to do, where before the CLI said "transport error" (exit
/// 1), the agent "transport error", and the coordinator nothing.
#[tokio::test]
async fn tls_mismatches_say_what_to_do_on_both_sides() {
    let db = TestDb::sqlite();
    let pki = Pki::new();
    let admin = admin_token(&db.url).await;
    let c = CoordinatorProcess::start_tls("tls-words", &db.url, &pki, true).await;
    let plain_url = format!("http://127.0.0.1:{}", c.port);

    // A plain-text CLI against the TLS port: exit 3, and how to connect.
    let run = berth_at(&plain_url, &admin, &["hosts", "list"]).await;
    assert_eq!(run.code(), exit::UNAVAILABLE, "{}", run.stderr());
    assert_contains(
        run.stderr(),
        "the coordinator speaks TLS: use https:// and --ca-file",
    );
    // A load balancer's plain-text health check, or a scanner, again and again: each is
    // refused and counted, but the log takes at most one line a minute of them.
    let plain_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("TLS handshake failed") && l.contains("speaks plain text"))
            .count()
    };
    let before = plain_lines(&c.log());
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", c.port))
            .await
            .expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .expect("write");
        // The coordinator's alert, then its close: the handshake is over when this returns.
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
    }
    let log = c.log();
    assert!(
        plain_lines(&log) <= before + 1,
        "20 plain-text connections wrote {} lines:\n{log}",
        plain_lines(&log) - before
    );
    assert!(
        plain_lines(&log) >= 1,
        "no plain-text refusal logged:\n{log}"
    );
    // The same CLI told https:// and the CA gets its answer.
    let ca = pki.ca_cert.display().to_string();
    let run = berth_at(&c.url(), &admin, &["hosts", "list", "--ca-file", &ca]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());

    // An agent whose client certificate another CA signed: it says the coordinator refused
    // its certificate; the coordinator logs the refusal with the agent's address.
    let stranger = Pki::new();
    let (cert, key) = stranger.client_for("tls-agent");
    let token = agent_token(&db.url, "tls-agent").await;
    let tls = format!(
        "\n[tls]\nca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        pki.ca_cert.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let agent = AgentProcess::start("tls-agent", &[c.url()], &token, &tls);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (agent_log, coordinator_log) = loop {
        let (agent_log, coordinator_log) = (agent.log(), c.log());
        if agent_log.contains("refused this agent's TLS client certificate")
            && coordinator_log.contains("TLS handshake failed")
        {
            break (agent_log, coordinator_log);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both sides did not log the refusal within 30 s:\nagent:\n{agent_log}\ncoordinator:\n{coordinator_log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line = coordinator_log
        .lines()
        .find(|l| l.contains("TLS handshake failed") && l.contains("client_ca_file"))
        .unwrap_or_else(|| panic!("no refusal of the agent's certificate:\n{coordinator_log}"));
    assert_contains(line, "peer=127.0.0.1:");
    assert_contains(line, "not signed by tls.client_ca_file");
    assert_contains(&agent_log, "client_ca_file");

    // A CLI that says https:// to a plain-text coordinator is told the port is plain text.
    let plain = CoordinatorProcess::start("tls-plain", &db.url, SagaTiming::default()).await;
    let https = format!("https://127.0.0.1:{}", plain.port);
    let run = berth_at(&https, &admin, &["hosts", "list", "--ca-file", &ca]).await;
    assert_eq!(run.code(), exit::UNAVAILABLE, "{}", run.stderr());
    assert_contains(run.stderr(), "does not speak TLS on this port: use http://");

    // Logs written to a file (as under systemd) carry no terminal colours.
    for (who, log) in [("coordinator", c.log()), ("agent", agent.log())] {
        assert!(
            !log.contains('\u{1b}'),
            "{who} log has ANSI escapes:\n{log}"
        );
    }
}
