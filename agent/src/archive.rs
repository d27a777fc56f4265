//! App archives: an app directory, or a stack's volumes, as tar + zstd streamed into object
//! storage, and back.
//!
//! [`Archiver`] is what the task runner holds. Its task kinds, [`CREATE_TASK`],
//! [`RESTORE_TASK`] and [`VERIFY_TASK`] (a restore's download and checks, writing nothing),
//! take JSON inputs and give JSON outputs ([`Archiver::run_task`]), or are
//! called typed ([`Archiver::create`], [`Archiver::restore`]); both publish
//! [`ArchiveProgress`] on a `watch` channel and stop on a [`CancellationToken`].
//!
//! Invariants: the metadata object is written only after the data object is complete and its
//! size checked; a failed or cancelled create leaves neither behind; every multipart upload is
//! journaled under `state_dir/uploads/` before its first part and aborted by a restart, a
//! retry or a cancel (`journal.rs`, `upload.rs`); a restore unpacks beside the target and
//! swaps only after the archive's SHA-256 matched.

mod config;
mod create;
mod decode;
mod error;
mod fetch;
mod journal;
mod pack;
mod parts;
mod pipe;
mod restore;
mod seal;
mod store;
mod unpack;
mod upload;
mod verify;
mod volumes;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use berth_shared::Secret;
use berth_shared::archive::{
    ArchiveId, ArchiveKey, ArchiveMeta, SOURCE_APP_DIR, SOURCE_VOLUMES, index_value,
    index_value_from_labels, validate_labels,
};
use berth_shared::task::{Recorded, UnchangedSince};
use berth_shared::{AppName, StackName};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use berth_shared::archive::{ArchiveProgress, Phase};
pub use config::ArchiveConfig;
pub use error::{ArchiveError, BytesCap, Witness};
pub use journal::JournaledUpload;
pub use verify::{VerifyInput, VerifyOutput};

use crate::volume::StackError;
use crate::volume::lock::{self, Held, Operation, Resource};
use journal::Journal;
use pack::Tree;
use seal::{Identities, ONE_OFF, Recipients};

/// Task kind: archive an app directory. Inputs [`CreateInput`], output [`CreateOutput`].
pub const CREATE_TASK: &str = "archive_create";
/// Task kind: restore an archive into an app directory. Inputs [`RestoreInput`], output
/// [`RestoreOutput`].
pub const RESTORE_TASK: &str = "archive_restore";

/// Task kind: verify an archive without writing anything. Inputs [`VerifyInput`], output
/// [`VerifyOutput`].
pub const VERIFY_TASK: &str = "archive_verify";

/// Inputs of [`CREATE_TASK`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// The app: its directory is `<apps_root>/<app>` and its keys start with `<app>:`.
    pub app: String,
    /// Archive this swarm stack's or compose project's volumes (which must not be in use)
    /// instead of the app directory.
    #[serde(default)]
    pub stack: Option<String>,
    /// Free-form labels stored in the metadata (`size:` is added by Berth).
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    /// The index label value, the key's third field; empty (or null) for none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index_label: String,
    /// zstd level 1..=19; absent or 0 for the agent's `archive.zstd_level`.
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// The archive's uuid, chosen by the caller to make the create idempotent (e.g. derived
    /// from the saga step): if an archive with this uuid is already complete, it is reported
    /// instead of made again. Absent: a fresh v7 uuid.
    #[serde(default)]
    pub uuid: Option<String>,
    /// More age recipients for this archive, beside `[archive] recipients`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub recipients: Vec<String>,
    /// Write nothing when the source's listing digest equals this archive's.
    #[serde(default)]
    pub unchanged_since: Option<UnchangedSince>,
}

/// The inputs of task `kind` (one of this module's) from JSON.
fn inputs_of<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    inputs: &str,
) -> Result<T, ArchiveError> {
    serde_json::from_str(inputs).map_err(|source| ArchiveError::Inputs { kind, source })
}

