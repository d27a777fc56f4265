//! The link end to end against the fake coordinator: hello, welcome, heartbeats, the
//! describe query, refusal of unknown task kinds, reconnection, bad tokens and prompt
//! shutdown.

use std::path::Path;
use std::time::Duration;

use berth_agent::{Agent, Config, LinkState};
use berth_proto::v1 as pb;
use berth_proto::v1::agent_message::Msg as FromAgent;
use berth_proto::v1::coordinator_message::Msg as ToAgent;
use tokio_util::sync::CancellationToken;

use crate::fake::{Event, FakeCoordinator, STEP};

const TOKEN: &str = "test-token-0123456789";

fn config(dir: &Path, url: &str, token: &str) -> Config {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut config = Config::new(url, token_file);
    config.state_dir = dir.join("state");
    config.warm_root = dir.join("warm");
    config.reconnect_max_backoff_ms = 200;
    config
}

/// Fails, saying how to fix it, when this machine's Docker engine does not answer.
async fn require_docker() {
    let reachable = match bollard::Docker::connect_with_defaults() {
        Ok(docker) => docker.ping().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = reachable {
        panic!(
            "the Docker engine is unreachable ({e}); start the Docker engine \
             (e.g. `systemctl start docker`, or dockerd as in shared/reference/dependencies.md) \
             and set DOCKER_HOST if it does not listen on /var/run/docker.sock"
        );
    }
}

async fn wait_for_state(agent: &Agent, what: &str, f: impl FnMut(&LinkState) -> bool) {
    let mut state = agent.state();
    tokio::time::timeout(STEP, state.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("the agent did not reach {what} in time"))
        .expect("the agent stopped");
}

async fn expect_hello(session: &mut crate::fake::Session, agent: &Agent) -> pb::Hello {
    match session.recv().await {
        FromAgent::Hello(hello) => {
            assert_eq!(hello.host_id, agent.host_id().as_str());
            hello
        }
        other => panic!("expected a hello first, got {other:?}"),
    }
}

async fn stop(agent: Agent, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), agent.join())
        .await
        .expect("the agent did not stop promptly")
        .expect("the agent failed");
}

#[tokio::test]
async fn agent_says_hello_heartbeats_describes_and_reconnects() {
    require_docker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = FakeCoordinator::start(TOKEN).await;
    let shutdown = CancellationToken::new();
    let agent = Agent::start(
        config(dir.path(), &coordinator.url, TOKEN),
        shutdown.clone(),
    )
    .unwrap();

    let mut session = coordinator.next_session().await;
    assert_eq!(
        session.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    let hello = expect_hello(&mut session, &agent).await;
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!hello.hostname.is_empty());
    assert!(
        !hello.docker_version.is_empty(),
        "hello without the docker version"
    );
    assert_eq!(hello.capabilities, ["describe", "warm"]);

    session
        .send(ToAgent::Welcome(pb::Welcome {
            coordinator_id: "fake-1".into(),
            heartbeat_interval_secs: 1,
        }))
        .await;
    wait_for_state(&agent, "connected", |s| {
        *s == LinkState::Connected {
            coordinator_id: "fake-1".into(),
        }
    })
    .await;
    match session.recv().await {
        FromAgent::Heartbeat(beat) => assert!(beat.sent_at_ms > 0),
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    session
        .send(ToAgent::Query(pb::Query {
            query_id: "q1".into(),
            kind: Some(pb::query::Kind::DescribeHost(pb::DescribeHostQuery {})),
        }))
        .await;
    let reply = match session.recv_skipping_heartbeats().await {
        FromAgent::QueryReply(reply) => reply,
        other => panic!("expected a query reply, got {other:?}"),
    };
    assert_eq!(reply.query_id, "q1");
    let description = match reply.reply {
        Some(pb::query_reply::Reply::HostDescription(d)) => d,
        other => panic!("expected a host description, got {other:?}"),
    };
    assert!(!description.docker_version.is_empty());
    assert!(!description.docker_api_version.is_empty());
    assert!(description.cpus > 0 && description.memory_bytes > 0);
    assert_eq!(
        description.warm_root,
        dir.path().join("warm").display().to_string()
    );
    assert!(description.warm_root_total_bytes >= description.warm_root_free_bytes);
    assert!(description.warm_root_total_bytes > 0);

    let task_id = pb::TaskId {
        saga_id: "saga-1".into(),
        step_index: 0,
        epoch: 1,
        attempt: 1,
    };
    session
        .send(ToAgent::Task(pb::TaskAssignment {
            id: Some(task_id.clone()),
            kind: "frobnicate".into(),
            inputs_json: "{}".into(),
        }))
        .await;
    session
        .send(ToAgent::Cancel(pb::CancelTask {
            id: Some(task_id.clone()),
        }))
        .await;
    match session.recv_skipping_heartbeats().await {
        FromAgent::Result(result) => {
            assert_eq!(result.id, Some(task_id));
            assert!(!result.ok && !result.retryable);
            assert!(result.error.contains("not supported"), "{}", result.error);
        }
        other => panic!("expected a task result, got {other:?}"),
    }

    // The coordinator goes away: the agent comes back and says hello again.
    drop(session);
    let mut session = coordinator.next_session().await;
    expect_hello(&mut session, &agent).await;
    session
        .send(ToAgent::Welcome(pb::Welcome {
            coordinator_id: "fake-2".into(),
            heartbeat_interval_secs: 1,
        }))
        .await;
    wait_for_state(
        &agent,
        "connected again",
        |s| matches!(s, LinkState::Connected { coordinator_id } if coordinator_id == "fake-2"),
    )
    .await;

    stop(agent, shutdown).await;
}

#[tokio::test]
async fn a_rejected_token_is_retried_at_the_backoff_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = FakeCoordinator::start(TOKEN).await;
    let shutdown = CancellationToken::new();
    let agent = Agent::start(
        config(dir.path(), &coordinator.url, "wrong-token"),
        shutdown.clone(),
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match coordinator.next_event().await {
            Event::Rejected { authorization } => {
                assert_eq!(authorization.as_deref(), Some("Bearer wrong-token"));
                seen.push(std::time::Instant::now());
            }
            Event::Session(_) => panic!("a wrong token was accepted"),
        }
    }
    // Refused credentials are retried at the cap (200 ms here), not with short backoff.
    for pair in seen.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(190),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    wait_for_state(&agent, "backoff", |s| {
        matches!(s, LinkState::Backoff { .. })
    })
    .await;
    stop(agent, shutdown).await;
}

#[tokio::test]
async fn an_unreachable_coordinator_backs_off_and_shutdown_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let shutdown = CancellationToken::new();
    let agent = Agent::start(
        config(dir.path(), &format!("http://127.0.0.1:{port}"), TOKEN),
        shutdown.clone(),
    )
    .unwrap();
    wait_for_state(&agent, "backoff", |s| {
        matches!(s, LinkState::Backoff { .. })
    })
    .await;
    stop(agent, shutdown).await;
}

#[tokio::test]
async fn a_missing_token_file_is_a_start_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new("http://127.0.0.1:1", dir.path().join("absent-token"));
    config.state_dir = dir.path().join("state");
    let err = Agent::start(config, CancellationToken::new()).unwrap_err();
    assert!(
        berth_agent::chain(&err).contains("absent-token"),
        "{}",
        berth_agent::chain(&err)
    );
}
