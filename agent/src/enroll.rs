//! `berth-agent enroll`: exchanges a one-time enrollment token for this host's long-lived agent
//! token and writes it where the agent reads it: mode 0600, parent directories 0700, atomically.
//!
//! The enrollment token itself is read from a file or standard input
//! ([`read_enrollment_token`]), never from argv or the environment.
//!
//! A `token_file` under `/run/credentials/<unit>/<id>` is systemd's copy of a credential, made
//! at each start from `LoadCredential=<id>:/etc/berth/secrets/<id>` (see `deploy/systemd/`);
//! enrolling writes that source instead.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use berth_shared::HostId;
use tonic::metadata::MetadataValue;

use crate::config::{Config, HOST_ID_FILE, TlsConfig, write_atomically};
use crate::error::AgentError;

/// Where systemd services find their credentials.
const CREDENTIALS_DIR: &str = "/run/credentials";
/// Where the units' `LoadCredential=` lines read them from.
pub const SECRETS_DIR: &str = "/etc/berth/secrets";

/// What `enroll` needs besides the agent's config.
#[derive(Clone)]
pub struct EnrollOptions {
    /// The coordinator to enroll with: `https://host:port` (or `http://` on loopback).
    pub coordinator_url: String,
    /// The one-time enrollment token.
    pub token: String,
    /// PEM CA of the coordinator's certificate; default: the config's `[tls] ca_file`.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("coordinator_url", &self.coordinator_url)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A successful enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub host_id: HostId,
    /// Where the agent token was written.
    pub token_file: PathBuf,
    /// Set when the host id was learnt from the coordinator and written to the state dir.
    pub host_id_file: Option<PathBuf>,
}

/// Why an enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "coordinator {url} uses TLS: give the CA that signed its certificate with --ca-file \
         (or [tls] ca_file in the config)"
    )]
    NoCa { url: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the coordinator refused the enrollment: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the coordinator answered for host {answered:?}, not {asked}")]
    WrongHost { asked: String, answered: String },
    #[error("the coordinator's answer holds no usable token")]
    BadToken,
    #[error("cannot read the enrollment token from {from}")]
    ReadToken {
        from: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no enrollment token: give --token-file FILE, or pipe it on standard input \
         (`berth-agent enroll < token`)"
    )]
    NoToken,
    #[error(transparent)]
    Plaintext(#[from] berth_shared::net::PlaintextNotLoopback),
    #[error("cannot write the agent token to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the host id to {path}")]
    HostIdWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl EnrollError {
    /// The coordinator said no to the credentials (used, expired, wrong host, wrong kind).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            EnrollError::Refused {
                code: tonic::Code::Unauthenticated | tonic::Code::PermissionDenied,
                ..
            }
        )
    }
}

/// The enrollment token from `file`, or from standard input when `file` is absent or `-`
/// (refused on a terminal, where it would be typed in the clear): its first line, trimmed.
pub fn read_enrollment_token(file: Option<&Path>) -> Result<String, EnrollError> {
    use std::io::{IsTerminal, Read};
    let (text, from) = match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => (
            fs::read_to_string(f).map_err(|source| EnrollError::ReadToken {
                from: f.display().to_string(),
                source,
            })?,
            f.display().to_string(),
        ),
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(EnrollError::NoToken);
            }
            let mut text = String::new();
            stdin
                .lock()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|source| EnrollError::ReadToken {
                    from: "standard input".into(),
                    source,
                })?;
            (text, "standard input".to_owned())
        }
    };
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        tracing::debug!(from, "empty enrollment token");
        return Err(EnrollError::NoToken);
    }
    Ok(token)
}

