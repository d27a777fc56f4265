//! The link to the coordinator: the gRPC channel, one session at a time, reconnection with
//! jittered backoff, and the observable `LinkState`.

mod backoff;
mod probe;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::HostId;
use berth_shared::net::TlsFailure;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tracing::{error, info, warn};

use crate::config::{Config, Token};
use crate::error::AgentError;
use crate::error_kind::{ErrorKind, chain};
use crate::task;
use backoff::Backoff;

/// Where the link stands; watch it through [`crate::Agent::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling the coordinator or waiting for its welcome.
    Connecting,
    /// In session with the coordinator instance `coordinator_id`.
    Connected { coordinator_id: String },
    /// Waiting before the next attempt.
    Backoff { until: Instant },
}

/// A session that lasted longer than this resets the backoff to its shortest delays.
const STABLE_SESSION: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a session needs, prepared once at start.
#[derive(Debug)]
pub(crate) struct Link {
    /// `coordinator_url`, then each of `coordinator_replicas`; dialled in turn.
    endpoints: Vec<Endpoint>,
    /// For each endpoint under TLS, a handshake of its own to tell why sessions fail.
    probes: Vec<Option<probe::Probe>>,
    authorization: MetadataValue<Ascii>,
    host_id: HostId,
    hostname: String,
    warm_root: PathBuf,
    /// The spare builder, asked for its state by `warm list` queries.
    spares: Option<crate::warm::Spares>,
    max_backoff: Duration,
    /// Tasks outlive sessions: a reconnect finds them still running.
    tasks: task::Runner,
}

impl Link {
    /// Builds the endpoint (reading TLS files) and the authorization header.
    pub(crate) fn new(
        config: &Config,
        host_id: HostId,
        token: &Token,
        spares: Option<crate::warm::Spares>,
    ) -> Result<Self, AgentError> {
        let mut authorization: MetadataValue<Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| AgentError::TokenInvalid {
                path: config.token_file.clone(),
            })?;
        authorization.set_sensitive(true);
        let urls: Vec<&str> = std::iter::once(config.coordinator_url.as_str())
            .chain(config.coordinator_replicas.iter().map(String::as_str))
            .collect();
        Ok(Self {
            endpoints: urls
                .iter()
                .map(|url| endpoint(config, url))
                .collect::<Result<_, _>>()?,
            probes: urls
                .iter()
                .map(|url| probe::Probe::new(url, config.tls.as_ref()))
                .collect(),
            authorization,
            host_id,
            hostname: hostname(),
            warm_root: config.warm_root.clone(),
            spares: spares.clone(),
            max_backoff: Duration::from_millis(config.reconnect_max_backoff_ms),
            tasks: task::Runner::open(
                &config.state_dir,
                Arc::new(task::kinds::AgentKinds {
                    warm_root: config.warm_root.clone(),
                    spares,
                    archiver: crate::archive::Archiver::new(
                        config.archive.clone(),
                        &config.apps_root,
                        &config.state_dir,
                    )
                    .map_err(|e| AgentError::ArchiveStore(Box::new(e)))?,
                }),
            ),
        })
    }
}

/// The endpoint of the coordinator at `url`, with `config`'s TLS.
pub(crate) fn endpoint(config: &Config, url: &str) -> Result<Endpoint, AgentError> {
    let url = url.trim().to_owned();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| AgentError::Endpoint {
            url: url.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .user_agent(format!("berth-agent/{}", env!("CARGO_PKG_VERSION")))
        .map_err(|source| AgentError::Endpoint {
            url: url.clone(),
            source,
        })?;
    if let Some(tls) = &config.tls {
        let mut client_tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(&tls.ca_file)?));
        if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
            client_tls = client_tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
        }
        if let Some(name) = &tls.domain_name {
            client_tls = client_tls.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(client_tls)
            .map_err(|source| AgentError::Tls { url, source })?;
    }
    Ok(endpoint)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|source| AgentError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}

/// What a failed TLS handshake means and what to do, from rustls's words in `error`; `None`
/// when it was not one.
fn tls_refusal(error: &str) -> Option<&'static str> {
    match TlsFailure::of(error)? {
        // The coordinator ended the handshake: it did not take this agent's certificate.
        TlsFailure::AlertFromPeer => Some(
            "the coordinator refused this agent's TLS client certificate; [tls] \
             client_cert_file must be signed by the CA in the coordinator's [tls] \
             client_ca_file (its log names this host's address)",
        ),
        TlsFailure::PeerCertificate => Some(
            "this agent does not trust the coordinator's certificate; [tls] ca_file must hold \
             the CA that signed it, and [tls] domain_name (or the URL's host) must be a name \
             in it",
        ),
        TlsFailure::NotTls => {
            Some("the coordinator does not speak TLS on this port: use an http:// coordinator URL")
        }
        TlsFailure::Closed => None,
    }
}

/// Keeps a session with the coordinator until `shutdown` is cancelled.
pub(crate) async fn run(
    link: Link,
    state: watch::Sender<LinkState>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(link.max_backoff);
    let mut turn = 0;
    loop {
        state.send_replace(LinkState::Connecting);
        let mut connected_at = None;
        let at = turn % link.endpoints.len();
        let endpoint = &link.endpoints[at];
        let reason = tokio::select! {
            () = shutdown.cancelled() => break,
            reason = session::run(&link, endpoint, &state, &mut connected_at) => reason,
        };
        // The next attempt tries the next replica (the same one when there is only one).
        turn += 1;
        let delay = match (reason.kind(), connected_at) {
            (ErrorKind::Unauthorized, _) => {
                error!(
                    error = %chain(&reason),
                    "coordinator refused this agent's credentials; check the token file and that its token is bound to this host id"
                );
                backoff.cap()
            }
            (_, Some(at)) => {
                info!(reason = %chain(&reason), "disconnected from coordinator");
                if at.elapsed() > STABLE_SESSION {
                    backoff.reset();
                }
                backoff.next()
            }
            (_, None) => {
                let delay = backoff.next();
                let mut error = chain(&reason);
                let retry_in_ms = delay.as_millis() as u64;
                // tonic words a TLS rejection as the broken connection it left.
                if tls_refusal(&error).is_none()
                    && (error.contains("transport error") || error.contains("canceled"))
                    && let Some(probe) = &link.probes[at]
                    && let Some(found) = probe.tls_error().await
                {
                    error = format!("{error} ({found})");
                }
                match tls_refusal(&error) {
                    Some(what) => {
                        warn!(%error, retry_in_ms, "cannot open a session with the coordinator: {what}")
                    }
                    None => {
                        warn!(%error, retry_in_ms, "cannot open a session with the coordinator")
                    }
                }
                delay
            }
        };
        let until = Instant::now() + delay;
        state.send_replace(LinkState::Backoff { until });
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(until) => {}
        }
    }
    link.tasks.shutdown();
    info!("link to coordinator stopped");
    Ok(())
}
