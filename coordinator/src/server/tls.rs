//! The coordinator's TLS: its own handshakes over tonic's TCP listener, so that one that fails
//! (a client certificate from another CA, a plain-text client, a handshake that stalls) is
//! logged with the peer's address and what to do. tonic's own TLS drops them at debug level,
//! which left an operator with an agent saying "transport error" and a silent coordinator.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
/// failure is logged at `warn` with the peer's address.
pub(crate) fn accept(
    mut incoming: TcpIncoming,
    acceptor: TlsAcceptor,
    timeout: Duration,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
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
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => log_refusal(peer, &e),
                    Err(_) => {
                        count("timeout");
                        tracing::warn!(
                            peer = %show(peer),
                            timeout_ms = timeout.as_millis() as u64,
                            "TLS handshake timed out"
                        );
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

/// Logs a failed handshake with what it most likely means, and counts it.
fn log_refusal(peer: Option<SocketAddr>, e: &io::Error) {
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
    tracing::warn!(peer = %show(peer), %error, "TLS handshake failed{means}");
}
