//! A scripted fake coordinator: HostService and TokenService that check the bearer token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_proto::v1 as pb;
use berth_proto::v1::host_service_server::{HostService, HostServiceServer};
use berth_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// The admin token the fake accepts for everything.
pub const ADMIN_TOKEN: &str = "admin-s3cret-0123456789";
/// A ci token: hosts yes, tokens no (PERMISSION_DENIED).
pub const CI_TOKEN: &str = "ci-s3cret-0123456789";
/// The secret `CreateToken` hands out.
pub const NEW_TOKEN: &str = "berth_new_secret_token";

/// Every request that reached the fake, by method name.
#[derive(Debug, Default)]
pub struct Seen {
    pub calls: Vec<&'static str>,
    pub created: Vec<pb::CreateTokenRequest>,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
}

/// The fake, serving until dropped.
pub struct FakeCoordinator {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl FakeCoordinator {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_with(tls: Option<ServerTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Fake::default();
        let seen = fake.seen.clone();
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let router = builder
            .add_service(HostServiceServer::new(fake.clone()))
            .add_service(TokenServiceServer::new(fake));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn now_ms() -> i64 {
    berth_shared::time::unix_ms(SystemTime::now())
}

#[derive(PartialEq)]
enum Caller {
    Admin,
    Ci,
}

impl Fake {
    fn check<T>(&self, method: &'static str, req: &Request<T>) -> Result<Caller, Status> {
        self.seen.lock().unwrap().calls.push(method);
        let auth = req.metadata().get("authorization");
        let token = auth
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(ADMIN_TOKEN) => Ok(Caller::Admin),
            Some(CI_TOKEN) => Ok(Caller::Ci),
            Some(_) => Err(Status::unauthenticated("unknown or revoked token")),
            None => Err(Status::unauthenticated("missing bearer token")),
        }
    }

    fn admin<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), Status> {
        match self.check(method, req)? {
            Caller::Admin => Ok(()),
            Caller::Ci => Err(Status::permission_denied("role ci may not manage tokens")),
        }
    }
}

pub fn hosts() -> Vec<pb::Host> {
    let now = now_ms();
    vec![
        pb::Host {
            host_id: "h1".into(),
            hostname: "h1.example.org".into(),
            agent_version: "0.1.0".into(),
            docker_version: "27.3.1".into(),
            capabilities: vec!["warm".into(), "archive".into()],
            first_seen_ms: now - 86_400_000,
            last_heartbeat_ms: now - 2_000,
            online: true,
            connected_to: "coord-a".into(),
            warm_root_free_bytes: Some(40 << 30),
        },
        pb::Host {
            host_id: "ci-runner-2".into(),
            hostname: "runner2.example.org".into(),
            agent_version: "0.1.0".into(),
            docker_version: String::new(),
            capabilities: vec![],
            first_seen_ms: now - 10 * 86_400_000,
            last_heartbeat_ms: now - 3 * 3_600_000 - 60_000,
            online: false,
            connected_to: String::new(),
            warm_root_free_bytes: None,
        },
    ]
}

fn token_info(id: &str, role: &str, host_id: &str) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: id.into(),
        role: role.into(),
        host_id: host_id.into(),
        description: String::new(),
        created_at_ms: now_ms(),
        expires_at_ms: 0,
        revoked_at_ms: 0,
        last_used_ms: 0,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl HostService for Fake {
    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.check("ListHosts", &req)?;
        Ok(Response::new(pb::ListHostsResponse { hosts: hosts() }))
    }

    async fn get_host(
        &self,
        req: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::HostDetail>, Status> {
        self.check("GetHost", &req)?;
        let id = req.into_inner().host_id;
        let host = hosts()
            .into_iter()
            .find(|h| h.host_id == id)
            .ok_or_else(|| Status::not_found(format!("host {id} is not known")))?;
        let detail = if host.online {
            pb::HostDetail {
                host: Some(host),
                description: Some(pb::HostDescription {
                    docker_version: "27.3.1".into(),
                    docker_api_version: "1.47".into(),
                    os: "Debian GNU/Linux 12 (bookworm)".into(),
                    kernel_version: "6.1.0-28-amd64".into(),
                    architecture: "x86_64".into(),
                    cpus: 4,
                    memory_bytes: 8 << 30,
                    containers_running: 3,
                    containers_total: 5,
                    swarm_active: true,
                    warm_root: "/var/lib/berth/warm".into(),
                    warm_root_free_bytes: 20 << 30,
                    warm_root_total_bytes: 80 << 30,
                    storage_driver: "overlay2".into(),
                }),
                description_error: String::new(),
            }
        } else {
            pb::HostDetail {
                host: Some(host),
                description: None,
                description_error: "host is offline".into(),
            }
        };
        Ok(Response::new(detail))
    }
}

#[tonic::async_trait]
impl TokenService for Fake {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.admin("CreateToken", &req)?;
        let req = req.into_inner();
        self.seen.lock().unwrap().created.push(req.clone());
        let mut info = token_info("tok-7", &req.role, &req.host_id);
        info.description = req.description;
        if req.ttl_secs > 0 {
            info.expires_at_ms = info.created_at_ms + req.ttl_secs as i64 * 1000;
        }
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(info),
            token: NEW_TOKEN.into(),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.admin("ListTokens", &req)?;
        let mut tokens = vec![
            token_info("tok-1", "admin", ""),
            token_info("tok-2", "agent", "h1"),
        ];
        if req.into_inner().include_revoked {
            let mut revoked = token_info("tok-0", "ci", "");
            revoked.revoked_at_ms = now_ms() - 60_000;
            tokens.push(revoked);
        }
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.admin("RevokeToken", &req)?;
        let id = req.into_inner().token_id;
        if id != "tok-1" {
            return Err(Status::not_found(format!("token {id} is not known")));
        }
        let mut info = token_info("tok-1", "admin", "");
        info.revoked_at_ms = now_ms();
        Ok(Response::new(info))
    }

    async fn enroll_agent(
        &self,
        _req: Request<pb::EnrollAgentRequest>,
    ) -> Result<Response<pb::EnrollAgentResponse>, Status> {
        Err(Status::unimplemented(
            "the fake coordinator does not enroll agents",
        ))
    }
}
