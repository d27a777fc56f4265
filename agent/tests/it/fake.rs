//! A scripted fake coordinator: serves `AgentLink` on 127.0.0.1, checks the bearer token, reads
//! the first message before answering (like the real one) and hands each session to the test,
//! which plays the coordinator's side message by message.

use std::net::SocketAddr;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use berth_proto::v1::agent_message::Msg as FromAgent;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for the agent to do the next thing.
pub const STEP: Duration = Duration::from_secs(15);

/// What the fake saw of one attempt to open a session.
pub enum Event {
    Rejected { authorization: Option<String> },
    Session(Box<Session>),
}

/// One accepted session; dropping it ends the stream as a restarting coordinator would.
pub struct Session {
    pub authorization: Option<String>,
    /// The first message, read before the response headers are sent (as the coordinator does).
    first: Option<FromAgent>,
    inbound: Streaming<pb::AgentMessage>,
    outbound: mpsc::Sender<Result<pb::CoordinatorMessage, Status>>,
}

impl Session {
    /// The agent's next message, whatever it is.
    pub async fn recv(&mut self) -> FromAgent {
        if let Some(first) = self.first.take() {
            return first;
        }
        let next = tokio::time::timeout(STEP, self.inbound.message())
            .await
            .expect("the agent sent nothing in time");
        next.expect("the agent's stream failed")
            .expect("the agent closed its stream")
            .msg
            .expect("a message without content")
    }

    /// The agent's next message that is not a heartbeat.
    pub async fn recv_skipping_heartbeats(&mut self) -> FromAgent {
        loop {
            match self.recv().await {
                FromAgent::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn send(&self, msg: pb::coordinator_message::Msg) {
        self.outbound
            .send(Ok(pb::CoordinatorMessage { msg: Some(msg) }))
            .await
            .expect("the agent's session is gone");
    }
}

/// The fake coordinator; it stops serving when dropped.
pub struct FakeCoordinator {
    pub url: String,
    events: mpsc::UnboundedReceiver<Event>,
    _stop: DropGuard,
}

impl FakeCoordinator {
    /// Serves on a fresh loopback port, accepting only `Bearer <token>`.
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let service = Service {
            expected: format!("Bearer {token}"),
            events: events_tx,
        };
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(AgentLinkServer::new(service))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(async move { server.await.expect("fake coordinator failed") });
        Self {
            url: format!("http://{addr}"),
            events,
            _stop: stop.drop_guard(),
        }
    }

    /// The next attempt the agent made.
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(STEP, self.events.recv())
            .await
            .expect("the agent did not try to open a session in time")
            .expect("the fake coordinator stopped")
    }

    /// The next accepted session.
    pub async fn next_session(&mut self) -> Session {
        match self.next_event().await {
            Event::Session(s) => *s,
            Event::Rejected { authorization } => {
                panic!("the agent was rejected; it sent authorization {authorization:?}")
            }
        }
    }
}

struct Service {
    expected: String,
    events: mpsc::UnboundedSender<Event>,
}

#[tonic::async_trait]
impl AgentLink for Service {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if authorization.as_deref() != Some(self.expected.as_str()) {
            let _ = self.events.send(Event::Rejected { authorization });
            return Err(Status::unauthenticated("unknown token"));
        }
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(STEP, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage { msg: Some(msg) }))) => msg,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        let (outbound, rx) = mpsc::channel(16);
        let session = Session {
            authorization,
            first: Some(first),
            inbound,
            outbound,
        };
        let _ = self.events.send(Event::Session(Box::new(session)));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
