//! A coordinator running as a real process, for tests that kill it (`kill -9`, SIGSTOP).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_coordinator::auth::Tokens;
use berth_coordinator::store::Store;
use berth_proto::v1 as pb;
use berth_shared::Role;
use tonic::transport::Channel;

use crate::bin;
use crate::cluster::{Bearer, eventually};

/// Saga settings for process tests: short leases so takeovers happen within seconds.
#[derive(Debug, Clone, Copy)]
pub struct SagaTiming {
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub max_reclaims: i64,
}

impl Default for SagaTiming {
    fn default() -> Self {
        SagaTiming {
            lease_ms: 1_500,
            renew_ms: 300,
            max_reclaims: 5,
        }
    }
}

/// A `berth-coordinator` process on 127.0.0.1 and a free port, on a given database.
pub struct CoordinatorProcess {
    pub name: String,
    pub port: u16,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
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
                "listen = \"127.0.0.1:{port}\"\ninsecure_plaintext = true\ninstance_id = \"{name}\"\n\
                 data_dir = \"{data}\"\ndatabase_url = \"{database_url}\"\n{extra}\n\n[sagas]\n\
                 lease_ms = {lease}\nrenew_ms = {renew}\npoll_interval_ms = 50\nmax_reclaims = {reclaims}\n",
                data = dir.path().join("data").display(),
                lease = timing.lease_ms,
                renew = timing.renew_ms,
                reclaims = timing.max_reclaims,
            ),
        )
        .unwrap();
        let mut p = CoordinatorProcess {
            name: name.to_owned(),
            port,
            config,
            dir,
            child: None,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("coordinator.log"))
            .unwrap();
        let child = Command::new(bin::path("berth-coordinator"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-coordinator");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(20),
            &format!("coordinator {} to listen", self.name),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Starts the process again after a kill, with the same config.
    pub async fn restart(&mut self) {
        self.wait_exit();
        self.spawn().await;
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends a signal (`-KILL`, `-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {}", self.pid());
    }

    fn wait_exit(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Kills with SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        self.wait_exit();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
