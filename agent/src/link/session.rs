//! One session on the `AgentLink.Session` stream: hello, welcome, heartbeats, and dispatch of
//! what the coordinator sends, until the stream ends.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_link_client::AgentLinkClient;
use berth_proto::v1::agent_message::Msg as Out;
use berth_proto::v1::coordinator_message::Msg as In;
use berth_shared::time::unix_ms;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use super::{Link, LinkState};
use crate::error::AgentError;
use crate::{docker, query};

/// What the agent says it can do.
const CAPABILITIES: &[&str] = &["describe", "warm"];
/// Outbound messages waiting to be sent.
const OUTBOUND_CAPACITY: usize = 64;
/// Queries answered at the same time; more wait their turn.
const MAX_CONCURRENT_QUERIES: usize = 4;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one session and returns why it ended; `connected_at` is set once welcomed.
pub(super) async fn run(
    link: &Link,
    endpoint: &Endpoint,
    state: &watch::Sender<LinkState>,
    connected_at: &mut Option<Instant>,
) -> AgentError {
    match session(link, endpoint, state, connected_at).await {
        Ok(never) => match never {},
        Err(reason) => reason,
    }
}

async fn session(
    link: &Link,
    endpoint: &Endpoint,
    state: &watch::Sender<LinkState>,
    connected_at: &mut Option<Instant>,
) -> Result<Infallible, AgentError> {
    let hello = pb::Hello {
        host_id: link.host_id.to_string(),
        hostname: link.hostname.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        docker_version: docker::version_for_hello().await,
        capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
    };
    let channel = endpoint.connect().await.map_err(AgentError::Connect)?;
    let authorization = link.authorization.clone();
    let mut client =
        AgentLinkClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", authorization.clone());
            Ok(req)
        });

    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    tx.try_send(message(Out::Hello(hello)))
        .expect("a fresh channel has room for the hello");
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();

    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Err(_) => {
            return Err(AgentError::WelcomeTimeout {
                secs: WELCOME_TIMEOUT.as_secs(),
            });
        }
        Ok(message) => match message?.and_then(|m| m.msg) {
            Some(In::Welcome(welcome)) => welcome,
            Some(other) => {
                return Err(AgentError::Protocol(format!(
                    "expected a welcome first, got {}",
                    kind_of(&other)
                )));
            }
            None => return Err(AgentError::StreamClosed),
        },
    };
    *connected_at = Some(Instant::now());
    info!(
        coordinator_id = %welcome.coordinator_id,
        heartbeat_interval_secs = welcome.heartbeat_interval_secs,
        host_id = %link.host_id,
        "connected to coordinator"
    );
    state.send_replace(LinkState::Connected {
        coordinator_id: welcome.coordinator_id.clone(),
    });

    let period = Duration::from_secs(u64::from(welcome.heartbeat_interval_secs.max(1)));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

    // Tasks report through this session while it lasts (they outlive it).
    let _attached = link.tasks.attach(tx.clone());
    // Work spawned for this session stops with it.
    let tasks = CancellationToken::new();
    let _stop_tasks = tasks.clone().drop_guard();
    let queries = Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES));

    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let beat = pb::Heartbeat {
                    sent_at_ms: unix_ms(std::time::SystemTime::now()),
                    warm_root_free_bytes: crate::describe::filesystem_space(&link.warm_root)
                        .ok()
                        .map(|s| s.free),
                };
                if tx.try_send(message(Out::Heartbeat(beat))).is_err() {
                    debug!("outbound queue full; skipping a heartbeat");
                }
            }
            received = inbound.message() => {
                let Some(msg) = received? else {
                    return Err(AgentError::StreamClosed);
                };
                match msg.msg {
                    Some(In::Welcome(again)) => {
                        warn!(coordinator_id = %again.coordinator_id, "ignoring a second welcome");
                    }
                    Some(In::Task(assignment)) => link.tasks.assign(assignment),
                    Some(In::Cancel(cancel)) => match cancel.id {
                        Some(id) => link.tasks.cancel(id),
                        None => warn!("ignoring a cancel without a task id"),
                    },
                    Some(In::Query(q)) => spawn_query(
                        q,
                        tx.clone(),
                        tasks.clone(),
                        queries.clone(),
                        link.warm_root.clone(),
                        link.spares.clone(),
                        link.host_id.to_string(),
                    ),
                    None => warn!("ignoring a coordinator message of an unknown kind"),
                }
            }
        }
    }
}

/// Answers `q` in its own task so a slow engine never stalls heartbeats.
fn spawn_query(
    q: pb::Query,
    tx: mpsc::Sender<pb::AgentMessage>,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
    warm_root: PathBuf,
    spares: Option<crate::warm::Spares>,
    host_id: String,
) {
    debug!(query_id = %q.query_id, "answering query");
    tokio::spawn(async move {
        let answer = async {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let reply = query::answer(q, &warm_root, spares.as_ref(), &host_id).await;
            // The session may be gone; then the reply has nobody to go to.
            let _ = tx.send(message(Out::QueryReply(reply))).await;
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = answer => {}
        }
    });
}

fn message(msg: Out) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

fn kind_of(msg: &In) -> &'static str {
    match msg {
        In::Welcome(_) => "welcome",
        In::Task(_) => "task",
        In::Cancel(_) => "cancel",
        In::Query(_) => "query",
    }
}
