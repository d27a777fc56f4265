//! `berth hosts list|show` against the fake: output, auth failures, unreachable coordinators.

use berth_cli::ProcessEnv;
use berth_cli::exit;

use crate::fake::{ADMIN_TOKEN, CI_TOKEN, FakeCoordinator};
use crate::{berth, env_token};

#[tokio::test]
async fn hosts_list_prints_an_aligned_table() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "hosts", "list"],
        env_token(CI_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(
        lines[0],
        "HOST ID      HOSTNAME             STATUS   LAST HEARTBEAT  AGENT  DOCKER"
    );
    assert!(
        lines[1].starts_with("h1           h1.example.org       online   "),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with("0.1.0  27.3.1"), "{}", lines[1]);
    assert!(lines[1].contains(" ago "), "{}", lines[1]);
    assert!(
        lines[2].starts_with("ci-runner-2  runner2.example.org  offline  3h ago"),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with("0.1.0  -"), "{}", lines[2]);
    assert_eq!(fake.seen().calls, ["ListHosts"]);
}

#[tokio::test]
async fn hosts_list_json_is_an_array_of_hosts() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &[
            "hosts",
            "list",
            "--output",
            "json",
            "--coordinator",
            &fake.url(),
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let hosts = json.as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0]["host_id"], "h1");
    assert_eq!(hosts[0]["online"], true);
    assert_eq!(hosts[0]["connected_to"], "coord-a");
    assert_eq!(
        hosts[0]["capabilities"],
        serde_json::json!(["warm", "archive"])
    );
    assert!(hosts[0]["last_heartbeat_ms"].as_i64().unwrap() > 0);
    assert_eq!(hosts[1]["host_id"], "ci-runner-2");
    assert_eq!(hosts[1]["online"], false);
    assert_eq!(hosts[1]["connected_to"], serde_json::Value::Null);
    let mut keys: Vec<&String> = hosts[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "agent_version",
            "capabilities",
            "connected_to",
            "docker_version",
            "first_seen_ms",
            "host_id",
            "hostname",
            "last_heartbeat_ms",
            "online"
        ]
    );
}

#[tokio::test]
async fn the_token_can_come_from_a_file() {
    let fake = FakeCoordinator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "--token-file",
            token_file.to_str().unwrap(),
            "hosts",
            "list",
        ],
        // The file given by flag wins over BERTH_TOKEN.
        env_token("wrong-token"),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
}

#[tokio::test]
async fn the_config_file_supplies_coordinator_and_token_file() {
    let fake = FakeCoordinator::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), ADMIN_TOKEN).unwrap();
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!("coordinator = \"{}\"\ntoken_file = \"token\"\n", fake.url()),
    )
    .unwrap();
    let run = berth(
        &["--config", config.to_str().unwrap(), "hosts", "list"],
        ProcessEnv::default(),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.stdout.lines().count(), 3);
}

#[tokio::test]
async fn a_wrong_token_exits_4_without_echoing_it() {
    let fake = FakeCoordinator::start().await;
    let wrong = "wrong-secret-token-xyz";
    let run = berth(
        &["--coordinator", &fake.url(), "hosts", "list"],
        env_token(wrong),
    )
    .await;
    assert_eq!(run.exit_code(), exit::AUTH);
    assert_eq!(
        run.stderr(),
        "berth: the coordinator refused the token (unknown or revoked token): check BERTH_TOKEN or --token-file"
    );
    assert!(!run.stderr().contains(wrong));
    assert!(run.stdout.is_empty());
}

#[tokio::test]
async fn no_token_exits_4_and_says_how_to_give_one() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "hosts", "list"],
        ProcessEnv::default(),
    )
    .await;
    assert_eq!(run.exit_code(), exit::AUTH);
    assert!(
        run.stderr()
            .contains("set BERTH_TOKEN or pass --token-file"),
        "{}",
        run.stderr()
    );
}

#[tokio::test]
async fn an_unreachable_coordinator_exits_3_and_names_the_url() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = berth(
        &["--coordinator", &url, "hosts", "list"],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::UNAVAILABLE);
    let err = run.stderr();
    assert!(
        err.starts_with(&format!(
            "berth: cannot connect to the coordinator at {url}: "
        )),
        "{err}"
    );
    assert!(err.contains("check --coordinator"), "{err}");
    assert!(!err.contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn hosts_show_prints_the_description() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "hosts", "show", "h1"],
        env_token(CI_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    for line in [
        "host id:         h1\n",
        "status:          online (connected to coord-a)\n",
        "description:\n",
        "  docker:          27.3.1 (api 1.47)\n",
        "  memory:          8.0 GiB\n",
        "  containers:      3 running of 5\n",
        "  warm root:       /var/lib/berth/warm (20.0 GiB free of 80.0 GiB)\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn hosts_show_json_carries_host_and_description_error() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "--output",
            "json",
            "hosts",
            "show",
            "ci-runner-2",
        ],
        env_token(CI_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["host"]["host_id"], "ci-runner-2");
    assert_eq!(json["description"], serde_json::Value::Null);
    assert_eq!(json["description_error"], "host is offline");
}

#[tokio::test]
async fn an_unknown_host_exits_5() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "hosts", "show", "nope"],
        env_token(CI_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::NOT_FOUND);
    assert_eq!(run.stderr(), "berth: not found (host nope is not known)");
}
