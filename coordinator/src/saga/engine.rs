//! The executor: starts sagas (checking sizes, ci caps and idempotency keys), claims due
//! ones (each held as a `claim::Claim`, which keeps the lease and gathers the stop signals)
//! and hands each to `drive`, which carries out what `core::next` decides.
//!
//! Three phases per step: mark it running (one short transaction), call it with no
//! transaction open, record the result (a second transaction). A lost lease stops the saga
//! in this process at once; the next owner resumes from the ledger.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use berth_shared::saga::EventKind;

use super::claim::Claim;
use super::core::SagaStatus;
use super::drive::Outcome;
use super::kinds::{KindError, Registry};
use super::step::{Deps, now_ms};
use crate::store::{Fence, NewSaga, SagaRow, SagaWrite, Store, StoreError};

/// How an engine claims and runs sagas.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This coordinator's id, written as the owner of the sagas it holds.
    pub owner_id: String,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// How often a held lease is renewed (well under `lease`).
    pub renew_every: Duration,
    /// How often to look for due sagas when idle.
    pub poll_interval: Duration,
    /// Sagas this coordinator runs at once.
    pub max_concurrent: usize,
    /// A saga claimed this many times without progress is paused for an operator.
    pub max_reclaims: i64,
    /// What ci tokens may have in progress (a CI runner's waits must not hold every slot).
    pub ci_caps: CiCaps,
}

/// Sagas in progress (pending, running or compensating) that ci tokens may have: each token,
/// and all of them together. Checked when a saga starts; replicas starting at the same
/// moment may pass it by a few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiCaps {
    pub per_token: u64,
    pub all_tokens: u64,
}

/// Who starts a saga: recorded with it, and held to [`CiCaps`] when `ci`.
#[derive(Debug, Clone, Copy)]
pub struct StartedBy<'a> {
    pub token_id: &'a str,
    pub ci: bool,
}

impl EngineConfig {
    pub fn new(owner_id: impl Into<String>) -> Self {
        EngineConfig {
            owner_id: owner_id.into(),
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            max_concurrent: 32,
            max_reclaims: 5,
            ci_caps: CiCaps {
                per_token: 4,
                all_tokens: 16,
            },
        }
    }
}

/// Why a saga could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kind(#[from] KindError),
    #[error("idempotency key {key:?} was already used to start a different saga ({saga_id})")]
    KeyReused { key: String, saga_id: String },
    #[error(
        "host {host_id} has never connected to this coordinator's fleet: enroll its agent \
         (`berth-agent enroll`) and start it, or check the host id with `berth hosts list`"
    )]
    UnknownHost { host_id: String },
    #[error(
        "{who} already {have} {max} sagas in progress (limits.{key} = {max}); wait for one to \
         finish, or cancel one (`berth sagas cancel ID`)"
    )]
    Busy {
        who: &'static str,
        have: &'static str,
        key: &'static str,
        max: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ServiceError for StartError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            StartError::Kind(_) => ErrorCode::InvalidArgument,
            StartError::KeyReused { .. } => ErrorCode::FailedPrecondition,
            StartError::UnknownHost { .. } => ErrorCode::NotFound,
            StartError::Busy { .. } => ErrorCode::ResourceExhausted,
            StartError::Store(s) => s.error_code(),
        }
    }

    fn public_message(&self) -> String {
        match self {
            StartError::Store(s) => s.public_message(),
            e => e.to_string(),
        }
    }
}

/// The saga engine of one coordinator.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    registry: Arc<Registry>,
    deps: Deps,
    config: Arc<EngineConfig>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("owner_id", &self.config.owner_id)
            .finish()
    }
}

