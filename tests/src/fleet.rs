//! A fleet of real processes on one PostgreSQL database: coordinator replicas and agents,
//! each agent dialling its own replica first and the others in turn, every party sharing one
//! `file://` archive store. For failover and chaos tests that kill and freeze them.

use std::time::Duration;

use berth_coordinator::auth::Tokens;
use berth_coordinator::store::Store;
use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use berth_shared::{HostId, Role};
use serde_json::Value;
use sqlx::Row;

use crate::TestDb;
use crate::cluster::{Bearer, eventually};
use crate::process::{AgentProcess, CoordinatorProcess, SagaTiming};

pub struct Fleet {
    /// One fleet (or other heavy test) at a time on this machine.
    _heavy: tokio::sync::OwnedMutexGuard<()>,
    pub db: TestDb,
    /// A pool on the fleet's database, for reading tables directly.
    pub pool: sqlx::AnyPool,
    pub store: Store,
    pub coordinators: Vec<CoordinatorProcess>,
    pub agents: Vec<AgentProcess>,
    pub admin_token: String,
    pub archives: tempfile::TempDir,
}

impl Fleet {
    /// Starts `coordinators` replicas and `agents` agents (hosts `host-0`, `host-1`, …);
    /// agent `i` dials replica `i % coordinators` first. Waits until every host is online.
    pub async fn start(coordinators: usize, agents: usize, timing: SagaTiming) -> Fleet {
        Self::start_with_archive(coordinators, agents, timing, None).await
    }

    /// Like `start`, with every party's `[archive]` table body given (e.g.
    /// `S3Server::archive_toml`) instead of the shared `file://` folder.
    pub async fn start_with_archive(
        coordinators: usize,
        agents: usize,
        timing: SagaTiming,
        archive_toml: Option<String>,
    ) -> Fleet {
        Self::start_configured(coordinators, agents, timing, archive_toml, "").await
    }

    /// Like `start_with_archive`, with `coordinator_toml` (whole tables, e.g. `[schedules]`)
    /// appended to every coordinator's config.
    pub async fn start_configured(
        coordinators: usize,
        agents: usize,
        timing: SagaTiming,
        archive_toml: Option<String>,
        coordinator_toml: &str,
    ) -> Fleet {
        let heavy = crate::heavy().await;
        let db = TestDb::postgres().await;
        let store = Store::open(&db.url).await.expect("open store");
        let tokens = Tokens::new(store.clone());
        let (_, admin_token) = tokens
            .issue(Role::Admin, None, "fleet", None)
            .await
            .expect("admin token");
        let archives = tempfile::tempdir().expect("temp dir");
        let archive_toml = archive_toml.unwrap_or_else(|| {
            format!(
                "store_url = {:?}\n",
                format!("file://{}", archives.path().display())
            )
        });
        let extra = format!(
            "heartbeat_interval_secs = 1\nheartbeat_timeout_secs = 3\n\n[archive]\n{archive_toml}\n\
             {coordinator_toml}"
        );
        let mut coords = Vec::new();
        for i in 0..coordinators {
            coords.push(
                CoordinatorProcess::start_with(&format!("coord-{i}"), &db.url, timing, &extra)
                    .await,
            );
        }
        let urls: Vec<String> = coords.iter().map(CoordinatorProcess::url).collect();
        let mut procs = Vec::new();
        for i in 0..agents {
            let host = format!("host-{i}");
            let (_, token) = tokens
                .issue(
                    Role::Agent,
                    Some(&HostId::new(host.as_str()).unwrap()),
                    "fleet",
                    None,
                )
                .await
                .expect("agent token");
            let mut mine = urls.clone();
            mine.rotate_left(i % coordinators);
            procs.push(AgentProcess::start(&host, &mine, &token, &archive_toml));
        }
        let pool = db.raw_pool().await;
        let fleet = Fleet {
            _heavy: heavy,
            db,
            pool,
            store,
            coordinators: coords,
            agents: procs,
            admin_token,
            archives,
        };
        for a in &fleet.agents {
            fleet.wait_online(&a.host_id, Duration::from_secs(30)).await;
        }
        fleet
    }

