//! A real S3 server on loopback: s3s-fs in process on 127.0.0.1:0, checking SigV4 signatures
//! and presigned-URL expiry, with configs for an agent and a coordinator pointing at it. It
//! also answers `ListMultipartUploads` (`s3/listing.rs`), which s3s-fs itself does not.

mod listing;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use object_store::ObjectStore;
use object_store::PutPayload;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

pub const BUCKET: &str = "berth-archives";
const ACCESS_KEY: &str = "berth-e2e";
const SECRET_KEY: &str = "berth-e2e-secret";

/// A running S3 server; dropping it stops it.
pub struct S3Server {
    pub endpoint: String,
    /// `<root>/<bucket>/<key>`.
    pub root: TempDir,
    secrets: TempDir,
    _stop: DropGuard,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        let fs = listing::WithUploadListing::new(root.path());
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    () = token.cancelled() => return,
                };
                let (service, token) = (service.clone(), token.clone());
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(socket), service);
                    tokio::select! {
                        _ = conn => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        let secrets = tempfile::tempdir().expect("temp dir");
        std::fs::write(secrets.path().join("key-id"), ACCESS_KEY).expect("key id");
        std::fs::write(secrets.path().join("secret"), format!("{SECRET_KEY}\n")).expect("secret");
        S3Server {
            endpoint,
            root,
            secrets,
            _stop: stop.drop_guard(),
        }
    }

    fn url(prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// An agent's `[archive]` for this server, keys under `prefix`.
    pub fn agent_config(&self, prefix: &str) -> berth_agent::archive::ArchiveConfig {
        let mut c = berth_agent::archive::ArchiveConfig::for_url(Self::url(prefix));
        c.endpoint = Some(self.endpoint.clone());
        c.access_key_id_file = Some(self.secrets.path().join("key-id"));
        c.secret_access_key_file = Some(self.secrets.path().join("secret"));
        c.max_retries = 2;
        c
    }

    /// The body of an `[archive]` table for this server (the same for agents and
    /// coordinators), keys under `prefix`, for programs started as processes.
    pub fn archive_toml(&self, prefix: &str) -> String {
        format!(
            "store_url = {url:?}\nendpoint = {endpoint:?}\naccess_key_id_file = {id:?}\n\
             secret_access_key_file = {secret:?}\nmax_retries = 2\n",
            url = Self::url(prefix),
            endpoint = self.endpoint,
            id = self.secrets.path().join("key-id").display().to_string(),
            secret = self.secrets.path().join("secret").display().to_string(),
        )
    }

    /// A coordinator's `[archive]` for this server, keys under `prefix`.
    pub fn coordinator_config(&self, prefix: &str) -> berth_coordinator::archive::ArchiveConfig {
        let mut c = berth_coordinator::archive::ArchiveConfig::for_url(Self::url(prefix));
        c.endpoint = Some(self.endpoint.clone());
        c.access_key_id_file = Some(self.secrets.path().join("key-id"));
        c.secret_access_key_file = Some(self.secrets.path().join("secret"));
        c.max_retries = 2;
        c
    }

    /// Starts a multipart upload of `<prefix>/<key>` and sends it one part, as an agent
    /// killed mid-archive leaves it; returns its upload id.
    pub async fn start_upload(&self, prefix: &str, key: &str) -> String {
        let path = ObjectPath::from(format!("{prefix}/{key}").as_str());
        let s3 = self.raw();
        let id = s3.create_multipart(&path).await.expect("create upload");
        s3.put_part(&path, &id, 0, PutPayload::from_static(b"part"))
            .await
            .expect("upload a part");
        id
    }

    /// Makes upload `upload_id` look started `ago` (s3s-fs dates it by its info file).
    pub fn backdate_upload(&self, upload_id: &str, ago: Duration) {
        let info = self.root.path().join(format!(".upload-{upload_id}.json"));
        let file = std::fs::File::options()
            .write(true)
            .open(&info)
            .expect("upload info file");
        file.set_modified(SystemTime::now() - ago)
            .expect("set its mtime");
    }

    /// Uploads pending under `prefix`, as `ListMultipartUploads` answers (through the lister
    /// the coordinator's sweep uses).
    pub async fn uploads(&self, prefix: &str) -> Vec<berth_objstore::PendingUpload> {
        let config = self.coordinator_config(prefix);
        let settings = berth_objstore::S3Settings {
            endpoint: config.endpoint.as_deref(),
            region: &config.region,
            access_key_id_file: config.access_key_id_file.as_deref(),
            secret_access_key_file: config.secret_access_key_file.as_deref(),
            session_token_file: None,
            virtual_hosted_style: false,
            max_retries: 1,
            request_timeout: Duration::from_secs(30),
        };
        let url = config.url().expect("store url");
        let store =
            berth_objstore::Store::open(url, &settings, berth_objstore::LocalWrites::Buffered)
                .expect("open the store");
        let mut uploads = store.list_uploads("").await.expect("list uploads");
        uploads.sort_by(|a, b| a.key.cmp(&b.key));
        uploads
    }

    fn raw(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("s3 client")
    }

    /// A client of our own, under `prefix` (empty: the whole bucket).
    pub fn client(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("s3 client");
        if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        }
    }

    /// Object `key` (its whole name in the bucket), read whole.
    pub async fn object(&self, key: &str) -> bytes::Bytes {
        use object_store::ObjectStoreExt;
        self.client("")
            .get(&ObjectPath::from(key))
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("read {key}: {e}"))
    }

    /// The metadata of archive `uuid` under `prefix` (`_metadata/<uuid>`, JSON).
    pub async fn metadata(&self, prefix: &str, uuid: &str) -> serde_json::Value {
        let raw = self.object(&format!("{prefix}/_metadata/{uuid}")).await;
        serde_json::from_slice(&raw).expect("an archive's metadata is JSON")
    }

    /// Every object name in the bucket, sorted (for checks that nothing was left behind).
    pub async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .client("")
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list the bucket");
        keys.sort();
        keys
    }
}

/// Flips one bit of the byte in the middle of object `key` (as someone with write access to
/// the bucket, or a bad disk, could).
pub async fn flip_middle_byte(store: &Arc<dyn ObjectStore>, key: &str) {
    use object_store::ObjectStoreExt;
    let path = ObjectPath::from(key);
    let mut bytes = store
        .get(&path)
        .await
        .expect("get the object")
        .bytes()
        .await
        .expect("read the object")
        .to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .expect("put the object back");
}
