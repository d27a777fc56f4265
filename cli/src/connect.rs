//! The connection to the coordinator: the endpoint, TLS, and clients that send the token.

use std::path::Path;
use std::time::Duration;

use berth_proto::v1::host_service_client::HostServiceClient;
use berth_proto::v1::saga_service_client::SagaServiceClient;
use berth_proto::v1::token_service_client::TokenServiceClient;
use std::error::Error as _;
use tonic::service::interceptor::InterceptedService;

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::Settings;
use crate::credential::Bearer;
use crate::error::{CliError, chain};

/// How long to wait for the TCP (and TLS) connection before giving up with exit code 3.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel through which every call carries the token.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

/// An open connection to one coordinator.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    bearer: Bearer,
    url: String,
}

impl Connection {
    /// Reads the token, then connects (with TLS for `https://`). Fails with
    /// [`CliError::Connect`] when the coordinator cannot be reached.
    pub async fn open(settings: &Settings) -> Result<Self, CliError> {
        let bearer = Bearer::load(&settings.token)?;
        let endpoint = endpoint(settings)?;
        let url = settings.coordinator.clone();
        let channel = endpoint.connect().await.map_err(|e| {
            let reason = chain(&e);
            CliError::Connect {
                hint: connect_hint(&reason, settings.ca_file.is_some()),
                reason,
                url: url.clone(),
            }
        })?;
        Ok(Self {
            channel,
            bearer,
            url,
        })
    }

