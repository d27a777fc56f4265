//! Many provision sagas at once against one rate-limited token, with DigitalOcean's delays and
//! limits scaled in time so a run takes seconds: what the crowd test asserts and the
//! `droplet-bench` benchmark reports (API calls per saga, polls per wait, refusals).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_coordinator::config::Config;
use berth_proto::v1 as pb;
use berth_shared::saga::SagaStatus;
use futures::future::join_all;

use crate::SagaStatused;
use crate::cluster::TestCoordinator;
use crate::dosim::{DoSim, RateLimits, SimConfig, Timings};

/// DigitalOcean's realistic delays and its 250-a-minute, 5,000-an-hour limits, `scale` times
/// faster (scale 60: a minute lasts a second).
pub fn scaled_sim(scale: f64) -> SimConfig {
    let real = RateLimits::digitalocean();
    SimConfig {
        timings: Timings::realistic().accelerated(scale),
        rate_limits: RateLimits {
            burst_window: real.burst_window.div_f64(scale),
            long_window: real.long_window.div_f64(scale),
            ..real
        },
        ..SimConfig::fast()
    }
}

/// The production defaults of `[digitalocean]` and `[droplets]`, `scale` times faster, and an
/// engine that runs `sagas` at once.
pub fn scale_config(config: &mut Config, scale: f64, sagas: usize) {
    let ms = |real_ms: f64| ((real_ms / scale).round() as u64).max(1);
    let d = config
        .digitalocean
        .as_mut()
        .expect("a [digitalocean] section");
    d.requests_per_minute = (240.0 * scale) as u32;
    d.burst = 10;
    d.max_pause_secs = (60.0 / scale).ceil() as u64;
    d.retry_initial_ms = ms(1000.0);
    d.retry_max_ms = ms(30_000.0);
    config.droplets.poll_interval_ms = ms(5000.0);
    config.droplets.lookup_interval_ms = ms(5000.0);
    config.droplets.lookup_attempts = 12;
    config.droplets.active_timeout_secs = (600.0 / scale).ceil().max(30.0) as u64;
    config.droplets.action_timeout_secs = (7200.0 / scale).ceil().max(30.0) as u64;
    config.sagas.max_concurrent = sagas.max(32);
}

/// What a crowd run did.
#[derive(Debug, Clone)]
pub struct CrowdReport {
    pub sagas: usize,
    pub completed: usize,
    pub elapsed: Duration,
    /// Requests the simulator received per operation.
    pub calls: BTreeMap<String, usize>,
    /// Requests refused with 429.
    pub refused: usize,
    /// `WaitDropletActive`'s looks (create action, then droplet), per completed saga.
    pub polls: Vec<u64>,
    /// The looks a fixed poll interval needs at zero latency: ceil(time to active with an
    /// address / poll interval). The goal is at most 2 more per wait.
    pub min_polls: u64,
}

impl CrowdReport {
    pub fn total_calls(&self) -> usize {
        self.calls.values().sum()
    }

    pub fn calls_per_saga(&self) -> f64 {
        self.total_calls() as f64 / self.sagas.max(1) as f64
    }

    pub fn max_polls(&self) -> u64 {
        self.polls.iter().copied().max().unwrap_or(0)
    }

    pub fn mean_polls(&self) -> f64 {
        self.polls.iter().sum::<u64>() as f64 / self.polls.len().max(1) as f64
    }
}

/// Starts `n` provision sagas at once through the API, waits for all of them to end (within
/// `timeout`) and reports.
pub async fn provision_crowd(
    c: &TestCoordinator,
    sim: &DoSim,
    n: usize,
    timeout: Duration,
) -> CrowdReport {
    sim.clear_log();
    let start = Instant::now();
    let starts = (0..n).map(|i| async move {
        let mut client = c.droplets().await;
        client
            .provision_droplet(pb::ProvisionDropletRequest {
                name: format!("crowd-{i}"),
                region: "nyc3".into(),
                size_slug: "s-1vcpu-1gb".into(),
                image: "ubuntu-24-04-x64".into(),
                idempotency_key: format!("crowd-{i}"),
                ..Default::default()
            })
            .await
            .expect("start a provision saga")
            .into_inner()
            .saga_id
    });
    let ids = join_all(starts).await;
    let sagas = join_all(ids.iter().map(|id| c.wait_saga(id, timeout))).await;
    let elapsed = start.elapsed();
    let t = sim.config().timings;
    let poll = Duration::from_millis(c.config.droplets.poll_interval_ms);
    let ready = t.active_after + t.ipv4_after_active;
    let polls = sagas
        .iter()
        .filter(|s| s.saga_status() == SagaStatus::Completed)
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.steps[1].output_json).ok())
        .filter_map(|o| o["polls"].as_u64())
        .collect();
    CrowdReport {
        sagas: n,
        completed: sagas
            .iter()
            .filter(|s| s.saga_status() == SagaStatus::Completed)
            .count(),
        elapsed,
        calls: sim.calls_by_op(),
        refused: sim.count_status(429),
        polls,
        min_polls: ready.as_nanos().div_ceil(poll.as_nanos()) as u64,
    }
}

/// One line per figure, for the benchmark and for failure messages.
pub fn describe(r: &CrowdReport) -> String {
    let mut out = format!(
        "{} of {} sagas completed in {:.2} s; {} API calls ({:.1} per saga), {} refused (429)\n\
         WaitDropletActive looks per saga: mean {:.2}, max {}; delay/interval rounded up: {}\n",
        r.completed,
        r.sagas,
        r.elapsed.as_secs_f64(),
        r.total_calls(),
        r.calls_per_saga(),
        r.refused,
        r.mean_polls(),
        r.max_polls(),
        r.min_polls,
    );
    for (op, n) in &r.calls {
        out.push_str(&format!(
            "  {op:<24} {n:>6}  ({:.2} per saga)\n",
            *n as f64 / r.sagas.max(1) as f64
        ));
    }
    out
}
