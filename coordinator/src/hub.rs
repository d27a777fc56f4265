//! The agent hub: the live stream of each connected agent, and request/reply over it.
//!
//! Each agent holds one bidirectional stream. The hub keeps the sending half of the newest
//! session per host; a newer session of the same host replaces (and so ends) an older one.
//! Saga steps do not talk to the hub: they open tasks in the store, and [`tasks`] delivers
//! them down whichever replica's stream holds the host.

pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Messages sent down an agent's stream.
pub type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("host {host_id} is not connected to this coordinator")]
    NotConnected { host_id: String },
    #[error("host {host_id} did not answer within {secs} s")]
    Timeout { host_id: String, secs: u64 },
    #[error("host {host_id} disconnected before answering")]
    Gone { host_id: String },
    #[error("agent on {host_id} failed: {message}")]
    Agent { host_id: String, message: String },
}

struct Session {
    session_id: String,
    tx: Outbound,
    pending: HashMap<String, oneshot::Sender<pb::query_reply::Reply>>,
}

/// Connected agents of this coordinator.
#[derive(Clone, Default)]
pub struct Hub {
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sessions.lock().expect("hub lock").len();
        f.debug_struct("Hub").field("sessions", &n).finish()
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// An agent's error reply, or a reply of the wrong kind.
fn unexpected(host_id: &str, reply: pb::query_reply::Reply) -> HubError {
    let message = match reply {
        pb::query_reply::Reply::Error(message) => message,
        other => format!("unexpected reply {other:?}"),
    };
    HubError::Agent {
        host_id: host_id.to_owned(),
        message,
    }
}

impl Hub {
    /// Makes `session_id` the live session of `host_id`.
    pub fn register(&self, host_id: &str, session_id: &str, tx: Outbound) {
        let mut sessions = self.sessions.lock().expect("hub lock");
        let old = sessions.insert(
            host_id.to_owned(),
            Session {
                session_id: session_id.to_owned(),
                tx,
                pending: HashMap::new(),
            },
        );
        metrics::gauge!("berth_agent_sessions").set(sessions.len() as f64);
        if old.is_some() {
            tracing::info!(host_id, "a newer session replaced the host's previous one");
        }
    }

    /// Forgets a session, unless a newer one has replaced it already.
    pub fn unregister(&self, host_id: &str, session_id: &str) {
        let mut sessions = self.sessions.lock().expect("hub lock");
        if sessions
            .get(host_id)
            .is_some_and(|s| s.session_id == session_id)
        {
            sessions.remove(host_id);
        }
        metrics::gauge!("berth_agent_sessions").set(sessions.len() as f64);
    }

    pub fn is_connected(&self, host_id: &str) -> bool {
        self.sessions
            .lock()
            .expect("hub lock")
            .contains_key(host_id)
    }

    /// Routes an agent's reply to the query waiting for it.
    pub fn deliver(&self, host_id: &str, reply: pb::QueryReply) {
        let waiter = self
            .sessions
            .lock()
            .expect("hub lock")
            .get_mut(host_id)
            .and_then(|s| s.pending.remove(&reply.query_id));
        match (waiter, reply.reply) {
            (Some(w), Some(r)) => {
                let _ = w.send(r);
            }
            _ => tracing::debug!(
                host_id,
                query_id = reply.query_id,
                "reply to no pending query"
            ),
        }
    }

    /// Asks the agent of `host_id` a query and waits for its reply.
    async fn query(
        &self,
        host_id: &str,
        kind: pb::query::Kind,
    ) -> Result<pb::query_reply::Reply, HubError> {
        let query_id = uuid::Uuid::new_v4().to_string();
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = {
            let mut sessions = self.sessions.lock().expect("hub lock");
            let session = sessions
                .get_mut(host_id)
                .ok_or_else(|| HubError::NotConnected {
                    host_id: host_id.to_owned(),
                })?;
            session.pending.insert(query_id.clone(), reply_tx);
            session.tx.clone()
        };
        let gone = || HubError::Gone {
            host_id: host_id.to_owned(),
        };
        let msg = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Query(pb::Query {
                query_id: query_id.clone(),
                kind: Some(kind),
            })),
        };
        tx.send(Ok(msg)).await.map_err(|_| gone())?;
        match tokio::time::timeout(QUERY_TIMEOUT, reply_rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                if let Some(s) = self.sessions.lock().expect("hub lock").get_mut(host_id) {
                    s.pending.remove(&query_id);
                }
                Err(HubError::Timeout {
                    host_id: host_id.to_owned(),
                    secs: QUERY_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Asks a host's agent to describe its host (Docker engine, warm root, disk space).
    pub async fn describe_host(&self, host_id: &str) -> Result<pb::HostDescription, HubError> {
        let kind = pb::query::Kind::DescribeHost(pb::DescribeHostQuery {});
        match self.query(host_id, kind).await? {
            pb::query_reply::Reply::HostDescription(d) => Ok(d),
            other => Err(unexpected(host_id, other)),
        }
    }

    /// Asks a host's agent for the warm snapshots under its warm root (`app` empty: all).
    pub async fn list_warm_snapshots(
        &self,
        host_id: &str,
        app: &str,
    ) -> Result<Vec<pb::WarmSnapshotInfo>, HubError> {
        let kind = pb::query::Kind::ListWarmSnapshots(pb::ListWarmSnapshotsQuery {
            app: app.to_owned(),
        });
        match self.query(host_id, kind).await? {
            pb::query_reply::Reply::WarmSnapshots(r) => Ok(r.snapshots),
            other => Err(unexpected(host_id, other)),
        }
    }
}
