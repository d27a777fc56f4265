//! The Prometheus endpoint of a real coordinator process reports the saga and schedule
//! metrics.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::assert_contains;
use berth_tests::cli::berth_at;
use berth_tests::process::{AgentProcess, CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{TestDb, eventually, free_port};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(port: u16) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    Some(body)
}

#[tokio::test]
async fn saga_metrics_are_served_to_prometheus() {
    let db = TestDb::sqlite();
    let token = admin_token(&db.url).await;
    let port = free_port();
    let extra = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let p = CoordinatorProcess::start_with("metrics", &db.url, SagaTiming::default(), &extra).await;
    let mut sagas = p.sagas(&token).await;
    for steps in [
        json!([{"step": "flaky", "failures": 1}]),
        json!([{"step": "noop"}, {"step": "fail"}]),
    ] {
        let inputs = json!({ "steps": steps }).to_string();
        sagas
            .start_saga(pb::StartSagaRequest {
                kind: "demo".into(),
                inputs_json: inputs,
                idempotency_key: String::new(),
            })
            .await
            .unwrap();
    }
    let text = eventually(
        Duration::from_secs(30),
        "the metrics to show both sagas finished",
        || async {
            let t = scrape(port).await?;
            (t.contains("berth_sagas_finished_total{status=\"completed\"} 1")
                && t.contains("berth_sagas_finished_total{status=\"compensated\"} 1"))
            .then_some(t)
        },
    )
    .await;
    assert_contains(&text, "berth_saga_step_retries_total{step=\"flaky\"} 1");
    assert_contains(&text, "berth_saga_step_seconds");
    assert_contains(&text, "berth_sagas_started_total{kind=\"demo\"} 2");
    assert_contains(&text, "berth_sagas{status=");
}

#[tokio::test]
async fn schedule_runs_and_last_successes_are_served_to_prometheus() {
    let db = TestDb::sqlite();
    let token = admin_token(&db.url).await;
    let port = free_port();
    let archives = tempfile::tempdir().unwrap();
    let archive_toml = format!(
        "store_url = {:?}\n",
        format!("file://{}", archives.path().display())
    );
    let extra = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\nheartbeat_interval_secs = 1\n\n\
         [archive]\n{archive_toml}\n[schedules]\ntick_ms = 200\nmin_interval_secs = 1\n"
    );
    let p = CoordinatorProcess::start_with("sched-metrics", &db.url, SagaTiming::default(), &extra)
        .await;
    let store = berth_coordinator::store::Store::open(&db.url)
        .await
        .unwrap();
    let (_, agent_token) = berth_coordinator::auth::Tokens::new(store)
        .issue(
            berth_shared::Role::Agent,
            Some(&berth_shared::HostId::new("host-0").unwrap()),
            "metrics",
            None,
        )
        .await
        .unwrap();
    let agent = AgentProcess::start("host-0", &[p.url()], &agent_token, &archive_toml);
    std::fs::create_dir_all(agent.apps_root().join("site")).unwrap();
    std::fs::write(agent.apps_root().join("site/index.html"), "hi").unwrap();
    // The host must have connected before a schedule may name it.
    for (name, app) in [("nightly", "site"), ("broken", "missing")] {
        let args = [
            "schedule",
            "create",
            name,
            "--cron",
            "*/2 * * * * *",
            "archive",
            "--host",
            "host-0",
            "--app",
            app,
        ];
        eventually(
            Duration::from_secs(30),
            "the schedule to be made",
            || async { (berth_at(&p.url(), &token, &args).await.code() == 0).then_some(()) },
        )
        .await;
    }
    let text = eventually(Duration::from_secs(60), "the schedule metrics", || async {
        let t = scrape(port).await?;
        (t.contains("berth_schedule_runs_total{schedule=\"nightly\",outcome=\"succeeded\"}")
            && t.contains("berth_schedule_runs_total{schedule=\"broken\",outcome=\"failed\"}")
            && t.contains("berth_schedule_last_success_timestamp_seconds{schedule=\"nightly\"}"))
        .then_some(t)
    })
    .await;
    assert!(
        !text.contains("berth_schedule_last_success_timestamp_seconds{schedule=\"broken\"}"),
        "a schedule that never succeeded has no last success:\n{text}"
    );

    // A refused token is counted by reason.
    let run = berth_at(&p.url(), "not-a-token", &["hosts", "list"]).await;
    assert_eq!(run.code(), 4, "{}", run.stderr());

    // The host gauges (every 15 s) and the counted refusal; durations are histograms.
    let text = eventually(Duration::from_secs(40), "the host gauges", || async {
        let t = scrape(port).await?;
        (t.contains("berth_host_online{host_id=\"host-0\"} 1")
            && t.contains("berth_host_warm_root_free_bytes{host_id=\"host-0\"}")
            && t.contains("berth_auth_failures_total{reason=\"malformed\"} 1"))
        .then_some(t)
    })
    .await;
    assert_contains(
        &text,
        "berth_host_last_heartbeat_age_seconds{host_id=\"host-0\"}",
    );
    assert_contains(
        &text,
        "berth_saga_step_seconds_bucket{kind=\"archive.create\"",
    );
    assert_contains(
        &text,
        "berth_saga_seconds_bucket{kind=\"archive.create\",status=\"completed\"",
    );
    assert!(
        !text.contains("quantile=\""),
        "durations are histograms, not summaries:\n{text}"
    );
    assert_contains(&text, "berth_saga_lease_losses_total{cause=\"taken\"} 0");
    assert_contains(&text, "berth_schedule_overdue{schedule=\"nightly\"} 0");

    // Every metric the shipped alert rules use is served.
    let dir = berth_tests::bin::workspace_root().join("deploy/prometheus");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue; // tests/: promtool's unit tests of the rules
        }
        let rules = std::fs::read_to_string(path).unwrap();
        for name in metric_names(&rules) {
            let served = format!("\n{name}");
            assert!(
                text.contains(&format!("{served}{{")) || text.contains(&format!("{served} ")),
                "{name}, used by the alert rules, is not served:\n{text}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} metrics found in {}",
        dir.display()
    );
}

/// The `berth_*` series an alert rules file reads, as the endpoint serves them.
fn metric_names(rules: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        let mut rest = line;
        while let Some(at) = rest.find("berth_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}
