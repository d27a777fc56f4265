//! Secrets and roles (issue #12): `user_data` sealed from readers, revoked tokens losing their
//! live streams, scoped ci tokens, the agent certificate matching its token's host, plaintext
//! only on loopback, and control characters from agents escaped by the CLI.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_shared::time::unix_ms;
use berth_tests::assert_contains;
use berth_tests::cli::berth_at;
use berth_tests::cluster::Bearer;
use berth_tests::fake_agent::{FakeAgent, heartbeat};
use berth_tests::{Pki, SagaStatused, TestCoordinator, TestDb, bin};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A guard against a hang, not a timed assertion: everything below ends on a signal.
const GUARD: Duration = Duration::from_secs(60);

/// A hand-driven agent session: what it sends, what the coordinator answered.
async fn token_id_of(c: &TestCoordinator, role: &str, host: Option<&str>) -> String {
    c.store()
        .list_tokens(false)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.role == role && t.host_id.as_deref() == host && !t.enrollment)
        .expect("the token")
        .token_id
}

async fn warm_as(
    c: &TestCoordinator,
    token: &str,
) -> pb::warm_service_client::WarmServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
> {
    pb::warm_service_client::WarmServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(token),
    )
}

fn restore(host: &str, app: &str) -> pb::WarmRestoreRequest {
    pb::WarmRestoreRequest {
        target: Some(pb::AppTarget {
            host_id: host.into(),
            app: app.into(),
            domain: format!("{app}.example.org"),
            stack: String::new(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn user_data_is_hidden_from_readers_but_reaches_digitalocean() {
    const SECRET: &str = "#cloud-config\nchpasswd: {list: 'root:s3cret-ud'}\n";
    for db in TestDb::each().await {
        let sim = super::droplets::sim().await;
        let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
        let started = c
            .droplets()
            .await
            .provision_droplet(pb::ProvisionDropletRequest {
                name: "web-ud".into(),
                region: "nyc3".into(),
                size_slug: "s-1vcpu-1gb".into(),
                image: "ubuntu-24-04-x64".into(),
                user_data: SECRET.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ci = c.token(Role::Ci, None).await;
        let mut sagas = c.sagas_as(&ci).await;

        // Watch it to its end as ci: no event carries the user data.
        let mut watch = sagas
            .watch_saga(pb::WatchSagaRequest {
                saga_id: started.saga_id.clone(),
                after_seq: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = tokio::time::timeout(GUARD, watch.message())
            .await
            .expect("watch ends")
            .unwrap()
        {
            events.push(format!("{e:?}"));
        }
        assert!(
            events
                .iter()
                .any(|e| e.contains(SagaStatus::Completed.as_str())),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| e.contains("s3cret")), "{events:?}");

        let saga = sagas
            .get_saga(pb::GetSagaRequest {
                saga_id: started.saga_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
        assert!(!format!("{saga:?}").contains("s3cret"), "{saga:?}");
        assert_contains(&saga.inputs_json, r#""user_data":"(set, 49 B)""#);
        let listed = sagas
            .list_sagas(pb::ListSagasRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(!format!("{listed:?}").contains("s3cret"));
        let shown = berth_at(&c.url(), &ci, &["sagas", "show", &started.saga_id]).await;
        assert!(shown.result.is_ok(), "{}", shown.stderr());
        assert!(
            shown.stdout.contains("(set, 49 B)") && !shown.stdout.contains("s3cret"),
            "{}",
            shown.stdout
        );

        // Digitalocean got it; the store keeps it neither in the inputs nor, now that the
        // droplet exists, in the secrets.
        let id = serde_json::from_str::<serde_json::Value>(&saga.steps[0].output_json).unwrap()
            ["droplet_id"]
            .as_u64()
            .unwrap();
        assert_eq!(sim.droplet(id).unwrap().user_data.as_deref(), Some(SECRET));
        let row = c.store().get_saga(&started.saga_id).await.unwrap();
        assert!(!row.inputs.contains("s3cret"), "{}", row.inputs);
        assert_eq!(
            c.store()
                .saga_secret(&started.saga_id, "user_data")
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn a_revoked_agent_token_loses_its_session_and_gets_no_task() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let token = c.token(Role::Agent, Some("rev-1")).await;
    let mut agent = FakeAgent::open(c.channel().await, &token, "rev-1", "rev-1")
        .await
        .unwrap();
    c.wait_host("rev-1", true, GUARD).await;

    let id = token_id_of(&c, "agent", Some("rev-1")).await;
    c.store()
        .revoke_token(&id, unix_ms(SystemTime::now()))
        .await
        .unwrap();
    // Work for the host after the revocation: it must not reach the revoked session.
    warm_as(&c, &c.admin_token)
        .await
        .warm_restore(restore("rev-1", "keycloak"))
        .await
        .unwrap();
    let _ = agent.tx.send(heartbeat()).await;
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(GUARD, agent.inbound.message())
        .await
        .expect("the session ends")
    {
        seen.push(m);
    }
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m.msg, Some(pb::coordinator_message::Msg::Task(_)))),
        "{seen:?}"
    );
    // And it cannot come back.
    let err = FakeAgent::open(c.channel().await, &token, "rev-1", "rev-1")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn a_revoked_tokens_saga_watch_ends() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let saga_id = c
        .start_demo(serde_json::json!([{"step": "sleep", "ms": 600_000}]))
        .await;
    let ci = c.token(Role::Ci, None).await;
    let mut watch = c
        .sagas_as(&ci)
        .await
        .watch_saga(pb::WatchSagaRequest {
            saga_id: saga_id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().expect("a first event");
    let id = token_id_of(&c, "ci", None).await;
    pb::token_service_client::TokenServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(&c.admin_token),
    )
    .revoke_token(pb::RevokeTokenRequest { token_id: id })
    .await
    .unwrap();
    let end = loop {
        match tokio::time::timeout(GUARD, watch.message())
            .await
            .expect("the watch ends")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let err = end.expect_err("ended by an error");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_contains(err.message(), "revoked");
    c.sagas()
        .await
        .cancel_saga(pb::SagaIdRequest {
            saga_id,
            reason: "test over".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_scoped_ci_token_restores_only_on_its_hosts_and_apps() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let mut agents = Vec::new();
    for host in ["ci-1", "prod-1"] {
        let t = c.token(Role::Agent, Some(host)).await;
        agents.push(
            FakeAgent::open(c.channel().await, &t, host, host)
                .await
                .unwrap(),
        );
    }
    let made = berth_at(
        &c.url(),
        &c.admin_token,
        &[
            "token", "create", "--role", "ci", "--host", "ci-1", "--app", "keycloak",
        ],
    )
    .await;
    assert!(made.result.is_ok(), "{}", made.stderr());
    let scoped = made.stdout.trim().to_owned();
    let listed = berth_at(&c.url(), &c.admin_token, &["token", "list"]).await;
    assert_contains(&listed.stdout, "ci-1 apps=keycloak");

    let mut warm = warm_as(&c, &scoped).await;
    let ok = warm
        .warm_restore(restore("ci-1", "keycloak"))
        .await
        .unwrap();
    assert_eq!(ok.get_ref().kind, "warm.restore");
    for (host, app) in [("prod-1", "keycloak"), ("ci-1", "wiki")] {
        let err = warm.warm_restore(restore(host, app)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert_contains(err.message(), "it is scoped to hosts ci-1; apps keycloak");
    }
    // Reads stay allowed.
    c.hosts(&scoped)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap();
    // Only a ci token takes a scope.
    let err = pb::token_service_client::TokenServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(&c.admin_token),
    )
    .create_token(pb::CreateTokenRequest {
        role: "operator".into(),
        scope_apps: vec!["keycloak".into()],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

/// A TLS channel to `c` that presents `cert` and `key`.
async fn mtls_channel(c: &TestCoordinator, pki: &Pki, cert: &std::path::Path) -> Channel {
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let cert_pem = std::fs::read(cert).unwrap();
    let key_pem = std::fs::read(cert.with_extension("key")).unwrap();
    Endpoint::from_shared(c.url())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert_pem, key_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_agent_certificate_must_name_its_tokens_host() {
    let db = TestDb::sqlite();
    let pki = Arc::new(Pki::new());
    let c = TestCoordinator::start_tls(&db, pki.clone(), true).await;
    let token_b = c.token(Role::Agent, Some("host-b")).await;
    let (cert_a, _) = pki.client_for("host-a");
    let err = FakeAgent::open(
        mtls_channel(&c, &pki, &cert_a).await,
        &token_b,
        "host-b",
        "b",
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("certificate names host-a")
            && err.message().contains("bound to host host-b"),
        "{}",
        err.message()
    );
    let (cert_b, _) = pki.client_for("host-b");
    FakeAgent::open(
        mtls_channel(&c, &pki, &cert_b).await,
        &token_b,
        "host-b",
        "b",
    )
    .await
    .expect("the matching certificate is welcome");
}

#[tokio::test]
async fn an_agents_hostname_is_shown_escaped_by_hosts_list() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let token = c.token(Role::Agent, Some("esc-1")).await;
    let _agent = FakeAgent::open(c.channel().await, &token, "esc-1", "evil\x1b[31mred\x07")
        .await
        .unwrap();
    let out = berth_at(&c.url(), &c.admin_token, &["hosts", "list"]).await;
    assert!(out.result.is_ok(), "{}", out.stderr());
    assert!(
        out.stdout.contains("evil\\x1b[31mred\\x07") && !out.stdout.contains('\x1b'),
        "{:?}",
        out.stdout
    );
}

#[tokio::test]
async fn plaintext_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(
        &cfg,
        format!(
            "insecure_plaintext = true\nlisten = \"0.0.0.0:0\"\ndata_dir = \"{}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin::path("berth-coordinator"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_contains(&stderr, "0.0.0.0:0 is not a loopback address");
    assert!(!dir.path().join("berth.db").exists(), "nothing started");

    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "coordinator_url = \"http://10.0.0.1:7400\"\ntoken_file = \"{d}/agent.token\"\n\
             state_dir = \"{d}/state\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("agent.token"), "berth_x").unwrap();
    let out = std::process::Command::new(bin::path("berth-agent"))
        .arg("--config")
        .arg(&agent_cfg)
        .env("RUST_LOG", "warn")
        .env_remove("BERTH_COORDINATOR_URL")
        .env_remove("BERTH_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("10.0.0.1, which is not loopback") && stderr.contains("https://"),
        "{stderr}"
    );

    let cli = berth_at("http://10.0.0.1:7400", "berth_x", &["hosts", "list"]).await;
    assert_contains(cli.stderr(), "not loopback");
}
