//! Coordinators and agents running as real processes, for tests that kill them (`kill -9`,
//! SIGSTOP).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use berth_coordinator::auth::Tokens;
use berth_coordinator::store::Store;
use berth_proto::v1 as pb;
use berth_shared::Role;
use tonic::transport::Channel;

use crate::bin;
use crate::cluster::Bearer;

/// Saga settings for process tests: short leases so takeovers happen within seconds.
#[derive(Debug, Clone, Copy)]
pub struct SagaTiming {
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub max_reclaims: i64,
    /// How long an agent step waits for an offline host.
    pub agent_offline_wait_secs: u64,
}

impl Default for SagaTiming {
    fn default() -> Self {
        SagaTiming {
            lease_ms: 1_500,
            renew_ms: 300,
            max_reclaims: 5,
            agent_offline_wait_secs: 900,
        }
    }
}

/// A `berth-coordinator` process on 127.0.0.1 and a free port, on a given database.
pub struct CoordinatorProcess {
    pub name: String,
    pub port: u16,
    /// `https` when started with [`CoordinatorProcess::start_tls`].
    scheme: &'static str,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl CoordinatorProcess {
    /// Starts a coordinator named `name` on `database_url` and waits until it answers.
    pub async fn start(name: &str, database_url: &str, timing: SagaTiming) -> CoordinatorProcess {
        Self::start_with(name, database_url, timing, "").await
    }

    /// Like `start`, with `extra` TOML appended to the top level of the config (before
    /// `[sagas]`), e.g. `metrics_listen = "127.0.0.1:9400"`.
    pub async fn start_with(
        name: &str,
        database_url: &str,
        timing: SagaTiming,
        extra: &str,
    ) -> CoordinatorProcess {
        Self::start_serving(
            name,
            database_url,
            timing,
            "insecure_plaintext = true",
            extra,
        )
        .await
    }

    /// Like `start`, serving TLS with `pki`'s server certificate; with `mtls`, client
    /// certificates are checked against `pki`'s CA.
    pub async fn start_tls(
        name: &str,
        database_url: &str,
        pki: &crate::Pki,
        mtls: bool,
    ) -> CoordinatorProcess {
        let client_ca = if mtls {
            format!("client_ca_file = {:?}\n", pki.ca_cert.display().to_string())
        } else {
            String::new()
        };
        // The [tls] table comes last before [sagas], so the top-level keys stay above it.
        let tls = format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{client_ca}",
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string(),
        );
        Self::start_serving(name, database_url, SagaTiming::default(), "", &tls).await
    }

    async fn start_serving(
        name: &str,
        database_url: &str,
        timing: SagaTiming,
        transport: &str,
        extra: &str,
    ) -> CoordinatorProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n{transport}\ninstance_id = \"{name}\"\n\
                 data_dir = \"{data}\"\ndatabase_url = \"{database_url}\"\n{extra}\n\n[sagas]\n\
                 lease_ms = {lease}\nrenew_ms = {renew}\npoll_interval_ms = 50\nmax_reclaims = {reclaims}\n\
                 agent_offline_wait_secs = {offline}\ndemo = true\n",
                data = dir.path().join("data").display(),
                lease = timing.lease_ms,
                renew = timing.renew_ms,
                reclaims = timing.max_reclaims,
                offline = timing.agent_offline_wait_secs,
            ),
        )
        .unwrap();
        let p = CoordinatorProcess {
            name: name.to_owned(),
            port,
            scheme: if transport.is_empty() {
                "https"
            } else {
                "http"
            },
            config,
            dir,
            child: Mutex::new(None),
        };
        p.spawn().await;
        p
    }

    async fn spawn(&self) {
        let log = self.dir.path().join("coordinator.log");
        let child = spawn_program("berth-coordinator", &self.config, &log);
        *self.child.lock().unwrap() = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "coordinator {} exited ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "coordinator {} did not listen within 20 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process again after a kill, with the same config.
    pub async fn restart(&self) {
        self.wait_exit();
        self.spawn().await;
    }

    pub fn pid(&self) -> i32 {
        self.child.lock().unwrap().as_ref().expect("running").id() as i32
    }

    /// Sends a signal (`-KILL`, `-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    fn wait_exit(&self) {
        wait_exit(&self.child);
    }

    /// Kills with SIGKILL and reaps the process.
    pub fn kill9(&self) {
        self.signal("-KILL");
        self.wait_exit();
    }

    /// Stops it as systemd does (SIGTERM) and waits for it to exit.
    pub fn terminate(&self) {
        self.signal("-TERM");
        self.wait_exit();
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub async fn sagas(
        &self,
        token: &str,
    ) -> pb::saga_service_client::SagaServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    > {
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        pb::saga_service_client::SagaServiceClient::with_interceptor(channel, Bearer::new(token))
    }

    /// The process's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        end(&self.child);
    }
}

