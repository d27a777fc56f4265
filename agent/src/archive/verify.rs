//! Verifying an archive: the restore's download, decode (SHA-256 checked while decoding, age
//! opened with this host's identity) and walk of every tar entry through the restore's own
//! checks (`fetch`, `unpack` into a `tarsafe::Shadow`), writing nothing and taking no lock.
//! A bad archive is a verify that completed with `ok: false` and the problem named; only a
//! verify that could not run (the store unreachable, no identity, cancelled) is an error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_shared::archive::{ArchiveId, ArchiveProgress, Phase, SOURCE_APP_DIR, SOURCE_VOLUMES};
use berth_shared::task::Recorded;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::BytesCap;
use super::fetch::{self, Run};
use super::unpack::{Specials, UnpackCounters};
use super::{ArchiveError, Archiver};
use crate::error_kind::chain;

/// Inputs of [`super::VERIFY_TASK`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    pub uuid: String,
    /// What the archive's `archive.create` saga recorded; the verify holds the archive to it
    /// as a restore does (absent: an archive no saga recorded, held to its metadata).
    #[serde(default)]
    pub recorded: Option<Recorded>,
}

/// Output of [`super::VERIFY_TASK`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutput {
    pub uuid: String,
    /// The archive's key; empty when its data object was not found.
    pub key: String,
    /// True when a restore would take the archive: checksum, lengths and every entry.
    pub ok: bool,
    /// Tar entries walked and uncompressed tar bytes decoded (up to the problem, if any).
    pub entries: u64,
    pub tar_bytes: u64,
    /// Bytes of the archive object downloaded.
    pub bytes: u64,
    /// Hex SHA-256 of the archive bytes; empty when the walk stopped before the end.
    pub sha256: String,
    /// True when the archive was held to what its `archive.create` saga recorded.
    pub sha256_verified: bool,
    /// Why the archive is bad, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// True when only the stored object's SHA-256 (and size) was checked: an encrypted
    /// archive on a host with no identity, whose contents it cannot read.
    #[serde(default)]
    pub checksum_only: bool,
}

/// Whether `e` says the archive is bad (a completed verify with `ok: false`), rather than
/// that the verify could not run (this agent cannot read what the archive holds, an unknown
/// source or encryption: an upgrade, not the archive, is what is missing).
fn is_problem(e: &ArchiveError) -> bool {
    use ArchiveError::*;
    matches!(
        e,
        App(_)
            | DataMissing { .. }
            | Encryption { .. }
            | SizeMismatch { .. }
            | Checksum { .. }
            | Unverifiable { .. }
            | Format { .. }
            | UnsafeEntry { .. }
            | TooLarge { .. }
            | TooManyEntries { .. }
            // Only a modelled write fails in a verify: one a restore would fail too (an
            // entry replacing a non-empty directory).
            | Write { .. }
    )
}

impl Archiver {
    /// Verifies archive `uuid` without writing anything.
    pub async fn verify(
        &self,
        input: VerifyInput,
        progress: &watch::Sender<ArchiveProgress>,
        cancel: &CancellationToken,
    ) -> Result<VerifyOutput, ArchiveError> {
        let id = ArchiveId::new(input.uuid.as_str())?;
        let sha256_verified = input.recorded.is_some();
        let counters = Arc::new(UnpackCounters::default());
        let mut out = VerifyOutput {
            uuid: id.to_string(),
            key: String::new(),
            ok: false,
            entries: 0,
            tar_bytes: 0,
            bytes: 0,
            sha256: String::new(),
            sha256_verified,
            problem: None,
            checksum_only: false,
        };
        let walked = self
            .walk(&id, input.recorded, &counters, &mut out, progress, cancel)
            .await;
        out.entries = counters.entries.load(Ordering::Relaxed);
        out.tar_bytes = counters.tar_bytes.load(Ordering::Relaxed);
        out.bytes = counters.downloaded.load(Ordering::Relaxed);
        match walked {
            Ok(sha256) => {
                out.ok = true;
                out.sha256 = sha256;
                tracing::info!(key = out.key, entries = out.entries, "archive verified");
            }
            Err(e) if is_problem(&e) => {
                if let ArchiveError::Checksum { found, .. } = &e {
                    out.sha256 = found.clone();
                }
                let problem = chain(&e);
                tracing::warn!(key = out.key, problem, "archive failed verification");
                out.problem = Some(problem);
            }
            Err(e) => return Err(e),
        }
        progress.send_modify(|p| p.phase = Phase::Done);
        Ok(out)
    }

