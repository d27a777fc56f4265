//! A DigitalOcean API simulator for tests and demos: an HTTP server on 127.0.0.1 that behaves
//! like DigitalOcean (droplets that turn `active` and get their address later, actions that
//! take time and can end `errored`, snapshots that show in listings after a lag, deleted things
//! that linger, pagination, per-token rate limits with the real headers, 422 on a busy droplet,
//! injectable faults) and checks every request, and every answer it gives, against
//! DigitalOcean's OpenAPI spec, so a test fails on any mismatch.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use berth_tests::dosim::{DoSim, Scope, SimConfig};
//! let sim = DoSim::start(SimConfig::fast()).await?;
//! sim.add_token("dop_v1_test", Scope::ReadWrite);
//! // point a client at sim.url(), then:
//! assert!(sim.droplets().is_empty());
//! sim.assert_no_violations();
//! # Ok(()) }
//! ```

mod catalog;
mod client;
mod config;
mod droplets;
mod faults;
mod images;
mod ratelimit;
mod server;
pub mod spec;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use catalog::{IMAGES, REGIONS, SIZES};
pub use config::{RateLimits, SimConfig, Timings};
pub use faults::{Fault, FaultKind};
pub use state::{ActionFailure, Scope, SimAction, SimDroplet, SimSnapshot};

use server::Shared;
use state::{TokenEntry, World};

/// Which side of an exchange broke the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's request (a client bug).
    Request,
    /// The simulator's answer (a simulator bug).
    Response,
}

/// A mismatch with DigitalOcean's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub request_id: String,
    pub op: Option<String>,
    pub method: String,
    pub path: String,
    pub side: Side,
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of {} {} ({}): {}",
            self.side,
            self.method,
            self.path,
            self.op.as_deref().unwrap_or("no operation"),
            self.problem
        )
    }
}

/// One request the simulator received.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub at: Instant,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// The spec's operationId, when the route is in the spec.
    pub op: Option<String>,
    /// The label of the token used (`t0`, `t1`… in the order added), never the token.
    pub token: Option<String>,
    /// `None` when the connection was dropped.
    pub status: Option<u16>,
    pub fault: Option<FaultKind>,
    pub body: Option<Value>,
}

/// A running simulator. Dropping it stops the server.
pub struct DoSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for DoSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoSim").field("addr", &self.addr).finish()
    }
}

impl DoSim {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start(config: SimConfig) -> anyhow::Result<DoSim> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (loopback only: this is a test double).
    pub async fn bind(config: SimConfig, addr: SocketAddr) -> anyhow::Result<DoSim> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the simulator listens on loopback only"
        );
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(config)),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, shared.clone(), shutdown.clone()));
        Ok(DoSim {
            shared,
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The base URL to give a client (`http://127.0.0.1:PORT`, without `/v2`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts `secret` as a bearer token; returns its label in the request log.
    pub fn add_token(&self, secret: &str, scope: Scope) -> String {
        let mut w = self.shared.world();
        if let Some(known) = w.tokens.iter().find(|t| t.secret == secret) {
            return known.label.clone();
        }
        let label = format!("t{}", w.tokens.len());
        w.tokens.push(TokenEntry {
            secret: secret.to_owned(),
            label: label.clone(),
            scope,
        });
        label
    }

    fn now(&self) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.shared.world();
        w.advance(Instant::now());
        w
    }

    pub fn config(&self) -> SimConfig {
        self.shared.world().config.clone()
    }

    pub fn set_timings(&self, timings: Timings) {
        self.shared.world().config.timings = timings;
    }

    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.shared.world().config.rate_limits = limits;
    }

    pub fn set_links_base(&self, base: &str) {
        self.shared.world().config.links_base = base.to_owned();
    }

    pub fn set_droplet_limit(&self, limit: u32) {
        self.shared.world().config.droplet_limit = limit;
    }

    /// Adds a fault; faults hit in the order added.
    pub fn inject(&self, fault: Fault) {
        self.shared.world().faults.add(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.world().faults.clear();
    }

    /// The next action matching `failure` ends `errored` (a failed create leaves the droplet
    /// `new` for good; a failed snapshot makes no snapshot).
    pub fn fail_next_action(&self, failure: ActionFailure) {
        self.shared.world().failures.push(failure);
    }

    /// Every droplet that exists (deleted ones, even while still lingering, do not).
    pub fn droplets(&self) -> Vec<SimDroplet> {
        self.now().inspect_droplets(Instant::now())
    }

    pub fn droplet(&self, id: u64) -> Option<SimDroplet> {
        self.droplets().into_iter().find(|d| d.id == id)
    }

    /// Every snapshot that exists, listed yet or not.
    pub fn snapshots(&self) -> Vec<SimSnapshot> {
        self.now().inspect_snapshots(Instant::now())
    }

    pub fn actions(&self) -> Vec<SimAction> {
        self.now().inspect_actions(Instant::now())
    }

    /// Adds `n` active droplets with addresses, bypassing the API (and its rate limits).
    pub fn seed_droplets(&self, n: usize, tags: &[&str]) -> Vec<u64> {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let mut w = self.now();
        droplets::seed(&mut w, n, &tags, Instant::now())
    }

    /// Changes a droplet's size behind the API's back (drift). False if there is no such droplet
    /// or size.
    pub fn set_droplet_size(&self, id: u64, size_slug: &str) -> bool {
        let mut w = self.now();
        match (w.droplets.get_mut(&id), catalog::size(size_slug)) {
            (Some(d), Some(size)) => {
                d.size = size;
                true
            }
            _ => false,
        }
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.world().log.clone()
    }

    /// Requests received for an operation (faulted and refused ones included).
    pub fn calls(&self, op: &str) -> usize {
        self.shared
            .world()
            .log
            .iter()
            .filter(|r| r.op.as_deref() == Some(op))
            .count()
    }

    /// Requests received per operation.
    pub fn calls_by_op(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.shared.world().log {
            *out.entry(r.op.clone().unwrap_or_else(|| "(unrouted)".into()))
                .or_insert(0) += 1;
        }
        out
    }

    /// Requests answered with this status.
    pub fn count_status(&self, status: u16) -> usize {
        self.shared
            .world()
            .log
            .iter()
            .filter(|r| r.status == Some(status))
            .count()
    }

    pub fn clear_log(&self) {
        self.shared.world().log.clear();
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.shared.world().violations.clone()
    }

    pub fn clear_violations(&self) {
        self.shared.world().violations.clear();
    }

    /// Fails the test, listing each one, if any request or answer broke the spec.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|v| format!("  {v}")).collect();
            panic!(
                "{} request(s) or answer(s) broke DigitalOcean's spec:\n{}",
                v.len(),
                list.join("\n")
            );
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DoSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
