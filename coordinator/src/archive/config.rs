//! The coordinator's `[archive]` table: the archive store it reads directly (so archives stay
//! listable when the host that made them is gone), download links and retention defaults.

use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_shared::archive::{RetentionPolicy, StoreUrl, Tz, parse_timezone};
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

/// S3 presigned URLs live at most 7 days.
pub const MAX_LINK_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// `[archive]` in the coordinator's config. Every key has a default.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The store the agents write to: `file:///dir` (default `file:///var/lib/berth/archives`,
    /// useful only when the agents share this machine's disk), `s3://bucket/prefix`, or
    /// `memory://` (tests).
    #[serde(default = "default_store_url")]
    pub store_url: String,
    /// S3 endpoint, e.g. `https://fra1.digitaloceanspaces.com`; absent: AWS. `http://` is
    /// allowed only because it is written here.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region (`us-east-1` also suits DigitalOcean Spaces and MinIO).
    #[serde(default = "default_region")]
    pub region: String,
    /// File holding the S3 access key id (trimmed). Required for `s3://`.
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the S3 secret access key (trimmed). Required for `s3://`.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// File holding an S3 session token, for temporary credentials.
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    /// Address buckets as `https://bucket.endpoint/` instead of `https://endpoint/bucket/`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Retries of one S3 request on transient failures.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// Longest time one S3 request may take, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Validity of a download link when the request does not say, in seconds.
    #[serde(default = "default_link_expiry_secs")]
    pub link_expiry_secs: u32,
    /// Longest validity a request may ask for, in seconds (at most 7 days, S3's limit).
    #[serde(default = "default_max_link_expiry_secs")]
    pub max_link_expiry_secs: u32,
    /// Retention default: keep each app's last N archives (used when a prune request and,
    /// later, the post-archive prune set no rule).
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Retention default: keep archives younger than this many seconds.
    #[serde(default)]
    pub keep_within_secs: Option<u64>,
    /// Retention default: keep the newest archive of each of the last N hours that have one
    /// (restic's `forget` tiers; only complete archives fill them).
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    /// Retention default: … of each of the last N days.
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// Retention default: … of each of the last N ISO weeks.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// Retention default: … of each of the last N months.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// Retention default: … of each of the last N years.
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// The IANA time zone whose hours, days, weeks, months and years the tiers count in,
    /// e.g. `Europe/Berlin` (default UTC).
    #[serde(default, deserialize_with = "timezone")]
    #[config(default_text = "UTC")]
    pub retention_timezone: Option<Tz>,
    /// How often one coordinator sweeps the bucket for multipart uploads that no live
    /// `archive.create` saga owns, and aborts them (seconds; 0: never, `berth archive prune`
    /// still sweeps).
    #[serde(default = "default_upload_sweep_interval_secs")]
    pub upload_sweep_interval_secs: u64,
    /// The sweep leaves uploads younger than this alone (seconds): clock skew, and uploads
    /// whose saga the sweep cannot see yet.
    #[serde(default = "default_upload_grace_secs")]
    pub upload_grace_secs: u64,
}

/// Reads `retention_timezone`, refusing a name that is not an IANA zone.
fn timezone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Tz>, D::Error> {
    let name = String::deserialize(d)?;
    parse_timezone(&name)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("archive.retention_timezone: {e}")))
}

fn default_store_url() -> String {
    "file:///var/lib/berth/archives".to_owned()
}
fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_max_retries() -> usize {
    10
}
fn default_request_timeout_secs() -> u64 {
    60
}
fn default_link_expiry_secs() -> u32 {
    3600
}
fn default_max_link_expiry_secs() -> u32 {
    MAX_LINK_EXPIRY_SECS
}
fn default_upload_sweep_interval_secs() -> u64 {
    3600
}
fn default_upload_grace_secs() -> u64 {
    3600
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            store_url: default_store_url(),
            endpoint: None,
            region: default_region(),
            access_key_id_file: None,
            secret_access_key_file: None,
            session_token_file: None,
            virtual_hosted_style: false,
            max_retries: default_max_retries(),
            request_timeout_secs: default_request_timeout_secs(),
            link_expiry_secs: default_link_expiry_secs(),
            max_link_expiry_secs: default_max_link_expiry_secs(),
            keep_last: None,
            keep_within_secs: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            retention_timezone: None,
            upload_sweep_interval_secs: default_upload_sweep_interval_secs(),
            upload_grace_secs: default_upload_grace_secs(),
        }
    }
}

impl ArchiveConfig {
    /// A config for `store_url` with every other default.
    pub fn for_url(store_url: impl Into<String>) -> Self {
        Self {
            store_url: store_url.into(),
            ..Self::default()
        }
    }

    pub fn url(&self) -> Result<StoreUrl, berth_shared::archive::StoreUrlError> {
        self.store_url.parse()
    }

    /// The retention defaults.
    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within_secs: self.keep_within_secs,
            timezone: self.retention_timezone,
        }
    }

    /// The upload sweep's period; `None` when it is off.
    pub fn upload_sweep_interval(&self) -> Option<std::time::Duration> {
        (self.upload_sweep_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(self.upload_sweep_interval_secs))
    }

    /// The age below which the sweep leaves an upload alone.
    pub fn upload_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.upload_grace_secs)
    }

    /// Consistency checks that TOML types cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        let url = self.url().context("archive.store_url")?;
        if matches!(url, StoreUrl::S3 { .. })
            && (self.access_key_id_file.is_none() || self.secret_access_key_file.is_none())
        {
            bail!(
                "archive.store_url is s3:// but archive.access_key_id_file and \
                 archive.secret_access_key_file are not both set"
            );
        }
        if let Some(ep) = &self.endpoint
            && !(ep.starts_with("https://") || ep.starts_with("http://"))
        {
            bail!("archive.endpoint {ep:?} must start with https:// or http://");
        }
        if self.max_link_expiry_secs == 0 || self.max_link_expiry_secs > MAX_LINK_EXPIRY_SECS {
            bail!(
                "archive.max_link_expiry_secs is {}, use 1 to {MAX_LINK_EXPIRY_SECS}",
                self.max_link_expiry_secs
            );
        }
        if self.link_expiry_secs == 0 || self.link_expiry_secs > self.max_link_expiry_secs {
            bail!(
                "archive.link_expiry_secs ({}) must be between 1 and archive.max_link_expiry_secs ({})",
                self.link_expiry_secs,
                self.max_link_expiry_secs
            );
        }
        for (key, n) in [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ] {
            if n == Some(0) {
                bail!("archive.{key} must be at least 1 (absent: no such rule)");
            }
        }
        if self.keep_within_secs == Some(0) {
            bail!("archive.keep_within_secs must be at least 1 (absent: no age rule)");
        }
        if self.request_timeout_secs == 0 {
            bail!("archive.request_timeout_secs must be at least 1");
        }
        Ok(())
    }
}
