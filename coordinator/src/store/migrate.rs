//! Forward-only schema migrations, embedded in the binary, per backend where DDL differs.
//!
//! A database whose schema is newer than this build knows is refused, naming both versions:
//! an older coordinator must not write into a layout it does not understand.

use sqlx::{AnyPool, Row};

use super::{Backend, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    /// Statements for SQLite and PostgreSQL; `None` for PostgreSQL means the same as SQLite.
    sqlite: &'static [&'static str],
    postgres: Option<&'static [&'static str]>,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "hosts and tokens",
    sqlite: &[
        "CREATE TABLE hosts (
            host_id TEXT PRIMARY KEY,
            hostname TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            docker_version TEXT NOT NULL,
            capabilities TEXT NOT NULL,
            first_seen_ms BIGINT NOT NULL,
            last_heartbeat_ms BIGINT NOT NULL,
            connected_to TEXT,
            session_id TEXT
        )",
        "CREATE TABLE api_tokens (
            token_id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            host_id TEXT,
            description TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            expires_at_ms BIGINT,
            revoked_at_ms BIGINT,
            last_used_ms BIGINT
        )",
    ],
    postgres: None,
}];

/// The newest schema version this build knows.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "database schema is at version {found} but this coordinator ({build}) knows versions up to \
         {known}: it was migrated by a newer build; run that build or a newer one"
    )]
    TooNew {
        found: i64,
        known: i64,
        build: &'static str,
    },
    #[error("migration {version} ({name}) failed")]
    Failed {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS berth_schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)";

pub(super) async fn current_version(pool: &AnyPool) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM berth_schema_migrations")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<i64, _>("v")?)
}

/// Applies every migration the database lacks, each in its own transaction. On PostgreSQL an
/// advisory lock keeps two coordinators starting together from racing.
pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.pool.acquire().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock(7400001)")
            .execute(&mut *conn)
            .await?;
    }
    let result = apply(store.backend, &mut conn).await;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock(7400001)")
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn apply(backend: Backend, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    sqlx::query(CREATE_LEDGER).execute(&mut *conn).await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM berth_schema_migrations")
        .fetch_one(&mut *conn)
        .await?;
    let found: i64 = row.try_get("v")?;
    if found > LATEST_VERSION {
        return Err(SchemaError::TooNew {
            found,
            known: LATEST_VERSION,
            build: env!("CARGO_PKG_VERSION"),
        }
        .into());
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let statements = match backend {
            Backend::Postgres => m.postgres.unwrap_or(m.sqlite),
            Backend::Sqlite => m.sqlite,
        };
        let failed = |source| SchemaError::Failed {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for s in statements {
            sqlx::query(*s).execute(&mut *tx).await.map_err(failed)?;
        }
        sqlx::query(
            "INSERT INTO berth_schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(berth_shared::time::unix_ms(std::time::SystemTime::now()))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
    }
    Ok(())
}
