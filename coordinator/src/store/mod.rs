//! The coordinator's durable state behind sqlx's `Any` driver: SQLite (embedded default) or
//! PostgreSQL, chosen by URL. Architecture invariant: only this module contains SQL.

mod agent_queries;
mod agent_tasks;
mod alerts;
mod archive_checks;
mod covers;
mod drift;
mod hosts;
mod inventory;
mod jobs;
mod migrate;
mod redact;
mod sagas;
mod schedules;
mod secrets;
mod signal;
mod sql;
mod tokens;
mod web_sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use agent_tasks::{AgentTaskRow, NewAgentTask, Opened, TaskResultWrite};
pub use alerts::{AlertRow, NewAlert};
pub use archive_checks::ArchiveCheck;
pub use drift::{Accepted, DriftFilter, DriftRow, DriftStatus};
pub use hosts::{HostRecord, HostSession};
pub use inventory::{
    CloudResource, DesiredSpec, ObservedResource, ResourceEvent, ResourceFilter, Upserted, Writer,
};
pub use jobs::{Due, GoneMark, JobClaim, JobRow};
pub use migrate::{LATEST_VERSION, SchemaError};
pub use redact::redact_url;
pub use sagas::{
    EventRow, Fence, NewEvent, NewSaga, SagaFilter, SagaRow, SagaWrite, StepRow, StepWrite,
};
pub use schedules::{Fired, NewRun, RunRow, ScheduleRow, Trigger};
pub use signal::Signal;
pub use tokens::{NewToken, TokenRecord, TokenScope};
pub use web_sessions::WebSession;

/// Which database the store is talking to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What went wrong in the store, by kind, so callers decide on the kind and not on a string.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to database {url}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database url {url} is not supported: use sqlite://PATH or postgres://…")]
    UnsupportedUrl { url: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("saga {saga_id} is no longer held under epoch {epoch}: another executor claimed it")]
    LeaseLost { saga_id: String, epoch: i64 },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row holds a value no build of Berth writes (a status, an event kind).
    #[error("corrupt {table} row: {source}")]
    Corrupt {
        table: &'static str,
        source: berth_shared::saga::UnknownValue,
    },
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Other(sqlx::Error),
}

impl crate::error::ServiceError for StoreError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::AlreadyExists,
            StoreError::Unavailable(_) | StoreError::Connect { .. } => ErrorCode::Unavailable,
            StoreError::UnsupportedUrl { .. }
            | StoreError::Schema(_)
            | StoreError::LeaseLost { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Other(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            StoreError::NotFound { what } => format!("{what} not found"),
            StoreError::Conflict(m) => m.clone(),
            // The database's own words may name its address.
            _ => "the coordinator's database is unavailable; retry later".to_owned(),
        }
    }
}

impl StoreError {
    /// The one place that sorts sqlx errors by kind.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound { what: "row".into() },
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            // SQLite busy or locked (a transaction that read first lost the write lock to
            // another connection), PostgreSQL serialization failure or deadlock: retry.
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("5" | "6" | "261" | "262" | "517" | "773" | "40001" | "40P01")
                ) =>
            {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Other(e),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::from_sqlx(e)
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The saga engine's own connections: lease renewals and fenced writes.
    engine_pool: AnyPool,
    backend: Backend,
    /// The URL, for the PostgreSQL listener only; never printed (it may hold a password).
    url: std::sync::Arc<str>,
    signals: signal::Signals,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// The embedded default: a SQLite file in the data directory.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Store {
    /// Connects, then brings the schema up to date (refusing a database newer than this build).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            });
        };
        let connect_err = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(connect_err)?
            .log_statements(tracing::log::LevelFilter::Trace);
        // One direct attempt first: it reports the real cause (refused, auth, unknown host)
        // where the pool would only time out.
        let probe = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(connect_err)?;
        sqlx::Connection::close(probe).await.map_err(connect_err)?;
        let pool = pool_options(backend)
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        // The saga engine's own connections: lease renewals and fenced writes never queue
        // behind API traffic (a flood of calls could otherwise delay a renewal past its lease).
        let engine_pool = pool_options(backend)
            .max_connections(ENGINE_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        let store = Store {
            pool,
            engine_pool,
            backend,
            url: url.into(),
            signals: signal::Signals::default(),
        };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Signals about agent tasks, from this process and (once [`Store::listen`] runs) from
    /// every other coordinator on the same PostgreSQL database.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    /// On PostgreSQL, relays other coordinators' signals into [`Store::subscribe`] until
    /// `stop` fires. On SQLite every writer is in this process already.
    pub fn listen(&self, stop: tokio_util::sync::CancellationToken) {
        if self.backend == Backend::Postgres {
            signal::listen_postgres(self.url.to_string(), self.signals.clone(), stop);
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::current_version(&self.pool).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.engine_pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine's pool, for lease renewals and fenced writes only: API traffic never
    /// takes these connections, so a renewal waits for at most the engine's own writes.
    pub(crate) fn engine_pool(&self) -> &AnyPool {
        &self.engine_pool
    }
}

/// Connections the saga engine keeps for itself (see [`Store::engine_pool`]).
const ENGINE_CONNECTIONS: u32 = 3;

/// Pool settings shared by the API's pool and the engine's: per-connection setup, timeouts.
fn pool_options(backend: Backend) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA busy_timeout=5000").await?;
                    conn.execute("PRAGMA synchronous=NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys=ON").await?;
                } else {
                    // No transaction here waits on anything but the database, so one idle
                    // this long belongs to a frozen or dead process: end it and free its
                    // row locks, or another coordinator could not take its sagas over.
                    conn.execute("SET idle_in_transaction_session_timeout = 5000")
                        .await?;
                }
                Ok(())
            })
        })
}
