//! The hosts table: every agent that ever said hello, its last heartbeat and who holds its stream.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// A host as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub host_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub docker_version: String,
    pub capabilities: Vec<String>,
    pub first_seen_ms: i64,
    pub last_heartbeat_ms: i64,
    /// The coordinator holding the agent's stream, if any.
    pub connected_to: Option<String>,
    /// Free bytes on the warm root's filesystem, as the last heartbeat that said reported.
    pub warm_root_free_bytes: Option<i64>,
}

impl HostRecord {
    /// Online: some coordinator holds its stream and a heartbeat arrived within the timeout.
    pub fn is_online(&self, now_ms: i64, heartbeat_timeout_ms: i64) -> bool {
        self.connected_to.is_some() && now_ms - self.last_heartbeat_ms <= heartbeat_timeout_ms
    }
}

/// What an agent's hello says, recorded when its session opens.
#[derive(Debug, Clone)]
pub struct HostSession<'a> {
    pub host_id: &'a str,
    pub hostname: &'a str,
    pub agent_version: &'a str,
    pub docker_version: &'a str,
    pub capabilities: &'a [String],
    pub coordinator_id: &'a str,
    pub session_id: &'a str,
}

const COLUMNS: &str = "host_id, hostname, agent_version, docker_version, capabilities, \
                       first_seen_ms, last_heartbeat_ms, connected_to, warm_root_free_bytes";

fn from_row(row: &AnyRow) -> Result<HostRecord, StoreError> {
    let caps: String = row.try_get("capabilities")?;
    Ok(HostRecord {
        host_id: row.try_get("host_id")?,
        hostname: row.try_get("hostname")?,
        agent_version: row.try_get("agent_version")?,
        docker_version: row.try_get("docker_version")?,
        capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_heartbeat_ms: row.try_get("last_heartbeat_ms")?,
        connected_to: row.try_get("connected_to")?,
        warm_root_free_bytes: row.try_get("warm_root_free_bytes")?,
    })
}

impl Store {
    /// Records a hello: creates the host on first sight, refreshes what it reports, and marks
    /// the session as the live one (a newer session replaces an older one).
    pub async fn host_connected(&self, s: &HostSession<'_>, now_ms: i64) -> Result<(), StoreError> {
        let caps = serde_json::to_string(s.capabilities).expect("strings serialize");
        sqlx::query(
            "INSERT INTO hosts (host_id, hostname, agent_version, docker_version, capabilities, \
                                first_seen_ms, last_heartbeat_ms, connected_to, session_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) \
             ON CONFLICT (host_id) DO UPDATE SET hostname = $2, agent_version = $3, \
                docker_version = $4, capabilities = $5, last_heartbeat_ms = $6, \
                connected_to = $7, session_id = $8",
        )
        .bind(s.host_id)
        .bind(s.hostname)
        .bind(s.agent_version)
        .bind(s.docker_version)
        .bind(caps)
        .bind(now_ms)
        .bind(s.coordinator_id)
        .bind(s.session_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a heartbeat of the live session; false if that session is no longer the live one.
    pub async fn host_heartbeat(
        &self,
        host_id: &str,
        session_id: &str,
        now_ms: i64,
        warm_root_free_bytes: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hosts SET last_heartbeat_ms = $1, \
                warm_root_free_bytes = COALESCE($4, warm_root_free_bytes) \
             WHERE host_id = $2 AND session_id = $3",
        )
        .bind(now_ms)
        .bind(host_id)
        .bind(session_id)
        .bind(warm_root_free_bytes)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a session closed, unless a newer session of the same host has replaced it.
    pub async fn host_disconnected(
        &self,
        host_id: &str,
        session_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET connected_to = NULL, session_id = NULL \
             WHERE host_id = $1 AND session_id = $2",
        )
        .bind(host_id)
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn list_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM hosts ORDER BY host_id"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_host(&self, host_id: &str) -> Result<HostRecord, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM hosts WHERE host_id = $1"
        )))
        .bind(host_id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => from_row(&row),
            None => Err(StoreError::NotFound {
                what: format!("host {host_id:?}"),
            }),
        }
    }
}
