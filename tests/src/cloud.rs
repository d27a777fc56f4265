//! Coordinators wired to the DigitalOcean simulator: the token written to a file, the
//! `[digitalocean]` section pointed at the simulator, `[droplets]` paced for its fast timings;
//! in process or, as TOML, for a coordinator process.

pub mod crowd;

use std::path::Path;
use std::time::Duration;

use berth_coordinator::config::Config;
use berth_coordinator::digitalocean::DigitalOceanConfig;
use berth_coordinator::droplet::DropletConfig;
use berth_proto::v1 as pb;
use tonic::transport::Channel;

use crate::TestDb;
use crate::cluster::{Bearer, TestCoordinator, eventually};
use crate::dosim::{DoSim, Scope};

/// The coordinator's DigitalOcean token in tests; no output may ever contain it.
pub const DO_TOKEN: &str = "dop_v1_berth_coordinator_secret_0123456789abcdef";

/// Polls every 50 ms, lookups 10 × 100 ms, waits of at most 30 s: the simulator's fast timings
/// settle within half a second.
pub fn fast_droplets() -> DropletConfig {
    DropletConfig {
        poll_interval_ms: 50,
        active_timeout_secs: 30,
        action_timeout_secs: 30,
        lookup_attempts: 10,
        lookup_interval_ms: 100,
    }
}

/// `[digitalocean]` for `sim`, reading the token from `token_file`: a generous budget (each
/// test's simulator keeps DigitalOcean's own limits) and retries at test speed.
pub fn digitalocean_section(sim: &DoSim, token_file: &Path) -> DigitalOceanConfig {
    let mut c = DigitalOceanConfig::for_url(&sim.url());
    c.provisioning_token_file = Some(token_file.to_owned());
    c.requests_per_minute = 60_000;
    c.burst = 200;
    c.max_pause_secs = 5;
    c.retry_initial_ms = 20;
    c.retry_max_ms = 200;
    c.request_timeout_secs = 10;
    c
}

/// Writes [`DO_TOKEN`] to `dir/do-token` and makes the simulator accept it.
pub fn write_token(sim: &DoSim, dir: &Path) -> std::path::PathBuf {
    sim.add_token(DO_TOKEN, Scope::ReadWrite);
    let path = dir.join("do-token");
    std::fs::write(&path, format!("{DO_TOKEN}\n")).expect("write the token file");
    path
}

/// The same sections as TOML, for a coordinator process's config file.
pub fn digitalocean_toml(sim: &DoSim, token_file: &Path, droplets: &DropletConfig) -> String {
    let d = digitalocean_section(sim, token_file);
    format!(
        "\n[digitalocean]\napi_url = \"{}\"\nprovisioning_token_file = \"{}\"\n\
         requests_per_minute = {}\nburst = {}\nmax_pause_secs = {}\nretry_initial_ms = {}\n\
         retry_max_ms = {}\nrequest_timeout_secs = {}\n\n[droplets]\npoll_interval_ms = {}\n\
         active_timeout_secs = {}\naction_timeout_secs = {}\nlookup_attempts = {}\n\
         lookup_interval_ms = {}\n",
        d.api_url,
        token_file.display(),
        d.requests_per_minute,
        d.burst,
        d.max_pause_secs,
        d.retry_initial_ms,
        d.retry_max_ms,
        d.request_timeout_secs,
        droplets.poll_interval_ms,
        droplets.active_timeout_secs,
        droplets.action_timeout_secs,
        droplets.lookup_attempts,
        droplets.lookup_interval_ms,
    )
}

type DropletClient = pb::droplet_service_client::DropletServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

impl TestCoordinator {
    /// A coordinator whose `[digitalocean]` points at `sim`, paced by [`fast_droplets`].
    pub async fn start_with_digitalocean(db: &TestDb, sim: &DoSim) -> TestCoordinator {
        Self::start_with_digitalocean_and(db, sim, |_| {}).await
    }

    /// The same, and `tweak` edits the config last.
    pub async fn start_with_digitalocean_and(
        db: &TestDb,
        sim: &DoSim,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCoordinator {
        Self::start_with(db, None, move |config| {
            // Beside the data directory, so a restart reads it again.
            let dir = config
                .data_dir
                .parent()
                .expect("data dir in a temp dir")
                .to_owned();
            let token_file = write_token(sim, &dir);
            config.digitalocean = Some(digitalocean_section(sim, &token_file));
            config.droplets = fast_droplets();
            tweak(config);
        })
        .await
    }

    /// A droplet client that sends `token`.
    pub async fn droplets_as(&self, token: &str) -> DropletClient {
        pb::droplet_service_client::DropletServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token),
        )
    }

    /// A droplet client with the admin token.
    pub async fn droplets(&self) -> DropletClient {
        self.droplets_as(&self.admin_token).await
    }

    /// Starts a saga of `kind` with `inputs` and returns its id.
    pub async fn start_saga(&self, kind: &str, inputs: serde_json::Value) -> String {
        self.sagas()
            .await
            .start_saga(pb::StartSagaRequest {
                kind: kind.to_owned(),
                inputs_json: inputs.to_string(),
                idempotency_key: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("start a {kind} saga: {s}"))
            .into_inner()
            .saga_id
    }

    /// The droplets as `ListDroplets` shows them (deleted ones too with `include_deleted`).
    pub async fn list_droplets(&self, include_deleted: bool) -> Vec<pb::Droplet> {
        self.droplets()
            .await
            .list_droplets(pb::ListDropletsRequest {
                tag: String::new(),
                include_deleted,
                page: None,
            })
            .await
            .expect("list droplets")
            .into_inner()
            .droplets
    }
}

/// Waits until the simulator holds no droplet and no snapshot (deleted ones linger a moment).
pub async fn wait_sim_empty(sim: &DoSim, timeout: Duration) {
    eventually(timeout, "the simulator to hold nothing", || async {
        (sim.droplets().is_empty() && sim.snapshots().is_empty()).then_some(())
    })
    .await;
}