    /// Finds, downloads and walks the archive; its SHA-256 when a restore would take it.
    async fn walk(
        &self,
        id: &ArchiveId,
        recorded: Option<Recorded>,
        counters: &Arc<UnpackCounters>,
        out: &mut VerifyOutput,
        progress: &watch::Sender<ArchiveProgress>,
        cancel: &CancellationToken,
    ) -> Result<String, ArchiveError> {
        let (meta, _, key, size) = self.find(id).await?;
        out.key = key.to_string();
        let specials = match meta.source.as_deref() {
            None | Some(SOURCE_APP_DIR) => Specials::AppDir,
            Some(SOURCE_VOLUMES) => Specials::Volumes {
                devices: self.device_nodes(),
            },
            Some(other) => {
                return Err(ArchiveError::UnknownSource {
                    id: id.to_string(),
                    source_kind: other.to_owned(),
                });
            }
        };
        let identities = match self.identities_for(id, &key, size, &meta, None).await {
            // Encrypted, and this host holds no identity: check what can be checked without
            // reading the contents, and say so.
            Err(ArchiveError::NoIdentity { .. }) => {
                out.checksum_only = true;
                let found = self.found(key, size, meta, recorded, None, specials);
                return checksum(&found, counters, progress, cancel).await;
            }
            identities => identities?,
        };
        let found = self.found(key, size, meta, recorded, identities, specials);
        let trusted = fetch::expected(&found)?;
        // Nothing is written: no free space to keep, only the configured and recorded caps.
        let expect = found.expect(trusted, (u64::MAX, BytesCap::Configured));
        let run = Run {
            into: None,
            owners: super::restore::running_as_root(),
            counters,
            phase: Phase::Checking,
            progress,
            cancel,
        };
        Ok(found.fetch(expect, run).await?.unpacked.sha256)
    }
}

/// Downloads the stored object and holds its SHA-256 to what its create saga recorded (or, for
/// an archive no saga recorded, its metadata's); its hex SHA-256 when it matches.
async fn checksum(
    found: &fetch::Found<'_>,
    counters: &Arc<UnpackCounters>,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<String, ArchiveError> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use sha2::{Digest, Sha256};

    let trusted = fetch::expected(found)?;
    let key = found.key.to_string();
    let Some((expected, by)) = trusted.sha256 else {
        return Err(ArchiveError::Unverifiable {
            key,
            why: "no checksum was recorded for it, and this host cannot read its contents"
                .to_owned(),
        });
    };
    let path = object_store::path::Path::from(found.key.as_str());
    let get = found
        .bucket
        .store
        .get(&path)
        .await
        .map_err(|e| ArchiveError::store("download", &key, e))?;
    let total = get.meta.size;
    let mut stream = get.into_stream();
    let mut hasher = Sha256::new();
    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return Err(ArchiveError::Cancelled),
            c = stream.next() => c,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| ArchiveError::store("download", &key, e))?;
        hasher.update(&chunk);
        let done = counters
            .downloaded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed)
            + chunk.len() as u64;
        progress.send_modify(|p| {
            p.phase = Phase::Checking;
            p.bytes_done = done;
            p.bytes_total = total;
        });
    }
    let found_sha = hex::encode(hasher.finalize());
    if found_sha != expected {
        return Err(ArchiveError::Checksum {
            key,
            expected,
            found: found_sha,
            by,
        });
    }
    tracing::info!(
        key,
        "no identity on this host: the stored object's checksum was checked, not its contents"
    );
    Ok(found_sha)
}
