//! The api_tokens table. Only a SHA-256 of each token is stored; the plaintext exists once, in
//! the answer to the call that created it. Enrollment tokens are rows flagged `enrollment`,
//! spent (`used_at_ms`) in the same transaction that inserts the agent token they buy, which
//! also revokes the host's earlier agent tokens. A ci token may carry a scope: the hosts and
//! apps its warm restores may touch (`scope_hosts`, `scope_apps`, comma-separated names).

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// Schema version 4: one-time enrollment tokens.
pub(super) const MIGRATION_ENROLLMENT: &[&str] = &[
    "ALTER TABLE api_tokens ADD COLUMN enrollment BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE api_tokens ADD COLUMN used_at_ms BIGINT",
];

/// Schema version 9: the scope of ci tokens.
pub(super) const MIGRATION_SCOPES: &[&str] = &[
    "ALTER TABLE api_tokens ADD COLUMN scope_hosts TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE api_tokens ADD COLUMN scope_apps TEXT NOT NULL DEFAULT ''",
];

/// What a token may touch beyond its role: empty lists mean no limit. Only ci tokens have one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// Host ids its warm restores may run on.
    pub hosts: Vec<String>,
    /// App names its warm restores may restore.
    pub apps: Vec<String>,
}

impl TokenScope {
    pub fn is_unlimited(&self) -> bool {
        self.hosts.is_empty() && self.apps.is_empty()
    }
}

/// A list column: names are validated (no commas), so a comma separates them.
fn join_names(names: &[String]) -> String {
    names.join(",")
}

fn split_names(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A token's record, without any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub role: String,
    pub host_id: Option<String>,
    pub description: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    /// A one-time token that can only be exchanged for an agent token.
    pub enrollment: bool,
    /// When an enrollment token was exchanged; it is spent from then on.
    pub used_at_ms: Option<i64>,
    pub scope: TokenScope,
}

/// A token to insert: its id, the hash of its secret and what it may do.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub token_id: &'a str,
    pub token_hash: &'a str,
    pub role: &'a str,
    pub host_id: Option<&'a str>,
    pub description: &'a str,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub scope: &'a TokenScope,
}

const COLUMNS: &str = "token_id, role, host_id, description, created_at_ms, expires_at_ms, \
                       revoked_at_ms, last_used_ms, enrollment, used_at_ms, scope_hosts, \
                       scope_apps";

fn from_row(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        token_id: row.try_get("token_id")?,
        role: row.try_get("role")?,
        host_id: row.try_get("host_id")?,
        description: row.try_get("description")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        last_used_ms: row.try_get("last_used_ms")?,
        enrollment: row.try_get::<i64, _>("enrollment")? != 0,
        used_at_ms: row.try_get("used_at_ms")?,
        scope: TokenScope {
            hosts: split_names(&row.try_get::<String, _>("scope_hosts")?),
            apps: split_names(&row.try_get::<String, _>("scope_apps")?),
        },
    })
}

const INSERT: &str = "INSERT INTO api_tokens (token_id, token_hash, role, host_id, description, \
                      created_at_ms, expires_at_ms, enrollment, scope_hosts, scope_apps) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn insert<'q>(
    t: &'q NewToken<'q>,
    enrollment: bool,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(INSERT)
        .bind(t.token_id)
        .bind(t.token_hash)
        .bind(t.role)
        .bind(t.host_id)
        .bind(t.description)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .bind(i64::from(enrollment))
        .bind(join_names(&t.scope.hosts))
        .bind(join_names(&t.scope.apps))
}

impl Store {
    pub async fn insert_token(&self, t: &NewToken<'_>) -> Result<TokenRecord, StoreError> {
        insert(t, false).execute(self.pool()).await?;
        self.get_token(t.token_id).await
    }

    /// Inserts a one-time enrollment token (its role and host are those of the agent token
    /// it will be exchanged for).
    pub async fn insert_enrollment_token(
        &self,
        t: &NewToken<'_>,
    ) -> Result<TokenRecord, StoreError> {
        insert(t, true).execute(self.pool()).await?;
        self.get_token(t.token_id).await
    }

    /// The token with this hash whatever its state, to say why it is not live.
    pub async fn find_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Spends the enrollment token `enrollment_id`, revokes the host's earlier agent tokens and
    /// inserts `agent`, in one transaction: of two concurrent exchanges of one token, exactly
    /// one gets an agent token, and a re-enrolled host has one live agent token. `None` when
    /// the token was no longer spendable (used, revoked or expired meanwhile).
    pub async fn redeem_enrollment(
        &self,
        enrollment_id: &str,
        agent: &NewToken<'_>,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let spent = sqlx::query(
            "UPDATE api_tokens SET used_at_ms = $1, last_used_ms = $1 \
             WHERE token_id = $2 AND enrollment = 1 AND used_at_ms IS NULL \
             AND revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > $1)",
        )
        .bind(now_ms)
        .bind(enrollment_id)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = $1 WHERE role = 'agent' AND host_id = $2 \
             AND enrollment = 0 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(agent.host_id)
        .execute(&mut *tx)
        .await?;
        insert(agent, false).execute(&mut *tx).await?;
        tx.commit().await?;
        self.get_token(agent.token_id).await.map(Some)
    }

    pub async fn get_token(&self, token_id: &str) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_id = $1"
        )))
        .bind(token_id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => from_row(&row),
            None => Err(StoreError::NotFound {
                what: format!("token {token_id:?}"),
            }),
        }
    }

    /// The live token with this hash (not revoked, not expired at `now_ms`, not a spent
    /// enrollment token), marking it used.
    pub async fn find_live_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL \
             AND used_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > $2)"
        )))
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token = from_row(&row)?;
        // Coarse on purpose: one write a minute per token, not one per call.
        if token.last_used_ms.is_none_or(|t| now_ms - t > 60_000) {
            sqlx::query("UPDATE api_tokens SET last_used_ms = $1 WHERE token_id = $2")
                .bind(now_ms)
                .bind(&token.token_id)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(token))
    }

    /// The token `token_id` if it is still live at `now_ms` (not revoked, not expired, not a
    /// spent enrollment token): a primary-key read, for streams that re-check their caller.
    pub async fn token_is_live(&self, token_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS live FROM api_tokens WHERE token_id = $1 AND revoked_at_ms IS NULL \
             AND used_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > $2)",
        )
        .bind(token_id)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    pub async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>, StoreError> {
        let filter = if include_revoked {
            ""
        } else {
            "WHERE revoked_at_ms IS NULL"
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens {filter} ORDER BY created_at_ms, token_id"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn revoke_token(
        &self,
        token_id: &str,
        now_ms: i64,
    ) -> Result<TokenRecord, StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = $1 WHERE token_id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(token_id)
        .execute(self.pool())
        .await?;
        self.get_token(token_id).await
    }
}
