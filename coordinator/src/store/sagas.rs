//! The saga ledger: `saga_runs`, `saga_step_results`, `saga_events`.
//!
//! Every write by an executor is fenced: its transaction first updates the saga's row where
//! `owner_id` and `epoch` still match the claim (which also takes the row lock); zero rows
//! means the lease was lost, the transaction rolls back and nothing is written.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use berth_shared::saga::{EventKind, SagaStatus, StepStatus, UnknownValue};

use super::signal::Signal;
use super::sql::Sql;
use super::{Backend, Store, StoreError};

/// The identity of a claim: who holds the saga, under which epoch, and how long a write
/// extends the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub saga_id: String,
    pub owner_id: String,
    pub epoch: i64,
    pub lease_ms: i64,
}

/// A saga's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRow {
    pub id: String,
    pub kind: String,
    pub inputs: String,
    pub status: SagaStatus,
    pub owner_id: Option<String>,
    pub epoch: i64,
    pub lease_expires_at_ms: i64,
    pub next_run_at_ms: i64,
    pub reclaim_count: i64,
    pub cancel_requested_at_ms: Option<i64>,
    pub start_key: Option<String>,
    pub error: Option<String>,
    pub output: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A step's ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub step_idx: i64,
    pub name: String,
    pub pivot: bool,
    pub status: StepStatus,
    pub attempts: i64,
    pub checkpoint: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub written_epoch: i64,
    /// When the first attempt began (the retry deadline counts from it).
    pub started_at_ms: Option<i64>,
    /// When the latest attempt began; the step's duration is this attempt's.
    pub attempt_started_at_ms: Option<i64>,
    /// When the latest attempt ended (success, failure, a retryable failure, abandon).
    pub finished_at_ms: Option<i64>,
}

/// One entry of a saga's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub seq: i64,
    pub saga_id: String,
    pub kind: EventKind,
    pub step_idx: i64,
    pub message: String,
    pub detail: Option<String>,
    pub epoch: i64,
    pub at_ms: i64,
}

/// A saga to insert with its steps.
#[derive(Debug, Clone)]
pub struct NewSaga<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub inputs: &'a str,
    pub start_key: Option<&'a str>,
    /// (name, pivot) of each step, in order.
    pub steps: &'a [(&'a str, bool)],
    pub now_ms: i64,
    /// The token of the caller that started it.
    pub started_by: Option<&'a str>,
}

/// Filters for listing sagas.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub statuses: Vec<SagaStatus>,
    pub kind: Option<String>,
    /// Sagas whose inputs name this host (`host_id`) or this app (`app`).
    pub host_id: Option<String>,
    pub app: Option<String>,
    pub created_after_ms: Option<i64>,
    pub created_before_ms: Option<i64>,
    /// Keyset paging: sagas with an id below this one (ids are time-ordered uuid v7).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// A write to a step's row.
#[derive(Debug, Clone)]
pub struct StepWrite<'a> {
    pub status: StepStatus,
    pub attempts: Option<i64>,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
    /// The first attempt begins: sets `started_at_ms`.
    pub started: bool,
    /// An attempt begins: sets `attempt_started_at_ms`, clears `finished_at_ms`.
    pub attempt_started: bool,
    /// The attempt ended: sets `finished_at_ms`.
    pub finished: bool,
}

impl StepWrite<'_> {
    /// A write of `status` alone (the other fields left as they are, the error cleared).
    pub fn to(status: StepStatus) -> Self {
        StepWrite {
            status,
            attempts: None,
            output: None,
            error: None,
            started: false,
            attempt_started: false,
            finished: false,
        }
    }
}

/// A write to a saga's row. A final status (see [`SagaStatus::is_final`]) also gives up the
/// claim.
#[derive(Debug, Clone, Copy)]
pub struct SagaWrite<'a> {
    pub status: SagaStatus,
    pub error: Option<&'a str>,
    pub output: Option<&'a str>,
}

