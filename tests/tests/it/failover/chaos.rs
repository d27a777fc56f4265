//! Chaos, seeded and replayable: three coordinator replicas on PostgreSQL and two agents run
//! warm and archive chains while replicas are killed (`kill -9`) or frozen past their lease
//! (SIGSTOP, then SIGCONT) and agents are killed and restarted, at random.
//!
//! `BERTH_CHAOS_SEED` replays a run; `BERTH_CHAOS_SAGAS` sets its size (60 by default, 200
//! for the full run in the README).

use std::time::Duration;

use berth_tests::fleet::Fleet;
use berth_tests::process::SagaTiming;
use tokio_util::sync::CancellationToken;

use super::{Pace, Rng, archive_chain, warm_chain};

/// Rounds are spread out so that faults land between and during them.
const PACE: Pace = Pace::Spread {
    min_ms: 1_000,
    max_ms: 2_500,
};

/// What the chaos did, for the report and the check that it did something.
#[derive(Debug, Default)]
struct Done {
    coordinator_kills: u32,
    freezes: u32,
    agent_kills: u32,
}

async fn chaos(fleet: &Fleet, seed: u64, lease_ms: u64, stop: CancellationToken) -> Done {
    let mut rng = Rng::new(seed ^ 0xc4a05);
    let mut done = Done::default();
    let nc = fleet.coordinators.len() as u64;
    let na = fleet.agents.len() as u64;
    let pause = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    while !stop.is_cancelled() {
        tokio::select! {
            () = pause(200 + rng.below(800)) => {}
            () = stop.cancelled() => break,
        }
        match rng.below(3) {
            0 => {
                let c = &fleet.coordinators[rng.below(nc) as usize];
                c.kill9();
                done.coordinator_kills += 1;
                pause(rng.below(1500)).await;
                c.restart().await;
            }
            1 => {
                let c = &fleet.coordinators[rng.below(nc) as usize];
                c.signal("-STOP");
                done.freezes += 1;
                pause(lease_ms * 2 + rng.below(lease_ms)).await;
                c.signal("-CONT");
            }
            _ => {
                let a = &fleet.agents[rng.below(na) as usize];
                a.kill9();
                done.agent_kills += 1;
                pause(rng.below(2000)).await;
                a.restart();
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_agent_sagas_complete_once_while_replicas_and_agents_die_at_random() {
    let seed: u64 = std::env::var("BERTH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| berth_shared::time::unix_ms(std::time::SystemTime::now()) as u64 | 1);
    let sagas: u64 = std::env::var("BERTH_CHAOS_SAGAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!(
        "agent chaos seed {seed}, {sagas} sagas (replay with BERTH_CHAOS_SEED={seed} BERTH_CHAOS_SAGAS={sagas})"
    );
    let timing = SagaTiming {
        lease_ms: 1_500,
        renew_ms: 300,
        // Takeovers are the point here; only a saga that never moves should pause.
        max_reclaims: 1_000,
        agent_offline_wait_secs: 300,
    };
    let fleet = Fleet::start(3, 2, timing).await;
    let fleet = &fleet;
    // Ten chains side by side (per host: three warm stacks, two archive apps); each round of
    // a chain is two sagas.
    let rounds = sagas.div_ceil(20).max(1);
    type Chain<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + 'a>>;
    let mut chains: Vec<Chain<'_>> = Vec::new();
    for (h, host) in ["host-0", "host-1"].into_iter().enumerate() {
        for s in 0..3u64 {
            let app = format!("cw{h}{s}");
            let chain_seed = seed.wrapping_add(h as u64 * 10 + s);
            chains.push(Box::pin(async move {
                warm_chain(fleet, host, &app, rounds, chain_seed % 1_000, PACE).await
            }));
        }
        for s in 0..2u64 {
            let app = format!("ca{h}{s}");
            let chain_seed = seed.wrapping_add(50 + h as u64 * 10 + s);
            chains.push(Box::pin(async move {
                archive_chain(fleet, h, &app, rounds, chain_seed % 1_000, PACE).await
            }));
        }
    }
    let stop = CancellationToken::new();
    let monkey = chaos(fleet, seed, timing.lease_ms, stop.clone());
    let work = async {
        let ids: Vec<String> = futures::future::join_all(chains)
            .await
            .into_iter()
            .flatten()
            .collect();
        stop.cancel();
        ids
    };
    let (ids, done) = tokio::join!(work, monkey);
    eprintln!("agent chaos: {} sagas, {done:?}", ids.len());
    assert_eq!(ids.len() as u64, rounds * 20);
    assert!(
        done.coordinator_kills + done.freezes + done.agent_kills >= 3,
        "seed {seed}: the sagas finished before the chaos really started: {done:?}"
    );
    // No agent step succeeded twice, and every step succeeded once somewhere.
    for id in &ids {
        let runs: Vec<(u64, u64)> = fleet.agents.iter().map(|a| a.runs(id, 0)).collect();
        let ok: u64 = runs.iter().map(|r| r.1).sum();
        assert_eq!(
            ok, 1,
            "seed {seed}: saga {id} succeeded {ok} times: {runs:?}"
        );
    }
    // Every archive object has its metadata, and no archive was stored twice.
    let mut uuids = std::collections::BTreeMap::<String, u32>::new();
    for e in std::fs::read_dir(fleet.archives.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "_metadata" {
            continue;
        }
        assert!(
            !name.contains('#'),
            "seed {seed}: an upload left behind: {name}"
        );
        let uuid = name.split(':').nth(1).expect("an archive key").to_owned();
        assert!(
            fleet
                .archives
                .path()
                .join("_metadata")
                .join(&uuid)
                .is_file(),
            "seed {seed}: {name} has no metadata"
        );
        *uuids.entry(uuid).or_default() += 1;
    }
    assert!(
        uuids.values().all(|&n| n == 1),
        "seed {seed}: archives stored twice: {uuids:?}"
    );
    // Nothing staged is left in the warm roots or the apps roots.
    for a in &fleet.agents {
        for root in [a.warm_root(), a.apps_root()] {
            for e in walk(&root, 2) {
                let n = e.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    !(n.contains(".berth-") || n.contains("staging")),
                    "seed {seed}: left behind: {}",
                    e.display()
                );
            }
        }
    }
}

/// Paths under `root`, `depth` levels down.
fn walk(root: &std::path::Path, depth: u32) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if depth > 1 && e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p, depth - 1));
        }
        out.push(p);
    }
    out
}
