//! Enrollment end to end: `berth-coordinator token create --enrollment` makes a one-time token,
//! `berth-agent enroll` exchanges it for the host's agent token (0600), and the agent started
//! with that file connects. Used, expired, misdirected and misused tokens are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_coordinator::auth::Tokens;
use berth_proto::v1 as pb;
use berth_shared::{HostId, Role};
use berth_tests::assert_contains;
use berth_tests::cli::berth_at;
use berth_tests::cluster::Bearer;
use berth_tests::{Pki, TestCoordinator, TestDb, bin};
use tonic::Code;

/// An agent config in `dir` for `url`, with `extra` lines (e.g. `host_id`, `[tls]`).
fn agent_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "coordinator_url = \"{url}\"\ntoken_file = \"{d}/etc/secrets/agent.token\"\n\
             state_dir = \"{d}/state\"\nwarm_root = \"{d}/warm\"\napps_root = \"{d}/apps\"\n\
             reconnect_max_backoff_ms = 300\n{extra}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

/// `berth-agent enroll --token-file` (the token written beside `config`) with `args`,
/// awaited: the coordinator answering it runs on this test's runtime.
async fn enroll(config: &Path, token: &str, args: &[&str]) -> Output {
    let file = config.with_file_name("enrollment.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut full = vec!["--token-file", file.to_str().unwrap()];
    full.extend_from_slice(args);
    enroll_with_stdin(config, &full, None).await
}

/// `berth-agent enroll` with `args`, `stdin` (if any) on its standard input.
async fn enroll_with_stdin(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(bin::path("berth-agent"))
        .arg("enroll")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("BERTH_TOKEN_FILE")
        .env_remove("BERTH_HOST_ID")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth-agent enroll");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    child
        .wait_with_output()
        .await
        .expect("wait berth-agent enroll")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An enrollment token for `host`, valid for `ttl`, straight from the store.
async fn enrollment_token(c: &TestCoordinator, host: &str, ttl: Duration) -> String {
    Tokens::new(c.store().clone())
        .issue_enrollment(&HostId::new(host).unwrap(), "", ttl)
        .await
        .expect("issue enrollment token")
        .1
}

#[tokio::test]
async fn an_agent_enrolls_once_over_tls_and_connects_with_the_written_credential() {
    let db = TestDb::sqlite();
    let pki = Arc::new(Pki::new());
    let c = TestCoordinator::start_tls(&db, pki.clone(), false).await;

    // The operator's command on the coordinator's machine, against the same database.
    let dir = tempfile::tempdir().unwrap();
    let admin_config = dir.path().join("coordinator.toml");
    std::fs::write(
        &admin_config,
        format!(
            "insecure_plaintext = true\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\n",
            dir.path().join("data").display(),
            db.url
        ),
    )
    .unwrap();
    let created = Command::new(bin::path("berth-coordinator"))
        .arg("--config")
        .arg(&admin_config)
        .args(["token", "create", "--role", "agent", "--host", "enroll-1"])
        .args(["--ttl", "1h", "--enrollment"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stderr(&created).contains("enrollment token") && stderr(&created).contains("enroll-1"),
        "{}",
        stderr(&created)
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();

    // The host: a fresh config without host_id; the token file's folders do not exist yet.
    let host = tempfile::tempdir().unwrap();
    let ca = pki.ca_cert.display().to_string();
    let config = agent_config(
        host.path(),
        &c.url(),
        &format!("[tls]\nca_file = \"{ca}\"\n"),
    );
    let out = enroll(
        &config,
        &token,
        &["--coordinator", &c.url(), "--ca-file", &ca],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_contains(stderr(&out), "enrolled host enroll-1");
    let token_file = host.path().join("etc/secrets/agent.token");
    assert_eq!(mode(&token_file), 0o600, "the credential is private");
    assert_eq!(mode(&host.path().join("etc/secrets")), 0o700);
    assert_eq!(mode(&host.path().join("etc")), 0o700);
    let credential = std::fs::read_to_string(&token_file).unwrap();
    assert!(credential.trim().starts_with("berth_") && credential.trim() != token);
    assert_eq!(
        std::fs::read_to_string(host.path().join("state/host_id")).unwrap(),
        "enroll-1\n",
        "a fresh host takes the id its enrollment token is bound to"
    );

    // The agent started with that config connects, as enroll-1.
    let _agent = KillOnDrop(
        Command::new(bin::path("berth-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    c.wait_host("enroll-1", true, Duration::from_secs(15)).await;

    // The same enrollment token again: refused, and the credential on disk is untouched.
    let out = enroll(&config, &token, &["--ca-file", &ca]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_contains(stderr(&out), "already used");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), credential);

    let tokens = c.store().list_tokens(false).await.unwrap();
    let spent = tokens
        .iter()
        .find(|t| t.enrollment)
        .expect("enrollment token");
    assert!(spent.used_at_ms.is_some());
    let agent = tokens
        .iter()
        .find(|t| !t.enrollment && t.host_id.as_deref() == Some("enroll-1"))
        .expect("the agent token");
    assert!(
        agent.expires_at_ms.is_none(),
        "the agent token is long-lived"
    );
    assert_contains(&agent.description, &spent.token_id);

    // `berth token list` says the enrollment token is spent (it said `active`).
    let run = berth_at(
        &c.url(),
        &c.admin_token,
        &["token", "list", "--ca-file", &ca],
    )
    .await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&spent.token_id))
        .unwrap_or_else(|| panic!("no row for the enrollment token:\n{}", run.stdout));
    assert_eq!(row.split_whitespace().nth(3), Some("used"), "{row}");
    let args = ["token", "list", "--output", "json", "--ca-file", &ca];
    let listed = berth_at(&c.url(), &c.admin_token, &args).await.json();
    let spent_json = listed
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["token_id"] == spent.token_id.as_str()))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        spent_json["used_at_ms"],
        serde_json::json!(spent.used_at_ms)
    );
}

#[tokio::test]
async fn expired_misdirected_and_misused_enrollment_tokens_are_refused() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let host = tempfile::tempdir().unwrap();

    // Expired.
    let expired = enrollment_token(&c, "late-1", Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let config = agent_config(host.path(), &c.url(), "");
    let out = enroll(&config, &expired, &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_contains(stderr(&out), "expired");
    assert!(!host.path().join("etc").exists(), "nothing was written");

    // For another host: refused, and not spent.
    let token = enrollment_token(&c, "host-a", Duration::from_secs(600)).await;
    let config = agent_config(host.path(), &c.url(), "host_id = \"host-b\"");
    let out = enroll(&config, &token, &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_contains(stderr(&out), "bound to host host-a, not host-b");
    let config = agent_config(host.path(), &c.url(), "host_id = \"host-a\"");
    let out = enroll(&config, &token, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // An enrollment token can do nothing else.
    let other = enrollment_token(&c, "host-c", Duration::from_secs(600)).await;
    let err = c
        .hosts(&other)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_contains(err.message(), "may only enroll");

    // And no other token can enroll.
    for role in [Role::Agent, Role::Admin] {
        let t = c
            .token(role, (role == Role::Agent).then_some("host-c"))
            .await;
        let err = tokens_client(&c, &t)
            .await
            .enroll_agent(pb::EnrollAgentRequest {
                host_id: "host-c".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}: {err:?}");
        assert_contains(err.message(), "needs a one-time enrollment token");
    }
}

async fn tokens_client(
    c: &TestCoordinator,
    token: &str,
) -> pb::token_service_client::TokenServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    pb::token_service_client::TokenServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(token),
    )
}

/// Ten exchanges of one token at once, on each backend: exactly one gets an agent token.
#[tokio::test]
async fn concurrent_exchanges_of_one_enrollment_token_yield_one_agent_token() {
    for db in TestDb::each().await {
        let c = TestCoordinator::start(&db).await;
        let token = enrollment_token(&c, "race-1", Duration::from_secs(600)).await;
        let calls = (0..10).map(|_| {
            let (c, token) = (&c, token.clone());
            async move {
                tokens_client(c, &token)
                    .await
                    .enroll_agent(pb::EnrollAgentRequest {
                        host_id: String::new(),
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{:?}: {results:?}", db.kind);
        assert_eq!(won[0].get_ref().host_id, "race-1");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
            assert_contains(r.message(), "already used");
        }
        let agents = c
            .store()
            .list_tokens(false)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| !t.enrollment && t.host_id.as_deref() == Some("race-1"))
            .count();
        assert_eq!(agents, 1, "{:?}", db.kind);
    }
}

/// The enrollment token comes from standard input or `--token-file`, never argv; enrolling a
/// host again revokes the agent token its first enrollment bought.
#[tokio::test]
async fn enrollment_reads_its_token_off_argv_and_re_enrolling_revokes_the_old_token() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let host = tempfile::tempdir().unwrap();
    let config = agent_config(host.path(), &c.url(), "host_id = \"re-1\"");
    let token_file = host.path().join("etc/secrets/agent.token");

    // `--token` is gone: a secret on the command line is refused by the parser.
    let first = enrollment_token(&c, "re-1", Duration::from_secs(600)).await;
    let out = enroll_with_stdin(&config, &["--token", &first], None).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Nothing on stdin and no file: told what to do.
    let out = enroll_with_stdin(&config, &[], Some("")).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_contains(stderr(&out), "--token-file");

    let out = enroll_with_stdin(&config, &[], Some(&format!("{first}\n"))).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let old = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    c.hosts(&old)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .expect_err("an agent token may not list hosts, but it authenticates");

    let second = enrollment_token(&c, "re-1", Duration::from_secs(600)).await;
    let out = enroll(&config, &second, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let new = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(old, new);
    let agents: Vec<_> = c
        .store()
        .list_tokens(true)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| !t.enrollment && t.host_id.as_deref() == Some("re-1"))
        .collect();
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_eq!(
        agents.iter().filter(|t| t.revoked_at_ms.is_none()).count(),
        1,
        "only the newest agent token is live: {agents:?}"
    );
    let err = c
        .hosts(&old)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}
