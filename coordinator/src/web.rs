//! The web console: server-rendered pages (axum + maud) over the same services the gRPC API
//! serves, on its own optional listener (`web_listen`) with the coordinator's TLS.
//!
//! Every page and action names the gRPC method it stands for and is checked against the same
//! policy table (`auth::policy`) with the session's principal, then calls that method's service
//! in-process: what a role may see and do, and what a reply leaves out (a droplet's
//! `user_data`), is the API's, not a second copy. Sessions live in the database (`store::
//! web_sessions`), keyed by the SHA-256 of an HttpOnly, SameSite=Strict cookie and holding only
//! the token's hash, so any replica serves them and a revoked token ends them on its next page.

mod pages;
mod render;
mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::service::archives::ArchivesService;
use crate::service::drift::DriftService;
use crate::service::hosts::HostsService;
use crate::service::sagas::SagasService;
use crate::service::schedules::SchedulesService;
use crate::service::warm::WarmsService;
use crate::store::Store;

/// What the console's pages call: the gRPC services themselves, and the tokens and store its
/// sessions need.
#[derive(Clone)]
pub struct Console {
    pub store: Store,
    pub tokens: Tokens,
    pub hosts: HostsService,
    pub sagas: SagasService,
    pub drift: DriftService,
    pub archives: ArchivesService,
    pub warm: WarmsService,
    pub schedules: SchedulesService,
    /// Served over TLS: cookies are `Secure`.
    pub secure: bool,
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/sagas", get(pages::sagas))
        .route("/sagas/{id}", get(pages::saga))
        .route("/sagas/{id}/events", get(pages::saga_events))
        .route("/sagas/{id}/{action}", post(pages::saga_action))
        .route("/drift", get(pages::drift))
        .route("/drift/{id}/{action}", post(pages::drift_action))
        .route("/hosts", get(pages::hosts))
        .route("/hosts/{id}", get(pages::host))
        .route("/archives", get(pages::archives))
        .route("/archives/{uuid}/link", post(pages::archive_link))
        .route("/archives/{uuid}/restore", post(pages::archive_restore))
        .route("/schedules", get(pages::schedules))
        .route("/assets/console.css", get(render::css))
        .route("/assets/console.js", get(render::js))
        .layer(axum::middleware::from_fn(render::envelope))
        .with_state(Arc::new(console))
}

/// Where the console's connections come from.
pub enum Incoming {
    Plain(TcpListener),
    /// Connections whose TLS handshake completed (with the gRPC listener's certificate, its
    /// timeout and its failure log), accepted on `addr`.
    Tls {
        streams: ReceiverStream<io::Result<TlsStream<TcpStream>>>,
        addr: SocketAddr,
    },
}

/// Serves `router` on `incoming` until `shutdown`.
pub async fn serve(
    incoming: Incoming,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let stop = shutdown.cancelled_owned();
    match incoming {
        Incoming::Plain(listener) => {
            tracing::info!(addr = %listener.local_addr()?, tls = false, "web console serving");
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
        Incoming::Tls { streams, addr } => {
            tracing::info!(%addr, tls = true, "web console serving");
            axum::serve(TlsListener { streams, addr }, router)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// [`Incoming::Tls`] as axum's listener.
struct TlsListener {
    streams: ReceiverStream<io::Result<TlsStream<TcpStream>>>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.streams.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.addr);
                    return (stream, peer);
                }
                // Already logged and counted by the acceptor.
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