/// Saga inputs may carry `null` for an absent value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Output of [`CREATE_TASK`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOutput {
    pub uuid: String,
    pub key: String,
    /// Bytes of the archive object.
    pub size: u64,
    /// Hex SHA-256 of the archive object.
    pub sha256: String,
    /// Unix seconds, as in the key.
    pub ts: i64,
    /// Uncompressed tar bytes and tar entries.
    pub tar_bytes: u64,
    pub entries: u64,
    /// True when the archive already existed (an idempotent repeat).
    pub existing: bool,
    /// The source's listing digest when packing began (empty for an archive made before
    /// Berth recorded it).
    #[serde(default)]
    pub source_digest: String,
    /// Set when nothing was written: the source matched this archive (the other fields
    /// describe it as it was recorded, and `uuid` is that archive's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<String>,
}

/// Inputs of [`RESTORE_TASK`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    pub uuid: String,
    /// What the archive's `archive.create` saga recorded (checksum, size, tar length, entry
    /// count): the restore is held to it whatever the bucket's metadata says. The coordinator
    /// fills it in; absent for an archive no saga recorded, which is restored only when its
    /// object matches its `size:` label, with a warning.
    #[serde(default)]
    pub recorded: Option<Recorded>,
    /// Restore under this app name; absent or empty: the archive's own app.
    #[serde(default)]
    pub target_app: Option<String>,
    /// For a volume archive: the stack whose volumes receive it (they must exist and not be
    /// in use); absent or empty: the stack it was made of.
    #[serde(default)]
    pub stack: Option<String>,
    /// An age identity for this one restore, instead of `[archive] identity_file`; held in
    /// memory only.
    #[serde(default)]
    pub identity: Option<Secret>,
}

/// Output of [`RESTORE_TASK`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutput {
    /// The app directory that now holds the archive's contents.
    pub app: String,
    /// File content bytes written.
    pub bytes: u64,
    /// Tar entries unpacked.
    pub entries: u64,
    pub uuid: String,
    pub key: String,
    /// Bytes of the archive object downloaded.
    pub archive_bytes: u64,
    /// Hex SHA-256 of the archive bytes downloaded.
    pub sha256: String,
    /// True when the archive matched the checksum its `archive.create` saga recorded; false
    /// for one no saga recorded (the Go node API's), checked only against bucket metadata.
    pub sha256_verified: bool,
    /// False when the agent is not root and could not restore owners.
    pub owners_restored: bool,
    /// For a volume archive: the volumes now holding its contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// Settings of one create, from the config and the inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub level: i32,
    pub workers: u32,
    pub part_size: usize,
    pub concurrency: usize,
}

/// The archive capability of an agent: its store, its apps root and its upload journal. Its
/// work takes the agent's lock table (`crate::volume::lock`) for the app directory and the
/// stack, and is refused, naming the holder, while another operation holds one.
#[derive(Debug, Clone)]
pub struct Archiver {
    config: ArchiveConfig,
    apps_root: PathBuf,
    bucket: store::Bucket,
    /// `None` for a store made by the caller (`memory://` in tests).
    journal: Option<Journal>,
    /// Uploads an earlier run journaled that are not aborted yet.
    recovering: watch::Receiver<usize>,
}

impl Archiver {
    /// Opens the store `config` names (reading the S3 credential files) and the upload
    /// journal in `state_dir/uploads/`. Uploads an earlier run journaled and never finished
    /// are aborted in the background, retried until the store confirms each (see
    /// [`Archiver::recovered`]). Call it within a tokio runtime.
    pub fn new(
        config: ArchiveConfig,
        apps_root: impl Into<PathBuf>,
        state_dir: &Path,
    ) -> Result<Self, ArchiveError> {
        config
            .validate()
            .map_err(|e| ArchiveError::Config(format!("{e:#}")))?;
        // Keys that do not parse fail the start, not the first archive or restore.
        if let Some(recipients) = Recipients::of(&config, &[])? {
            tracing::info!(recipients = ?recipients.names, "archives are encrypted");
        }
        if let Some(path) = &config.identity_file {
            Identities::read(path)?;
        }
        let bucket = store::Bucket::open(&config)?;
        tracing::info!(store = %config.store_url, "archive store opened");
        let journal = Journal::open(state_dir);
        let left = journal.all();
        let (remaining, recovering) = watch::channel(left.len());
        if !left.is_empty() {
            tracing::info!(
                uploads = left.len(),
                "aborting uploads an earlier run left unfinished"
            );
            let task = upload::recover(bucket.clone(), journal.clone(), left, remaining);
            tokio::spawn(task);
        }
        let mut archiver = Self::with_bucket(config, apps_root.into(), bucket);
        archiver.journal = Some(journal);
        archiver.recovering = recovering;
        Ok(archiver)
    }

