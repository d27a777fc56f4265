//! The real S3 server, s3s-fs, in process on 127.0.0.1:0 (it checks SigV4 signatures), with
//! scripted faults: fail or stall part uploads from a given part number on. It also answers
//! `ListMultipartUploads` (`listing.rs`, shared with `berth-tests`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use berth_agent::archive::ArchiveConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use s3s::service::S3Service;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

#[path = "../../../../tests/src/s3/listing.rs"]
mod listing;

pub const BUCKET: &str = "berth-archives";
const ACCESS_KEY: &str = "berth-test";
const SECRET_KEY: &str = "berth-test-secret";

/// What the server does to part uploads (`PUT ?partNumber=N&uploadId=…`).
#[derive(Debug, Default)]
pub struct Faults {
    /// Parts numbered at least this answer 500 (0: never).
    pub fail_from_part: AtomicU32,
    /// Parts numbered at least this hang for a minute (0: never).
    pub stall_from_part: AtomicU32,
    /// Part uploads seen (including failed and stalled ones).
    pub parts_seen: AtomicU32,
}

/// A running server; dropping it stops it.
pub struct S3Server {
    pub endpoint: String,
    /// The server's folder: `<root>/<bucket>/<key>`, plus its multipart part files.
    pub root: TempDir,
    pub faults: Arc<Faults>,
    secrets: TempDir,
    _stop: DropGuard,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = listing::WithUploadListing::new(root.path());
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Faults::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, service, faults.clone(), stop.clone()));
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("key-id"), format!("{ACCESS_KEY}\n")).unwrap();
        std::fs::write(secrets.path().join("secret"), SECRET_KEY).unwrap();
        S3Server {
            endpoint,
            root,
            faults,
            secrets,
            _stop: stop.drop_guard(),
        }
    }

    /// An agent `[archive]` config for this server, keys under `prefix` (may be empty).
    pub fn config(&self, prefix: &str) -> ArchiveConfig {
        let mut c = ArchiveConfig::for_url(format!("s3://{BUCKET}/{prefix}"));
        c.endpoint = Some(self.endpoint.clone());
        c.access_key_id_file = Some(self.secrets.path().join("key-id"));
        c.secret_access_key_file = Some(self.secrets.path().join("secret"));
        c.max_retries = 1;
        c.request_timeout_secs = 120;
        c
    }

    /// A client of our own, to look at and tamper with what the agent stored.
    pub fn client(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap();
        if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        }
    }

    /// The key files, for a child process that opens its own client.
    pub fn secrets_dir(&self) -> &Path {
        self.secrets.path()
    }

    /// Uploads pending in the bucket under `prefix`, as `ListMultipartUploads` answers
    /// (through the lister the coordinator's sweep uses).
    pub async fn uploads(&self, prefix: &str) -> Vec<berth_objstore::PendingUpload> {
        let config = self.config(prefix);
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
        let store = berth_objstore::Store::open(
            config.url().unwrap(),
            &settings,
            berth_objstore::LocalWrites::Buffered,
        )
        .unwrap();
        store.list_uploads("").await.unwrap()
    }

    /// Multipart part files the server still holds (uploads neither completed nor aborted).
    pub fn pending_parts(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".upload_id-")
            })
            .collect()
    }
}

async fn serve(
    listener: TcpListener,
    service: S3Service,
    faults: Arc<Faults>,
    stop: CancellationToken,
) {
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let service = Faulty {
            inner: service.clone(),
            faults: faults.clone(),
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The S3 service with part uploads failing or stalling on demand.
#[derive(Clone)]
struct Faulty {
    inner: S3Service,
    faults: Arc<Faults>,
}

type Reply = Result<s3s::HttpResponse, s3s::HttpError>;

impl hyper::service::Service<http::Request<Incoming>> for Faulty {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let part = (req.method() == http::Method::PUT)
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("partNumber="))
                    .and_then(|n| n.parse::<u32>().ok())
            });
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(part) = part {
                faults.parts_seen.fetch_add(1, Ordering::SeqCst);
                let fail = faults.fail_from_part.load(Ordering::SeqCst);
                if fail != 0 && part >= fail {
                    return Ok(internal_error());
                }
                let stall = faults.stall_from_part.load(Ordering::SeqCst);
                if stall != 0 && part >= stall {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
            hyper::service::Service::call(&inner, req).await
        })
    }
}

fn internal_error() -> s3s::HttpResponse {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <Error><Code>InternalError</Code><Message>injected failure</Message></Error>";
    http::Response::builder()
        .status(500)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body.to_owned()))
        .unwrap()
}
