//! The agent's TOML `Config`, its validation, and the start-time reads it points to: the
//! bearer token file and the host id (configured, remembered in the state dir, or generated).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use berth_shared::HostId;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

use crate::AgentError;
use crate::archive::ArchiveConfig;
use crate::warm::WarmConfig;

/// The agent's configuration, usually `/etc/berth/agent.toml`.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the coordinator listens: `http://host:port` for plaintext, `https://host:port`
    /// for TLS (then `[tls]` is required). Required, in the file or as an override.
    #[serde(default)]
    #[config(default_text = "required (or --coordinator-url)")]
    pub coordinator_url: String,
    /// Other replicas of the same coordinator (same scheme, same `[tls]`): when the one in
    /// use cannot be reached or its session ends, the agent dials the next, in turn, so a
    /// replica that dies does not strand its agents. Empty: only `coordinator_url`.
    #[serde(default)]
    pub coordinator_replicas: Vec<String>,
    /// File holding this host's bearer token (surrounding whitespace is trimmed); works with
    /// systemd `LoadCredential=`. Required, in the file or as an override.
    #[serde(default)]
    #[config(default_text = "required (or --token-file)")]
    pub token_file: PathBuf,
    /// This host's stable identity. When absent, the agent uses `<state_dir>/host_id`, which
    /// it creates with a fresh id on first start.
    #[serde(default)]
    #[config(default_text = "the id kept in <state_dir>/host_id")]
    pub host_id: Option<String>,
    /// Directory for the agent's own state (the remembered host id).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Root of the warm snapshots: `<warm_root>/<app>/snapshot/...`.
    #[serde(default = "default_warm_root")]
    pub warm_root: PathBuf,
    /// Root of the app directories that archives are made of and restored into.
    #[serde(default = "default_apps_root")]
    pub apps_root: PathBuf,
    /// TLS towards the coordinator; required for an `https://` coordinator_url.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Upper bound of the reconnect backoff, in milliseconds (at least 100).
    #[serde(default = "default_reconnect_max_backoff_ms")]
    pub reconnect_max_backoff_ms: u64,
    /// Log output: `text` for people, `json` for log collectors.
    #[serde(default)]
    pub log_format: LogFormat,
    /// App archives in object storage: `[archive]`, see [`ArchiveConfig`].
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Warm snapshots' ready spares: `[warm]`, see [`WarmConfig`].
    #[serde(default)]
    pub warm: WarmConfig,
}

/// The `[tls]` table: how to trust the coordinator and, for mTLS, who we are.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the coordinator's certificate.
    pub ca_file: PathBuf,
    /// PEM certificate presented to the coordinator (mTLS); needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name to check the coordinator's certificate against, when it differs from the URL's host.
    #[serde(default)]
    pub domain_name: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ConfigDoc)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub coordinator_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub host_id: Option<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/berth-agent")
}
fn default_warm_root() -> PathBuf {
    PathBuf::from("/var/lib/ci-warm")
}
fn default_apps_root() -> PathBuf {
    PathBuf::from("/var/lib/berth/apps")
}
fn default_reconnect_max_backoff_ms() -> u64 {
    5000
}

pub(crate) const HOST_ID_FILE: &str = "host_id";

