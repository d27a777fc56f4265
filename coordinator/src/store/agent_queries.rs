//! `agent_queries`: a host query (describe the host, list its warm snapshots) asked through a
//! replica that does not hold the host's stream. The asking replica writes the query; the
//! replica holding the stream sends it to the agent and writes the reply; the asker reads it
//! and removes the row. Queries are short-lived: rows older than a minute are dropped.

use sqlx::Row;

use super::signal::Signal;
use super::{Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE agent_queries (
    query_id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL,
    request TEXT NOT NULL,
    reply TEXT,
    created_at_ms BIGINT NOT NULL
)",
    "CREATE INDEX agent_queries_host ON agent_queries (host_id)",
];

/// How long a query row lives at most.
const QUERY_TTL_MS: i64 = 60_000;

impl Store {
    /// Records a query (its request encoded as hex) for `host_id`'s stream holder.
    pub async fn put_agent_query(
        &self,
        query_id: &str,
        host_id: &str,
        request_hex: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM agent_queries WHERE created_at_ms < $1")
            .bind(now_ms - QUERY_TTL_MS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO agent_queries (query_id, host_id, request, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(query_id)
        .bind(host_id)
        .bind(request_hex)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let signal = Signal::Host(host_id.to_owned());
        self.notify_in(&mut tx, &signal).await?;
        tx.commit().await?;
        self.signals.send(signal);
        Ok(())
    }

    /// Unanswered queries for `host_id`: (query id, request hex).
    pub async fn pending_agent_queries(
        &self,
        host_id: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT query_id, request FROM agent_queries \
             WHERE host_id = $1 AND reply IS NULL AND created_at_ms >= $2 ORDER BY created_at_ms",
        )
        .bind(host_id)
        .bind(now_ms - QUERY_TTL_MS)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("query_id")?, r.try_get("request")?)))
            .collect()
    }

    /// Stores the agent's reply to a query of its own host; false if there is no such query.
    pub async fn answer_agent_query(
        &self,
        query_id: &str,
        host_id: &str,
        reply_hex: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE agent_queries SET reply = $1 \
             WHERE query_id = $2 AND host_id = $3 AND reply IS NULL",
        )
        .bind(reply_hex)
        .bind(query_id)
        .bind(host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let signal = Signal::Query(query_id.to_owned());
        if changed > 0 {
            self.notify_in(&mut tx, &signal).await?;
        }
        tx.commit().await?;
        if changed > 0 {
            self.signals.send(signal);
        }
        Ok(changed > 0)
    }

    /// The reply to a query, if it came.
    pub async fn agent_query_reply(&self, query_id: &str) -> Result<Option<String>, StoreError> {
        let reply: Option<Option<String>> =
            sqlx::query_scalar("SELECT reply FROM agent_queries WHERE query_id = $1")
                .bind(query_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(reply.flatten())
    }

    /// Removes a query (answered, or given up).
    pub async fn forget_agent_query(&self, query_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM agent_queries WHERE query_id = $1")
            .bind(query_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
