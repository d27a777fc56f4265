//! Web console sessions: a signed-in browser's cookie (kept only as its SHA-256) mapped to the
//! token it signed in with (also only its hash) and the CSRF value its forms carry. In the
//! database, so every replica serves every session.

use sqlx::Row;

use super::{Store, StoreError};

pub(super) const MIGRATION: &str = "CREATE TABLE web_sessions (
    session_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
)";

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub token_hash: String,
    pub csrf: String,
    pub expires_at_ms: i64,
}

impl Store {
    /// Records a session; also forgets sessions that have expired.
    pub async fn create_web_session(
        &self,
        session_hash: &str,
        s: &WebSession,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (session_hash, token_hash, csrf, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_hash)
        .bind(&s.token_hash)
        .bind(&s.csrf)
        .bind(now_ms)
        .bind(s.expires_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session behind `session_hash`, unless it has expired.
    pub async fn web_session(
        &self,
        session_hash: &str,
        now_ms: i64,
    ) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(
            "SELECT token_hash, csrf, expires_at_ms FROM web_sessions \
             WHERE session_hash = $1 AND expires_at_ms > $2",
        )
        .bind(session_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(WebSession {
                token_hash: r.try_get("token_hash")?,
                csrf: r.try_get("csrf")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out, or its token is no longer live).
    pub async fn delete_web_session(&self, session_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
