//! App archives: one conformance suite over `file://`, `memory://` and the real S3 server
//! (s3s-fs in process), through the agent's public `Archiver`.

mod encrypted;
mod failures;
mod hostile;
mod memory;
mod roundtrip;
mod s3;
mod tree;
mod unchanged;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use berth_agent::archive::{
    ArchiveConfig, ArchiveError, ArchiveProgress, Archiver, CreateInput, CreateOutput,
    RestoreInput, RestoreOutput, VerifyInput, VerifyOutput,
};
use berth_shared::task::Recorded;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use s3::S3Server;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    Memory,
    S3,
}

pub const ALL: [Backend; 3] = [Backend::File, Backend::Memory, Backend::S3];

/// An archiver on one backend, an apps root, and the test's own view of the same store.
pub struct Env {
    pub backend: Backend,
    pub archiver: Archiver,
    /// The same store as the archiver's, to look at and tamper with.
    pub store: Arc<dyn ObjectStore>,
    pub apps: TempDir,
    /// The agent's `state_dir`: its upload journal is `uploads/` in here.
    pub state: TempDir,
    pub s3: Option<S3Server>,
    _store_dir: Option<TempDir>,
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        Self::with(backend, |_| {}).await
    }

    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut ArchiveConfig)) -> Env {
        let apps = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (archiver, store, s3, store_dir) = match backend {
            Backend::File => {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path().join("archives");
                let mut config = ArchiveConfig::for_url(format!("file://{}", root.display()));
                config.part_size_mib = 5;
                tweak(&mut config);
                let archiver = Archiver::new(config, apps.path(), state.path()).unwrap();
                let store: Arc<dyn ObjectStore> =
                    Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
                (archiver, store, None, Some(dir))
            }
            Backend::Memory => {
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                let mut config = ArchiveConfig::for_url("memory://");
                config.part_size_mib = 5;
                tweak(&mut config);
                let archiver = Archiver::with_store(config, apps.path(), store.clone());
                (archiver, store, None, None)
            }
            Backend::S3 => {
                let server = S3Server::start().await;
                let mut config = server.config("berth/test");
                config.part_size_mib = 5;
                tweak(&mut config);
                let archiver = Archiver::new(config, apps.path(), state.path()).unwrap();
                let store = server.client("berth/test");
                (archiver, store, Some(server), None)
            }
        };
        Env {
            backend,
            archiver,
            store,
            apps,
            state,
            s3,
            _store_dir: store_dir,
        }
    }

    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.apps.path().join(app)
    }

    pub async fn create(&self, input: CreateInput) -> Result<CreateOutput, ArchiveError> {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        self.archiver
            .create(input, &progress, &CancellationToken::new())
            .await
    }

    pub async fn create_app(&self, app: &str) -> CreateOutput {
        self.create(CreateInput {
            app: app.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{:?}: create {app}: {}", self.backend, chain(&e)))
    }

    /// Restores `uuid` as an archive no saga recorded (the Go tool's): held only to what the
    /// bucket says.
    pub async fn restore(&self, uuid: &str, target: &str) -> Result<RestoreOutput, ArchiveError> {
        self.restore_with(uuid, None, target).await
    }

    /// Restores the archive `created` made, held to what its create recorded, as the
    /// coordinator's restore task carries it.
    pub async fn restore_recorded(
        &self,
        created: &CreateOutput,
        target: &str,
    ) -> Result<RestoreOutput, ArchiveError> {
        self.restore_with(&created.uuid, Some(recorded(created)), target)
            .await
    }

    async fn restore_with(
        &self,
        uuid: &str,
        recorded: Option<Recorded>,
        target: &str,
    ) -> Result<RestoreOutput, ArchiveError> {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        self.archiver
            .restore(
                RestoreInput {
                    uuid: uuid.into(),
                    recorded,
                    target_app: Some(target.into()),
                    ..Default::default()
                },
                &progress,
                &CancellationToken::new(),
            )
            .await
    }

    /// Verifies `uuid`, held to `recorded` when given (as the coordinator's verify task
    /// carries it).
    pub async fn verify(
        &self,
        uuid: &str,
        recorded: Option<Recorded>,
    ) -> Result<VerifyOutput, ArchiveError> {
        let (progress, _) = watch::channel(ArchiveProgress::default());
        self.archiver
            .verify(
                VerifyInput {
                    uuid: uuid.into(),
                    recorded,
                },
                &progress,
                &CancellationToken::new(),
            )
            .await
    }

    /// Every object name in the store, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let list: Vec<_> = self.store.list(None).try_collect().await.unwrap();
        let mut keys: Vec<String> = list.into_iter().map(|o| o.location.to_string()).collect();
        keys.sort();
        keys
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        let r = self.store.get(&ObjectPath::from(key)).await.unwrap();
        r.bytes().await.unwrap().to_vec()
    }

    /// Names in the apps root, sorted (staging leftovers would show here).
    pub fn apps_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.apps.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// An error with its sources, as the task runner reports it.
/// What the coordinator records of a create and sends with a restore.
pub fn recorded(created: &CreateOutput) -> Recorded {
    Recorded {
        sha256: created.sha256.clone(),
        size: created.size,
        tar_bytes: created.tar_bytes,
        entries: created.entries,
    }
}

pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    berth_agent::chain(e)
}