    /// An archiver over an object store the caller made (tests share one `InMemory`).
    pub fn with_store(
        config: ArchiveConfig,
        apps_root: impl Into<PathBuf>,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        Self::with_bucket(config, apps_root.into(), store::Bucket::from_store(store))
    }

    fn with_bucket(config: ArchiveConfig, apps_root: PathBuf, bucket: store::Bucket) -> Self {
        Self {
            config,
            apps_root,
            bucket,
            journal: None,
            recovering: watch::channel(0).1,
        }
    }

    /// Waits until every upload an earlier run left journaled has been aborted.
    pub async fn recovered(&self) {
        let mut recovering = self.recovering.clone();
        let _ = recovering.wait_for(|n| *n == 0).await;
    }

    /// The uploads journaled now: started, and neither completed nor aborted yet.
    pub fn journaled_uploads(&self) -> Vec<JournaledUpload> {
        self.journal.as_ref().map(Journal::all).unwrap_or_default()
    }

    pub fn apps_root(&self) -> &Path {
        &self.apps_root
    }

    /// Every object name in the store, sorted (for checks that nothing was left behind).
    pub async fn stored_keys(&self) -> Result<Vec<String>, ArchiveError> {
        self.bucket.all_keys().await
    }

    /// Runs task `kind` with JSON `inputs`; the output is JSON. The task runner's entry point.
    pub async fn run_task(
        &self,
        kind: &str,
        inputs: &str,
        progress: &watch::Sender<ArchiveProgress>,
        cancel: &CancellationToken,
    ) -> Result<String, ArchiveError> {
        let output = match kind {
            CREATE_TASK => serde_json::to_string(
                &self
                    .create(inputs_of(CREATE_TASK, inputs)?, progress, cancel)
                    .await?,
            ),
            RESTORE_TASK => serde_json::to_string(
                &self
                    .restore(inputs_of(RESTORE_TASK, inputs)?, progress, cancel)
                    .await?,
            ),
            VERIFY_TASK => serde_json::to_string(
                &self
                    .verify(inputs_of(VERIFY_TASK, inputs)?, progress, cancel)
                    .await?,
            ),
            other => return Err(ArchiveError::UnknownKind(other.to_owned())),
        };
        Ok(output.expect("task outputs always serialize"))
    }

