//! `berth token create|list|revoke` against the fake: output shapes, local checks, roles.

use berth_cli::exit;

use crate::fake::{ADMIN_TOKEN, CI_TOKEN, FakeCoordinator, NEW_TOKEN};
use crate::{berth, env_token};

#[tokio::test]
async fn token_create_prints_the_token_alone() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "token",
            "create",
            "--role",
            "agent",
            "--host",
            "h1",
            "--description",
            "h1 agent",
            "--ttl",
            "7d",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.stdout, format!("{NEW_TOKEN}\n"));
    let seen = fake.seen();
    let req = &seen.created[0];
    assert_eq!(
        (
            req.role.as_str(),
            req.host_id.as_str(),
            req.description.as_str(),
            req.ttl_secs
        ),
        ("agent", "h1", "h1 agent", 604_800)
    );
}

#[tokio::test]
async fn token_create_json_has_the_token_and_its_record() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "--output",
            "json",
            "token",
            "create",
            "--role",
            "ci",
            "--ttl",
            "12h",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["token_id"], "tok-7");
    assert_eq!(json["role"], "ci");
    assert_eq!(json["host_id"], serde_json::Value::Null);
    assert_eq!(json["token"], NEW_TOKEN);
    assert!(json["expires_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(json.as_object().unwrap().len(), 5);
}

#[tokio::test]
async fn an_agent_token_without_host_is_refused_before_sending() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "token",
            "create",
            "--role",
            "agent",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::INVALID);
    assert_eq!(
        run.stderr(),
        "berth: an agent token is bound to one host: pass --host HOST_ID"
    );
    assert!(fake.seen().calls.is_empty(), "{:?}", fake.seen().calls);
}

#[tokio::test]
async fn a_ci_token_may_not_manage_tokens() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "token", "list"],
        env_token(CI_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::AUTH);
    assert!(
        run.stderr().contains("role ci may not manage tokens"),
        "{}",
        run.stderr()
    );
}

#[tokio::test]
async fn token_list_shows_revoked_tokens_with_all() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "token", "list"],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("TOKEN ID  ROLE   HOST  STATUS  CREATED"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(ADMIN_TOKEN));

    let run = berth(
        &[
            "--coordinator",
            &fake.url(),
            "--output",
            "json",
            "token",
            "list",
            "--all",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let tokens = json.as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[1]["host_id"], "h1");
    assert!(tokens[2]["revoked_at_ms"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn token_revoke_reports_what_it_revoked() {
    let fake = FakeCoordinator::start().await;
    let run = berth(
        &["--coordinator", &fake.url(), "token", "revoke", "tok-1"],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.stdout, "revoked token tok-1 (admin)\n");

    let run = berth(
        &["--coordinator", &fake.url(), "token", "revoke", "tok-9"],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::NOT_FOUND);
}