impl<'a> SagaWrite<'a> {
    /// A write of `status` alone (error and output left as they are).
    pub fn to(status: SagaStatus) -> Self {
        SagaWrite {
            status,
            error: None,
            output: None,
        }
    }

    /// A write of `status` that records why the saga did not complete.
    pub fn with_error(status: SagaStatus, error: &'a str) -> Self {
        SagaWrite {
            error: Some(error),
            ..SagaWrite::to(status)
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub step_idx: i64,
    pub message: &'a str,
    pub detail: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    /// An event of the saga as a whole.
    pub fn saga(kind: EventKind, message: &'a str) -> Self {
        NewEvent::step(kind, -1, message)
    }

    /// An event of step `step_idx`.
    pub fn step(kind: EventKind, step_idx: i64, message: &'a str) -> Self {
        NewEvent {
            kind,
            step_idx,
            message,
            detail: None,
        }
    }
}

const SAGA_COLUMNS: &str = "id, kind, inputs, status, owner_id, epoch, lease_expires_at_ms, \
    next_run_at_ms, reclaim_count, cancel_requested_at_ms, start_key, error, output, \
    created_at_ms, updated_at_ms";
const STEP_COLUMNS: &str = "step_idx, name, pivot, status, attempts, checkpoint, output, error, \
    written_epoch, started_at_ms, attempt_started_at_ms, finished_at_ms";
const EVENT_COLUMNS: &str = "seq, saga_id, kind, step_idx, message, detail, epoch, at_ms";
/// Statuses an executor claims.
/// The SQL list of [`SagaStatus::ACTIVE`], `('pending', 'running', 'compensating')`.
const ACTIVE: ActiveList = ActiveList;

struct ActiveList;

impl std::fmt::Display for ActiveList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted: Vec<String> = SagaStatus::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        write!(f, "({})", quoted.join(", "))
    }
}

/// Version 10: the token that started each saga (none for sagas the coordinator starts, and
/// for those started before), counted for the cap on a ci token's sagas in progress.
pub(super) const MIGRATION_STARTED_BY: &[&str] = &[
    "ALTER TABLE saga_runs ADD COLUMN started_by TEXT",
    "CREATE INDEX saga_runs_started_by ON saga_runs (started_by, status)",
];

/// A stored enum value, parsed: anything else is a corrupt row.
fn parsed<T: std::str::FromStr<Err = UnknownValue>>(
    r: &AnyRow,
    column: &str,
    table: &'static str,
) -> Result<T, StoreError> {
    let raw: String = r.try_get(column)?;
    raw.parse()
        .map_err(|source| StoreError::Corrupt { table, source })
}

