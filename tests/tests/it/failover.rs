//! Agent work under ordinary faults, with real processes: three coordinator replicas on one
//! PostgreSQL database and agents that move between them. Whichever replica owns a saga and
//! whichever holds the agent's stream, an agent step completes, and runs once.

mod chaos;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::assert_contains;
use berth_tests::docker::{Container, Volume};
use berth_tests::fleet::Fleet;
use berth_tests::process::SagaTiming;
use berth_tests::{SagaStatused, TestCoordinator, TestDb, eventually};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

/// A small seeded generator, so a run's choices can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every file under `root` (relative path → contents), for comparing trees.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Replaces `dir`'s contents with generation `gen` of some data: a few files whose names
/// and contents depend on `gen`.
pub fn fill(dir: &Path, r#gen: u64) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    std::fs::write(dir.join("gen"), r#gen.to_string()).unwrap();
    std::fs::create_dir_all(dir.join(format!("d{}", r#gen % 3))).unwrap();
    for i in 0..(3 + r#gen % 4) {
        std::fs::write(
            dir.join(format!("d{}/f{i}", r#gen % 3)),
            format!("{}-{i}", r#gen).repeat(100 + i as usize),
        )
        .unwrap();
    }
}

/// Writes `bytes` of incompressible data into `dir/big.bin`.
pub fn big_file(dir: &Path, bytes: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("big.bin")).unwrap();
    let mut rng = Rng::new(bytes as u64);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes.div_ceil(block.len()) {
        for chunk in block.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&block).unwrap();
    }
}

fn project() -> String {
    format!("berthfo{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn warm(host: &str, app: &str, stack: &str) -> Value {
    json!({"host_id": host, "app": app, "stack": stack})
}

/// How a chain spaces its rounds: not at all, or by a random pause (so chaos can strike
/// between and during them).
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Eager,
    Spread { min_ms: u64, max_ms: u64 },
}

impl Pace {
    async fn wait(self, rng: &mut Rng) {
        if let Pace::Spread { min_ms, max_ms } = self {
            let ms = min_ms + rng.below(max_ms - min_ms + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// One stack's warm chain: `rounds` times fill, snapshot, dirty, restore, check.
async fn warm_chain(
    fleet: &Fleet,
    host: &str,
    app: &str,
    rounds: u64,
    seed: u64,
    pace: Pace,
) -> Vec<String> {
    let stack = project();
    let vols = [
        Volume::create(&stack, "db"),
        Volume::create(&stack, "files"),
    ];
    let mut rng = Rng::new(seed);
    let mut ids = Vec::new();
    let n = fleet.coordinators.len() as u64;
    for round in 0..rounds {
        pace.wait(&mut rng).await;
        let r#gen = seed * 100 + round;
        for v in &vols {
            fill(&v.mountpoint, r#gen);
        }
        let want: Vec<_> = vols.iter().map(|v| tree(&v.mountpoint)).collect();
        let via = rng.below(n) as usize;
        let key = format!("{host}:{app}:{round}:snapshot");
        let id = fleet
            .start_saga_keyed(via, "warm.snapshot", &warm(host, app, &stack), &key)
            .await;
        fleet.assert_completes(&id, LONG).await;
        ids.push(id);
        for v in &vols {
            fill(&v.mountpoint, r#gen + 1_000_000);
        }
        let via = rng.below(n) as usize;
        let key = format!("{host}:{app}:{round}:restore");
        let id = fleet
            .start_saga_keyed(via, "warm.restore", &warm(host, app, &stack), &key)
            .await;
        fleet.assert_completes(&id, LONG).await;
        ids.push(id);
        for (v, want) in vols.iter().zip(&want) {
            assert_eq!(
                &tree(&v.mountpoint),
                want,
                "{} holds generation {}",
                v.name,
                r#gen
            );
        }
    }
    for v in &vols {
        assert_only_data(&v.mountpoint).await;
    }
    ids
}

/// Nothing but `_data` and its ready spare is left beside a volume's data (no staging, no old
/// contents), once background removals and spare builds are done.
async fn assert_only_data(mountpoint: &Path) {
    let dir = mountpoint.parent().unwrap();
    let kept = [
        "_data",
        "_data.berth-spare",
        "_data.berth-spare.json",
        "_data.berth-base",
        "_data.berth-base.json",
    ];
    let names = || -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !kept.contains(&n.as_str()))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !names().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        names(),
        Vec::<String>::new(),
        "left beside {}",
        dir.display()
    );
}

/// One app's archive chain: `rounds` times fill, create, restore under a new name, compare.
async fn archive_chain(
    fleet: &Fleet,
    agent: usize,
    app: &str,
    rounds: u64,
    seed: u64,
    pace: Pace,
) -> Vec<String> {
    let host = fleet.agents[agent].host_id.clone();
    let apps = fleet.agents[agent].apps_root();
    let dir = apps.join(app);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(seed);
    let n = fleet.coordinators.len() as u64;
    let mut ids = Vec::new();
    for round in 0..rounds {
        pace.wait(&mut rng).await;
        fill(&dir, seed * 100 + round);
        let via = rng.below(n) as usize;
        let key = format!("{host}:{app}:{round}:create");
        let create = fleet
            .start_saga_keyed(
                via,
                "archive.create",
                &json!({"host_id": host, "app": app}),
                &key,
            )
            .await;
        fleet.assert_completes(&create, LONG).await;
        let target = format!("{app}-r{round}");
        let via = rng.below(n) as usize;
        let key = format!("{host}:{app}:{round}:restore");
        let restore = fleet
            .start_saga_keyed(
                via,
                "archive.restore",
                &json!({"host_id": host, "uuid": create, "target_app": target}),
                &key,
            )
            .await;
        fleet.assert_completes(&restore, LONG).await;
        assert_eq!(
            tree(&apps.join(&target)),
            tree(&dir),
            "{target} equals {app}"
        );
        ids.push(create);
        ids.push(restore);
    }
    ids
}

/// Every agent step of these sagas ran once on its host, and that run succeeded.
fn assert_ran_once(fleet: &Fleet, ids: &[String]) {
    for id in ids {
        let runs: Vec<(u64, u64)> = fleet.agents.iter().map(|a| a.runs(id, 0)).collect();
        let total: u64 = runs.iter().map(|r| r.0).sum();
        let ok: u64 = runs.iter().map(|r| r.1).sum();
        assert_eq!((total, ok), (1, 1), "saga {id}: runs per agent {runs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sagas_started_through_any_replica_all_complete_and_each_task_runs_once() {
    let fleet = Fleet::start(3, 2, SagaTiming::default()).await;
    // Agents hold streams with different replicas.
    let a = fleet.connected_to("host-0").await;
    let b = fleet.connected_to("host-1").await;
    assert_ne!(a, b, "the two agents dial different replicas first");
    // 2 hosts × 3 stacks × 5 rounds: 30 warm snapshots and 30 warm restores; 2 hosts × 2
    // apps × 5 rounds: 20 archive create/restore pairs. The chains run side by side.
    type Chain<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + 'a>>;
    let fleet = &fleet;
    let mut chains: Vec<Chain<'_>> = Vec::new();
    for (h, host) in ["host-0", "host-1"].into_iter().enumerate() {
        for s in 0..3u64 {
            let app = format!("w{h}{s}");
            let seed = 10 + h as u64 * 10 + s;
            chains.push(Box::pin(async move {
                warm_chain(fleet, host, &app, 5, seed, Pace::Eager).await
            }));
        }
        for s in 0..2u64 {
            let app = format!("a{h}{s}");
            let seed = 50 + h as u64 * 10 + s;
            chains.push(Box::pin(async move {
                archive_chain(fleet, h, &app, 5, seed, Pace::Eager).await
            }));
        }
    }
    let ids: Vec<String> = futures::future::join_all(chains)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(ids.len(), 30 + 30 + 40);
    assert_ran_once(fleet, &ids);

    // Host queries work through every replica, whichever holds the host's stream.
    for c in &fleet.coordinators {
        let channel = tonic::transport::Endpoint::from_shared(c.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = berth_tests::cluster::Bearer::new(&fleet.admin_token);
        let mut hosts = pb::host_service_client::HostServiceClient::with_interceptor(
            channel.clone(),
            bearer.clone(),
        );
        for host in ["host-0", "host-1"] {
            let detail = hosts
                .get_host(pb::GetHostRequest {
                    host_id: host.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                detail.description.is_some(),
                "{host} described through {}: {}",
                c.name,
                detail.description_error
            );
        }
        let mut warm =
            pb::warm_service_client::WarmServiceClient::with_interceptor(channel, bearer);
        let listed = warm
            .list_warm_snapshots(pb::ListWarmSnapshotsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .snapshots;
        assert_eq!(listed.len(), 6, "every app's snapshot, through {}", c.name);
    }
}

/// Starts an archive create of host-0's app `big` (`bytes` of incompressible data) through
/// the last replica, and waits until the agent runs it.
async fn running_big_archive(fleet: &Fleet, bytes: usize) -> String {
    running_big_archive_to(fleet, bytes, &[]).await
}

/// [`running_big_archive`], sealed to `recipients` as well as the agent's own.
async fn running_big_archive_to(fleet: &Fleet, bytes: usize, recipients: &[String]) -> String {
    let dir = fleet.agents[0].apps_root().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    big_file(&dir, bytes);
    let inputs = json!({"host_id": "host-0", "app": "big", "recipients": recipients});
    let last = fleet.coordinators.len() - 1;
    let create = fleet.start_saga(last, "archive.create", &inputs).await;
    until_running(fleet, 0, &create).await;
    create
}

/// Waits until the agent has started the saga's step (its record says running).
async fn until_running(fleet: &Fleet, agent: usize, id: &str) {
    eventually(LONG, &format!("saga {id} to run on its agent"), || async {
        fleet.agents[agent]
            .task_records()
            .iter()
            .any(|r| r["saga_id"] == id && r["status"] == "running")
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_replica_killed_mid_task_the_agent_moves_on_and_the_task_runs_once() {
    let fleet = Fleet::start(3, 1, SagaTiming::default()).await;
    let stack = project();
    let vol = Volume::create(&stack, "db");
    fill(&vol.mountpoint, 1);
    let want = tree(&vol.mountpoint);
    // The app is still deployed: the snapshot waits on the agent for it to go away.
    let app = Container::mounting(&format!("{stack}_app"), &vol.name);
    let mut inputs = warm("host-0", "kc", &stack);
    inputs["wait_undeployed_secs"] = json!(300);
    let snapshot = fleet.start_saga(1, "warm.snapshot", &inputs).await;
    until_running(&fleet, 0, &snapshot).await;
    // An archive create beside it, on a big directory so it runs a while.
    let create = running_big_archive(&fleet, 96 << 20).await;

    let holder = fleet.connected_to("host-0").await.expect("connected");
    let i = fleet.replica(&holder);
    fleet.coordinators[i].kill9();
    let moved = eventually(LONG, "host-0 to reconnect to another replica", || async {
        fleet.connected_to("host-0").await.filter(|c| *c != holder)
    })
    .await;
    assert_ne!(moved, holder);
    drop(app);
    fleet.assert_completes(&snapshot, LONG).await;
    fleet.assert_completes(&create, LONG).await;
    assert_ran_once(&fleet, &[snapshot.clone(), create]);
    let warm_tar = fleet.agents[0]
        .warm_root()
        .join(format!("kc/snapshot/volumes/{}.tar", vol.name));
    assert!(warm_tar.is_file(), "the snapshot was written");
    assert_eq!(tree(&vol.mountpoint), want);
    fleet.coordinators[i].restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_owner_frozen_past_its_lease_does_not_cancel_the_agents_work() {
    let timing = SagaTiming::default();
    let fleet = Fleet::start(3, 1, timing).await;
    // A warm restore that waits on the agent for the app to be undeployed.
    let stack = project();
    let vol = Volume::create(&stack, "db");
    fill(&vol.mountpoint, 7);
    let want = tree(&vol.mountpoint);
    let snap = fleet
        .start_saga(0, "warm.snapshot", &warm("host-0", "kc", &stack))
        .await;
    fleet.assert_completes(&snap, LONG).await;
    fill(&vol.mountpoint, 8);
    let app = Container::mounting(&format!("{stack}_app"), &vol.name);
    let mut inputs = warm("host-0", "kc", &stack);
    inputs["wait_undeployed_secs"] = json!(300);
    let restore = fleet.start_saga(1, "warm.restore", &inputs).await;
    until_running(&fleet, 0, &restore).await;
    // And an archive create of a big directory, running.
    let create = running_big_archive(&fleet, 192 << 20).await;

    // Freeze every replica that owns one of them past the lease, then let them go on.
    let mut owners = Vec::new();
    for id in [&restore, &create] {
        let owner = eventually(LONG, "the saga to be held", || fleet.owner(id)).await;
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    let stopped: Vec<usize> = owners.iter().map(|o| fleet.replica(o)).collect();
    for &i in &stopped {
        fleet.coordinators[i].signal("-STOP");
    }
    let (state, _) = fleet.task_state(&create, 0).await.expect("task");
    assert_eq!(
        state, "open",
        "the archive was still running when its owner froze"
    );
    tokio::time::sleep(Duration::from_millis(timing.lease_ms * 3)).await;
    for &i in &stopped {
        fleet.coordinators[i].signal("-CONT");
    }
    drop(app);
    fleet.assert_completes(&restore, LONG).await;
    fleet.assert_completes(&create, LONG).await;
    assert_ran_once(&fleet, &[restore.clone(), create.clone()]);
    assert_eq!(tree(&vol.mountpoint), want);
    // The frozen owners lost the sagas: someone else claimed them (a higher epoch).
    for id in [&restore, &create] {
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM saga_runs WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
        assert!(epoch >= 2, "saga {id} was taken over (epoch {epoch})");
    }
}

#[tokio::test]
async fn a_restore_refused_because_the_stack_is_deployed_completes_after_undeploy_and_retry() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let agent = c.agent("ci-1").await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let stack = project();
    let vol = Volume::create(&stack, "db");
    fill(&vol.mountpoint, 3);
    let want = tree(&vol.mountpoint);
    let start = |kind: &'static str| {
        let c = &c;
        let stack = stack.clone();
        async move {
            c.sagas()
                .await
                .start_saga(pb::StartSagaRequest {
                    kind: kind.into(),
                    inputs_json: warm("ci-1", "kc", &stack).to_string(),
                    idempotency_key: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .saga_id
        }
    };
    let snap = start("warm.snapshot").await;
    assert_eq!(
        c.wait_saga(&snap, LONG).await.saga_status(),
        SagaStatus::Completed
    );
    fill(&vol.mountpoint, 4);
    let app = Container::mounting(&format!("{stack}_app"), &vol.name);
    let restore = start("warm.restore").await;
    let saga = c.wait_saga(&restore, LONG).await;
    assert_eq!(
        saga.saga_status(),
        SagaStatus::Failed,
        "left for an operator, not compensated"
    );
    assert!(
        saga.error.contains(&app.name),
        "names what runs: {}",
        saga.error
    );
    drop(app);
    c.sagas()
        .await
        .retry_saga(pb::SagaIdRequest {
            saga_id: restore.clone(),
            reason: "undeployed".into(),
        })
        .await
        .expect("retry");
    let saga = c.wait_saga(&restore, LONG).await;
    assert_eq!(saga.saga_status(), SagaStatus::Completed, "{}", saga.error);
    assert_eq!(tree(&vol.mountpoint), want);
}

#[tokio::test]
async fn a_saga_for_a_host_never_seen_is_refused_at_start() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    for kind in ["warm.restore", "warm.snapshot", "archive.create"] {
        let err = c
            .sagas()
            .await
            .start_saga(pb::StartSagaRequest {
                kind: kind.into(),
                inputs_json: json!({"host_id": "nowhere-1", "app": "kc", "stack": "kc"})
                    .to_string(),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::NotFound, "{kind}: {err}");
        assert_contains(err.message(), "nowhere-1");
        assert_contains(err.message(), "berth hosts list");
    }
    let listed = c
        .sagas()
        .await
        .list_sagas(pb::ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sagas.is_empty(), "nothing was written");
}

#[tokio::test]
async fn an_operators_cancel_reaches_the_agent_at_once_and_the_answer_is_the_outcome() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start_with(&db, None, |config| {
        // Renewals rarely: the cancel must not wait for one.
        config.sagas.lease_ms = 60_000;
        config.sagas.renew_ms = 30_000;
    })
    .await;
    let agent = c.agent("ci-1").await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let stack = project();
    let vol = Volume::create(&stack, "db");
    fill(&vol.mountpoint, 1);
    let _app = Container::mounting(&format!("{stack}_app"), &vol.name);
    let mut inputs = warm("ci-1", "kc", &stack);
    inputs["wait_undeployed_secs"] = json!(600);
    let id = c
        .sagas()
        .await
        .start_saga(pb::StartSagaRequest {
            kind: "warm.snapshot".into(),
            inputs_json: inputs.to_string(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga_id;
    c.wait_step(&id, 0, StepStatus::Running, LONG).await;
    let record = agent.state_dir().join(format!("tasks/{id}-0.json"));
    eventually(LONG, "the agent to run the task", || async {
        std::fs::read_to_string(&record)
            .is_ok_and(|r| r.contains("\"running\""))
            .then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let saga = c
        .sagas()
        .await
        .cancel_saga(pb::SagaIdRequest {
            saga_id: id.clone(),
            reason: "wrong app".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(
        saga.saga_status(),
        SagaStatus::Cancelled,
        "the answer shows the outcome"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancel did not wait for a lease renewal: {:?}",
        started.elapsed()
    );
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(rec["status"], "done");
    assert!(
        rec["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("cancelled by an operator"),
        "{rec}"
    );
    assert!(
        !agent.dir.path().join("warm/kc/snapshot").exists(),
        "no snapshot was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_away_for_two_minutes_mid_archive_comes_back_and_the_saga_completes() {
    // Before, a step gave up on a host that was away for about 45 s.
    let timing = SagaTiming {
        agent_offline_wait_secs: 300,
        ..SagaTiming::default()
    };
    let fleet = Fleet::start(2, 1, timing).await;
    let create = running_big_archive(&fleet, 128 << 20).await;
    fleet.agents[0].kill9();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (status, _) = fleet.saga(&create).await;
    assert_eq!(status, SagaStatus::Running, "still waiting for the host");
    fleet.agents[0].restart();
    fleet.assert_completes(&create, LONG).await;
    // The cut run and the one that finished; one success.
    assert_eq!(fleet.agents[0].runs(&create, 0), (2, 1));
    let phases: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM saga_events WHERE saga_id = $1 AND kind = 'step_progress'",
    )
    .bind(create.as_str())
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    assert!(
        phases
            .iter()
            .any(|p| p.starts_with("waiting for host host-0")),
        "the history says what the step waits for: {phases:?}"
    );
    // One archive object and its metadata, nothing else.
    let names: Vec<String> = std::fs::read_dir(fleet.archives.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "_metadata")
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(&format!("big:{create}:")), "{names:?}");
    assert!(
        fleet
            .archives
            .path()
            .join("_metadata")
            .join(&create)
            .is_file()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_cut_by_an_agent_kill_leaves_no_upload_once_cancelled_nor_after_a_restart() {
    archive_cut_by_an_agent_kill(None).await;
}

/// The same with each create sealed to an age recipient: the kill lands while the encryption
/// stage streams, and the next archive is stored sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_archive_cut_by_an_agent_kill_leaves_no_upload_and_the_next_is_sealed() {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    archive_cut_by_an_agent_kill(Some(recipient)).await;
}

/// An archive create killed with its agent mid-upload, then cancelled: no upload is left
/// pending, none comes back with the agent, and the next create of the app is stored (sealed
/// to `recipient` when there is one).
async fn archive_cut_by_an_agent_kill(recipient: Option<String>) {
    let s3 = berth_tests::s3::S3Server::start().await;
    let fleet =
        Fleet::start_with_archive(2, 1, SagaTiming::default(), Some(s3.archive_toml("fo"))).await;
    let recipients: Vec<String> = recipient.iter().cloned().collect();
    let create = running_big_archive_to(&fleet, 96 << 20, &recipients).await;
    let mine = || async {
        s3.uploads("fo")
            .await
            .into_iter()
            .filter(|u| u.key.contains(&create))
            .count()
    };
    eventually(LONG, "the archive's upload to start", || async {
        (mine().await > 0).then_some(())
    })
    .await;
    fleet.agents[0].kill9();
    let saga = fleet.coordinators[0]
        .sagas(&fleet.admin_token)
        .await
        .cancel_saga(pb::SagaIdRequest {
            saga_id: create.clone(),
            reason: "host is gone".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(saga.saga_status(), SagaStatus::Cancelled, "{saga:?}");
    assert_eq!(
        mine().await,
        0,
        "no upload left pending once the saga ended"
    );
    fleet.agents[0].restart();
    fleet.wait_online("host-0", LONG).await;
    assert_eq!(mine().await, 0, "none after the agent is back either");
    // The next create of the app succeeds.
    std::fs::remove_file(fleet.agents[0].apps_root().join("big/big.bin")).unwrap();
    fill(&fleet.agents[0].apps_root().join("big"), 5);
    let again = fleet
        .start_saga(
            0,
            "archive.create",
            &json!({"host_id": "host-0", "app": "big", "recipients": recipients}),
        )
        .await;
    fleet.assert_completes(&again, LONG).await;
    let keys = s3.keys().await;
    let stored = keys
        .iter()
        .find(|k| k.contains(&format!("big:{again}:")))
        .unwrap_or_else(|| panic!("the next archive is stored: {keys:?}"));
    let meta = s3.metadata("fo", &again).await;
    let object = s3.object(stored).await;
    match recipient {
        Some(r) => {
            assert_eq!(meta["encryption"], "age", "{meta}");
            assert_eq!(meta["recipients"], json!([r]), "{meta}");
            assert!(
                object.starts_with(b"age-encryption.org/v1\n"),
                "the object is an age file"
            );
        }
        None => {
            assert!(meta.get("encryption").is_none(), "{meta}");
            assert!(
                object.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
                "a zstd frame"
            );
        }
    }
}
