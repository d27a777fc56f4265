//! Berth's host agent: dials out to the coordinator (any of its replicas), holds one
//! `AgentLink` session, describes its Docker host on request, and runs the tasks of saga
//! steps exactly once (`task`, journaled in its state dir): warm snapshots and restores of a
//! stack's volumes (`warm`), and zstd archives of an app directory or a stack's volumes to and
//! from object storage (`archive`). Both take the one lock table of `volume`, and extract
//! through `tarsafe`, which treats every archive as hostile.
//!
//! Entry points: [`run`] for the binary, [`Agent`] for tests and embedders that want to watch
//! the [`LinkState`].

pub mod archive;
pub mod config;
mod describe;
mod docker;
pub mod enroll;
mod error;
mod error_kind;
mod link;
mod query;
mod tarsafe;
mod task;
pub mod volume;
pub mod warm;

use berth_shared::HostId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, LogFormat, Overrides, TlsConfig, Token};
pub use describe::{Space, describe_host, filesystem_space};
pub use docker::DockerError;
pub use error::AgentError;
pub use error_kind::{ErrorKind, chain};
pub use link::LinkState;

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::start(config, shutdown)?.join().await
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    host_id: HostId,
    state: watch::Receiver<LinkState>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    /// Reads the token, settles the host id and the TLS files (errors here are start errors),
    /// then spawns the link on the current tokio runtime.
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Self, AgentError> {
        let token = config.read_token()?;
        let host_id = config.resolve_host_id()?;
        let spares = crate::warm::Spares::start(
            config.warm_root.clone(),
            config.warm.clone(),
            shutdown.clone(),
        );
        let link = link::Link::new(&config, host_id.clone(), &token, Some(spares))?;
        let (state_tx, state) = watch::channel(LinkState::Connecting);
        tracing::info!(
            host_id = %host_id,
            coordinator_url = %config.coordinator_url,
            "agent starting"
        );
        // Cut swaps are finished or rolled back, dead owners' staging removed.
        volume::recover_at_start(&config);
        let task = tokio::spawn(link::run(link, state_tx, shutdown));
        Ok(Self {
            host_id,
            state,
            task,
        })
    }

    /// This host's id, as sent in `Hello`.
    pub fn host_id(&self) -> &HostId {
        &self.host_id
    }

    /// The link's state; `wait_for(|s| matches!(s, LinkState::Connected { .. }))` waits for a
    /// session.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Waits until the agent has stopped (after its shutdown token is cancelled).
    pub async fn join(self) -> Result<(), AgentError> {
        self.task.await.map_err(AgentError::Join)?
    }
}