fn saga_row(r: &AnyRow) -> Result<SagaRow, StoreError> {
    Ok(SagaRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        inputs: r.try_get("inputs")?,
        status: parsed(r, "status", "saga_runs")?,
        owner_id: r.try_get("owner_id")?,
        epoch: r.try_get("epoch")?,
        lease_expires_at_ms: r.try_get("lease_expires_at_ms")?,
        next_run_at_ms: r.try_get("next_run_at_ms")?,
        reclaim_count: r.try_get("reclaim_count")?,
        cancel_requested_at_ms: r.try_get("cancel_requested_at_ms")?,
        start_key: r.try_get("start_key")?,
        error: r.try_get("error")?,
        output: r.try_get("output")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

fn step_row(r: &AnyRow) -> Result<StepRow, StoreError> {
    Ok(StepRow {
        step_idx: r.try_get("step_idx")?,
        name: r.try_get("name")?,
        pivot: r.try_get::<i64, _>("pivot")? != 0,
        status: parsed(r, "status", "saga_step_results")?,
        attempts: r.try_get("attempts")?,
        checkpoint: r.try_get("checkpoint")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        written_epoch: r.try_get("written_epoch")?,
        started_at_ms: r.try_get("started_at_ms")?,
        attempt_started_at_ms: r.try_get("attempt_started_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

fn event_row(r: &AnyRow) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        seq: r.try_get("seq")?,
        saga_id: r.try_get("saga_id")?,
        kind: parsed(r, "kind", "saga_events")?,
        step_idx: r.try_get("step_idx")?,
        message: r.try_get("message")?,
        detail: r.try_get("detail")?,
        epoch: r.try_get("epoch")?,
        at_ms: r.try_get("at_ms")?,
    })
}

async fn insert_event(
    tx: &mut Transaction<'_, Any>,
    saga_id: &str,
    epoch: i64,
    e: NewEvent<'_>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO saga_events (saga_id, kind, step_idx, message, detail, epoch, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(saga_id)
    .bind(e.kind.as_str())
    .bind(e.step_idx)
    .bind(e.message)
    .bind(e.detail)
    .bind(epoch)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Sagas in progress (pending, running or compensating) started by token `token_id`, and
    /// by every token of `role` together.
    pub async fn sagas_in_progress_started_by(
        &self,
        token_id: &str,
        role: &str,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT \
               (SELECT COUNT(*) FROM saga_runs WHERE started_by = $1 AND status IN {ACTIVE}), \
               (SELECT COUNT(*) FROM saga_runs s JOIN api_tokens t ON t.token_id = s.started_by \
                 WHERE t.role = $2 AND s.status IN {ACTIVE})"
        )))
        .bind(token_id)
        .bind(role)
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The saga started with idempotency key `key`, if any.
    pub async fn saga_id_by_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM saga_runs WHERE start_key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Inserts a saga, its pending steps and its first event; with a start key already used,
    /// inserts nothing and returns the existing saga's id and `false`.
    pub async fn insert_saga(&self, s: &NewSaga<'_>) -> Result<(String, bool), StoreError> {
        self.insert_saga_with_secrets(s, &[]).await
    }

    /// [`Store::insert_saga`], writing the saga's `secrets` (name, value) into `saga_secrets`
    /// in the same transaction, never into its readable inputs.
    pub async fn insert_saga_with_secrets(
        &self,
        s: &NewSaga<'_>,
        secrets: &[(&str, &str)],
    ) -> Result<(String, bool), StoreError> {
        // The host and app its inputs name, as columns, so lists filter on them by index.
        let named = serde_json::from_str::<serde_json::Value>(s.inputs).unwrap_or_default();
        let field = |k: &str| named.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO saga_runs (id, kind, inputs, status, owner_id, epoch, lease_expires_at_ms, \
                next_run_at_ms, reclaim_count, start_key, created_at_ms, updated_at_ms, \
                started_by, host_id, app) \
             VALUES ($1, $2, $3, 'pending', NULL, 0, 0, $4, 0, $5, $4, $4, $6, $7, $8) \
             ON CONFLICT (start_key) DO NOTHING",
        )
        .bind(s.id)
        .bind(s.kind)
        .bind(s.inputs)
        .bind(s.now_ms)
        .bind(s.start_key)
        .bind(s.started_by)
        .bind(field("host_id"))
        .bind(field("app"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            let id: String = sqlx::query_scalar("SELECT id FROM saga_runs WHERE start_key = $1")
                .bind(s.start_key)
                .fetch_one(self.pool())
                .await?;
            return Ok((id, false));
        }
        for (i, (name, pivot)) in s.steps.iter().enumerate() {
            sqlx::query(
                "INSERT INTO saga_step_results (saga_id, step_idx, name, pivot, status, attempts, \
                    written_epoch) VALUES ($1, $2, $3, $4, 'pending', 0, 0)",
            )
            .bind(s.id)
            .bind(i as i64)
            .bind(*name)
            .bind(i64::from(*pivot))
            .execute(&mut *tx)
            .await?;
        }
        let event = NewEvent::saga(EventKind::SagaStarted, s.kind);
        insert_event(&mut tx, s.id, 0, event, s.now_ms).await?;
        super::secrets::insert(&mut tx, s.id, secrets).await?;
        tx.commit().await?;
        Ok((s.id.to_owned(), true))
    }

    /// Claims one due saga of any kind for `owner_id`; see [`Store::claim_saga_of`].
    pub async fn claim_saga(
        &self,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<SagaRow>, StoreError> {
        self.claim(owner_id, now_ms, lease_ms, None).await
    }

    /// Claims one due saga of one of `kinds` for `owner_id`: bumps its epoch and sets a
    /// lease. A saga whose previous owner's lease ran out counts a reclaim. A saga of a kind
    /// this coordinator does not run (a replica of another version, one without the demo
    /// kind) is left for one that does.
    pub async fn claim_saga_of(
        &self,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
        kinds: &[&str],
    ) -> Result<Option<SagaRow>, StoreError> {
        self.claim(owner_id, now_ms, lease_ms, Some(kinds)).await
    }

    async fn claim(
        &self,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
        kinds: Option<&[&str]>,
    ) -> Result<Option<SagaRow>, StoreError> {
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let of_kinds = match kinds {
            None => String::new(),
            Some([]) => " AND 1 = 0".to_owned(),
            Some(kinds) => {
                let quoted: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("'{}'", k.replace('\'', "''")))
                    .collect();
                format!(" AND kind IN ({})", quoted.join(", "))
            }
        };
        let sql = format!(
            "UPDATE saga_runs SET epoch = epoch + 1, owner_id = $1, lease_expires_at_ms = $2, \
                reclaim_count = CASE WHEN owner_id IS NULL THEN reclaim_count \
                                     ELSE reclaim_count + 1 END, \
                updated_at_ms = $3 \
             WHERE id = (SELECT id FROM saga_runs WHERE status IN {ACTIVE} \
                         AND next_run_at_ms <= $3 AND lease_expires_at_ms < $3{of_kinds} \
                         ORDER BY next_run_at_ms LIMIT 1 {lock}) \
               AND status IN {ACTIVE} AND lease_expires_at_ms < $3 \
             RETURNING {SAGA_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner_id)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(saga_row).transpose()
    }

    /// Extends the lease; `Ok(None)` when it was lost. Returns whether a cancel was requested.
    pub async fn renew_lease(&self, f: &Fence, now_ms: i64) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query(
            "UPDATE saga_runs SET lease_expires_at_ms = $1 \
             WHERE id = $2 AND owner_id = $3 AND epoch = $4 \
             RETURNING cancel_requested_at_ms",
        )
        .bind(now_ms + f.lease_ms)
        .bind(&f.saga_id)
        .bind(&f.owner_id)
        .bind(f.epoch)
        .fetch_optional(self.engine_pool())
        .await?;
        Ok(match row {
            Some(r) => Some(
                r.try_get::<Option<i64>, _>("cancel_requested_at_ms")?
                    .is_some(),
            ),
            None => None,
        })
    }

    /// Begins a transaction that holds the claim, or fails with `LeaseLost`. Also says whether
    /// a cancel was requested, so every fenced write doubles as a check for one.
    pub(super) async fn fenced(
        &self,
        f: &Fence,
        now_ms: i64,
    ) -> Result<(Transaction<'_, Any>, bool), StoreError> {
        let mut tx = self.engine_pool().begin().await?;
        let held = sqlx::query(
            "UPDATE saga_runs SET updated_at_ms = $1, lease_expires_at_ms = $2 \
             WHERE id = $3 AND owner_id = $4 AND epoch = $5 RETURNING cancel_requested_at_ms",
        )
        .bind(now_ms)
        .bind(now_ms + f.lease_ms)
        .bind(&f.saga_id)
        .bind(&f.owner_id)
        .bind(f.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(held) = held else {
            tx.rollback().await?;
            return Err(StoreError::LeaseLost {
                saga_id: f.saga_id.clone(),
                epoch: f.epoch,
            });
        };
        let cancel_requested = held
            .try_get::<Option<i64>, _>("cancel_requested_at_ms")?
            .is_some();
        Ok((tx, cancel_requested))
    }

    /// Writes a step's row and an event under the claim. A completed step resets the
    /// saga's reclaim count (it made progress). Returns whether a cancel was requested.
    pub async fn write_step(
        &self,
        f: &Fence,
        idx: i64,
        w: &StepWrite<'_>,
        event: NewEvent<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (mut tx, cancel_requested) = self.fenced(f, now_ms).await?;
        if cfg!(debug_assertions) {
            let row = sqlx::query(
                "SELECT status FROM saga_step_results WHERE saga_id = $1 AND step_idx = $2",
            )
            .bind(&f.saga_id)
            .bind(idx)
            .fetch_one(&mut *tx)
            .await?;
            let from: StepStatus = parsed(&row, "status", "saga_step_results")?;
            assert!(
                from.can_become(w.status),
                "saga {} step {idx}: illegal step transition {from} -> {}",
                f.saga_id,
                w.status
            );
        }
        sqlx::query(
            "UPDATE saga_step_results SET status = $1, attempts = COALESCE($2, attempts), \
                output = COALESCE($3, output), error = $4, written_epoch = $5, \
                started_at_ms = CASE WHEN $6 = 1 THEN $7 ELSE started_at_ms END, \
                attempt_started_at_ms = CASE WHEN $11 = 1 THEN $7 ELSE attempt_started_at_ms END, \
                finished_at_ms = CASE WHEN $8 = 1 THEN $7 WHEN $11 = 1 THEN NULL \
                    ELSE finished_at_ms END \
             WHERE saga_id = $9 AND step_idx = $10",
        )
        .bind(w.status.as_str())
        .bind(w.attempts)
        .bind(w.output)
        .bind(w.error)
        .bind(f.epoch)
        .bind(i64::from(w.started))
        .bind(now_ms)
        .bind(i64::from(w.finished))
        .bind(&f.saga_id)
        .bind(idx)
        .bind(i64::from(w.attempt_started))
        .execute(&mut *tx)
        .await?;
        if matches!(w.status, StepStatus::Completed | StepStatus::Compensated) {
            sqlx::query("UPDATE saga_runs SET reclaim_count = 0 WHERE id = $1")
                .bind(&f.saga_id)
                .execute(&mut *tx)
                .await?;
        }
        insert_event(&mut tx, &f.saga_id, f.epoch, event, now_ms).await?;
        tx.commit().await?;
        Ok(cancel_requested)
    }

    /// Saves a step's checkpoint (handles such as a droplet id) under the claim.
    pub async fn save_checkpoint(
        &self,
        f: &Fence,
        idx: i64,
        checkpoint: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        sqlx::query(
            "UPDATE saga_step_results SET checkpoint = $1, written_epoch = $2 \
             WHERE saga_id = $3 AND step_idx = $4",
        )
        .bind(checkpoint)
        .bind(f.epoch)
        .bind(&f.saga_id)
        .bind(idx)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an event under the claim.
    pub async fn append_event(
        &self,
        f: &Fence,
        event: NewEvent<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        insert_event(&mut tx, &f.saga_id, f.epoch, event, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes the saga's status under the claim. A final status also releases the claim.
    pub async fn write_saga_status(
        &self,
        f: &Fence,
        w: &SagaWrite<'_>,
        event: NewEvent<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let SagaWrite {
            status,
            error,
            output,
        } = *w;
        let release = status.is_final();
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        if cfg!(debug_assertions) {
            let row = sqlx::query("SELECT status FROM saga_runs WHERE id = $1")
                .bind(&f.saga_id)
                .fetch_one(&mut *tx)
                .await?;
            let from: SagaStatus = parsed(&row, "status", "saga_runs")?;
            assert!(
                from.can_become(status),
                "saga {}: illegal transition {from} -> {status}",
                f.saga_id
            );
        }
        sqlx::query(
            "UPDATE saga_runs SET status = $1, error = COALESCE($2, error), \
                output = COALESCE($3, output), \
                owner_id = CASE WHEN $4 = 1 THEN NULL ELSE owner_id END, \
                lease_expires_at_ms = CASE WHEN $4 = 1 THEN 0 ELSE lease_expires_at_ms END \
             WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(output)
        .bind(i64::from(release))
        .bind(&f.saga_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, &f.saga_id, f.epoch, event, now_ms).await?;
        if status.is_over() {
            super::secrets::forget_all(&mut tx, &f.saga_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Hands a saga back (shutdown): no owner, lease gone, claimable at once by anyone.
    pub async fn release_saga(&self, f: &Fence, now_ms: i64) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        sqlx::query(
            "UPDATE saga_runs SET owner_id = NULL, lease_expires_at_ms = 0, next_run_at_ms = $1 \
             WHERE id = $2",
        )
        .bind(now_ms)
        .bind(&f.saga_id)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent::saga(EventKind::SagaReleased, &f.owner_id);
        insert_event(&mut tx, &f.saga_id, f.epoch, event, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The demo `record` step's side effect, fenced: one row per (saga, step, phase), and a
    /// count of the calls that reached the database under a valid claim.
    pub async fn record_test_effect(
        &self,
        f: &Fence,
        idx: i64,
        phase: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        sqlx::query(
            "INSERT INTO saga_test_effects (saga_id, step_idx, phase, epoch, calls) \
             VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (saga_id, step_idx, phase) \
             DO UPDATE SET calls = saga_test_effects.calls + 1, epoch = $4",
        )
        .bind(&f.saga_id)
        .bind(idx)
        .bind(phase)
        .bind(f.epoch)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO saga_test_effect_calls (saga_id, step_idx, phase, epoch, at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&f.saga_id)
        .bind(idx)
        .bind(phase)
        .bind(f.epoch)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_saga(&self, id: &str) -> Result<SagaRow, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SAGA_COLUMNS} FROM saga_runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => saga_row(&r),
            None => Err(StoreError::NotFound {
                what: format!("saga {id:?}"),
            }),
        }
    }

    pub async fn get_steps(&self, saga_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STEP_COLUMNS} FROM saga_step_results WHERE saga_id = $1 ORDER BY step_idx"
        )))
        .bind(saga_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(step_row).collect()
    }

    /// The steps of each saga of `ids`, in one query (a page of a list).
    pub async fn get_steps_of(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<StepRow>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<StepRow>> = Default::default();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut q = Sql::new(&format!(
            "SELECT saga_id, {STEP_COLUMNS} FROM saga_step_results WHERE saga_id IN "
        ));
        q.text_list(ids);
        q.push(" ORDER BY saga_id, step_idx");
        for r in q.query().fetch_all(self.pool()).await? {
            out.entry(r.try_get("saga_id")?)
                .or_default()
                .push(step_row(&r)?);
        }
        Ok(out)
    }

    pub async fn events_after(
        &self,
        saga_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM saga_events WHERE saga_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        )))
        .bind(saga_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_row).collect()
    }

    pub async fn list_sagas(&self, filter: &SagaFilter) -> Result<Vec<SagaRow>, StoreError> {
        let mut q = Sql::new(&format!("SELECT {SAGA_COLUMNS} FROM saga_runs WHERE 1 = 1"));
        if !filter.statuses.is_empty() {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            q.push(" AND status IN ").text_list(&statuses);
        }
        if let Some(k) = &filter.kind {
            q.push(" AND kind = ").text(k);
        }
        if let Some(h) = &filter.host_id {
            q.push(" AND host_id = ").text(h);
        }
        if let Some(a) = &filter.app {
            q.push(" AND app = ").text(a);
        }
        if let Some(t) = filter.created_after_ms {
            q.push(" AND created_at_ms >= ").int(t);
        }
        if let Some(t) = filter.created_before_ms {
            q.push(" AND created_at_ms < ").int(t);
        }
        if let Some(id) = &filter.before_id {
            q.push(" AND id < ").text(id);
        }
        q.push(" ORDER BY id DESC LIMIT ").int(filter.limit);
        let rows = q.query().fetch_all(self.pool()).await?;
        rows.iter().map(saga_row).collect()
    }

    /// An operator's change to a saga that is not held by any live claim: bumps the epoch
    /// (fencing any stale owner), applies `set_status` if the saga is in one of `from`, and
    /// rewrites the given steps. Returns false when the saga was not in an allowed status.
    pub async fn operator_transition(
        &self,
        saga_id: &str,
        from: SagaStatus,
        set_status: SagaStatus,
        steps: &[(i64, StepStatus)],
        event: NewEvent<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        debug_assert!(
            from.can_become(set_status),
            "saga {saga_id}: illegal operator transition {from} -> {set_status}"
        );
        let mut tx = self.pool().begin().await?;
        let mut q = Sql::new(
            "UPDATE saga_runs SET epoch = epoch + 1, owner_id = NULL, lease_expires_at_ms = 0, ",
        );
        q.push("reclaim_count = 0, status = ")
            .text(set_status.as_str());
        q.push(", next_run_at_ms = ").int(now_ms);
        q.push(", updated_at_ms = ").int(now_ms);
        if !set_status.is_over() {
            // It goes on: the error that stopped it is history now (its events keep it).
            q.push(", error = NULL");
        }
        q.push(" WHERE id = ").text(saga_id);
        q.push(" AND status = ").text(from.as_str());
        let changed = q.query().execute(&mut *tx).await?.rows_affected();
        if changed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM saga_runs WHERE id = $1")
            .bind(saga_id)
            .fetch_one(&mut *tx)
            .await?;
        for (idx, status) in steps {
            if cfg!(debug_assertions) {
                let row = sqlx::query(
                    "SELECT status FROM saga_step_results WHERE saga_id = $1 AND step_idx = $2",
                )
                .bind(saga_id)
                .bind(*idx)
                .fetch_one(&mut *tx)
                .await?;
                let was: StepStatus = parsed(&row, "status", "saga_step_results")?;
                assert!(
                    was.can_become(*status),
                    "saga {saga_id} step {idx}: illegal operator step transition {was} -> {status}"
                );
            }
            // A step run again starts afresh: its count, its times (its retry deadline counts
            // from the new first attempt); a skipped one keeps how often it ran and why it
            // failed; an abandoned one stops its clock.
            sqlx::query(
                "UPDATE saga_step_results SET status = $1, \
                    attempts = CASE WHEN $1 = 'pending' THEN 0 ELSE attempts END, \
                    error = CASE WHEN $1 = 'pending' THEN NULL ELSE error END, \
                    started_at_ms = CASE WHEN $1 = 'pending' THEN NULL ELSE started_at_ms END, \
                    attempt_started_at_ms = CASE WHEN $1 = 'pending' THEN NULL \
                        ELSE attempt_started_at_ms END, \
                    finished_at_ms = CASE WHEN $1 = 'pending' THEN NULL \
                        WHEN $1 = 'abandoned' THEN $5 ELSE finished_at_ms END, \
                    written_epoch = $2 WHERE saga_id = $3 AND step_idx = $4",
            )
            .bind(status.as_str())
            .bind(epoch)
            .bind(saga_id)
            .bind(*idx)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        insert_event(&mut tx, saga_id, epoch, event, now_ms).await?;
        if set_status.is_over() {
            super::secrets::forget_all(&mut tx, saga_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets the cancel flag of an active saga; false if it is not active.
    pub async fn request_cancel(
        &self,
        saga_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE saga_runs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, $1), \
                updated_at_ms = $1 WHERE id = $2 AND status IN {ACTIVE} RETURNING epoch"
        )))
        .bind(now_ms)
        .bind(saga_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let epoch: i64 = row.try_get("epoch")?;
        let message = if reason.is_empty() {
            "cancel requested"
        } else {
            reason
        };
        let event = NewEvent::saga(EventKind::CancelRequested, message);
        insert_event(&mut tx, saga_id, epoch, event, now_ms).await?;
        let signal = Signal::Cancel(saga_id.to_owned());
        self.notify_in(&mut tx, &signal).await?;
        tx.commit().await?;
        self.signals.send(signal);
        Ok(true)
    }

    /// Counts of sagas per status, for metrics.
    pub async fn saga_status_counts(&self) -> Result<Vec<(SagaStatus, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM saga_runs GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((parsed(r, "status", "saga_runs")?, r.try_get("n")?)))
            .collect()
    }
}
