//! The agent's `[archive]` table: where archives are stored and how they are made and restored.

use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_shared::archive::StoreUrl;
use berth_shared::config_doc::ConfigDoc;
use serde::Deserialize;

/// `[archive]` in the agent's config. Every key has a default, so the table may be absent.
#[derive(Debug, Clone, Deserialize, ConfigDoc)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Where archives live: `file:///dir` (the embedded default,
    /// `file:///var/lib/berth/archives`), `s3://bucket/prefix` (DigitalOcean Spaces, MinIO,
    /// AWS) or `memory://` (tests).
    #[serde(default = "default_store_url")]
    pub store_url: String,
    /// S3 endpoint, e.g. `https://fra1.digitaloceanspaces.com` or `http://127.0.0.1:9000`.
    /// Absent: AWS. Plain `http://` is allowed only because it is written here.
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
    /// Retries of one S3 request on transient failures (5xx, timeouts, resets).
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// Longest time one S3 request (e.g. one part upload) may take, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// zstd level, 1 to 19, when a create does not say (3: fast, close to the best ratio
    /// per CPU second).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// zstd worker threads; 0 means one per CPU, at most 4 (each adds about 10 MiB).
    #[serde(default)]
    pub zstd_workers: u32,
    /// Size of each multipart upload part in MiB (5 to 512). Parts grow automatically for
    /// sources so large that the archive would need more than 10,000 parts.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// Parts uploaded at once (1 to 16). Memory in flight is about
    /// `part_size_mib * (upload_concurrency + 1)`.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: u32,
    /// The Go node API's index label name (e.g. `owner`): a create without an index value
    /// takes it from the label `<name>:<value>`, and one with a value gets that label, so
    /// the Go code's listing by label still finds it.
    #[serde(default)]
    pub index_label_name: Option<String>,
    /// A restore stops, refusing the archive as a decompression bomb, once its tar stream
    /// passes this many bytes (default: no fixed cap; `keep_free_bytes` and the length
    /// recorded at create still apply). Berth's own archives are held to the exact length
    /// their `archive.create` saga recorded.
    #[serde(default)]
    pub max_restore_bytes: Option<u64>,
    /// A restore never takes the target's filesystem below this many free bytes (default
    /// 1 GiB): it is refused up front when the recorded length does not fit, and stopped
    /// when an archive without one (the Go tool's, a zstd bomb) unpacks past it.
    #[serde(default = "default_keep_free_bytes")]
    pub keep_free_bytes: u64,
    /// A restore refuses an archive with more entries than this (default 20 million).
    #[serde(default = "default_max_restore_entries")]
    pub max_restore_entries: u64,
    /// Restore device nodes found in an archive of a stack's volumes (an app directory never
    /// gets device nodes, nor set-user-ID or set-group-ID files, from an archive). Off: the
    /// bucket is writable by every agent.
    #[serde(default)]
    pub allow_device_nodes: bool,
    /// Refuse restoring an archive holding a symlink that leads outside its target (an
    /// absolute link, or one that climbs out, resolved against the tree extracted so far).
    /// Off: links are restored as archived, like GNU tar and restic; either way nothing is
    /// ever created or written through one.
    #[serde(default)]
    pub refuse_escaping_links: bool,
    /// Encrypt every archive to these recipients: age public keys (`age1…`, from
    /// `age-keygen -y`) or SSH public keys (`ssh-ed25519 …`, `ssh-rsa …`). This host can
    /// write archives it cannot read. Empty (and no `recipients_file`): not encrypted.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of more recipients, one per line (`#` comments and blank lines skipped).
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// The identity that decrypts encrypted archives on restore: age identities
    /// (`AGE-SECRET-KEY-1…`, from `age-keygen`) or an unencrypted SSH private key. Give it
    /// only to hosts that restore, ideally as a systemd credential
    /// (`LoadCredential=age-identity:/etc/berth/age-identity`, then
    /// `identity_file = "/run/credentials/berth-agent.service/age-identity"`).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
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
    300
}
fn default_zstd_level() -> i32 {
    3
}
fn default_part_size_mib() -> u32 {
    8
}
fn default_upload_concurrency() -> u32 {
    4
}
fn default_keep_free_bytes() -> u64 {
    1 << 30
}
fn default_max_restore_entries() -> u64 {
    20_000_000
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
            zstd_level: default_zstd_level(),
            zstd_workers: 0,
            part_size_mib: default_part_size_mib(),
            upload_concurrency: default_upload_concurrency(),
            index_label_name: None,
            max_restore_bytes: None,
            keep_free_bytes: default_keep_free_bytes(),
            max_restore_entries: default_max_restore_entries(),
            allow_device_nodes: false,
            refuse_escaping_links: false,
            recipients: Vec::new(),
            recipients_file: None,
            identity_file: None,
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

    /// The parsed store URL.
    pub fn url(&self) -> Result<StoreUrl, berth_shared::archive::StoreUrlError> {
        self.store_url.parse()
    }

    /// Checks what can be checked without touching the filesystem.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = self.url().context("archive.store_url")?;
        if url.is_s3()
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
        if !(1..=19).contains(&self.zstd_level) {
            bail!("archive.zstd_level is {}, use 1 to 19", self.zstd_level);
        }
        if !(5..=512).contains(&self.part_size_mib) {
            bail!(
                "archive.part_size_mib is {}, use 5 to 512",
                self.part_size_mib
            );
        }
        if !(1..=16).contains(&self.upload_concurrency) {
            bail!(
                "archive.upload_concurrency is {}, use 1 to 16",
                self.upload_concurrency
            );
        }
        if self.request_timeout_secs == 0 {
            bail!("archive.request_timeout_secs must be at least 1");
        }
        if let Some(name) = &self.index_label_name
            && (name.is_empty() || name.contains(':') || name.chars().any(char::is_control))
        {
            bail!("archive.index_label_name {name:?} must be non-empty, without ':'");
        }
        if self.max_restore_bytes == Some(0) || self.max_restore_entries == 0 {
            bail!("archive.max_restore_bytes and archive.max_restore_entries must be positive");
        }
        Ok(())
    }
}