impl Config {
    /// A config with every default, for embedding the agent (tests, tools).
    pub fn new(coordinator_url: impl Into<String>, token_file: impl Into<PathBuf>) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
            coordinator_replicas: Vec::new(),
            token_file: token_file.into(),
            host_id: None,
            state_dir: default_state_dir(),
            warm_root: default_warm_root(),
            apps_root: default_apps_root(),
            tls: None,
            reconnect_max_backoff_ms: default_reconnect_max_backoff_ms(),
            log_format: LogFormat::Text,
            archive: ArchiveConfig::default(),
            warm: WarmConfig::default(),
        }
    }

    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with(path, Overrides::default())
    }

    /// Reads the config file at `path`, applies `overrides`, then validates the result.
    pub fn load_with(path: &Path, overrides: Overrides) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.apply(overrides);
        config
            .validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(config)
    }

    /// Parses TOML `text`; `origin` names it in errors ("<origin>:<line>: <problem>").
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            match line {
                Some(line) => anyhow!("{origin}:{line}: {message}"),
                None => anyhow!("{origin}: {message}"),
            }
        })
    }

    /// Lets command-line and environment values win over the file.
    pub fn apply(&mut self, overrides: Overrides) {
        if let Some(url) = overrides.coordinator_url {
            self.coordinator_url = url;
        }
        if let Some(path) = overrides.token_file {
            self.token_file = path;
        }
        if let Some(id) = overrides.host_id {
            self.host_id = Some(id);
        }
    }

    /// Checks what can be checked without touching the filesystem.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = self.coordinator_url.trim();
        if url.is_empty() {
            bail!(
                "coordinator_url is required (or --coordinator-url, BERTH_AGENT_COORDINATOR_URL)"
            );
        }
        for (what, url) in std::iter::once(("coordinator_url", url)).chain(
            self.coordinator_replicas
                .iter()
                .map(|u| ("coordinator_replicas", u.trim())),
        ) {
            let https = if url.starts_with("https://") {
                true
            } else if url.starts_with("http://") {
                berth_shared::net::check_plaintext(url)
                    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                false
            } else {
                bail!("{what} {url:?} must start with http:// or https://");
            };
            match (&self.tls, https) {
                (None, true) => bail!("{what} {url:?} is https but there is no [tls] table"),
                (Some(_), false) => {
                    bail!("[tls] is set but {what} {url:?} is plaintext http")
                }
                _ => {}
            }
        }
        if let Some(tls) = &self.tls
            && tls.client_cert_file.is_some() != tls.client_key_file.is_some()
        {
            bail!("[tls] client_cert_file and client_key_file must be set together");
        }
        if self.token_file.as_os_str().is_empty() {
            bail!("token_file is required (or --token-file, BERTH_AGENT_TOKEN_FILE)");
        }
        if let Some(id) = &self.host_id {
            HostId::new(id.as_str()).context("host_id")?;
        }
        self.archive.validate()?;
        if self.reconnect_max_backoff_ms < 100 {
            bail!(
                "reconnect_max_backoff_ms is {}, it must be at least 100",
                self.reconnect_max_backoff_ms
            );
        }
        Ok(())
    }

    /// Reads the bearer token from `token_file`. Its content is never logged.
    pub fn read_token(&self) -> Result<Token, AgentError> {
        let path = &self.token_file;
        let raw = fs::read_to_string(path).map_err(|source| AgentError::TokenRead {
            path: path.clone(),
            source,
        })?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(AgentError::TokenEmpty { path: path.clone() });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AgentError::TokenInvalid { path: path.clone() });
        }
        Ok(Token(token.to_owned()))
    }

    /// This host's id: `host_id` if configured, else `<state_dir>/host_id`, else a new id
    /// written there (atomically, mode 0644) so later starts find the same one.
    pub fn resolve_host_id(&self) -> Result<HostId, AgentError> {
        if let Some(id) = &self.host_id {
            return HostId::new(id.as_str()).map_err(|source| AgentError::HostId {
                origin: "config host_id".to_owned(),
                source,
            });
        }
        let path = self.state_dir.join(HOST_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => HostId::new(text.trim()).map_err(|source| AgentError::HostId {
                origin: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = HostId::new(uuid::Uuid::now_v7().to_string())
                    .expect("a uuid is a valid host id");
                write_atomically(&path, format!("{id}\n").as_bytes()).map_err(|source| {
                    AgentError::HostIdWrite {
                        path: path.clone(),
                        source,
                    }
                })?;
                tracing::info!(host_id = %id, path = %path.display(), "generated a new host id");
                Ok(id)
            }
            Err(source) => Err(AgentError::HostIdRead { path, source }),
        }
    }
}

/// A bearer token; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret itself, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
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
mod tests;
