//! `berth drift …` run in process against a coordinator and the simulator: sync, spec, list,
//! accept, history as JSON and tables; an operator token exits with the auth code.

use berth_cli::exit;
use berth_shared::Role;
use berth_tests::TestDb;
use berth_tests::assert_contains;
use berth_tests::cli::berth_at;

use super::{coordinator, sim};

#[tokio::test]
async fn the_drift_inbox_from_the_command_line() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let id = sim.seed_droplets(1, &[])[0].to_string();
    let c = coordinator(&db, &sim).await;
    let berth = |args: Vec<&str>| {
        let url = c.url();
        let token = c.admin_token.clone();
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            berth_at(&url, &token, &args).await
        }
    };

    let run = berth(vec!["drift", "sync", "--output", "json"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.json()["created"], 1);

    let spec = r#"{"size_slug": "s-2vcpu-2gb"}"#;
    let run = berth(vec!["drift", "spec", &id, spec]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_contains(&run.stdout, "version");

    let run = berth(vec!["drift", "sync"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_contains(&run.stdout, "1 opened");

    let run = berth(vec!["drift", "list", "--output", "json"]).await;
    let drift = run.json()["drift"].as_array().unwrap().clone();
    assert_eq!(drift.len(), 1, "{}", run.stdout);
    assert_eq!(drift[0]["field"], "size_slug");
    assert_eq!(drift[0]["actual"], "s-1vcpu-1gb");
    let drift_id = drift[0]["drift_id"].as_str().unwrap().to_owned();
    let table = berth(vec!["drift", "list"]).await.stdout;
    assert!(
        table.starts_with("ID") && table.contains(&drift_id),
        "{table}"
    );

    let run = berth(vec![
        "drift", "accept", &drift_id, "--reason", "fine", "--output", "json",
    ])
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.json()["status"], "accepted");

    let run = berth(vec!["drift", "list", "--all", "--output", "json"]).await;
    assert_eq!(run.json()["drift"][0]["status"], "accepted");
    let run = berth(vec!["drift", "history", &id, "--output", "json"]).await;
    let kinds: Vec<String> = run.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "spec_recorded",
            "drift_detected",
            "spec_recorded",
            "drift_accepted"
        ]
    );

    // Refused before anything is sent; an operator is refused by the coordinator.
    let run = berth(vec!["drift", "revert", "not-a-drift-id"]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    let operator = c.token(Role::Operator, None).await;
    let run = berth_at(&c.url(), &operator, &["drift", "list"]).await;
    assert_eq!(run.code(), exit::AUTH, "{}", run.stderr());
}
