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
use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::store::{Signal, Store};

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

impl crate::error::ServiceError for HubError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            HubError::NotConnected { .. } => ErrorCode::FailedPrecondition,
            HubError::Timeout { .. } | HubError::Gone { .. } => ErrorCode::Unavailable,
            // The agent's own failure, said in its words: not a coordinator bug to hide.
            HubError::Agent { .. } => ErrorCode::FailedPrecondition,
        }
    }
}

struct Session {
    session_id: String,
    tx: Outbound,
    pending: HashMap<String, oneshot::Sender<pb::query_reply::Reply>>,
}

/// Connected agents of this coordinator, and (with a store) the way to ask a host whose
/// stream another replica holds.
#[derive(Clone, Default)]
pub struct Hub {
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    store: Option<Store>,
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
    /// A hub that asks other replicas' hosts through `store`.
    pub fn new(store: Store) -> Hub {
        Hub {
            sessions: Arc::default(),
            store: Some(store),
        }
    }

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

    /// Routes an agent's reply to the query waiting for it here, or to the replica that asked
    /// it through the store.
    pub async fn deliver(&self, host_id: &str, reply: pb::QueryReply) {
        let waiter = self
            .sessions
            .lock()
            .expect("hub lock")
            .get_mut(host_id)
            .and_then(|s| s.pending.remove(&reply.query_id));
        match (waiter, reply.reply.clone()) {
            (Some(w), Some(r)) => {
                let _ = w.send(r);
                return;
            }
            (Some(_), None) => return,
            (None, _) => {}
        }
        let Some(store) = &self.store else { return };
        let encoded = hex::encode(reply.encode_to_vec());
        match store
            .answer_agent_query(&reply.query_id, host_id, &encoded)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::debug!(
                host_id,
                query_id = reply.query_id,
                "reply to no pending query"
            ),
            Err(e) => tracing::warn!(host_id, error = %e, "cannot record a query reply"),
        }
    }

    /// Asks the agent of `host_id` a query and waits for its reply: through this replica's
    /// session, or through the replica holding the host's stream.
    async fn query(
        &self,
        host_id: &str,
        kind: pb::query::Kind,
    ) -> Result<pb::query_reply::Reply, HubError> {
        let query_id = uuid::Uuid::new_v4().to_string();
        if !self.is_connected(host_id)
            && let Some(store) = &self.store
        {
            return remote_query(store, host_id, query_id, kind).await;
        }
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

/// Asks a query through the store: the replica holding the host's stream sends it and writes
/// the reply back.
async fn remote_query(
    store: &Store,
    host_id: &str,
    query_id: String,
    kind: pb::query::Kind,
) -> Result<pb::query_reply::Reply, HubError> {
    let gone = |_| HubError::Gone {
        host_id: host_id.to_owned(),
    };
    let query = pb::Query {
        query_id: query_id.clone(),
        kind: Some(kind),
    };
    let mut signals = store.subscribe();
    let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
    store
        .put_agent_query(&query_id, host_id, &hex::encode(query.encode_to_vec()), now)
        .await
        .map_err(|e| gone(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    let answer = loop {
        match store.agent_query_reply(&query_id).await {
            Ok(Some(reply)) => break Some(reply),
            Ok(None) => {}
            Err(e) => tracing::debug!(host_id, error = %e, "cannot read a query reply yet"),
        }
        let poll = tokio::time::sleep(Duration::from_millis(250));
        tokio::pin!(poll);
        let woke = loop {
            tokio::select! {
                s = signals.recv() => match s {
                    Ok(Signal::Query(q)) if q == query_id => break true,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break true,
                },
                () = &mut poll => break true,
                () = tokio::time::sleep_until(deadline) => break false,
            }
        };
        if !woke {
            break None;
        }
    };
    let _ = store.forget_agent_query(&query_id).await;
    let Some(reply) = answer else {
        return Err(HubError::Timeout {
            host_id: host_id.to_owned(),
            secs: QUERY_TIMEOUT.as_secs(),
        });
    };
    let bytes = hex::decode(reply).map_err(|e| gone(e.to_string()))?;
    pb::QueryReply::decode(bytes.as_slice())
        .ok()
        .and_then(|r| r.reply)
        .ok_or_else(|| HubError::Agent {
            host_id: host_id.to_owned(),
            message: "the agent's reply could not be read".into(),
        })
}
