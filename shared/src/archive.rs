//! App archives in object storage: the bucket layout shared with the Go node API, the
//! metadata document, label rules, progress, retention decisions and store URLs. No I/O.
//!
//! The layout (kept byte for byte from the Go node API's `snapshots.go`):
//!
//! ```text
//! <app>:<uuid>:<index-label-value or ->:<unix-ts>   the archive (tar + zstd)
//! _metadata/<uuid>                                  JSON {uuid, app_name, ts, labels:[...]}
//! ```
//!
//! Keys are what listings read; metadata objects are read one at a time, only when a single
//! archive is asked for.

mod meta;
mod progress;
mod retention;
mod store_url;

use std::fmt;

use crate::name::AppName;

/// The zone type of [`RetentionPolicy::timezone`], so callers need no `chrono-tz` of their own.
pub use chrono_tz::Tz;
pub use meta::{
    ArchiveMeta, FORMAT_TAR_ZSTD, LabelError, SIZE_LABEL, SOURCE_APP_DIR, SOURCE_VOLUMES,
    validate_labels,
};
pub use progress::{ArchiveProgress, Phase};
pub use retention::{
    KeepReason, RetentionEntry, RetentionError, RetentionPlan, RetentionPolicy, Rule, Verdict,
    parse_timezone, plan_retention,
};
pub use store_url::{StoreUrl, StoreUrlError};

/// Separates the four fields of an archive key (Go's `keySplitCharacter`).
pub const KEY_SEPARATOR: char = ':';
/// Folder of the metadata objects (Go's `metadataPrefix`).
pub const METADATA_PREFIX: &str = "_metadata";
/// The key's third field when the archive has no index label value.
pub const NO_INDEX: &str = "-";
/// Longest index label value Berth writes.
pub const MAX_INDEX_LEN: usize = 128;

/// Why a key, an id or an index value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("archive key {key:?} does not have 4 fields separated by ':'")]
    Fields { key: String },
    #[error("archive key {key:?} has an invalid app name")]
    App {
        key: String,
        #[source]
        source: crate::name::NameError,
    },
    #[error("archive key {key:?} has an invalid uuid")]
    Uuid { key: String },
    #[error("archive key {key:?} has an invalid timestamp {ts:?}")]
    Timestamp { key: String, ts: String },
    #[error("archive key {key:?} has an empty index field")]
    EmptyIndex { key: String },
    #[error("archive id {0:?} is not a uuid; give it as 8-4-4-4-12 lowercase hexadecimal digits")]
    Id(String),
    #[error(
        "index label value {value:?} is not allowed: use 1 to {MAX_INDEX_LEN} letters, digits, \
         '.', '_', '-', '@', '+' or '='"
    )]
    Index { value: String },
}

/// An archive's uuid in its canonical text form (lowercase, hyphenated), as both the Go code
/// (`uuid.NewV4().String()`) and Berth write it. It names `_metadata/<uuid>`, so it is checked.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ArchiveId(String);

impl TryFrom<String> for ArchiveId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ArchiveId> for String {
    fn from(id: ArchiveId) -> String {
        id.0
    }
}

impl ArchiveId {
    pub fn new(id: impl Into<String>) -> Result<Self, KeyError> {
        let id = id.into();
        let canonical = id.len() == 36
            && id.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || matches!(c, 'a'..='f'),
            });
        if canonical {
            Ok(Self(id))
        } else {
            Err(KeyError::Id(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of this archive's metadata object, relative to the store's root.
    pub fn metadata_key(&self) -> String {
        format!("{METADATA_PREFIX}/{}", self.0)
    }
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an index label value that Berth is about to put in a key. Empty and `-` mean "no
/// value" and give `None`. Values from the store are read leniently by [`ArchiveKey::parse`].
pub fn index_value(value: &str) -> Result<Option<String>, KeyError> {
    if value.is_empty() || value == NO_INDEX {
        return Ok(None);
    }
    let ok = value.len() <= MAX_INDEX_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+' | '='));
    if ok {
        Ok(Some(value.to_owned()))
    } else {
        Err(KeyError::Index {
            value: value.to_owned(),
        })
    }
}

/// The index value Go's `KeyName(indexLabel)` puts in a key: the text after `<name>:` of the
/// last label that starts with it.
pub fn index_value_from_labels<'a>(labels: &'a [String], name: &str) -> Option<&'a str> {
    let mut found = None;
    for label in labels {
        if let Some(rest) = label
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(KEY_SEPARATOR))
        {
            found = Some(rest);
        }
    }
    found
}

/// One archive key: `<app>:<uuid>:<index or ->:<unix-ts>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveKey {
    key: String,
    app: AppName,
    id: ArchiveId,
    index: Option<String>,
    ts: i64,
}

impl ArchiveKey {
    /// The key Berth writes for a new archive (Go's `KeyName`: `%s:%s:%s:%d`).
    pub fn new(app: AppName, id: ArchiveId, index: Option<String>, ts: i64) -> Self {
        let key = format!(
            "{app}{s}{id}{s}{}{s}{ts}",
            index.as_deref().unwrap_or(NO_INDEX),
            s = KEY_SEPARATOR
        );
        Self {
            key,
            app,
            id,
            index,
            ts,
        }
    }

    /// Parses a key as found in the store. Like Go's `metadataForSnapshotKey`, anything that is
    /// not exactly four fields is refused; the fields must also be a valid app name, a uuid and
    /// a unix timestamp. The index value is taken as found (`-` means none).
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = key.split(KEY_SEPARATOR).collect();
        let [app, id, index, ts] = parts[..] else {
            return Err(KeyError::Fields {
                key: key.to_owned(),
            });
        };
        let app = AppName::new(app).map_err(|source| KeyError::App {
            key: key.to_owned(),
            source,
        })?;
        let id = ArchiveId::new(id).map_err(|_| KeyError::Uuid {
            key: key.to_owned(),
        })?;
        let ts_value = ts.parse::<i64>().map_err(|_| KeyError::Timestamp {
            key: key.to_owned(),
            ts: ts.to_owned(),
        })?;
        let index = match index {
            "" => {
                return Err(KeyError::EmptyIndex {
                    key: key.to_owned(),
                });
            }
            NO_INDEX => None,
            value => Some(value.to_owned()),
        };
        Ok(Self {
            key: key.to_owned(),
            app,
            id,
            index,
            ts: ts_value,
        })
    }

    /// The key exactly as stored.
    pub fn as_str(&self) -> &str {
        &self.key
    }
    pub fn app(&self) -> &AppName {
        &self.app
    }
    pub fn id(&self) -> &ArchiveId {
        &self.id
    }
    /// The index label value, `None` for `-`.
    pub fn index(&self) -> Option<&str> {
        self.index.as_deref()
    }
    /// Unix seconds, as in the key.
    pub fn ts(&self) -> i64 {
        self.ts
    }

    /// The listing prefix of one app's archives: `<app>:`.
    pub fn app_prefix(app: &AppName) -> String {
        format!("{app}{KEY_SEPARATOR}")
    }

    /// Newest first; equal seconds are ordered by uuid (Berth's v7 uuids sort by time).
    pub fn newest_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        b.ts.cmp(&a.ts).then_with(|| b.id.cmp(&a.id))
    }
}

impl fmt::Display for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests;
