//! Wake-ups between coordinators: "host H has agent work", "saga S's agent task changed",
//! "saga S was cancelled", "query Q was answered".
//!
//! Every write that changes an agent task also sends a signal. In process it goes through a
//! broadcast channel; on PostgreSQL it is also a `NOTIFY` sent in the writing transaction, so
//! every replica hears it once the write commits. Signals only wake: a missed one (a listener
//! reconnecting, a lagging receiver) costs a slow poll, never correctness.

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The PostgreSQL channel every replica listens on.
pub(super) const CHANNEL: &str = "berth_agent_tasks";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A task for this host was opened, cancelled or closed: its stream holder should look.
    Host(String),
    /// A task of this saga got progress or a result: its owner should look.
    Saga(String),
    /// An operator asked to cancel this saga: its owner should stop now, not at its next
    /// lease renewal.
    Cancel(String),
    /// A host query asked through another replica was answered.
    Query(String),
}

impl Signal {
    pub(super) fn payload(&self) -> String {
        match self {
            Signal::Host(h) => format!("h:{h}"),
            Signal::Saga(s) => format!("s:{s}"),
            Signal::Cancel(s) => format!("c:{s}"),
            Signal::Query(q) => format!("q:{q}"),
        }
    }

    pub(super) fn parse(payload: &str) -> Option<Signal> {
        match payload.split_once(':')? {
            ("h", h) => Some(Signal::Host(h.to_owned())),
            ("s", s) => Some(Signal::Saga(s.to_owned())),
            ("c", s) => Some(Signal::Cancel(s.to_owned())),
            ("q", q) => Some(Signal::Query(q.to_owned())),
            _ => None,
        }
    }
}

/// The in-process side: a broadcast every subscriber hears.
#[derive(Debug, Clone)]
pub(super) struct Signals {
    tx: broadcast::Sender<Signal>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Signals {
    pub fn send(&self, s: Signal) {
        // No subscriber is fine: nobody waits.
        let _ = self.tx.send(s);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.tx.subscribe()
    }
}

/// Relays PostgreSQL notifications into `signals` until `stop` fires. A lost connection is
/// re-established; what was sent meanwhile is caught by the slow polls.
pub(super) fn listen_postgres(url: String, signals: Signals, stop: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            () = relay(&url, &signals) => {}
            () = stop.cancelled() => {}
        }
    });
}

async fn relay(url: &str, signals: &Signals) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match sqlx::postgres::PgListener::connect(url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for agent task signals; retrying");
                } else {
                    delay = std::time::Duration::from_millis(200);
                    loop {
                        match listener.recv().await {
                            Ok(n) => {
                                if let Some(s) = Signal::parse(n.payload()) {
                                    signals.send(s);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "agent task signals interrupted; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to listen for agent task signals; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for s in [
            Signal::Host("ci-1".into()),
            Signal::Saga("0190-ab".into()),
            Signal::Cancel("0190-cd".into()),
            Signal::Query("q-1".into()),
        ] {
            assert_eq!(Signal::parse(&s.payload()), Some(s));
        }
        assert_eq!(Signal::parse("x:1"), None);
        assert_eq!(Signal::parse("nonsense"), None);
    }
}
