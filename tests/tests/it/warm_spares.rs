//! Ready spares end to end: `berth warm snapshot|list|restore --wait` from the CLI through
//! the coordinator to an agent and the real Docker engine's volumes, and a real agent process
//! killed in the middle of a spare build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_shared::Role;
use berth_tests::cli::berth_at;
use berth_tests::docker::Volume;
use berth_tests::process::AgentProcess;
use berth_tests::{TestAgent, TestCoordinator, TestDb, eventually};

/// Everything a restore must bring back: every entry's name, type, mode, numeric owner,
/// mtime (to the second, as a warm snapshot's GNU tar records it), size, link count and link
/// target, and every file's contents.
fn manifest(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && find . -printf '%p %y %m %U:%G %Ts %s %n %l\\n' | sort && \
             find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
        )
        .arg("manifest")
        .arg(dir)
        .output()
        .expect("find, sort and sha256sum");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fill(root: &Path) {
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    std::fs::create_dir_all(root.join("pg/base")).unwrap();
    std::fs::write(root.join("pg/PG_VERSION"), "15\n").unwrap();
    std::fs::write(root.join("pg/base/1"), vec![3u8; 2 << 20]).unwrap();
    lchown(root.join("pg"), Some(70), Some(70)).unwrap();
    std::fs::set_permissions(root.join("pg"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::hard_link(root.join("pg/PG_VERSION"), root.join("pg/VERSION.link")).unwrap();
    symlink("pg/PG_VERSION", root.join("current")).unwrap();
}

fn project(tag: &str) -> String {
    format!(
        "berth{tag}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The spare column of `warm list` for `app` on `host`.
async fn spare_listed(url: &str, token: &str, host: &str, app: &str) -> String {
    let run = berth_at(
        url,
        token,
        &[
            "--output", "json", "warm", "list", "--host", host, "--app", app,
        ],
    )
    .await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    run.json()[0]["spare"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_ci_runner_gets_its_ready_spare_swapped_in_and_the_next_one_is_rebuilt() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let agent_token = c.token(Role::Agent, Some("ci-spare-1")).await;
    let agent = TestAgent::start(&c, "ci-spare-1", &agent_token, |config| {
        config.warm.spare_min_free_bytes = 0;
    })
    .await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let project = project("sp");
    let data = Volume::create(&project, "data");
    fill(&data.mountpoint);
    let snapshot = manifest(&data.mountpoint);

    let operator = c.token(Role::Operator, None).await;
    let ci = c.token(Role::Ci, None).await;
    let url = c.url();
    let target = [
        "--host",
        "ci-spare-1",
        "--app",
        "pg",
        "--stack",
        project.as_str(),
    ];
    let snap: Vec<&str> = ["warm", "snapshot"]
        .into_iter()
        .chain(target)
        .chain(["--wait"])
        .collect();
    let run = berth_at(&url, &operator, &snap).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    eventually(Duration::from_secs(60), "the spare to be ready", || async {
        (spare_listed(&url, &ci, "ci-spare-1", "pg").await == "ready").then_some(())
    })
    .await;

    // The test run dirties the volume; the runner asks for its last-known-good.
    std::fs::write(data.mountpoint.join("pg/PG_VERSION"), "dirty\n").unwrap();
    std::fs::remove_file(data.mountpoint.join("current")).unwrap();
    std::fs::write(data.mountpoint.join("junk"), "x").unwrap();
    let restore: Vec<&str> = ["warm", "restore"]
        .into_iter()
        .chain(target)
        .chain(["--wait"])
        .collect();
    let run = berth_at(&url, &ci, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    let line = format!("restored {}: spare, swapped in", data.name);
    assert!(
        run.stdout.contains(&line),
        "the CLI says how:\n{}",
        run.stdout
    );
    assert_eq!(
        manifest(&data.mountpoint),
        snapshot,
        "the volume equals the snapshot exactly"
    );
    let saga_id = run.stdout.lines().next().unwrap().trim().to_owned();
    let saga = c.get_saga(&saga_id).await;
    let output: serde_json::Value = serde_json::from_str(&saga.steps[0].output_json).unwrap();
    assert_eq!(output["volumes"][0]["method"], "spare", "{output}");
    assert!(
        output["volumes"][0]["swap_us"].as_u64().is_some(),
        "{output}"
    );
    assert!(
        output["volumes"][0]["spare_age_secs"].as_u64().is_some(),
        "{output}"
    );

    // The next spare is rebuilt, and holds the snapshot again.
    eventually(
        Duration::from_secs(60),
        "the next spare to be ready",
        || async { (spare_listed(&url, &ci, "ci-spare-1", "pg").await == "ready").then_some(()) },
    )
    .await;
    assert_eq!(
        manifest(&data.mountpoint.with_file_name("_data.berth-spare")),
        snapshot
    );
}

/// The staging dirs beside a volume's `_data` (a spare being built is one).
fn staging_beside(mountpoint: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(mountpoint.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("._data~berth~")
        })
        .collect()
}

#[tokio::test]
async fn an_agent_killed_mid_build_discards_the_half_spare_at_start() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let token = c.token(Role::Agent, Some("spare-kill-1")).await;
    let archives = tempfile::tempdir().unwrap();
    // 1 MiB/s: the build of ~8 MiB takes seconds, long enough to be killed in the middle.
    let toml = format!(
        "store_url = {:?}\n\n[warm]\nspare_max_mib_per_sec = 1\nspare_min_free_bytes = 0\n",
        format!("file://{}", archives.path().display())
    );
    let agent = AgentProcess::start("spare-kill-1", &[c.url()], &token, &toml);
    c.wait_host("spare-kill-1", true, Duration::from_secs(20))
        .await;
    let project = project("sk");
    let data = Volume::create(&project, "data");
    for i in 0..8 {
        std::fs::write(
            data.mountpoint.join(format!("part{i}")),
            vec![i as u8; 1 << 20],
        )
        .unwrap();
    }
    let snapshot = manifest(&data.mountpoint);
    let operator = c.token(Role::Operator, None).await;
    let snap = [
        "warm",
        "snapshot",
        "--host",
        "spare-kill-1",
        "--app",
        "sk",
        "--stack",
        &project,
        "--wait",
    ];
    let run = berth_at(&c.url(), &operator, &snap).await;
    assert_eq!(
        run.code(),
        0,
        "{}\n{}\n{}",
        run.stdout,
        run.stderr(),
        agent.log()
    );

    let half = eventually(
        Duration::from_secs(30),
        "a spare build to start",
        || async { staging_beside(&data.mountpoint).into_iter().next() },
    )
    .await;
    agent.kill9();
    assert!(half.is_dir(), "the half-built spare is left by the kill");
    assert!(!data.mountpoint.with_file_name("_data.berth-spare").exists());

    agent.restart();
    eventually(
        Duration::from_secs(30),
        "the half-built spare to be removed at start",
        || async { (!half.exists()).then_some(()) },
    )
    .await;
    assert!(
        agent.log().contains("removing what a dead restore left"),
        "{}",
        agent.log()
    );
    // The restarted agent builds the spare again, whole.
    let stamp = data.mountpoint.with_file_name("_data.berth-spare.json");
    eventually(
        Duration::from_secs(60),
        "the spare to be rebuilt",
        || async { stamp.exists().then_some(()) },
    )
    .await;
    assert_eq!(
        manifest(&data.mountpoint.with_file_name("_data.berth-spare")),
        snapshot
    );
}