/// Exchanges `opts.token` for this host's agent token and writes it (see the module doc).
/// The host id is the configured one, the one in the state dir, or, on a fresh host, the one
/// the enrollment token is bound to (then remembered in the state dir).
pub async fn enroll(config: &Config, opts: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    berth_shared::net::check_plaintext(&opts.coordinator_url)?;
    let known = known_host_id(config)?;
    let mut dial = Config::new(opts.coordinator_url.trim(), config.token_file.clone());
    if dial.coordinator_url.starts_with("https://") {
        let ca_file = opts
            .ca_file
            .clone()
            .or_else(|| config.tls.as_ref().map(|t| t.ca_file.clone()))
            .ok_or_else(|| EnrollError::NoCa {
                url: dial.coordinator_url.clone(),
            })?;
        dial.tls = Some(TlsConfig {
            ca_file,
            client_cert_file: None,
            client_key_file: None,
            domain_name: config.tls.as_ref().and_then(|t| t.domain_name.clone()),
        });
    }
    let channel = crate::link::endpoint(&dial, &dial.coordinator_url)?
        .connect()
        .await
        .map_err(AgentError::Connect)?;
    let mut bearer: MetadataValue<_> = format!("Bearer {}", opts.token.trim())
        .parse()
        .map_err(|_| EnrollError::BadToken)?;
    bearer.set_sensitive(true);
    let mut req = tonic::Request::new(pb::EnrollAgentRequest {
        host_id: known.as_ref().map(|h| h.to_string()).unwrap_or_default(),
    });
    req.metadata_mut().insert("authorization", bearer);
    let answer = pb::token_service_client::TokenServiceClient::new(channel)
        .enroll_agent(req)
        .await
        .map_err(|s| EnrollError::Refused {
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    let host_id = HostId::new(answer.host_id.as_str()).map_err(|_| EnrollError::WrongHost {
        asked: known.as_ref().map(|h| h.to_string()).unwrap_or_default(),
        answered: answer.host_id.clone(),
    })?;
    if let Some(k) = &known
        && *k != host_id
    {
        return Err(EnrollError::WrongHost {
            asked: k.to_string(),
            answered: answer.host_id,
        });
    }
    let token = answer.token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EnrollError::BadToken);
    }
    let token_file = credential_source(&config.token_file);
    write_secret(&token_file, token).map_err(|source| EnrollError::Write {
        path: token_file.clone(),
        source,
    })?;
    let host_id_file = match known {
        Some(_) => None,
        None => {
            let path = config.state_dir.join(HOST_ID_FILE);
            write_atomically(&path, format!("{host_id}\n").as_bytes()).map_err(|source| {
                EnrollError::HostIdWrite {
                    path: path.clone(),
                    source,
                }
            })?;
            Some(path)
        }
    };
    Ok(Enrolled {
        host_id,
        token_file,
        host_id_file,
    })
}

/// The host id this agent already has, without generating one.
fn known_host_id(config: &Config) -> Result<Option<HostId>, AgentError> {
    if config.host_id.is_none() && !config.state_dir.join(HOST_ID_FILE).exists() {
        return Ok(None);
    }
    config.resolve_host_id().map(Some)
}

/// The file to write for `token_file`: itself, or for systemd's credential copy
/// `/run/credentials/<unit>/<id>`, its source `/etc/berth/secrets/<id>`.
pub fn credential_source(token_file: &Path) -> PathBuf {
    if let Ok(rest) = token_file.strip_prefix(CREDENTIALS_DIR) {
        let parts: Vec<_> = rest.components().collect();
        if let [_unit, id] = parts.as_slice() {
            return Path::new(SECRETS_DIR).join(id.as_os_str());
        }
    }
    token_file.to_owned()
}

/// Writes `secret` and a newline to `path` with mode 0600 through a temporary sibling, fsync
/// and rename; missing parent directories are created with mode 0700.
fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_credential_copies_map_to_their_source() {
        assert_eq!(
            credential_source(Path::new(
                "/run/credentials/berth-agent.service/agent-token"
            )),
            Path::new("/etc/berth/secrets/agent-token")
        );
        for plain in [
            "/etc/berth/agent.token",
            "/run/credentials/agent-token",
            "relative/token",
        ] {
            assert_eq!(credential_source(Path::new(plain)), Path::new(plain));
        }
    }

    #[test]
    fn secrets_are_written_0600_in_0700_dirs_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/agent.token");
        write_secret(&path, "berth_one").unwrap();
        write_secret(&path, "berth_two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "berth_two\n");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(
            fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
