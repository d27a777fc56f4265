//! A claim an executor holds on one saga: its fence, the lease keeper that renews it, and
//! every signal that stops the work: the lease lost, an operator's cancel, the process
//! shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::step::now_ms;
use crate::store::{Fence, SagaRow, Signal, Store};
use berth_shared::saga::SagaStatus;

/// Why the work on a claimed saga stops before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The claim is gone: write nothing more.
    LeaseLost,
    /// Shutting down: hand the saga back.
    Shutdown,
}

/// One held claim. Dropping it stops its lease keeper.
pub(super) struct Claim {
    pub fence: Fence,
    /// The saga's kind and when it was created, for its metrics.
    pub kind: Arc<str>,
    pub created_at_ms: i64,
    /// Cancelled when the lease is lost (the pivot steps' token: only that stops them).
    pub lease_lost: CancellationToken,
    /// Cancelled by an operator's cancel request or a lost lease (the other steps' token).
    pub cancel: CancellationToken,
    cancel_requested: Arc<AtomicBool>,
    shutdown: CancellationToken,
    keeper: JoinHandle<()>,
}

impl Claim {
    /// Starts keeping `fence`'s lease: renewed every `renew_every`, and at once when an
    /// operator cancels the saga; a renewal that finds the claim gone cancels everything.
    pub fn hold(
        store: &Store,
        fence: Fence,
        saga: &SagaRow,
        renew_every: Duration,
        shutdown: CancellationToken,
    ) -> Claim {
        let lease_lost = CancellationToken::new();
        let cancel = CancellationToken::new();
        let cancel_requested = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(
            keep(
                store.clone(),
                fence.clone(),
                renew_every,
                lease_lost.clone(),
                cancel.clone(),
                cancel_requested.clone(),
            )
            .in_current_span(),
        );
        Claim {
            fence,
            kind: saga.kind.as_str().into(),
            created_at_ms: saga.created_at_ms,
            lease_lost,
            cancel,
            cancel_requested,
            shutdown,
            keeper,
        }
    }

    /// Whether the work must stop now, and why.
    pub fn should_stop(&self) -> Option<Stop> {
        if self.lease_lost.is_cancelled() {
            Some(Stop::LeaseLost)
        } else if self.shutdown.is_cancelled() {
            Some(Stop::Shutdown)
        } else {
            None
        }
    }

    /// Resolves when the process shuts down.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Whether an operator asked to cancel (as a renewal or a write reported it).
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Relaxed)
    }

    /// Records a cancel request a write reported.
    pub fn note_cancel_request(&self) {
        self.cancel_requested.store(true, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep(
    store: Store,
    fence: Fence,
    every: Duration,
    lost: CancellationToken,
    cancel: CancellationToken,
    requested: Arc<AtomicBool>,
) {
    let mut signals = store.subscribe();
    loop {
        // Renew on schedule, and at once when an operator cancels this saga.
        let renew_at = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(renew_at) => break,
                s = signals.recv() => match s {
                    Ok(Signal::Cancel(id)) if id == fence.saga_id => break,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(renew_at).await;
                        break;
                    }
                },
            }
        }
        match store.renew_lease(&fence, now_ms()).await {
            Ok(Some(cancel_requested)) => {
                if cancel_requested {
                    requested.store(true, Ordering::Relaxed);
                    cancel.cancel();
                }
            }
            Ok(None) => {
                let cause = loss_cause(&store, &fence).await;
                metrics::counter!("berth_saga_lease_losses_total", "cause" => cause).increment(1);
                if cause == "abandoned" {
                    tracing::info!(saga_id = fence.saga_id, "an operator abandoned the saga");
                } else {
                    tracing::warn!(
                        saga_id = fence.saga_id,
                        epoch = fence.epoch,
                        cause,
                        "lease lost"
                    );
                }
                lost.cancel();
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew lease; retrying"),
        }
    }
}

/// The causes `berth_saga_lease_losses_total` counts under (see [`loss_cause`]).
pub(crate) const LEASE_LOSS_CAUSES: &[&str] = &["abandoned", "taken", "expired"];

/// Why a renewal found the claim gone: `abandoned` by an operator (not a fault), `taken` by
/// another coordinator once the lease ran out (this one was paused or cut off past it), or
/// `expired` with no new owner yet.
async fn loss_cause(store: &Store, fence: &Fence) -> &'static str {
    match store.get_saga(&fence.saga_id).await {
        Ok(s) if s.status == SagaStatus::Abandoned => "abandoned",
        Ok(s) if s.owner_id.as_deref().is_some_and(|o| o != fence.owner_id) => "taken",
        _ => "expired",
    }
}