/// Starts one of the workspace's programs with `--config config`, its log appended to `log`.
/// The test's own `BERTH_*` environment is not passed on: each program reads only its config.
fn spawn_program(name: &str, config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(bin::path(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(&key);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

fn send_signal(pid: i32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

fn wait_exit(child: &Mutex<Option<Child>>) {
    let taken = child.lock().unwrap().take();
    if let Some(mut c) = taken {
        let _ = c.wait();
    }
}

/// Ends a child for good (a stopped one is continued first, so it can die).
fn end(child: &Mutex<Option<Child>>) {
    let taken = child.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut c) = taken {
        let _ = Command::new("kill")
            .args(["-CONT", &c.id().to_string()])
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `berth-agent` process with its own host id, state dir, warm root and apps root, dialling
/// `urls` in turn (the first is `coordinator_url`, the rest `coordinator_replicas`).
pub struct AgentProcess {
    pub host_id: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl AgentProcess {
    /// Starts an agent for `host_id` with `token`; `archive_toml` is the body of its
    /// `[archive]` table.
    pub fn start(host_id: &str, urls: &[String], token: &str, archive_toml: &str) -> AgentProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, token).unwrap();
        let replicas: Vec<String> = urls[1..].iter().map(|u| format!("{u:?}")).collect();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator_url = {first:?}\ncoordinator_replicas = [{replicas}]\n\
                 token_file = {token:?}\nhost_id = {host_id:?}\nstate_dir = {state:?}\n\
                 warm_root = {warm:?}\napps_root = {apps:?}\nreconnect_max_backoff_ms = 300\n\n\
                 [archive]\n{archive_toml}",
                first = urls[0],
                replicas = replicas.join(", "),
                token = token_file.display().to_string(),
                state = dir.path().join("state").display().to_string(),
                warm = dir.path().join("warm").display().to_string(),
                apps = dir.path().join("apps").display().to_string(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("apps")).unwrap();
        let p = AgentProcess {
            host_id: host_id.to_owned(),
            config,
            dir,
            child: Mutex::new(None),
        };
        p.spawn();
        p
    }

    fn spawn(&self) {
        let log = self.dir.path().join("agent.log");
        let child = spawn_program("berth-agent", &self.config, &log);
        *self.child.lock().unwrap() = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.lock().unwrap().as_ref().expect("running").id() as i32
    }

    /// Sends a signal (`-KILL`, `-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Kills with SIGKILL and reaps the process.
    pub fn kill9(&self) {
        self.signal("-KILL");
        wait_exit(&self.child);
    }

    /// Starts the process again after a kill, with the same config and state.
    pub fn restart(&self) {
        wait_exit(&self.child);
        self.spawn();
    }

    pub fn apps_root(&self) -> PathBuf {
        self.dir.path().join("apps")
    }

    pub fn warm_root(&self) -> PathBuf {
        self.dir.path().join("warm")
    }

    /// The agent's task records (`state_dir/tasks/*.json`), as JSON.
    pub fn task_records(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("state/tasks")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// How many runs of saga `saga_id`'s step `step` this agent started, and how many
    /// succeeded.
    pub fn runs(&self, saga_id: &str, step: u64) -> (u64, u64) {
        self.task_records()
            .iter()
            .find(|r| r["saga_id"] == saga_id && r["step_index"] == step)
            .map_or((0, 0), |r| {
                (
                    r["runs"].as_u64().unwrap_or(0),
                    r["succeeded"].as_u64().unwrap_or(0),
                )
            })
    }

    /// The process's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        end(&self.child);
    }
}

/// An agent token for `host`, written straight into the database.
pub async fn agent_token(database_url: &str, host: &str) -> String {
    let store = Store::open(database_url).await.expect("open store");
    let host = berth_shared::HostId::new(host).expect("a valid host id");
    let (_, token) = Tokens::new(store.clone())
        .issue(Role::Agent, Some(&host), "test", None)
        .await
        .expect("issue");
    store.close().await;
    token
}

/// An admin token written straight into the database (the bootstrap path).
pub async fn admin_token(database_url: &str) -> String {
    let store = Store::open(database_url).await.expect("open store");
    let (_, token) = Tokens::new(store.clone())
        .issue(Role::Admin, None, "test", None)
        .await
        .expect("issue");
    store.close().await;
    token
}