    /// Waits until `host_id` holds a session with some replica; returns which.
    pub async fn wait_online(&self, host_id: &str, timeout: Duration) -> String {
        eventually(timeout, &format!("{host_id} to connect"), || async {
            let row =
                sqlx::query("SELECT connected_to, last_heartbeat_ms FROM hosts WHERE host_id = $1")
                    .bind(host_id)
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap()?;
            let to: Option<String> = row.get("connected_to");
            let beat: i64 = row.get("last_heartbeat_ms");
            let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
            to.filter(|_| now - beat < 3_000)
        })
        .await
    }

    /// The replica holding `host_id`'s stream now, if any.
    pub async fn connected_to(&self, host_id: &str) -> Option<String> {
        sqlx::query("SELECT connected_to FROM hosts WHERE host_id = $1")
            .bind(host_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .get("connected_to")
    }

    /// Starts a saga of `kind` through replica `via`, retrying while that replica is down.
    pub async fn start_saga(&self, via: usize, kind: &str, inputs: &Value) -> String {
        self.start_saga_keyed(via, kind, inputs, "").await
    }

    /// Like `start_saga`, with an idempotency key, so a start retried on another replica
    /// (the first may have recorded it before it died) finds the same saga.
    pub async fn start_saga_keyed(
        &self,
        via: usize,
        kind: &str,
        inputs: &Value,
        key: &str,
    ) -> String {
        let n = self.coordinators.len();
        for i in 0..(n * 20) {
            let c = &self.coordinators[(via + i) % n];
            let attempt = tokio::time::timeout(Duration::from_secs(5), async {
                let channel = tonic::transport::Endpoint::from_shared(c.url())
                    .expect("url")
                    .connect()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                pb::saga_service_client::SagaServiceClient::with_interceptor(
                    channel,
                    Bearer::new(&self.admin_token),
                )
                .start_saga(pb::StartSagaRequest {
                    kind: kind.to_owned(),
                    inputs_json: inputs.to_string(),
                    idempotency_key: key.to_owned(),
                })
                .await
            })
            .await;
            match attempt {
                Ok(Ok(r)) => return r.into_inner().saga_id,
                // A replica dying mid-call shows as Unavailable or an Unknown transport error;
                // anything else is the coordinator's answer.
                Ok(Err(s))
                    if !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) =>
                {
                    panic!("starting {kind} was refused: {s}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("no replica accepted a {kind} saga")
    }

    /// A saga's status and error, read from the database.
    pub async fn saga(&self, id: &str) -> (SagaStatus, Option<String>) {
        let row = sqlx::query("SELECT status, error FROM saga_runs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let status: String = row.get("status");
        let status = status.parse().unwrap_or_else(|e| panic!("saga {id}: {e}"));
        (status, row.get("error"))
    }

    /// Waits until the saga is final; its status and error.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> (SagaStatus, Option<String>) {
        eventually(timeout, &format!("saga {id} to finish"), || async {
            let (status, error) = self.saga(id).await;
            status.is_final().then_some((status, error))
        })
        .await
    }

    /// Waits until the saga is final and asserts it completed, naming its error otherwise.
    pub async fn assert_completes(&self, id: &str, timeout: Duration) {
        let (status, error) = self.wait_final(id, timeout).await;
        assert_eq!(
            status,
            SagaStatus::Completed,
            "saga {id} ended {status}: {error:?}\n{}",
            self.logs_tail()
        );
    }

    /// The owner of a saga now, if it is held.
    pub async fn owner(&self, id: &str) -> Option<String> {
        sqlx::query("SELECT owner_id FROM saga_runs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .get("owner_id")
    }

    /// The index of the replica named `name` (`coord-<i>`).
    pub fn replica(&self, name: &str) -> usize {
        self.coordinators
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no replica {name}"))
    }

    /// The agent task row of a saga's step: its state and the last progress seq.
    pub async fn task_state(&self, id: &str, step: i64) -> Option<(String, i64)> {
        sqlx::query(
            "SELECT state, progress_seq FROM agent_tasks WHERE saga_id = $1 AND step_idx = $2",
        )
        .bind(id)
        .bind(step)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .map(|r| (r.get("state"), r.get("progress_seq")))
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let tail = |name: &str, log: String| {
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(30);
            format!("--- {name}\n{}", lines[from..].join("\n"))
        };
        self.coordinators
            .iter()
            .map(|c| tail(&c.name, c.log()))
            .chain(self.agents.iter().map(|a| tail(&a.host_id, a.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
