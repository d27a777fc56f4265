//! End to end: `berth warm snapshot|restore --wait` from the CLI through the coordinator's
//! saga engine to the agent on the host and back, with the real Docker engine's volumes.

use std::time::Duration;

use berth_tests::cli::berth_at;
use berth_tests::docker::{Container, Volume};
use berth_tests::{TestCoordinator, TestDb};

#[tokio::test]
async fn a_ci_runner_restores_an_apps_last_known_good_volumes_from_the_cli() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let agent = c.agent("ci-runner-1").await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let project = format!(
        "berthe2e{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let db_vol = Volume::create(&project, "db");
    let data_vol = Volume::create(&project, "data");
    std::fs::write(db_vol.mountpoint.join("PG_VERSION"), "15\n").unwrap();
    std::fs::create_dir_all(data_vol.mountpoint.join("uploads/2026")).unwrap();
    std::fs::write(
        data_vol.mountpoint.join("uploads/2026/a.txt"),
        vec![b'a'; 300_000],
    )
    .unwrap();

    let ci = c.token(berth_shared::Role::Ci, None).await;
    let operator = c.token(berth_shared::Role::Operator, None).await;
    let url = c.url();
    let target = [
        "--host",
        "ci-runner-1",
        "--app",
        "keycloak",
        "--stack",
        project.as_str(),
    ];
    let snap: Vec<&str> = ["warm", "snapshot"]
        .into_iter()
        .chain(target)
        .chain(["--version", "1.2.3", "--wait"])
        .collect();
    let run = berth_at(&url, &operator, &snap).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());

    let warm = agent.dir.path().join("warm/keycloak/snapshot");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(warm.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["version"], "1.2.3");
    assert!(warm.join(format!("volumes/{}.tar", db_vol.name)).is_file());

    let list = berth_at(
        &url,
        &ci,
        &["--output", "json", "warm", "list", "--host", "ci-runner-1"],
    )
    .await;
    assert_eq!(list.code(), 0, "{}", list.stderr());
    let listed = list.json();
    assert_eq!(listed[0]["app"], "keycloak");
    assert_eq!(listed[0]["complete"], true);

    // The test run dirties the data; the CI runner asks for the last-known-good back.
    std::fs::write(db_vol.mountpoint.join("PG_VERSION"), "dirty\n").unwrap();
    std::fs::write(data_vol.mountpoint.join("junk"), "x").unwrap();
    let restore: Vec<&str> = ["warm", "restore"]
        .into_iter()
        .chain(target)
        .chain(["--wait"])
        .collect();
    let run = berth_at(&url, &ci, &restore).await;
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr());
    assert!(
        run.stdout.contains("step_succeeded"),
        "plain progress lines in CI logs:\n{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(db_vol.mountpoint.join("PG_VERSION")).unwrap(),
        "15\n"
    );
    assert!(
        !data_vol.mountpoint.join("junk").exists(),
        "nothing of the dirty run is left"
    );
    assert_eq!(
        std::fs::read(data_vol.mountpoint.join("uploads/2026/a.txt"))
            .unwrap()
            .len(),
        300_000
    );

    // The saga's history carries the agent's progress reports.
    let saga_id = run.stdout.lines().next().unwrap().trim().to_owned();
    let progress: Vec<_> = c
        .history(&saga_id)
        .await
        .into_iter()
        .filter_map(|e| e.progress)
        .collect();
    let last = progress
        .last()
        .expect("progress events reached the saga's history");
    assert!(
        last.bytes_total >= 300_000 && last.entries_total >= 2,
        "{last:?}"
    );

    // A deployed app is refused, naming what runs, and the CLI exits 7 with the reason.
    {
        let name = format!("{project}_app");
        let app = Container::mounting(&name, &db_vol.name);
        let run = berth_at(&url, &ci, &restore).await;
        drop(app);
        assert_eq!(run.code(), 7, "{}\n{}", run.stdout, run.stderr());
        assert!(
            run.stdout.contains(&name) || run.stderr().contains(&name),
            "names the running container:\n{}\n{}",
            run.stdout,
            run.stderr()
        );
    }
}
