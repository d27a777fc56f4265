//! `berth droplet …` run in process against a coordinator and the simulator: provision and
//! snapshot with `--wait`, list as a table and as JSON, exit 7 for a saga that does not
//! complete, and arguments refused before anything is sent.

use berth_cli::exit;
use berth_tests::assert_contains;
use berth_tests::cli::{CliRun, berth_at};
use berth_tests::dosim::ActionFailure;
use berth_tests::{TestCoordinator, TestDb};

use super::sim;

async fn berth(c: &TestCoordinator, args: &[&str]) -> CliRun {
    berth_at(&c.url(), &c.admin_token, args).await
}

#[tokio::test]
async fn provision_snapshot_and_list_from_the_command_line() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;

    let run = berth(
        &c,
        &[
            "droplet",
            "provision",
            "--name",
            "cli-1",
            "--region",
            "fra1",
            "--size",
            "s-1vcpu-1gb",
            "--image",
            "ubuntu-24-04-x64",
            "--tag",
            "team:ops",
            "--wait",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}\n{}", run.stderr(), run.stdout);
    let saga_id = run.stdout.lines().next().unwrap();
    assert!(uuid::Uuid::parse_str(saga_id).is_ok(), "{}", run.stdout);
    assert_contains(&run.stdout, "is active at");
    let droplet = sim.droplets().pop().expect("a droplet");

    let run = berth(&c, &["droplet", "list", "--output", "json"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let listed = run.json();
    assert_eq!(listed["droplets"][0]["droplet_id"], droplet.id);
    assert_eq!(listed["droplets"][0]["region"], "fra1");
    assert_eq!(listed["droplets"][0]["tags"][2], "team:ops");

    let run = berth(&c, &["droplet", "list", "--tag", "team:ops"]).await;
    assert_eq!(run.code(), exit::OK);
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    assert!(
        run.stdout.contains("cli-1") && run.stdout.contains("fra1"),
        "{}",
        run.stdout
    );
    let run = berth(&c, &["droplet", "list", "--tag", "other"]).await;
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "only the header: {}",
        run.stdout
    );

    // A snapshot whose action errors: the saga is compensated, the command exits 7.
    sim.fail_next_action(ActionFailure {
        droplet: None,
        kind: Some("snapshot".into()),
    });
    let id = droplet.id.to_string();
    let id = id.as_str();
    let run = berth(&c, &["droplet", "snapshot", id, "--wait"]).await;
    assert_eq!(
        run.code(),
        exit::SAGA_NOT_COMPLETED,
        "{}\n{}",
        run.stderr(),
        run.stdout
    );
    assert_contains(run.stderr(), "did not complete");

    let run = berth(&c, &["droplet", "snapshot", id, "--output", "json"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.json()["kind"], "droplet.snapshot");

    let run = berth(&c, &["droplet", "resize", id, "--size", "S 2"]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    assert_contains(run.stderr(), "size_slug");
    sim.assert_no_violations();
}

/// A droplet id neither DigitalOcean nor the inventory knows is `NOT_FOUND` (exit 5) and
/// starts no saga; before, its destroy saga completed having destroyed nothing (exit 0).
#[tokio::test]
async fn destroying_a_droplet_that_never_existed_is_not_found() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let c = TestCoordinator::start_with_digitalocean(&db, &sim).await;
    let run = berth(&c, &["droplet", "destroy", "987654321", "--wait"]).await;
    assert_eq!(
        run.code(),
        exit::NOT_FOUND,
        "{}\n{}",
        run.stderr(),
        run.stdout
    );
    assert_contains(run.stderr(), "droplet 987654321 does not exist");
    assert_contains(run.stderr(), "berth droplet list");
    let sagas = berth(&c, &["sagas", "list", "--output", "json"]).await;
    assert_eq!(
        sagas.json()["sagas"],
        serde_json::json!([]),
        "no saga started"
    );

    // One that exists is destroyed; a retry with the same key gets the same saga; a second
    // destroy is NOT_FOUND too.
    let provision = [
        "droplet",
        "provision",
        "--name",
        "gone-1",
        "--region",
        "fra1",
        "--size",
        "s-1vcpu-1gb",
        "--image",
        "ubuntu-24-04-x64",
        "--wait",
    ];
    let run = berth(&c, &provision).await;
    assert_eq!(run.code(), exit::OK, "{}\n{}", run.stderr(), run.stdout);
    let id = sim.droplets().pop().expect("a droplet").id.to_string();
    let args = ["droplet", "destroy", &id, "--key", "destroy-once", "--wait"];
    let first = berth(&c, &args).await;
    assert_eq!(
        first.code(),
        exit::OK,
        "{}\n{}",
        first.stderr(),
        first.stdout
    );
    assert!(sim.droplet(id.parse().unwrap()).is_none(), "destroyed");
    let retry = berth(&c, &args).await;
    assert_eq!(retry.code(), exit::OK, "{}", retry.stderr());
    let saga = |run: &CliRun| run.stdout.lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        saga(&retry),
        saga(&first),
        "the retry gets the saga the key started"
    );
    let again = berth(&c, &["droplet", "destroy", &id]).await;
    assert_eq!(again.code(), exit::NOT_FOUND, "{}", again.stderr());
    assert_contains(again.stderr(), format!("droplet {id} no longer exists"));
}
