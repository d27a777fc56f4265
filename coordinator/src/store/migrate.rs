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

const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "saga ledger",
        sqlite: &[
            SAGA_RUNS,
            "CREATE INDEX saga_runs_due ON saga_runs (status, next_run_at_ms)",
            "CREATE INDEX saga_runs_created ON saga_runs (created_at_ms)",
            SAGA_STEPS,
            "CREATE TABLE saga_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            saga_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            step_idx BIGINT NOT NULL,
            message TEXT NOT NULL,
            detail TEXT,
            epoch BIGINT NOT NULL,
            at_ms BIGINT NOT NULL
        )",
            "CREATE INDEX saga_events_saga ON saga_events (saga_id, seq)",
            SAGA_EFFECTS,
        ],
        postgres: Some(&[
            SAGA_RUNS,
            "CREATE INDEX saga_runs_due ON saga_runs (status, next_run_at_ms)",
            "CREATE INDEX saga_runs_created ON saga_runs (created_at_ms)",
            SAGA_STEPS,
            "CREATE TABLE saga_events (
            seq BIGSERIAL PRIMARY KEY,
            saga_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            step_idx BIGINT NOT NULL,
            message TEXT NOT NULL,
            detail TEXT,
            epoch BIGINT NOT NULL,
            at_ms BIGINT NOT NULL
        )",
            "CREATE INDEX saga_events_saga ON saga_events (saga_id, seq)",
            SAGA_EFFECTS,
        ]),
    },
    Migration {
        version: 3,
        name: "cloud inventory",
        sqlite: super::inventory::MIGRATION_SQLITE,
        postgres: Some(super::inventory::MIGRATION_POSTGRES),
    },
    Migration {
        version: 4,
        name: "enrollment tokens",
        sqlite: super::tokens::MIGRATION_ENROLLMENT,
        postgres: None,
    },
    Migration {
        version: 5,
        name: "drift inbox and job leases",
        sqlite: super::drift::MIGRATION,
        postgres: None,
    },
    Migration {
        version: 6,
        name: "agent tasks",
        sqlite: super::agent_tasks::MIGRATION,
        postgres: None,
    },
    Migration {
        version: 7,
        name: "demo effect calls",
        sqlite: &[SAGA_EFFECT_CALLS],
        postgres: None,
    },
    Migration {
        version: 8,
        name: "agent queries through any replica",
        sqlite: super::agent_queries::MIGRATION,
        postgres: None,
    },
    Migration {
        version: 9,
        name: "trust-secrets: ci token scopes and sealed saga secrets",
        sqlite: MIGRATION_TRUST_SECRETS,
        postgres: None,
    },
    Migration {
        version: 10,
        name: "who started each saga",
        sqlite: super::sagas::MIGRATION_STARTED_BY,
        postgres: None,
    },
    Migration {
        version: 11,
        name: "archive verifications",
        sqlite: super::archive_checks::MIGRATION,
        postgres: None,
    },
    Migration {
        version: 12,
        name: "schedules, the alert outbox and unchanged runs",
        sqlite: MIGRATION_SCHEDULES,
        postgres: None,
    },
    Migration {
        version: 13,
        name: "each host's warm-root free space, from its heartbeats",
        sqlite: &["ALTER TABLE hosts ADD COLUMN warm_root_free_bytes BIGINT"],
        postgres: None,
    },
    Migration {
        version: 14,
        name: "when a step's latest attempt began (its duration is per attempt)",
        sqlite: &["ALTER TABLE saga_step_results ADD COLUMN attempt_started_at_ms BIGINT"],
        postgres: None,
    },
    Migration {
        version: 15,
        name: "web console sessions; saga lists by status and by kind, newest first",
        sqlite: &[
            super::web_sessions::MIGRATION,
            "CREATE INDEX saga_runs_status_id ON saga_runs (status, id)",
            "CREATE INDEX saga_runs_kind_id ON saga_runs (kind, id)",
        ],
        postgres: None,
    },
    Migration {
        version: 16,
        name: "the host and app each saga's inputs name, for lists filtered by them",
        sqlite: &[
            "ALTER TABLE saga_runs ADD COLUMN host_id TEXT",
            "ALTER TABLE saga_runs ADD COLUMN app TEXT",
            "UPDATE saga_runs SET host_id = json_extract(inputs, '$.host_id'), \
                app = json_extract(inputs, '$.app') WHERE json_valid(inputs)",
            "CREATE INDEX saga_runs_host_id ON saga_runs (host_id, id)",
            "CREATE INDEX saga_runs_app_id ON saga_runs (app, id)",
        ],
        postgres: Some(&[
            "ALTER TABLE saga_runs ADD COLUMN host_id TEXT",
            "ALTER TABLE saga_runs ADD COLUMN app TEXT",
            "UPDATE saga_runs SET host_id = inputs::jsonb ->> 'host_id', \
                app = inputs::jsonb ->> 'app'",
            "CREATE INDEX saga_runs_host_id ON saga_runs (host_id, id)",
            "CREATE INDEX saga_runs_app_id ON saga_runs (app, id)",
        ]),
    },
];

/// Version 12: `schedules`, `schedule_runs`, `alert_outbox` and `archive_covers`.
const MIGRATION_SCHEDULES: &[&str] = &[
    super::schedules::MIGRATION[0],
    super::schedules::MIGRATION[1],
    super::schedules::MIGRATION[2],
    super::alerts::MIGRATION[0],
    super::alerts::MIGRATION[1],
    super::covers::MIGRATION[0],
    super::covers::MIGRATION[1],
];

/// Version 9: the scope of ci tokens (`api_tokens`) and `saga_secrets`.
const MIGRATION_TRUST_SECRETS: &[&str] = &[
    super::tokens::MIGRATION_SCOPES[0],
    super::tokens::MIGRATION_SCOPES[1],
    super::secrets::MIGRATION[0],
];

/// Every call of the `record` demo step that reached the database, with the epoch that made
/// it, so a test can tell a takeover's repeat from a duplicate.
const SAGA_EFFECT_CALLS: &str = "CREATE TABLE saga_test_effect_calls (
    saga_id TEXT NOT NULL,
    step_idx BIGINT NOT NULL,
    phase TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
)";

const SAGA_RUNS: &str = "CREATE TABLE saga_runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    owner_id TEXT,
    epoch BIGINT NOT NULL,
    lease_expires_at_ms BIGINT NOT NULL,
    next_run_at_ms BIGINT NOT NULL,
    reclaim_count BIGINT NOT NULL,
    cancel_requested_at_ms BIGINT,
    start_key TEXT UNIQUE,
    error TEXT,
    output TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
)";

const SAGA_STEPS: &str = "CREATE TABLE saga_step_results (
    saga_id TEXT NOT NULL,
    step_idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    pivot BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    checkpoint TEXT,
    output TEXT,
    error TEXT,
    written_epoch BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    PRIMARY KEY (saga_id, step_idx)
)";

/// Side effects of the `record` demo step, keyed so that a repeated call cannot duplicate one,
/// and every call logged so tests can count attempts.
const SAGA_EFFECTS: &str = "CREATE TABLE saga_test_effects (
    saga_id TEXT NOT NULL,
    step_idx BIGINT NOT NULL,
    phase TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    PRIMARY KEY (saga_id, step_idx, phase)
)";

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
