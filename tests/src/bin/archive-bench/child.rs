//! What the benchmark runs in child processes, so each contender's time and peak memory are
//! its own (the S3 server stays in the parent): Berth's create and restore (plain, and
//! age-encrypted), and the old tool's upload and download of a temp file with the same
//! object_store client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use berth_agent::archive::{ArchiveConfig, ArchiveProgress, Archiver, CreateInput, RestoreInput};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the parent's S3 server is; passed on the command line.
pub struct Target {
    pub endpoint: String,
    pub key_file: PathBuf,
    pub secret_file: PathBuf,
}

pub const BUCKET: &str = berth_tests::s3::BUCKET;
pub const PREFIX: &str = "bench";

impl Target {
    pub fn args(&self) -> Vec<String> {
        vec![
            self.endpoint.clone(),
            self.key_file.display().to_string(),
            self.secret_file.display().to_string(),
        ]
    }

    fn parse(args: &[String]) -> anyhow::Result<(Target, &[String])> {
        let [endpoint, key, secret, rest @ ..] = args else {
            bail!("child: expected ENDPOINT KEY_FILE SECRET_FILE ...");
        };
        let t = Target {
            endpoint: endpoint.clone(),
            key_file: key.into(),
            secret_file: secret.into(),
        };
        Ok((t, rest))
    }

    fn agent_config(&self) -> ArchiveConfig {
        let mut c = ArchiveConfig::for_url(format!("s3://{BUCKET}/{PREFIX}"));
        c.endpoint = Some(self.endpoint.clone());
        c.access_key_id_file = Some(self.key_file.clone());
        c.secret_access_key_file = Some(self.secret_file.clone());
        c
    }

    /// The same object_store client Berth uses, with the same part size and concurrency.
    fn client(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let read = |p: &Path| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(p)
                .with_context(|| format!("read {}", p.display()))?
                .trim()
                .to_owned())
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(read(&self.key_file)?)
            .with_secret_access_key(read(&self.secret_file)?)
            .build()?;
        Ok(Arc::new(PrefixStore::new(s3, PREFIX)))
    }
}

/// `child <op> ENDPOINT KEY_FILE SECRET_FILE args...`; prints one line of results.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let [op, rest @ ..] = args else {
        bail!("child: expected an operation");
    };
    let (target, rest) = Target::parse(rest)?;
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let t = Instant::now();
        let line = match (op.as_str(), rest) {
            (
                "create" | "create-memory" | "create-sealed" | "create-memory-sealed",
                [apps, app, more @ ..],
            ) => {
                let mut config = if op.starts_with("create-memory") {
                    ArchiveConfig::for_url("memory://")
                } else {
                    target.agent_config()
                };
                if op.ends_with("-sealed") {
                    let [recipient] = more else {
                        bail!("child {op}: expected APPS APP RECIPIENT");
                    };
                    config.recipients = vec![recipient.clone()];
                }
                let state = tempfile::tempdir()?;
                let archiver = Archiver::new(config, apps, state.path())?;
                let (progress, _) = watch::channel(ArchiveProgress::default());
                let input = CreateInput {
                    app: app.clone(),
                    ..Default::default()
                };
                let out = archiver
                    .create(input, &progress, &CancellationToken::new())
                    .await?;
                format!(
                    "uuid={} key={} size={} tar_bytes={} entries={} source_digest={}",
                    out.uuid, out.key, out.size, out.tar_bytes, out.entries, out.source_digest
                )
            }
            ("create-unchanged", [apps, app, uuid, digest]) => {
                let state = tempfile::tempdir()?;
                let archiver = Archiver::new(target.agent_config(), apps, state.path())?;
                let (progress, _) = watch::channel(ArchiveProgress::default());
                let input = CreateInput {
                    app: app.clone(),
                    unchanged_since: Some(berth_shared::task::UnchangedSince {
                        uuid: berth_shared::archive::ArchiveId::new(uuid.as_str())?,
                        source_digest: digest.clone(),
                    }),
                    ..Default::default()
                };
                let out = archiver
                    .create(input, &progress, &CancellationToken::new())
                    .await?;
                let Some(since) = out.unchanged_since else {
                    bail!("child create-unchanged: the source changed, an archive was written");
                };
                format!("unchanged_since={since} entries_scanned=0")
            }
            ("restore" | "restore-sealed", [apps, uuid, target_app, more @ ..]) => {
                let mut config = target.agent_config();
                if op == "restore-sealed" {
                    let [identity] = more else {
                        bail!("child restore-sealed: expected APPS UUID TARGET IDENTITY_FILE");
                    };
                    config.identity_file = Some(identity.into());
                }
                let state = tempfile::tempdir()?;
                let archiver = Archiver::new(config, apps, state.path())?;
                let (progress, _) = watch::channel(ArchiveProgress::default());
                let input = RestoreInput {
                    uuid: uuid.clone(),
                    target_app: Some(target_app.clone()),
                    ..Default::default()
                };
                let out = archiver
                    .restore(input, &progress, &CancellationToken::new())
                    .await?;
                format!("entries={} bytes={}", out.entries, out.bytes)
            }
            ("upload", [file, key]) => {
                let store = target.client()?;
                let c = ArchiveConfig::default();
                let part = (c.part_size_mib as usize) << 20;
                let upload = store.put_multipart(&ObjectPath::from(key.as_str())).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
                let mut f = tokio::fs::File::open(file).await?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .wait_for_capacity(c.upload_concurrency as usize)
                        .await?;
                    writer.write(&buf[..n]);
                }
                writer.finish().await?;
                format!("uploaded={key}")
            }
            ("download", [key, file]) => {
                let store = target.client()?;
                let mut stream = store
                    .get(&ObjectPath::from(key.as_str()))
                    .await?
                    .into_stream();
                let mut f = tokio::fs::File::create(file).await?;
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    n += chunk.len() as u64;
                    f.write_all(&chunk).await?;
                }
                f.flush().await?;
                format!("downloaded={n}")
            }
            (op, rest) => bail!("child: unknown operation {op} {rest:?}"),
        };
        println!("RESULT {line} ms={}", t.elapsed().as_millis());
        Ok(())
    })
}
