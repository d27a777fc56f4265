//! Agents dial in, heartbeat, go offline, come back after a coordinator restart, and answer
//! the coordinator's DescribeHost query over their stream.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::{TestCoordinator, TestDb};

fn docker_help() -> &'static str {
    "the Docker engine must be running for this test (`docker info` must work; see README)"
}

#[tokio::test]
async fn an_agent_is_online_then_offline_then_back_after_a_coordinator_restart() {
    for db in TestDb::each().await {
        let mut c = TestCoordinator::start(&db).await;
        let mut agent = c.agent("host-a").await;
        let host = c.wait_host("host-a", true, Duration::from_secs(5)).await;
        assert!(!host.agent_version.is_empty());
        assert!(host.capabilities.contains(&"describe".to_owned()));
        let first_seen = host.first_seen_ms;

        // Heartbeats keep it online past the timeout (3 s in tests).
        tokio::time::sleep(Duration::from_secs(4)).await;
        let host = c.wait_host("host-a", true, Duration::from_secs(1)).await;
        assert!(host.last_heartbeat_ms > first_seen, "heartbeats advance");

        // The coordinator restarts; the same agent, never restarted, comes back.
        c.restart().await;
        c.wait_host("host-a", true, Duration::from_secs(5)).await;
        agent.wait_connected(Duration::from_secs(5)).await;

        agent.stop().await;
        let host = c.wait_host("host-a", false, Duration::from_secs(5)).await;
        assert_eq!(host.first_seen_ms, first_seen);
    }
}

#[tokio::test]
async fn a_silent_agent_goes_offline_after_the_heartbeat_timeout() {
    // A stream that said hello and then nothing: no disconnect, only missing heartbeats.
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let token = c.token(berth_shared::Role::Agent, Some("quiet")).await;
    let mut link = pb::agent_link_client::AgentLinkClient::with_interceptor(
        c.channel().await,
        berth_tests::cluster::Bearer::new(&token),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            host_id: "quiet".into(),
            hostname: "quiet".into(),
            agent_version: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let _stream = link
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    c.wait_host("quiet", true, Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    c.wait_host("quiet", false, Duration::from_secs(6)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "offline only once the timeout passed"
    );
    drop(tx);
}

#[tokio::test]
async fn get_host_asks_the_agent_to_describe_its_docker_host() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let agent = c.agent("described").await;
    c.wait_host("described", true, Duration::from_secs(5)).await;
    let detail = c
        .hosts(&c.admin_token)
        .await
        .get_host(pb::GetHostRequest {
            host_id: "described".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let d = detail.description.unwrap_or_else(|| {
        panic!(
            "no description: {} — {}",
            detail.description_error,
            docker_help()
        )
    });
    assert!(!d.docker_version.is_empty(), "{}", docker_help());
    assert!(d.cpus >= 1);
    assert!(d.warm_root_total_bytes > 0 && d.warm_root_free_bytes <= d.warm_root_total_bytes);
    assert!(d.warm_root.ends_with("warm"), "{}", d.warm_root);
    assert_eq!(detail.host.unwrap().host_id, "described");
    drop(agent);

    let err = c
        .hosts(&c.admin_token)
        .await
        .get_host(pb::GetHostRequest {
            host_id: "../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .hosts(&c.admin_token)
        .await
        .get_host(pb::GetHostRequest {
            host_id: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// A coordinator stopped with SIGTERM (as systemd stops it) records each agent's disconnect
/// before it closes its store, so the host does not show connected to a coordinator that is
/// gone; before, the store closed first and the disconnect was lost.
#[tokio::test]
async fn a_stopped_coordinator_records_its_agents_disconnects() {
    use berth_coordinator::store::Store;
    use berth_tests::process::{
        AgentProcess, CoordinatorProcess, SagaTiming, admin_token, agent_token,
    };
    let db = TestDb::sqlite();
    let _ = admin_token(&db.url).await; // migrates the database
    let c = CoordinatorProcess::start("drain", &db.url, SagaTiming::default()).await;
    let token = agent_token(&db.url, "drain-host").await;
    let agent = AgentProcess::start("drain-host", &[c.url()], &token, "");
    let connected_to = || async {
        let store = Store::open(&db.url).await.unwrap();
        let host = store.get_host("drain-host").await.ok();
        store.close().await;
        host.map(|h| h.connected_to)
    };
    berth_tests::eventually(Duration::from_secs(20), "the agent to connect", || async {
        (connected_to().await == Some(Some("drain".to_owned()))).then_some(())
    })
    .await;
    c.terminate();
    assert_eq!(
        connected_to().await,
        Some(None),
        "the disconnect was recorded before the store closed:\n{}",
        c.log()
    );
    drop(agent);
}
