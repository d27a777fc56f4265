//! Why a TLS session with the coordinator fails, when tonic cannot say. Under TLS 1.3 a
//! coordinator that refuses the agent's client certificate says so only after the agent's
//! side of the handshake is done, in an alert the connection's reader meets; tonic then reports
//! the request as "transport error" or "operation was canceled". A probe makes a handshake of
//! its own with the same files, sends the HTTP/2 preface and reads, so the alert surfaces.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsConfig;

/// Each step of a probe gives up after this long.
const STEP: Duration = Duration::from_secs(5);

/// A handshake the way the link makes it, to one coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    authority: String,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl Probe {
    /// For an `https://` `url` with `tls`; `None` when there is no TLS to probe or its files
    /// do not make a config (the link's own set-up reports those).
    pub(crate) fn new(url: &str, tls: Option<&TlsConfig>) -> Option<Probe> {
        let tls = tls?;
        if !url.trim().starts_with("https://") {
            return None;
        }
        let authority = berth_shared::net::url_address(url)?;
        let host = berth_shared::net::url_host(url.trim())?;
        let name = tls.domain_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned()).ok()?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&tls.ca_file).ok()? {
            roots.add(cert.ok()?).ok()?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
        let mut config = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .ok()?
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?;
                let key = PrivateKeyDer::from_pem_file(key).ok()?;
                builder.with_client_auth_cert(chain, key).ok()?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(Probe {
            authority,
            name,
            config: Arc::new(config),
        })
    }

    /// The TLS error that ends a session with the coordinator, in rustls's words (`received
    /// fatal alert: UnknownCA`, `invalid peer certificate: …`); `None` when the probe finds
    /// none (the failure lies elsewhere) or cannot tell.
    pub(crate) async fn tls_error(&self) -> Option<String> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(&self.authority))
            .await
            .ok()?
            .ok()?;
        let connector = TlsConnector::from(self.config.clone());
        let mut tls = match tokio::time::timeout(STEP, connector.connect(self.name.clone(), tcp))
            .await
            .ok()?
        {
            Ok(tls) => tls,
            Err(e) => return Some(e.to_string()),
        };
        if let Err(e) = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await {
            return Some(e.to_string());
        }
        let mut first = [0u8; 1];
        match tokio::time::timeout(STEP, tls.read(&mut first))
            .await
            .ok()?
        {
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        }
    }
}