    pub fn hosts(&self) -> HostServiceClient<AuthedChannel> {
        HostServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn sagas(&self) -> SagaServiceClient<AuthedChannel> {
        SagaServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn droplets(
        &self,
    ) -> berth_proto::v1::droplet_service_client::DropletServiceClient<AuthedChannel> {
        berth_proto::v1::droplet_service_client::DropletServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn warm(&self) -> berth_proto::v1::warm_service_client::WarmServiceClient<AuthedChannel> {
        berth_proto::v1::warm_service_client::WarmServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn archives(
        &self,
    ) -> berth_proto::v1::archive_service_client::ArchiveServiceClient<AuthedChannel> {
        berth_proto::v1::archive_service_client::ArchiveServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn drift(
        &self,
    ) -> berth_proto::v1::drift_service_client::DriftServiceClient<AuthedChannel> {
        berth_proto::v1::drift_service_client::DriftServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn schedules(
        &self,
    ) -> berth_proto::v1::schedule_service_client::ScheduleServiceClient<AuthedChannel> {
        berth_proto::v1::schedule_service_client::ScheduleServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn tokens(&self) -> TokenServiceClient<AuthedChannel> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The error for a status the coordinator answered with, worded for this connection.
    /// A plain-text connection that failed in transport is checked for a coordinator that
    /// speaks TLS, which answers HTTP/2 with a TLS alert tonic reports only as "transport
    /// error".
    pub fn rpc_error(&self, status: tonic::Status) -> CliError {
        if !is_https(&self.url)
            && transport_failed(&status)
            && probe_plaintext(&self.url) == Some(Speaks::Tls)
        {
            return CliError::Connect {
                url: self.url.clone(),
                reason: "it answered plain-text HTTP/2 with TLS".to_owned(),
                hint: "the coordinator speaks TLS: use https:// and --ca-file (or BERTH_CA_FILE) \
                       with the CA that signed its certificate",
            };
        }
        CliError::Rpc {
            url: self.url.clone(),
            status,
            token_given: self.bearer.is_some(),
        }
    }
}

/// Whether a status is tonic's report of a connection that broke, not an answer.
fn transport_failed(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unknown | Code::Unavailable | Code::Internal
    ) && (status.message().contains("transport error") || status.source().is_some())
}

/// What a server at a plain-text URL speaks, told by its first bytes after an HTTP/2
/// preface.
#[derive(Debug, PartialEq, Eq)]
enum Speaks {
    /// A TLS record: an alert (0x15) or a handshake (0x16).
    Tls,
    /// An HTTP/2 frame (a server's first is SETTINGS).
    Http2,
}

/// Opens a connection of its own to `url`'s host and port, sends the HTTP/2 preface and
/// reads what comes back, within 2 s each way. On the error path only: the probe blocks.
fn probe_plaintext(url: &str) -> Option<Speaks> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let limit = Duration::from_secs(2);
    let addr = berth_shared::net::url_address(url)?
        .to_socket_addrs()
        .ok()?
        .next()?;
    let mut tcp = TcpStream::connect_timeout(&addr, limit).ok()?;
    tcp.set_read_timeout(Some(limit)).ok()?;
    tcp.set_write_timeout(Some(limit)).ok()?;
    tcp.write_all(PREFACE).ok()?;
    let mut first = [0u8; 4];
    let mut got = 0;
    while got < first.len() {
        match tcp.read(&mut first[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    match (got, first[0], first[3]) {
        (1.., 0x15 | 0x16, _) => Some(Speaks::Tls),
        (4, _, 0x04) => Some(Speaks::Http2),
        _ => None,
    }
}

/// What to do when connecting failed: a certificate problem wants a CA file, anything else
/// a look at the URL and the coordinator.
fn connect_hint(reason: &str, has_ca_file: bool) -> &'static str {
    if berth_shared::net::TlsFailure::of(reason) == Some(berth_shared::net::TlsFailure::NotTls) {
        return "the coordinator does not speak TLS on this port: use http://, or give it a \
                [tls] section";
    }
    let tls = ["certificate", "CertificateRequired", "handshake", "tls"]
        .iter()
        .any(|w| reason.contains(w));
    match (tls, has_ca_file) {
        (true, false) => {
            "the coordinator's certificate is not trusted: pass --ca-file (or BERTH_CA_FILE) with the CA that signed it"
        }
        (true, true) => {
            "check that --ca-file holds the CA that signed the coordinator's certificate and that the URL's host name is in that certificate"
        }
        (false, _) => {
            "check --coordinator or BERTH_COORDINATOR and that the coordinator is running"
        }
    }
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// The endpoint for the settings: the URL checked, TLS configured for `https://` with the CA
/// file if one is given, else the roots compiled into tonic (`with_enabled_roots`).
pub fn endpoint(settings: &Settings) -> Result<Endpoint, CliError> {
    let url = settings.coordinator.as_str();
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => {}
        Some((scheme, _)) => {
            return Err(CliError::Usage(format!(
                "coordinator URL {url:?} has scheme {scheme:?}; use http:// or https://"
            )));
        }
        None => {
            return Err(CliError::Usage(format!(
                "coordinator URL {url:?} lacks a scheme; use e.g. http://{url} or https://{url}"
            )));
        }
    }
    berth_shared::net::check_plaintext(url).map_err(|e| CliError::Usage(e.to_string()))?;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CliError::Usage(format!("coordinator URL {url:?} is invalid: {}", chain(&e))))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| CliError::Usage(chain(&e)))?;
    if !is_https(url) {
        // A CA file (say from cli.toml) has nothing to verify on a plain-text URL.
        return Ok(endpoint);
    }
    let tls = match &settings.ca_file {
        Some(path) => ClientTlsConfig::new().ca_certificate(read_ca(path)?),
        None => ClientTlsConfig::new().with_enabled_roots(),
    };
    endpoint
        .tls_config(tls)
        .map_err(|e| match &settings.ca_file {
            Some(path) => CliError::CaFile {
                path: path.clone(),
                message: chain(&e),
            },
            None => CliError::Usage(format!("TLS for {url}: {}", chain(&e))),
        })
}

fn read_ca(path: &Path) -> Result<Certificate, CliError> {
    let pem = std::fs::read(path).map_err(|e| CliError::CaFile {
        path: path.to_owned(),
        message: format!("cannot read it: {e}"),
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(CliError::CaFile {
            path: path.to_owned(),
            message: "holds no PEM certificate".to_owned(),
        });
    }
    Ok(Certificate::from_pem(pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::TokenSource;

    fn settings(url: &str) -> Settings {
        Settings {
            coordinator: url.to_owned(),
            token: TokenSource::None,
            ca_file: None,
        }
    }

    #[test]
    fn urls_need_an_http_scheme() {
        for bad in ["127.0.0.1:7400", "ftp://c:1", "http://"] {
            let e = endpoint(&settings(bad)).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}: {e}");
        }
        assert!(endpoint(&settings("http://127.0.0.1:7400")).is_ok());
        assert!(endpoint(&settings("https://berth.example.org:7400")).is_ok());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let mut s = settings("https://c:7400");
        s.ca_file = Some(path);
        let e = endpoint(&s).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    }
}
