//! The coordinator's configuration: one TOML file, unknown keys refused, secrets from files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

/// `berth-coordinator`'s configuration file.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC API (and health, reflection) listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the embedded SQLite database (`berth.db`) and other local state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A file holding the database URL (`postgres://user:pass@host/db`), so a password stays
    /// out of the config. Absent: the embedded SQLite file in `data_dir`.
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// A database URL without secrets (`sqlite:///path/berth.db`, `postgres://host/db`).
    /// Ignored when `database_url_file` is set.
    #[serde(default)]
    #[config(default_text = "SQLite in data_dir")]
    pub database_url: Option<String>,
    /// This instance's name in host sessions and saga leases. Default: `<hostname>-<random>`.
    #[serde(default)]
    #[config(default_text = "<hostname>-<random>")]
    pub instance_id: Option<String>,
    /// How often agents send a heartbeat, in seconds.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_secs: u32,
    /// A host whose last heartbeat is older than this many seconds is offline.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_secs: u32,
    /// Address of the Prometheus metrics endpoint (`/metrics`); absent: no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the web console (HTML pages over the same API, with the same `[tls]`);
    /// absent: no console.
    #[serde(default)]
    pub web_listen: Option<SocketAddr>,
    /// Log format: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// TLS for every connection. Required unless `insecure_plaintext` is set.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plaintext gRPC. Only for development on loopback; must be said explicitly.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// How the saga engine claims and runs sagas.
    #[serde(default)]
    pub sagas: SagaConfig,
    /// DigitalOcean API access (`[digitalocean]`); absent: no droplet sagas, no inventory sync.
    #[serde(default)]
    pub digitalocean: Option<crate::digitalocean::DigitalOceanConfig>,
    /// How droplet sagas pace their polls and how long they wait (`[droplets]`).
    #[serde(default)]
    pub droplets: crate::droplet::DropletConfig,
    /// App archives (`[archive]`): the object store this coordinator lists, links and prunes.
    #[serde(default)]
    pub archive: crate::archive::ArchiveConfig,
    /// When the inventory is synced from DigitalOcean and drift detected (`[inventory]`).
    #[serde(default)]
    pub inventory: crate::drift::InventoryConfig,
    /// What one caller or connection may take (`[limits]`).
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// How coordinators take turns firing schedules (`[schedules]`).
    #[serde(default)]
    pub schedules: crate::schedule::ScheduleConfig,
    /// Where alerts are posted (`[alerts]`).
    #[serde(default)]
    pub alerts: crate::alert::AlertConfig,
}

/// The saga engine's settings.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields, default)]
pub struct SagaConfig {
    /// How long a claim on a saga lasts without renewal; another coordinator takes the saga
    /// over this long after its owner died.
    pub lease_ms: u64,
    /// How often a held claim is renewed (must be well under `lease_ms`).
    pub renew_ms: u64,
    /// How often an idle engine looks for due sagas (sagas started here wake it at once).
    pub poll_interval_ms: u64,
    /// Sagas one coordinator runs at the same time.
    pub max_concurrent: usize,
    /// A saga claimed this many times without progress is paused for an operator.
    pub max_reclaims: i64,
    /// How long a step that runs on an agent waits for its host to come back online (a
    /// reboot, a network outage) before it fails, in seconds.
    pub agent_offline_wait_secs: u64,
    /// Register the `demo` saga kind (test steps: sleep, fail, record …). Off in production.
    pub demo: bool,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            lease_ms: 30_000,
            renew_ms: 10_000,
            poll_interval_ms: 500,
            max_concurrent: 32,
            max_reclaims: 5,
            agent_offline_wait_secs: 15 * 60,
            demo: false,
        }
    }
}

/// Server TLS (rustls).
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA that signs agents' client certificates. When set, agents must present a
    /// certificate signed by it (mTLS); other clients may still use bearer tokens alone.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, ConfigDoc)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/berth-coordinator")
}
fn default_heartbeat_interval() -> u32 {
    5
}
fn default_heartbeat_timeout() -> u32 {
    15
}

/// Overrides from flags or the environment, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

