//! `AgentLink.Session`: the one stream each agent holds. Checks who the agent is, records the
//! host, forwards heartbeats to the store, replies to the hub, delivers the host's agent tasks
//! and writes back their progress and results. The agent's token is checked again on every
//! heartbeat (and after two silent intervals): a revoked or expired token ends the session.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_shared::HostId;
use berth_shared::time::unix_ms;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use super::principal;
use crate::hub::{Hub, tasks};
use crate::store::{HostSession, Store};

/// How long an agent has to say hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AgentLinkService {
    pub store: Store,
    pub hub: Hub,
    pub instance_id: String,
    pub heartbeat_interval_secs: u32,
    /// mTLS is on: agents must present a client certificate.
    pub require_client_cert: bool,
    pub shutdown: CancellationToken,
    /// Each session's reader, which records the disconnect when it ends; a shutdown waits
    /// for them before it closes the store.
    pub sessions: TaskTracker,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentLinkService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let caller = principal(&req)?;
        if self.require_client_cert && req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::permission_denied(
                "agents must present a client certificate signed by the coordinator's client CA",
            ));
        }
        let peer_certs = req.peer_certs();
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(h)),
            }))) => h,
            Ok(Some(Err(e))) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        crate::limits::check_hello(&hello).map_err(crate::error::ApiError::from)?;
        let host_id = HostId::new(hello.host_id.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if caller.host_id.as_deref() != Some(host_id.as_str()) {
            return Err(Status::permission_denied(format!(
                "this agent token is bound to host {}, not {host_id}",
                caller.host_id.as_deref().unwrap_or("(none)")
            )));
        }
        if let Some(cert) = peer_certs.as_ref().and_then(|c| c.first()) {
            let names = cert_names(cert.as_ref());
            if !names.iter().any(|n| n == host_id.as_str()) {
                return Err(Status::permission_denied(format!(
                    "the client certificate names {} but this agent token is bound to host \
                     {host_id}: issue the agent a certificate whose SAN (or CN) is its host id",
                    if names.is_empty() {
                        "nothing".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        let session_id = uuid::Uuid::new_v4().to_string();
        self.store
            .host_connected(
                &HostSession {
                    host_id: host_id.as_str(),
                    hostname: &hello.hostname,
                    agent_version: &hello.agent_version,
                    docker_version: &hello.docker_version,
                    capabilities: &hello.capabilities,
                    coordinator_id: &self.instance_id,
                    session_id: &session_id,
                },
                unix_ms(SystemTime::now()),
            )
            .await
            .map_err(|e| Status::from(crate::error::ApiError::from(e)))?;

        let (tx, rx) = mpsc::channel(64);
        let welcome = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                coordinator_id: self.instance_id.clone(),
                heartbeat_interval_secs: self.heartbeat_interval_secs,
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("agent went away"))?;
        self.hub.register(host_id.as_str(), &session_id, tx.clone());
        tracing::info!(host_id = %host_id, hostname = hello.hostname, version = hello.agent_version, "agent connected");

        // This replica now delivers the host's tasks, whoever owns their sagas.
        let session_over = self.shutdown.child_token();
        tokio::spawn(crate::hub::tasks::deliver(
            self.store.clone(),
            host_id.as_str().to_owned(),
            caller.token_id.clone(),
            tx,
            session_over.clone(),
        ));
        let this = self.clone();
        self.sessions.spawn(async move {
            let session = Session {
                host_id: host_id.as_str(),
                session_id: &session_id,
                token_id: &caller.token_id,
                over: &session_over,
            };
            this.read_inbound(&session, inbound).await;
            session_over.cancel();
            this.hub.unregister(host_id.as_str(), &session_id);
            if let Err(e) = this
                .store
                .host_disconnected(host_id.as_str(), &session_id)
                .await
            {
                tracing::warn!(host_id = %host_id, error = %e, "cannot record disconnect");
            }
            tracing::info!(host_id = %host_id, "agent disconnected");
        });

        // The stream ends when the hub drops the session or the coordinator shuts down, which
        // lets a graceful shutdown finish and tells the agent to reconnect elsewhere.
        let outbound = ReceiverStream::new(rx).take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// The DNS names (SAN) and common names a DER certificate carries; empty if it does not
/// parse (the TLS layer already verified it against the client CA).
fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.extend(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
    );
    names
}

/// Who one session is for, as its reader needs it.
struct Session<'a> {
    host_id: &'a str,
    session_id: &'a str,
    /// The agent token that opened the session, re-checked while it lasts.
    token_id: &'a str,
    /// Cancelled when the session must end (task delivery found the token dead).
    over: &'a CancellationToken,
}

impl AgentLinkService {
    async fn read_inbound(&self, session: &Session<'_>, mut inbound: Streaming<pb::AgentMessage>) {
        use pb::agent_message::Msg;
        let Session {
            host_id,
            session_id,
            token_id,
            ..
        } = *session;
        // A silent agent's token is checked after two intervals without a heartbeat.
        let silence = Duration::from_secs(u64::from(self.heartbeat_interval_secs.max(1)) * 2);
        let quiet = tokio::time::sleep(silence);
        tokio::pin!(quiet);
        let mut progress = tasks::ProgressGate::default();
        loop {
            let msg = tokio::select! {
                m = inbound.next() => m,
                _ = self.shutdown.cancelled() => return,
                _ = session.over.cancelled() => return,
                () = &mut quiet => {
                    if !tasks::token_live(&self.store, host_id, token_id).await {
                        return;
                    }
                    quiet.as_mut().reset(tokio::time::Instant::now() + silence);
                    continue;
                }
            };
            let msg = match msg {
                Some(Ok(pb::AgentMessage { msg: Some(m) })) => m,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(host_id, error = %e, "agent stream failed");
                    return;
                }
                None => return,
            };
            match msg {
                Msg::Heartbeat(beat) => {
                    quiet.as_mut().reset(tokio::time::Instant::now() + silence);
                    for p in progress.drain() {
                        tasks::record_progress(&self.store, host_id, p).await;
                    }
                    if !tasks::token_live(&self.store, host_id, token_id).await {
                        return;
                    }
                    match self
                        .store
                        .host_heartbeat(
                            host_id,
                            session_id,
                            unix_ms(SystemTime::now()),
                            beat.warm_root_free_bytes
                                .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                        )
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(host_id, "session superseded, closing it");
                            return;
                        }
                        Err(e) => tracing::warn!(host_id, error = %e, "cannot record heartbeat"),
                    }
                }
                Msg::QueryReply(r) => self.hub.deliver(host_id, r).await,
                Msg::Hello(_) => tracing::warn!(host_id, "ignoring a second hello"),
                Msg::Progress(p) => {
                    if let Some(p) = progress.admit(p) {
                        tasks::record_progress(&self.store, host_id, p).await;
                    }
                }
                Msg::Result(r) => {
                    if let Some(p) = progress.before_result(&r) {
                        tasks::record_progress(&self.store, host_id, p).await;
                    }
                    // Recorded in the background (it retries a busy store) so the session
                    // keeps reading heartbeats meanwhile.
                    let store = self.store.clone();
                    let host_id = host_id.to_owned();
                    tokio::spawn(async move { tasks::record_result(&store, &host_id, r).await });
                }
            }
        }
    }
}