    /// Archives `<apps_root>/<app>` into the store.
    pub async fn create(
        &self,
        input: CreateInput,
        progress: &watch::Sender<ArchiveProgress>,
        cancel: &CancellationToken,
    ) -> Result<CreateOutput, ArchiveError> {
        let app = AppName::new(&input.app).map_err(ArchiveError::App)?;
        validate_labels(&input.labels)?;
        let mut labels = input.labels;
        let index = self.index_for(&input.index_label, &mut labels)?;
        let level = match input.zstd_level {
            None | Some(0) => self.config.zstd_level,
            Some(l) if (1..=19).contains(&l) => l,
            Some(l) => return Err(ArchiveError::Level(l)),
        };
        let stack = match input.stack.as_deref() {
            None | Some("") => None,
            Some(s) => Some(StackName::new(s).map_err(|source| StackError::Name {
                what: "stack name",
                source,
            })?),
        };
        let mut resources = vec![self.app_dir_resource(&app)];
        resources.extend(stack.iter().map(|s| Resource::Stack(s.to_string())));
        let subject = match &stack {
            Some(s) => format!("stack {s}"),
            None => format!("app {app}"),
        };
        let mut op = Operation::new(CREATE_TASK, subject);
        if let Some(id) = &input.uuid {
            op = op.on_behalf_of(format!("archive {id}"));
        }
        let _lock = lock::acquire_now(&op, &resources).await?;
        let tree = match &stack {
            None => {
                let source = self.apps_root.join(app.as_str());
                if !std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_dir()) {
                    return Err(ArchiveError::SourceMissing { path: source });
                }
                Tree::AppDir(source)
            }
            Some(stack) => Tree::Volumes(volumes::for_create(app.as_str(), stack).await?),
        };
        self.bucket.prepare()?;
        let id = match &input.uuid {
            Some(id) => {
                let id = ArchiveId::new(id.as_str())?;
                if let Some(existing) = self.existing(&app, &id).await? {
                    return Ok(existing);
                }
                id
            }
            None => ArchiveId::new(uuid::Uuid::now_v7().to_string())?,
        };
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let key = ArchiveKey::new(app.clone(), id.clone(), index, ts);
        let plan = Plan {
            level,
            workers: match self.config.zstd_workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32),
                n => n,
            },
            part_size: self.config.part_size_mib as usize * (1 << 20),
            concurrency: self.config.upload_concurrency as usize,
        };
        let job = create::Job {
            bucket: &self.bucket,
            journal: self.journal.as_ref(),
            tree: &tree,
            stack,
            app,
            id: id.clone(),
            key: key.clone(),
            labels,
            plan,
            recipients: Recipients::of(&self.config, &input.recipients)?.map(Arc::new),
            unless_digest: input
                .unchanged_since
                .as_ref()
                .map(|u| u.source_digest.as_str()),
        };
        let created = match create::run(job, progress, cancel).await? {
            create::Outcome::Created(c) => c,
            create::Outcome::Unchanged { source_digest } => {
                let since = input.unchanged_since.expect("compared with it");
                return Ok(CreateOutput {
                    uuid: since.uuid.to_string(),
                    key: String::new(),
                    size: 0,
                    sha256: String::new(),
                    ts,
                    tar_bytes: 0,
                    entries: 0,
                    existing: false,
                    source_digest,
                    unchanged_since: Some(since.uuid.to_string()),
                });
            }
        };
        tracing::info!(key = %key, size = created.size, entries = created.entries, "archive created");
        Ok(CreateOutput {
            uuid: id.to_string(),
            key: key.to_string(),
            size: created.size,
            sha256: created.sha256,
            ts,
            tar_bytes: created.tar_bytes,
            entries: created.entries,
            existing: false,
            source_digest: created.source_digest,
            unchanged_since: None,
        })
    }

    /// Restores archive `uuid` into `<apps_root>/<target_app>` (default: its own app).
    pub async fn restore(
        &self,
        input: RestoreInput,
        progress: &watch::Sender<ArchiveProgress>,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutput, ArchiveError> {
        let id = ArchiveId::new(input.uuid.as_str())?;
        let target = match input.target_app.as_deref() {
            None | Some("") => None,
            Some(t) => Some(AppName::new(t).map_err(ArchiveError::App)?),
        };
        let (meta, app, key, size) = self.find(&id).await?;
        let identities = self
            .identities_for(&id, &key, size, &meta, input.identity.as_ref())
            .await?;
        let target = target.unwrap_or(app);
        let op = Operation::new(RESTORE_TASK, format!("app {target}"))
            .on_behalf_of(format!("archive {id}"));
        let app_lock = lock::acquire_now(&op, &[self.app_dir_resource(&target)]).await?;
        let mut _stack_lock: Option<Held> = None;
        let volumes = match meta.source.as_deref() {
            Some(SOURCE_VOLUMES) => {
                let from = meta.stack.clone().unwrap_or_default();
                let to = match input.stack.as_deref() {
                    None | Some("") if from.is_empty() => {
                        return Err(ArchiveError::Input(format!(
                            "archive {id} holds volumes but its metadata records no stack; \
                             name the stack to restore them into"
                        )));
                    }
                    None | Some("") => from.as_str(),
                    Some(s) => s,
                };
                let to = StackName::new(to).map_err(|source| StackError::Name {
                    what: "stack name",
                    source,
                })?;
                let archived = meta.volumes.clone().unwrap_or_default();
                _stack_lock =
                    Some(lock::acquire_now(&op, &[Resource::Stack(to.to_string())]).await?);
                Some(volumes::for_restore(target.as_str(), &from, &archived, &to, op.id()).await?)
            }
            None | Some(SOURCE_APP_DIR) => None,
            Some(other) => {
                return Err(ArchiveError::UnknownSource {
                    id: id.to_string(),
                    source_kind: other.to_owned(),
                });
            }
        };
        let restored_volumes = volumes
            .as_ref()
            .map(|v| v.targets.iter().map(|t| t.name.to_string()).collect())
            .unwrap_or_default();
        let specials = match &volumes {
            None => unpack::Specials::AppDir,
            Some(_) => unpack::Specials::Volumes {
                devices: self.device_nodes(),
            },
        };
        let job = restore::Job {
            archive: self.found(
                key.clone(),
                size,
                meta,
                input.recorded,
                identities,
                specials,
            ),
            apps_root: &self.apps_root,
            target: target.clone(),
            keep_free: self.config.keep_free_bytes,
            volumes,
            op: app_lock.operation().id(),
        };
        let r = restore::run(job, progress, cancel).await?;
        tracing::info!(key = %key, app = %target, entries = r.unpacked.entries, "archive restored");
        Ok(RestoreOutput {
            app: target.to_string(),
            bytes: r.unpacked.file_bytes,
            entries: r.unpacked.entries,
            uuid: id.to_string(),
            key: key.to_string(),
            archive_bytes: r.archive_bytes,
            sha256: r.unpacked.sha256,
            sha256_verified: r.verified,
            owners_restored: r.owners,
            volumes: restored_volumes,
        })
    }

    /// For an age-encrypted archive (known by its first bytes: an archive made with
    /// `tar | zstd | age` may carry the Go tool's metadata, which does not say), this agent's
    /// identities, checked against the archive's header before anything is written.
    async fn identities_for(
        &self,
        id: &ArchiveId,
        key: &ArchiveKey,
        size: u64,
        meta: &ArchiveMeta,
        one_off: Option<&Secret>,
    ) -> Result<Option<Arc<Identities>>, ArchiveError> {
        let head = self
            .bucket
            .head_bytes(key, size.min(seal::HEADER_PROBE))
            .await?;
        let sealed = head.starts_with(seal::AGE_MAGIC);
        let refuse = |why: &str| ArchiveError::Encryption {
            id: id.to_string(),
            why: why.to_owned(),
        };
        match (meta.encryption.as_deref(), sealed) {
            (None, false) => return Ok(None),
            (None | Some(seal::ENCRYPTION_AGE), true) => {}
            (Some(seal::ENCRYPTION_AGE), false) => {
                return Err(refuse(
                    "its metadata says age, but the object is not an age stream (it was \
                     rewritten)",
                ));
            }
            (Some(other), _) => {
                return Err(ArchiveError::UnknownEncryption {
                    id: id.to_string(),
                    scheme: other.to_owned(),
                });
            }
        }
        let recipients = match &meta.recipients {
            Some(r) if !r.is_empty() => r.join(", "),
            _ => "recipients its metadata does not name".to_owned(),
        };
        let identities = match (one_off, &self.config.identity_file) {
            (Some(secret), _) => Identities::parse(secret.expose().as_bytes(), ONE_OFF)?,
            (None, Some(path)) => Identities::read(path)?,
            (None, None) => {
                return Err(ArchiveError::NoIdentity {
                    id: id.to_string(),
                    recipients,
                });
            }
        };
        match identities.check_header(&head) {
            Ok(()) => Ok(Some(Arc::new(identities))),
            Err(age::DecryptError::NoMatchingKeys) => Err(ArchiveError::NotForThisHost {
                id: id.to_string(),
                recipients,
                identity: identities.origin().to_owned(),
            }),
            Err(e) => Err(refuse(&format!("its age header is damaged ({e})"))),
        }
    }

    /// Archive `id`'s metadata, app, key and object size.
    async fn find(
        &self,
        id: &ArchiveId,
    ) -> Result<(ArchiveMeta, AppName, ArchiveKey, u64), ArchiveError> {
        let meta = self
            .bucket
            .read_meta(id)
            .await?
            .ok_or_else(|| ArchiveError::NotFound { id: id.to_string() })?;
        let app = AppName::new(meta.app_name.as_str()).map_err(ArchiveError::App)?;
        let (key, size) =
            self.bucket
                .find_key(&app, id)
                .await?
                .ok_or_else(|| ArchiveError::DataMissing {
                    id: id.to_string(),
                    app: app.to_string(),
                })?;
        Ok((meta, app, key, size))
    }

    /// An archive found in the bucket, with this agent's limits for its walk.
    fn found(
        &self,
        key: ArchiveKey,
        size: u64,
        meta: ArchiveMeta,
        recorded: Option<Recorded>,
        identities: Option<Arc<Identities>>,
        specials: unpack::Specials,
    ) -> fetch::Found<'_> {
        fetch::Found {
            bucket: &self.bucket,
            key,
            size,
            meta,
            recorded,
            identities,
            max_bytes: self.config.max_restore_bytes,
            max_entries: self.config.max_restore_entries,
            specials,
            links: if self.config.refuse_escaping_links {
                crate::tarsafe::Links::RefuseEscaping
            } else {
                crate::tarsafe::Links::AsArchived
            },
        }
    }

    /// Whether a volume restore on this agent recreates device nodes.
    fn device_nodes(&self) -> unpack::DeviceNodes {
        if self.config.allow_device_nodes {
            unpack::DeviceNodes::Restore
        } else {
            unpack::DeviceNodes::Refuse
        }
    }

    /// The lock table's key of `app`'s directory.
    fn app_dir_resource(&self, app: &AppName) -> Resource {
        Resource::AppDir(self.apps_root.join(app.as_str()).display().to_string())
    }

    /// The key's index value; with `index_label_name` configured, kept in step with the
    /// labels as the Go node API expects.
    fn index_for(
        &self,
        value: &str,
        labels: &mut Vec<String>,
    ) -> Result<Option<String>, ArchiveError> {
        let name = self.config.index_label_name.as_deref();
        Ok(match (index_value(value)?, name) {
            (Some(v), Some(name)) => {
                let label = format!("{name}:{v}");
                if !labels.contains(&label) {
                    labels.push(label);
                }
                Some(v)
            }
            (Some(v), None) => Some(v),
            (None, Some(name)) => match index_value_from_labels(labels, name) {
                Some(v) => index_value(v)?,
                None => None,
            },
            (None, None) => None,
        })
    }

    /// A complete archive `id` of `app`, for an idempotent repeat; leftovers of an attempt
    /// that did not complete are removed.
    async fn existing(
        &self,
        app: &AppName,
        id: &ArchiveId,
    ) -> Result<Option<CreateOutput>, ArchiveError> {
        let found = self.bucket.find_key(app, id).await?;
        let Some(meta) = self.bucket.read_meta(id).await? else {
            if let Some((key, _)) = found {
                tracing::warn!(key = %key, "removing the data of an archive attempt that never completed");
                self.bucket.delete_quietly(key.as_str()).await;
            }
            return Ok(None);
        };
        if meta.app_name != app.as_str() {
            return Err(ArchiveError::IdInUse {
                id: id.to_string(),
                app: meta.app_name,
            });
        }
        let Some((key, size)) = found else {
            return Err(ArchiveError::DataMissing {
                id: id.to_string(),
                app: app.to_string(),
            });
        };
        Ok(Some(CreateOutput {
            uuid: id.to_string(),
            key: key.to_string(),
            size,
            sha256: meta.sha256.unwrap_or_default(),
            ts: key.ts(),
            tar_bytes: meta.tar_bytes.unwrap_or(0),
            entries: meta.entries.unwrap_or(0),
            existing: true,
            source_digest: meta.source_digest.clone().unwrap_or_default(),
            unchanged_since: None,
        }))
    }
}
