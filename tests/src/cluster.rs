//! Coordinators and agents running in this test process, on real tonic servers on 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::{Agent, LinkState};
use berth_coordinator::auth::Tokens;
use berth_coordinator::config::{Config, TlsConfig};
use berth_coordinator::store::Store;
use berth_proto::v1 as pb;
use berth_shared::saga::StepStatus;
use berth_shared::{HostId, Role};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{Pki, SagaStatused, StepStatused, TestDb};

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A coordinator served from this process.
pub struct TestCoordinator {
    pub addr: SocketAddr,
    pub config: Config,
    pub pki: Option<Arc<Pki>>,
    /// An admin token, for calls that need one.
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    store: Store,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), berth_coordinator::StartError>>>,
}

impl TestCoordinator {
    /// A plaintext coordinator on a fresh port, heartbeats every second, offline after 3 s.
    pub async fn start(db: &TestDb) -> TestCoordinator {
        Self::start_with(db, None, |_| {}).await
    }

    /// A coordinator with TLS from `pki` (and mTLS for agents when `mtls`).
    pub async fn start_tls(db: &TestDb, pki: Arc<Pki>, mtls: bool) -> TestCoordinator {
        Self::start_with(db, Some(pki.clone()), move |c| {
            c.insecure_plaintext = false;
            c.tls = Some(TlsConfig {
                cert_file: pki.server_cert.clone(),
                key_file: pki.server_key.clone(),
                client_ca_file: mtls.then(|| pki.ca_cert.clone()),
            });
        })
        .await
    }

