//! The coordinator's TLS: its own handshakes over tonic's TCP listener, so that one that fails
//! (a client certificate from another CA, a plain-text client, a handshake that stalls) is
//! logged with the peer's address and what to do. tonic's own TLS drops them at debug level,
//! which left an operator with an agent saying "transport error" and a silent coordinator.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use berth_shared::net::TlsFailure;

use super::{StartError, read};
use crate::config::TlsConfig;

/// Handshakes may run at once; more wait in the kernel's backlog.
const HANDSHAKES: usize = 256;

/// How often each kind of failed handshake is logged: the first at once, then at most one in
/// this long, saying how many like it went unlogged meanwhile (every one is counted in
/// `berth_tls_handshake_failures_total`). A load balancer's TCP health check or a scanner
/// would otherwise write a warning every few seconds, for ever.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The server side of TLS: the certificate, and when `client_ca_file` is set, client
/// certificates checked against it (optional, so operators' clients may use tokens alone;
/// the agent link demands one).
pub(crate) fn acceptor(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsAcceptor, StartError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| StartError::Config(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(&read("tls.cert_file", &tls.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("tls.cert_file", &e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key_file", &tls.key_file)?)
        .map_err(|e| bad("tls.key_file", &e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls", &e))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read("tls.client_ca_file", path)?) {
                roots
                    .add(cert.map_err(|e| bad("tls.client_ca_file", &e))?)
                    .map_err(|e| bad("tls.client_ca_file", &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad("tls.client_ca_file", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad("tls.cert_file and tls.key_file", &e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connections whose handshake succeeded, for `serve_with_incoming_shutdown`; each
/// failure is counted, and logged at `warn` with the peer's address (see [`LOG_EVERY`]).
pub(crate) fn accept(
    mut incoming: TcpIncoming,
    acceptor: TlsAcceptor,
    timeout: Duration,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    let throttle = Arc::new(LogThrottle::default());
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => return,
                next = incoming.next() => match next {
                    Some(Ok(tcp)) => tcp,
                    Some(Err(e)) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    None => return,
                },
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (acceptor, tx, throttle) = (acceptor.clone(), tx.clone(), throttle.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => log_refusal(&throttle, peer, &e),
                    Err(_) => {
                        count("timeout");
                        if let Some(more) = throttle.admit("timeout", Instant::now()) {
                            tracing::warn!(
                                peer = %show(peer),
                                timeout_ms = timeout.as_millis() as u64,
                                "TLS handshake timed out{}",
                                unlogged(more)
                            );
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn show(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// The reasons `berth_tls_handshake_failures_total` counts a failed handshake under.
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "client_certificate",
    "plaintext",
    "server_certificate_refused",
    "timeout",
    "closed",
    "other",
];

/// `berth_tls_handshake_failures_total{reason}` (one of [`FAILURE_REASONS`]).
fn count(reason: &'static str) {
    metrics::counter!("berth_tls_handshake_failures_total", "reason" => reason).increment(1);
}

/// Per kind of failure: when one was last logged, and how many went unlogged since.
#[derive(Debug, Default)]
struct LogThrottle(Mutex<HashMap<&'static str, (Instant, u64)>>);

impl LogThrottle {
    /// Whether a failure of kind `reason` at `now` is logged: `Some` with how many like it
    /// went unlogged since the last one logged, or `None` (within [`LOG_EVERY`] of it).
    fn admit(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(reason) {
            None => {
                seen.insert(reason, (now, 0));
                Some(0)
            }
            Some((last, skipped)) if now.saturating_duration_since(*last) < LOG_EVERY => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                *last = now;
                Some(std::mem::take(skipped))
            }
        }
    }
}

/// The end of a log line saying how many failures like it went unlogged.
fn unlogged(more: u64) -> String {
    match more {
        0 => String::new(),
        n => format!(
            " ({n} more like it since the last one logged went unlogged; all are counted in \
             berth_tls_handshake_failures_total)"
        ),
    }
}

/// Logs a failed handshake with what it most likely means (see [`LOG_EVERY`]), and counts it.
fn log_refusal(throttle: &LogThrottle, peer: Option<SocketAddr>, e: &io::Error) {
    let error = e.to_string();
    let (reason, means) = match TlsFailure::of(&error) {
        Some(TlsFailure::PeerCertificate) => (
            "client_certificate",
            ": the client's certificate is not signed by tls.client_ca_file (an agent \
             enrolled against another CA?)",
        ),
        Some(TlsFailure::NotTls) => (
            "plaintext",
            ": the client speaks plain text; it should use an https:// URL",
        ),
        Some(TlsFailure::AlertFromPeer) => (
            "server_certificate_refused",
            ": the client refused this coordinator's certificate; it needs the CA that signed \
             tls.cert_file, and a name in it",
        ),
        Some(TlsFailure::Closed) => (
            "closed",
            ": the client hung up mid-handshake (a plain-text client, or one that does not \
             trust this certificate and did not say so)",
        ),
        None => ("other", ""),
    };
    count(reason);
    if let Some(more) = throttle.admit(reason, Instant::now()) {
        let more = unlogged(more);
        tracing::warn!(peer = %show(peer), %error, "TLS handshake failed{means}{more}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_is_logged_at_once_then_at_most_once_a_minute_with_the_rest_told() {
        let throttle = LogThrottle::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(throttle.admit("plaintext", at(0)), Some(0));
        // A health check every few seconds: counted, not logged.
        assert_eq!(throttle.admit("plaintext", at(5)), None);
        assert_eq!(throttle.admit("plaintext", at(30)), None);
        // Another kind is logged at once all the same.
        assert_eq!(throttle.admit("client_certificate", at(31)), Some(0));
        assert_eq!(throttle.admit("plaintext", at(59)), None);
        // A minute after the last one logged, the next is logged, saying how many were not.
        assert_eq!(throttle.admit("plaintext", at(60)), Some(3));
        assert_eq!(throttle.admit("plaintext", at(61)), None);
        assert_eq!(throttle.admit("plaintext", at(200)), Some(1));
        assert_eq!(throttle.admit("plaintext", at(400)), Some(0));
        assert_eq!(unlogged(0), "");
        assert!(
            unlogged(3).starts_with(" (3 more like it"),
            "{}",
            unlogged(3)
        );
    }
}