impl Config {
    /// Reads and checks a config file; every failure is one line naming the problem.
    pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.apply(overrides);
        config.check()?;
        Ok(config)
    }

    /// Parses TOML text; unknown keys are errors.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message().trim_end()))
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = o.listen {
            self.listen = l;
        }
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(u) = &o.database_url {
            self.database_url = Some(u.clone());
            self.database_url_file = None;
        }
    }

    /// Consistency checks that TOML types cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        match (&self.tls, self.insecure_plaintext) {
            (None, false) => bail!(
                "no [tls] section: set tls.cert_file and tls.key_file, or insecure_plaintext = true \
                 for development on loopback"
            ),
            (Some(_), true) => {
                bail!("both [tls] and insecure_plaintext = true are set: choose one")
            }
            _ => {}
        }
        if self.insecure_plaintext && !self.listen.ip().is_loopback() {
            bail!(
                "insecure_plaintext = true but listen = {} is not a loopback address: bearer \
                 tokens would cross the network unencrypted; set [tls] cert_file and key_file, or \
                 listen on 127.0.0.1 / [::1] for development",
                self.listen
            );
        }
        if let Some(web) = self.web_listen
            && self.insecure_plaintext
            && !web.ip().is_loopback()
        {
            bail!(
                "insecure_plaintext = true but web_listen = {web} is not a loopback address: \
                 tokens pasted into the console and its session cookies would cross the network \
                 unencrypted; set [tls] cert_file and key_file, or serve the console on \
                 127.0.0.1 / [::1] for development"
            );
        }
        if self.heartbeat_interval_secs == 0
            || self.heartbeat_timeout_secs <= self.heartbeat_interval_secs
        {
            bail!(
                "heartbeat_timeout_secs ({}) must be greater than heartbeat_interval_secs ({}), \
                 which must be at least 1",
                self.heartbeat_timeout_secs,
                self.heartbeat_interval_secs
            );
        }
        if self.sagas.renew_ms == 0 || self.sagas.renew_ms * 2 > self.sagas.lease_ms {
            bail!(
                "sagas.renew_ms ({}) must be at least 1 and at most half of sagas.lease_ms ({})",
                self.sagas.renew_ms,
                self.sagas.lease_ms
            );
        }
        if self.sagas.max_concurrent == 0 {
            bail!("sagas.max_concurrent must be at least 1");
        }
        self.limits.check()?;
        if self.limits.max_active_ci_sagas >= self.sagas.max_concurrent as u64 {
            bail!(
                "limits.max_active_ci_sagas ({}) must be below sagas.max_concurrent ({}), so \
                 CI runners never hold every slot",
                self.limits.max_active_ci_sagas,
                self.sagas.max_concurrent
            );
        }
        if let Some(d) = &self.digitalocean {
            d.check()?;
        }
        self.droplets.check()?;
        self.archive.check()?;
        self.inventory.check()?;
        self.schedules.check()?;
        self.alerts.check()?;
        Ok(())
    }

    /// The database URL to use, read from `database_url_file` when set.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(f) = &self.database_url_file {
            let url = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read database_url_file {}", f.display()))?;
            let url = url.trim();
            if url.is_empty() {
                bail!("database_url_file {} is empty", f.display());
            }
            return Ok(url.to_owned());
        }
        Ok(match &self.database_url {
            Some(u) => u.clone(),
            None => crate::store::sqlite_url(&self.data_dir.join("berth.db")),
        })
    }

    /// A development config: plaintext on the given address, SQLite in `data_dir`.
    pub fn dev(listen: SocketAddr, data_dir: PathBuf) -> Config {
        let mut c = Self::parse("insecure_plaintext = true").expect("valid");
        c.listen = listen;
        c.data_dir = data_dir;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("insecure_plaintext = true\nlisten_port = 3").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn plaintext_must_be_explicit() {
        let c = Config::parse("").unwrap();
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("insecure_plaintext"), "{err}");
        Config::parse("insecure_plaintext = true")
            .unwrap()
            .check()
            .unwrap();
    }

    #[test]
    fn plaintext_listens_only_on_loopback() {
        for listen in ["0.0.0.0:7400", "10.1.2.3:7400", "[::]:7400"] {
            let c = Config::parse(&format!("insecure_plaintext = true\nlisten = \"{listen}\""))
                .unwrap();
            let err = c.check().unwrap_err().to_string();
            assert!(
                err.contains("not a loopback address") && err.contains("[tls]"),
                "{err}"
            );
        }
        for listen in ["127.0.0.1:7400", "[::1]:7400"] {
            Config::parse(&format!("insecure_plaintext = true\nlisten = \"{listen}\""))
                .unwrap()
                .check()
                .unwrap();
        }
        // The console too: a pasted token must not cross the network in plain text.
        let c = Config::parse("insecure_plaintext = true\nweb_listen = \"0.0.0.0:7401\"").unwrap();
        let err = c.check().unwrap_err().to_string();
        assert!(
            err.contains("web_listen = 0.0.0.0:7401 is not a loopback address"),
            "{err}"
        );
        assert!(!err.contains("  "), "one line, single spaces: {err}");
        Config::parse("insecure_plaintext = true\nweb_listen = \"127.0.0.1:7401\"")
            .unwrap()
            .check()
            .unwrap();
    }

    #[test]
    fn retention_zones_and_tier_counts_are_checked_at_load() {
        let err = Config::parse("[archive]\nretention_timezone = \"Europe/Berln\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Europe/Berln")
                && err.contains("IANA")
                && err.contains("retention_timezone"),
            "{err}"
        );
        let c = Config::parse("insecure_plaintext = true\n[archive]\nkeep_weekly = 0").unwrap();
        let err = c.check().unwrap_err().to_string();
        assert!(
            err.contains("archive.keep_weekly must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn database_defaults_to_sqlite_in_data_dir() {
        let c = Config::parse("insecure_plaintext = true\ndata_dir = \"/srv/b\"").unwrap();
        assert_eq!(
            c.database_url().unwrap(),
            "sqlite:///srv/b/berth.db?mode=rwc"
        );
    }

    #[test]
    fn missing_database_url_file_is_named() {
        let c =
            Config::parse("insecure_plaintext = true\ndatabase_url_file = \"/nonexistent/db-url\"")
                .unwrap();
        let err = format!("{:#}", c.database_url().unwrap_err());
        assert!(err.contains("/nonexistent/db-url"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_parses_and_checks() {
        let c = Config::parse(include_str!("../../deploy/config/coordinator.toml")).unwrap();
        c.check().unwrap();
        assert!(c.tls.as_ref().unwrap().client_ca_file.is_some());
        assert!(
            c.digitalocean
                .as_ref()
                .unwrap()
                .provisioning_token_file
                .is_some()
        );
        assert!(c.archive.url().unwrap().is_s3());
        assert_eq!(c.archive.keep_last, Some(14));
        let retention = c.archive.retention();
        assert_eq!(retention.keep_monthly, Some(12));
        assert_eq!(retention.zone().name(), "Europe/Berlin");
        assert_eq!(c.inventory, crate::drift::InventoryConfig::default());
    }
}
