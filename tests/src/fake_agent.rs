//! An agent link spoken by hand: the test decides every message a host sends, for faults a
//! real agent would never make (silence, floods, reports for tasks it was not given).

use std::time::SystemTime;

use berth_proto::v1 as pb;
use berth_shared::time::unix_ms;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::cluster::{Bearer, TestCoordinator};

/// One open `AgentLink.Session`: what the test sends, and what the coordinator sends back.
pub struct FakeAgent {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::CoordinatorMessage>,
}

impl FakeAgent {
    /// Opens a session on `channel` as `host_id` with `token`; the hello is answered with a
    /// welcome or the session's refusal.
    pub async fn open(
        channel: Channel,
        token: &str,
        host_id: &str,
        hostname: &str,
    ) -> Result<FakeAgent, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(hello(host_id, hostname)).await.unwrap();
        let mut client =
            pb::agent_link_client::AgentLinkClient::with_interceptor(channel, Bearer::new(token));
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        match inbound.message().await? {
            Some(pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Welcome(_)),
            }) => Ok(FakeAgent { tx, inbound }),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// Sends `msg`; false once the coordinator has closed the session.
    pub async fn send(&self, msg: pb::agent_message::Msg) -> bool {
        self.tx
            .send(pb::AgentMessage { msg: Some(msg) })
            .await
            .is_ok()
    }

    /// The next task the coordinator assigns, skipping other messages.
    pub async fn next_task(&mut self) -> Option<pb::TaskAssignment> {
        while let Some(m) = self.inbound.message().await.ok()? {
            if let Some(pb::coordinator_message::Msg::Task(t)) = m.msg {
                return Some(t);
            }
        }
        None
    }
}

/// A warm restore of app `kc` on host `host_id` whose agent is spoken by hand: the agent's
/// session, the saga's id, and the task once the coordinator assigned it.
pub async fn warm_restore_by_hand(
    c: &TestCoordinator,
    host_id: &str,
) -> (FakeAgent, String, pb::TaskAssignment) {
    let inputs = serde_json::json!({"host_id": host_id, "app": "kc", "domain": "kc.example.org"});
    saga_by_hand(c, "warm.restore", inputs).await
}

/// A saga of `kind` whose first step runs on the host `inputs` names, with that host's
/// agent spoken by hand: the agent's session, the saga's id, and the task once assigned.
pub async fn saga_by_hand(
    c: &TestCoordinator,
    kind: &str,
    inputs: serde_json::Value,
) -> (FakeAgent, String, pb::TaskAssignment) {
    let host_id = inputs["host_id"].as_str().expect("the inputs name a host");
    let token = c.token(berth_shared::Role::Agent, Some(host_id)).await;
    let mut agent = FakeAgent::open(c.channel().await, &token, host_id, host_id)
        .await
        .expect("the session opens");
    let saga_id = c
        .sagas()
        .await
        .start_saga(pb::StartSagaRequest {
            kind: kind.into(),
            inputs_json: inputs.to_string(),
            idempotency_key: String::new(),
        })
        .await
        .expect("start the saga")
        .into_inner()
        .saga_id;
    let task = tokio::time::timeout(std::time::Duration::from_secs(20), agent.next_task())
        .await
        .expect("the task is assigned")
        .expect("the session stays open");
    (agent, saga_id, task)
}

pub fn hello(host_id: &str, hostname: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            host_id: host_id.into(),
            hostname: hostname.into(),
            agent_version: "test".into(),
            docker_version: "test".into(),
            capabilities: vec!["warm".into()],
        })),
    }
}

pub fn heartbeat() -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            sent_at_ms: unix_ms(SystemTime::now()),
            warm_root_free_bytes: None,
        })),
    }
}