impl Engine {
    pub fn new(store: Store, registry: Registry, deps: Deps, config: EngineConfig) -> Engine {
        Engine {
            store,
            registry: Arc::new(registry),
            deps,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn deps(&self) -> &Deps {
        &self.deps
    }

    /// Wakes the claim loop (after a start or an operator action).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Validates the inputs and records a new saga (or returns the one started with the same
    /// idempotency key). Nothing is written when the kind or inputs are wrong.
    pub async fn start(
        &self,
        kind: &str,
        inputs: &str,
        key: Option<&str>,
    ) -> Result<(String, bool), StartError> {
        self.start_by(kind, inputs, key, None).await
    }

    /// [`Engine::start`] on behalf of a caller, recorded with the saga; a ci caller over its
    /// [`CiCaps`] is refused (a repeat of a start it already made is not).
    pub async fn start_by(
        &self,
        kind: &str,
        inputs: &str,
        key: Option<&str>,
        by: Option<StartedBy<'_>>,
    ) -> Result<(String, bool), StartError> {
        check_start_sizes(kind, inputs, key)?;
        if let Some(by) = by.filter(|b| b.ci) {
            self.check_ci_caps(by.token_id, key).await?;
        }
        let (mut value, steps) = self.registry.build(kind, inputs)?;
        if steps.iter().any(|s| s.runs_on_agent())
            && let Some(host_id) = value["host_id"].as_str()
        {
            match self.store.get_host(host_id).await {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => {
                    return Err(StartError::UnknownHost {
                        host_id: host_id.to_owned(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        let names: Vec<(&str, bool)> = steps.iter().map(|s| (s.name(), s.pivot())).collect();
        let id = uuid::Uuid::now_v7().to_string();
        // Secret inputs go to `saga_secrets`, never into the inputs every reader sees.
        let sealed = super::secrets::seal(&mut value);
        let secrets: Vec<(&str, &str)> = sealed.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let inputs = value.to_string();
        let (saga_id, created) = self
            .store
            .insert_saga_with_secrets(
                &NewSaga {
                    id: &id,
                    kind,
                    inputs: &inputs,
                    start_key: key,
                    steps: &names,
                    now_ms: now_ms(),
                    started_by: by.map(|b| b.token_id),
                },
                &secrets,
            )
            .await?;
        if !created {
            let existing = self.store.get_saga(&saga_id).await?;
            let mut same_inputs =
                serde_json::from_str::<Value>(&existing.inputs).ok() == Some(value);
            for (name, secret) in &secrets {
                // A secret already dropped (its step is done) cannot differ any more.
                if let Some(stored) = self.store.saga_secret(&saga_id, name).await? {
                    same_inputs &= stored == *secret;
                }
            }
            if existing.kind != kind || !same_inputs {
                return Err(StartError::KeyReused {
                    key: key.unwrap_or_default().to_owned(),
                    saga_id,
                });
            }
        } else {
            metrics::counter!("berth_sagas_started_total", "kind" => kind.to_owned()).increment(1);
            self.notify();
        }
        Ok((saga_id, !created))
    }

    async fn check_ci_caps(&self, token_id: &str, key: Option<&str>) -> Result<(), StartError> {
        let caps = self.config.ci_caps;
        let (mine, all) = self
            .store
            .sagas_in_progress_started_by(token_id, berth_shared::Role::Ci.as_str())
            .await?;
        let busy = if mine as u64 >= caps.per_token {
            Some((
                "this ci token",
                "has",
                "max_active_sagas_per_ci_token",
                caps.per_token,
            ))
        } else if all as u64 >= caps.all_tokens {
            Some((
                "ci tokens together",
                "have",
                "max_active_ci_sagas",
                caps.all_tokens,
            ))
        } else {
            None
        };
        let Some((who, have, limit, max)) = busy else {
            return Ok(());
        };
        // A repeat of a start already made answers with that saga, at the cap or not.
        if let Some(key) = key
            && self.store.saga_id_by_key(key).await?.is_some()
        {
            return Ok(());
        }
        metrics::counter!("berth_saga_starts_refused_total", "limit" => limit).increment(1);
        Err(StartError::Busy {
            who,
            have,
            key: limit,
            max,
        })
    }

    /// Claims and runs due sagas until `shutdown`; then hands back what it holds.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.max_concurrent));
        tracing::info!(owner_id = self.config.owner_id, "saga engine running");
        // Only sagas this coordinator can run: one of a kind it lacks waits for a replica
        // that has it (a rolling upgrade, the demo kind on one replica), never failed here.
        let kinds = self.registry.kinds();
        let gauges = tokio::spawn(crate::telemetry::report_store_gauges(
            self.store.clone(),
            shutdown.clone(),
        ));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            match self
                .store
                .claim_saga_of(
                    &self.config.owner_id,
                    now_ms(),
                    self.config.lease.as_millis() as i64,
                    &kinds,
                )
                .await
            {
                Ok(Some(row)) => {
                    let engine = self.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        // A span entered across awaits corrupts the subscriber's span stack
                        // on another worker: the saga's future carries it instead.
                        let span = tracing::info_span!(
                            "saga", saga_id = %row.id, kind = %row.kind, epoch = row.epoch
                        );
                        engine.run_saga(row, shutdown).instrument(span).await;
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => drop(permit),
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "cannot claim sagas");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        gauges.abort();
        // Wait for every saga task to hand its saga back.
        let all = u32::try_from(self.config.max_concurrent).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
        tracing::info!(owner_id = self.config.owner_id, "saga engine stopped");
    }

    async fn run_saga(&self, row: SagaRow, shutdown: CancellationToken) {
        let fence = Fence {
            saga_id: row.id.clone(),
            owner_id: self.config.owner_id.clone(),
            epoch: row.epoch,
            lease_ms: self.config.lease.as_millis() as i64,
        };
        if row.reclaim_count >= self.config.max_reclaims {
            tracing::warn!(
                reclaims = row.reclaim_count,
                "saga reclaimed too often without progress; pausing it"
            );
            let message = format!(
                "claimed {} times without progress; paused for an operator",
                row.reclaim_count
            );
            let write = SagaWrite::with_error(SagaStatus::Paused, &message);
            if let Err(e) = self
                .set_saga(&fence, write, EventKind::SagaPaused, &message)
                .await
            {
                tracing::warn!(error = %e, "cannot pause the saga; the next claim tries again");
            }
            return;
        }
        let claim = Claim::hold(&self.store, fence, &row, self.config.renew_every, shutdown);
        let outcome = self.drive(&row, &claim).await;
        let fence = &claim.fence;
        match outcome {
            Ok(Outcome::Done | Outcome::Final) => {}
            Ok(Outcome::LeaseLost) => tracing::info!("stopped: another executor holds the saga"),
            Ok(Outcome::Shutdown) => {
                if let Err(e) = self.store.release_saga(fence, now_ms()).await {
                    tracing::warn!(error = %e, "cannot hand the saga back; it is claimable when its lease ends");
                } else {
                    tracing::info!("handed the saga back for another coordinator");
                }
            }
            Err(StoreError::LeaseLost { .. }) => {
                tracing::info!("stopped: lease lost during a write")
            }
            Err(e) => {
                tracing::warn!(error = %e, "saga run interrupted by a store error; it resumes when its lease ends")
            }
        }
    }
}

/// Longest saga kind, idempotency key and inputs (JSON) a start may carry, in bytes. The
/// inputs' own fields have tighter limits, checked by each kind.
pub const MAX_KIND: usize = 64;
pub const MAX_KEY: usize = 256;
pub const MAX_INPUTS: usize = 128 * 1024;

fn check_start_sizes(kind: &str, inputs: &str, key: Option<&str>) -> Result<(), StartError> {
    let over = |field: &str, len: usize, max: usize| {
        (len > max).then(|| {
            StartError::Kind(KindError::Invalid {
                kind: kind.chars().take(MAX_KIND).collect(),
                message: format!("{field} is {len} bytes long; the limit is {max}"),
            })
        })
    };
    match over("kind", kind.len(), MAX_KIND)
        .or_else(|| over("inputs_json", inputs.len(), MAX_INPUTS))
        .or_else(|| over("idempotency_key", key.map_or(0, str::len), MAX_KEY))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
