//! The metadata document `_metadata/<uuid>`: the Go node API's four fields, plus Berth's own
//! optional keys, with unknown keys kept so a rewrite never loses what another tool wrote.

use serde::{Deserialize, Deserializer, Serialize};

/// Prefix of the label that records the archive's size in bytes (`size:<bytes>`).
pub const SIZE_LABEL: &str = "size";
/// Value of `format` for Berth's archives: a tar stream compressed as one zstd frame sequence.
pub const FORMAT_TAR_ZSTD: &str = "tar+zstd";

const MAX_LABELS: usize = 64;
const MAX_LABEL_LEN: usize = 256;

/// Why caller-supplied labels were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("too many labels ({count}); at most {MAX_LABELS} are allowed")]
    TooMany { count: usize },
    #[error("label {label:?} is empty or longer than {MAX_LABEL_LEN} bytes")]
    Length { label: String },
    #[error("label {label:?} contains a control character")]
    Control { label: String },
    #[error("label {label:?} is reserved: Berth records the archive's size itself")]
    Reserved { label: String },
}

/// Checks labels given by a caller: at most 64, each 1..=256 bytes without control characters,
/// and none of the `size:` label Berth adds.
pub fn validate_labels(labels: &[String]) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    for label in labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(LabelError::Length {
                label: label.clone(),
            });
        }
        if label.chars().any(char::is_control) {
            return Err(LabelError::Control {
                label: label.clone(),
            });
        }
        if label
            .strip_prefix(SIZE_LABEL)
            .is_some_and(|r| r.starts_with(':'))
        {
            return Err(LabelError::Reserved {
                label: label.clone(),
            });
        }
    }
    Ok(())
}

/// `_metadata/<uuid>`. Field order and names of the first four match Go's `Snapshot` struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveMeta {
    pub uuid: String,
    pub app_name: String,
    /// Unix seconds, as in the key.
    pub ts: i64,
    /// Free-form labels; Go marshals a nil slice as `null`, read as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub labels: Vec<String>,
    /// Hex SHA-256 of the archive object's bytes (Berth only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `tar+zstd` (Berth only; Go's archives are the same format without saying so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Version of the agent that wrote the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub berth_version: Option<String>,
    /// The key's index field as written (`-` for none), so the key follows from the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Length of the uncompressed tar stream: the exact size a restore must find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_bytes: Option<u64>,
    /// Number of tar entries (files, directories, links), for restore progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// What was archived: [`SOURCE_APP_DIR`] or [`SOURCE_VOLUMES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a volume archive: the stack whose volumes it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// For a volume archive: the volumes, each the top-level directory of its contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// `age` when the object is an age stream around the tar+zstd (absent: not encrypted).
    /// The Go tool ignores it, and its restore of such an archive fails at the zstd magic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// For an encrypted archive: who can read it, each recipient as an operator recognises
    /// it (`age1…`, or `ssh-ed25519 SHA256:…` as `ssh-keygen -l` shows an SSH key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// For an encrypted archive: hex SHA-256 of the tar+zstd inside the age stream (`sha256`
    /// is the stored object's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_sha256: Option<String>,
    /// Hex SHA-256 of the source's listing (paths, types, sizes, modes, owners, times, link
    /// targets) when packing began: a schedule's next run compares it to skip an unchanged
    /// source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Keys written by other tools, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// [`ArchiveMeta::source`] of an app directory's archive (also what an absent one means).
pub const SOURCE_APP_DIR: &str = "app_dir";
/// [`ArchiveMeta::source`] of an archive of a stack's volumes.
pub const SOURCE_VOLUMES: &str = "volumes";

impl ArchiveMeta {
    /// The minimal document, as the Go code writes it.
    pub fn new(uuid: impl Into<String>, app_name: impl Into<String>, ts: i64) -> Self {
        Self {
            uuid: uuid.into(),
            app_name: app_name.into(),
            ts,
            labels: Vec::new(),
            sha256: None,
            format: None,
            berth_version: None,
            index: None,
            tar_bytes: None,
            entries: None,
            source: None,
            stack: None,
            volumes: None,
            encryption: None,
            recipients: None,
            plaintext_sha256: None,
            source_digest: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The size recorded in the last `size:<bytes>` label, if any parses.
    pub fn size(&self) -> Option<u64> {
        self.labels
            .iter()
            .rev()
            .filter_map(|l| l.strip_prefix(SIZE_LABEL)?.strip_prefix(':'))
            .find_map(|v| v.parse().ok())
    }

    /// Appends `size:<bytes>` as Go's `CreateSnapshot` does.
    pub fn push_size(&mut self, bytes: u64) {
        self.labels.push(format!("{SIZE_LABEL}:{bytes}"));
    }

    /// The labels a caller gave, without the `size:` label.
    pub fn user_labels(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(String::as_str).filter(|l| {
            !l.strip_prefix(SIZE_LABEL)
                .is_some_and(|r| r.starts_with(':'))
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata always serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