    pub async fn start_with(
        db: &TestDb,
        pki: Option<Arc<Pki>>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCoordinator {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::dev(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            dir.path().join("data"),
        );
        config.database_url = Some(db.url.clone());
        config.heartbeat_interval_secs = 1;
        config.heartbeat_timeout_secs = 3;
        config.sagas.lease_ms = 3_000;
        config.sagas.renew_ms = 500;
        config.sagas.poll_interval_ms = 50;
        // Tests start `demo` sagas; a coordinator only runs them when told to.
        config.sagas.demo = true;
        tweak(&mut config);
        let store = Store::open(&db.url).await.expect("open store");
        let (admin_token, _) = issue(&store, Role::Admin, None).await;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        config.listen = addr;
        let mut c = TestCoordinator {
            addr,
            config,
            pki,
            admin_token,
            dir,
            store,
            shutdown: CancellationToken::new(),
            task: None,
        };
        c.serve(listener).await;
        c
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        self.shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(berth_coordinator::run(
            self.config.clone(),
            listener,
            self.shutdown.clone(),
            move || {
                let _ = ready_tx.send(());
            },
        ));
        if ready_rx.await.is_err() {
            panic!("coordinator failed to start: {:?}", task.await);
        }
        self.task = Some(task);
    }

    /// Stops the coordinator gracefully (as SIGTERM does) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("coordinator stops within 15 s")
                .expect("coordinator task")
                .expect("coordinator ran cleanly");
        }
    }

    /// Stops and starts the coordinator again on the same address and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind same port");
        self.serve(listener).await;
    }

    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// A new token with `role` (agent tokens need `host`).
    pub async fn token(&self, role: Role, host: Option<&str>) -> String {
        issue(&self.store, role, host).await.0
    }

    /// A client channel; with TLS on, it trusts the test CA.
    pub async fn channel(&self) -> Channel {
        let mut endpoint = Endpoint::from_shared(self.url()).expect("url");
        if let Some(pki) = &self.pki {
            let ca = std::fs::read(&pki.ca_cert).expect("ca");
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .expect("tls config");
        }
        endpoint.connect().await.expect("connect to coordinator")
    }

    /// A host client that sends `token`.
    pub async fn hosts(
        &self,
        token: &str,
    ) -> pb::host_service_client::HostServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    > {
        pb::host_service_client::HostServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token),
        )
    }

    /// A saga client that sends `token`.
    pub async fn sagas_as(
        &self,
        token: &str,
    ) -> pb::saga_service_client::SagaServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    > {
        pb::saga_service_client::SagaServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token),
        )
    }

    /// A saga client with the admin token.
    pub async fn sagas(
        &self,
    ) -> pb::saga_service_client::SagaServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    > {
        self.sagas_as(&self.admin_token).await
    }

    /// Starts a `demo` saga of the given steps (JSON objects) and returns its id.
    pub async fn start_demo(&self, steps: serde_json::Value) -> String {
        let inputs = serde_json::json!({ "steps": steps }).to_string();
        self.sagas()
            .await
            .start_saga(pb::StartSagaRequest {
                kind: "demo".into(),
                inputs_json: inputs,
                idempotency_key: String::new(),
            })
            .await
            .expect("start saga")
            .into_inner()
            .saga_id
    }

    /// The saga as the API shows it now.
    pub async fn get_saga(&self, saga_id: &str) -> pb::Saga {
        let req = pb::GetSagaRequest {
            saga_id: saga_id.to_owned(),
        };
        self.sagas()
            .await
            .get_saga(req)
            .await
            .expect("get saga")
            .into_inner()
    }

    /// Waits until the saga reaches a final status and returns it.
    /// Every event of saga `saga_id`'s history, to the end (the saga must be finished).
    pub async fn history(&self, saga_id: &str) -> Vec<pb::SagaEvent> {
        let mut stream = self
            .sagas()
            .await
            .watch_saga(pb::WatchSagaRequest {
                saga_id: saga_id.to_owned(),
                after_seq: 0,
            })
            .await
            .expect("watch the saga")
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = futures::StreamExt::next(&mut stream).await {
            events.push(e.expect("a saga event"));
        }
        events
    }

    pub async fn wait_saga(&self, saga_id: &str, timeout: Duration) -> pb::Saga {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let saga = self.get_saga(saga_id).await;
            if saga.saga_status().is_final() {
                return saga;
            }
            // The saga as it stands says why it did not finish: a step retrying, paused, ….
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for saga {saga_id} to finish; it is now \
                 {saga:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until step `index` of the saga has `status`.
    pub async fn wait_step(
        &self,
        saga_id: &str,
        index: usize,
        status: StepStatus,
        timeout: Duration,
    ) {
        let what = format!("step {index} of saga {saga_id} to be {status}");
        eventually(timeout, &what, || async {
            let saga = self.get_saga(saga_id).await;
            (saga
                .steps
                .get(index)
                .is_some_and(|s| s.step_status() == status))
            .then_some(())
        })
        .await
    }

    /// The store this coordinator uses, for tests that look under the API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The hosts as the API lists them.
    pub async fn list_hosts(&self) -> Vec<pb::Host> {
        let mut client = self.hosts(&self.admin_token).await;
        client
            .list_hosts(pb::ListHostsRequest {})
            .await
            .expect("list hosts")
            .into_inner()
            .hosts
    }

    /// Waits until `host_id` is listed with `online`.
    pub async fn wait_host(&self, host_id: &str, online: bool, timeout: Duration) -> pb::Host {
        eventually(
            timeout,
            &format!("host {host_id} online={online}"),
            || async {
                self.list_hosts()
                    .await
                    .into_iter()
                    .find(|h| h.host_id == host_id && h.online == online)
            },
        )
        .await
    }

    /// Starts an in-process agent for `host_id` with a fresh agent token.
    pub async fn agent(&self, host_id: &str) -> TestAgent {
        let token = self.token(Role::Agent, Some(host_id)).await;
        TestAgent::start(self, host_id, &token, |_| {}).await
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn issue(store: &Store, role: Role, host: Option<&str>) -> (String, String) {
    let host = host.map(|h| HostId::new(h).expect("valid host id"));
    let (record, token) = Tokens::new(store.clone())
        .issue(role, host.as_ref(), "test", None)
        .await
        .expect("issue token");
    (token, record.token_id)
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Bearer {
        Bearer(format!("Bearer {token}").parse().expect("ascii token"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// An agent running in this process.
pub struct TestAgent {
    pub host_id: String,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    agent: Option<Agent>,
}

impl TestAgent {
    /// Starts an agent for `host_id` that authenticates with `token`; `tweak` edits its config.
    pub async fn start(
        coordinator: &TestCoordinator,
        host_id: &str,
        token: &str,
        tweak: impl FnOnce(&mut berth_agent::Config),
    ) -> TestAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, token).expect("write token");
        let mut config = berth_agent::Config::new(coordinator.url(), token_file);
        config.host_id = Some(host_id.to_owned());
        config.state_dir = dir.path().join("state");
        config.warm_root = dir.path().join("warm");
        config.apps_root = dir.path().join("apps");
        config.archive = berth_agent::archive::ArchiveConfig::for_url(format!(
            "file://{}",
            dir.path().join("archives").display()
        ));
        config.reconnect_max_backoff_ms = 300;
        if let Some(pki) = &coordinator.pki {
            config.tls = Some(berth_agent::TlsConfig {
                ca_file: pki.ca_cert.clone(),
                client_cert_file: None,
                client_key_file: None,
                domain_name: None,
            });
        }
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let agent = Agent::start(config, shutdown.clone()).expect("agent starts");
        TestAgent {
            host_id: host_id.to_owned(),
            dir,
            shutdown,
            agent: Some(agent),
        }
    }

    /// Waits until the agent holds a session; returns the coordinator id it names.
    pub async fn wait_connected(&self, timeout: Duration) -> String {
        let mut state = self.agent.as_ref().expect("running").state();
        let s = tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await
        .unwrap_or_else(|_| panic!("agent {} did not connect within {timeout:?}", self.host_id))
        .expect("agent state");
        match &*s {
            LinkState::Connected { coordinator_id } => coordinator_id.clone(),
            _ => unreachable!(),
        }
    }

    /// Stops the agent, as if its process ended.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(agent) = self.agent.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), agent.join()).await;
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
