//! `berth sagas …` run in process against a real coordinator on SQLite: start and wait, exit
//! codes 0, 5, 6 and 7, list filters and JSON, show, watch as NDJSON, cancel, retry and skip,
//! and a watch that outlives a `kill -9` of its coordinator.

use std::time::Duration;

use berth_cli::exit;
use berth_proto::v1 as pb;
use berth_shared::saga::{SagaStatus, StepStatus};
use berth_tests::assert_contains;
use berth_tests::cli::{CliRun as Run, berth_at};
use berth_tests::process::{CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{SagaStatused, StepStatused, TestCoordinator, TestDb, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn berth(c: &TestCoordinator, args: &[&str]) -> Run {
    berth_at(&c.url(), &c.admin_token, args).await
}

fn demo(steps: Value) -> String {
    json!({ "steps": steps }).to_string()
}

async fn get(c: &TestCoordinator, id: &str) -> pb::Saga {
    c.sagas()
        .await
        .get_saga(pb::GetSagaRequest {
            saga_id: id.to_owned(),
        })
        .await
        .expect("get saga")
        .into_inner()
}

#[tokio::test]
async fn start_wait_of_a_completing_saga_exits_0_and_prints_each_step() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let inputs = demo(json!([
        {"step": "noop"},
        {"step": "sleep", "ms": 300},
        {"step": "flaky", "failures": 1},
        {"step": "record"}
    ]));
    let run = berth(
        &c,
        &["sagas", "start", "demo", "--inputs", &inputs, "--wait"],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}\n{}", run.stderr(), run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let id = lines[0];
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "the id comes first, alone: {}",
        run.stdout
    );
    // Every other line is `<time> <kind> step=<i> <message>`.
    for line in &lines[1..] {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(fields.len() >= 3, "{line}");
        assert!(
            fields[0].ends_with('Z') && fields[0].contains('T'),
            "{line}"
        );
        assert!(fields[2].starts_with("step="), "{line}");
    }
    let has = |prefix: &str| {
        lines.iter().any(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
    };
    assert!(has("saga_started step=- demo"), "{}", run.stdout);
    for i in 0..4 {
        assert!(
            has(&format!("step_started step={i} attempt 1")),
            "{}",
            run.stdout
        );
        assert!(has(&format!("step_succeeded step={i} ")), "{}", run.stdout);
    }
    assert!(
        has("step_retrying step=2 failing on purpose"),
        "{}",
        run.stdout
    );
    assert!(has("step_started step=2 attempt 2"), "{}", run.stdout);
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with(" watch_end step=- saga completed"),
        "{}",
        run.stdout
    );
    assert_eq!(get(&c, id).await.saga_status(), SagaStatus::Completed);

    // The same idempotency key twice: one saga, and the second start says so.
    let run = berth(
        &c,
        &[
            "sagas", "start", "demo", "--inputs", &inputs, "--key", "ci-42", "--output", "json",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let first = run.json();
    assert_eq!(first["existing"], false);
    assert_eq!(first["kind"], "demo");
    let again = berth(
        &c,
        &[
            "sagas", "start", "demo", "--inputs", &inputs, "--key", "ci-42", "--output", "json",
        ],
    )
    .await
    .json();
    assert_eq!(again["saga_id"], first["saga_id"]);
    assert_eq!(again["existing"], true);
}

#[tokio::test]
async fn a_saga_that_does_not_complete_exits_7() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let inputs = demo(json!([{"step": "record"}, {"step": "fail"}]));
    let run = berth(
        &c,
        &["sagas", "start", "demo", "--inputs", &inputs, "--wait"],
    )
    .await;
    assert_eq!(run.code(), 7, "{}\n{}", run.stderr(), run.stdout);
    assert_eq!(run.code(), exit::SAGA_NOT_COMPLETED);
    let id = run.stdout.lines().next().unwrap().to_owned();
    assert_contains(&run.stdout, " step_failed step=1 failed on purpose");
    assert_contains(&run.stdout, " step_compensated step=0 record");
    assert!(
        run.stdout.ends_with(" watch_end step=- saga compensated\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr()
            .starts_with(&format!("berth: saga {id} did not complete")),
        "{}",
        run.stderr()
    );
    assert_contains(run.stderr(), format!("berth sagas show {id}"));

    // Watching it again replays the history and ends the same way, here as NDJSON.
    let run = berth(&c, &["sagas", "watch", &id, "--output", "json"]).await;
    assert_eq!(run.code(), exit::SAGA_NOT_COMPLETED, "{}", run.stderr());
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events[0]["kind"], "saga_started");
    assert_eq!(events[0]["step_index"], Value::Null);
    assert!(events.iter().all(|e| e["saga_id"] == id.as_str()));
    let seqs: Vec<u64> = events[..events.len() - 1]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let failed = events.iter().find(|e| e["kind"] == "step_failed").unwrap();
    assert_eq!(failed["step_index"], 1);
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "watch_end");
    assert_eq!(last["final_status"], SagaStatus::Compensated.as_str());
    assert!(last["at_ms"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn list_filters_by_status_and_kind_and_pages() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let done = c.start_demo(json!([{"step": "noop"}])).await;
    let undone = c
        .start_demo(json!([{"step": "noop"}, {"step": "fail"}]))
        .await;
    let done2 = c.start_demo(json!([{"step": "record"}])).await;
    for id in [&done, &undone, &done2] {
        c.wait_saga(id, WAIT).await;
    }

    let run = berth(
        &c,
        &[
            "sagas",
            "list",
            "--status",
            SagaStatus::Compensated.as_str(),
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let json = run.json();
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["next_page_token", "sagas"]);
    assert_eq!(json["next_page_token"], Value::Null);
    let sagas = json["sagas"].as_array().unwrap();
    assert_eq!(sagas.len(), 1, "{json:#}");
    let s = &sagas[0];
    assert_eq!(s["saga_id"], undone.as_str());
    assert_eq!(s["kind"], "demo");
    assert_eq!(s["status"], SagaStatus::Compensated.as_str());
    assert!(s["error"].as_str().unwrap().contains("failed on purpose"));
    assert_eq!(
        s["inputs"]["steps"][1]["step"], "fail",
        "inputs are JSON, not a string"
    );
    assert_eq!(s["steps"][0]["status"], StepStatus::Compensated.as_str());
    assert_eq!(s["steps"][1]["status"], StepStatus::Failed.as_str());
    assert!(s["created_at_ms"].as_i64().unwrap() > 0);

    // The table, with two statuses and a time window.
    let run = berth(
        &c,
        &[
            "sagas",
            "list",
            "--status",
            &format!("{},{}", SagaStatus::Completed, SagaStatus::Failed),
            "--kind",
            "demo",
            "--since",
            "1h",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0]
            .split("  ")
            .filter(|h| !h.is_empty())
            .map(str::trim)
            .collect::<Vec<_>>(),
        [
            "SAGA ID", "KIND", "STATUS", "STEPS", "CREATED", "UPDATED", "ERROR"
        ],
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.len(),
        3,
        "header and two completed sagas: {}",
        run.stdout
    );
    for id in [&done, &done2] {
        let row = lines.iter().find(|l| l.starts_with(id.as_str())).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[1..4],
            ["demo", SagaStatus::Completed.as_str(), "1/1"],
            "{row}"
        );
        assert_eq!(cells.last(), Some(&"-"), "no error: {row}");
    }
    assert!(!run.stdout.contains(&undone), "{}", run.stdout);

    // Another kind: nothing.
    let run = berth(
        &c,
        &["sagas", "list", "--kind", "other", "--output", "json"],
    )
    .await;
    assert_eq!(run.json()["sagas"], json!([]));

    // One per page: the first page says there is more; --all-pages gets them all.
    let run = berth(&c, &["sagas", "list", "--limit", "1", "--output", "json"]).await;
    let page = run.json();
    assert_eq!(page["sagas"].as_array().unwrap().len(), 1);
    let token = page["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let run = berth(
        &c,
        &[
            "sagas",
            "list",
            "--limit",
            "1",
            "--page-token",
            &token,
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert_ne!(
        run.json()["sagas"][0]["saga_id"],
        page["sagas"][0]["saga_id"]
    );
    let run = berth(&c, &["sagas", "list", "--limit", "1"]).await;
    assert_contains(&run.stdout, "more sagas: pass --all-pages");
    let run = berth(
        &c,
        &[
            "sagas",
            "list",
            "--limit",
            "1",
            "--all-pages",
            "--output",
            "json",
        ],
    )
    .await;
    let mut ids: Vec<String> = run.json()["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["saga_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![done.clone(), undone.clone(), done2.clone()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn show_prints_the_steps_and_json_parses_inputs_and_outputs() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "noop"}, {"step": "record"}, {"step": "destroy_like"}]))
        .await;
    c.wait_saga(&id, WAIT).await;

    let run = berth(&c, &["sagas", "show", &id, "--output", "json"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let s = run.json();
    assert_eq!(s["saga_id"], id.as_str());
    assert_eq!(s["status"], SagaStatus::Completed.as_str());
    assert_eq!(
        s["inputs"],
        json!({"steps": [{"step": "noop"}, {"step": "record"}, {"step": "destroy_like"}]})
    );
    assert!(s["output"].is_object(), "{s:#}");
    assert_eq!(s["error"], Value::Null);
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["name"], "record");
    assert_eq!(steps[1]["output"], json!({"recorded": true}));
    assert_eq!(steps[1]["attempts"], 1);
    assert_eq!(steps[2]["pivot"], true);
    assert!(
        steps[2]["finished_at_ms"].as_i64().unwrap() >= steps[2]["started_at_ms"].as_i64().unwrap()
    );

    let run = berth(&c, &["sagas", "show", &id.to_uppercase()]).await;
    assert_eq!(
        run.code(),
        exit::OK,
        "an upper-case id is the same id: {}",
        run.stderr()
    );
    assert!(
        run.stdout.starts_with(&format!("saga id:  {id}\n")),
        "{}",
        run.stdout
    );
    assert_contains(&run.stdout, "\nstatus:   completed\n");
    assert_contains(&run.stdout, "\nsteps:    3/3\n");
    assert_contains(
        &run.stdout,
        "\nINDEX  NAME          STATUS     ATTEMPTS  PIVOT  DURATION  ERROR\n",
    );
    assert_contains(
        &run.stdout,
        "\n2      destroy_like  completed  1         yes    ",
    );
}

#[tokio::test]
async fn cancel_of_a_running_sleep_saga_compensates_it() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let id = c
        .start_demo(json!([{"step": "record"}, {"step": "sleep", "ms": 60_000}]))
        .await;
    eventually(WAIT, "the sleep step to start", || async {
        (get(&c, &id).await.steps[1].step_status() == StepStatus::Running).then_some(())
    })
    .await;

    let run = berth(&c, &["sagas", "cancel", &id, "--reason", "wrong branch"]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    // What follows first (the saga is still running until its step stops), then the saga
    // as `show` shows it.
    assert!(
        run.stdout.starts_with(&format!(
            "saga {id}: cancelling: its running step is stopped and its completed steps are \
             undone; `berth sagas watch {id}` follows it\nsaga id:  {id}\n"
        )),
        "{}",
        run.stdout
    );
    // The step stops at once, so the saga may already have ended when it is read back.
    let status = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("status:   "))
        .unwrap_or_default();
    assert!(
        [
            "running (cancelling)",
            "compensating (cancelling)",
            "cancelled"
        ]
        .contains(&status),
        "{status:?}: {}",
        run.stdout
    );
    assert_contains(&run.stdout, "\nINDEX  NAME ");

    let run = berth(&c, &["sagas", "watch", &id]).await;
    assert_eq!(run.code(), exit::SAGA_NOT_COMPLETED, "{}", run.stderr());
    assert_contains(&run.stdout, " step_cancelled step=1 ");
    assert!(
        run.stdout.ends_with(" watch_end step=- saga cancelled\n"),
        "{}",
        run.stdout
    );
    assert_contains(run.stderr(), "was cancelled");
    let saga = get(&c, &id).await;
    assert_eq!(saga.saga_status(), SagaStatus::Cancelled);
    assert_eq!(saga.steps[0].step_status(), StepStatus::Compensated);

    // Cancelling it again is refused: it has ended.
    let run = berth(&c, &["sagas", "cancel", &id]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    assert_contains(run.stderr(), "nothing to cancel");
}

#[tokio::test]
async fn operator_actions_answer_the_coordinators_refusals_with_exit_6() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let done = c.start_demo(json!([{"step": "noop"}])).await;
    c.wait_saga(&done, WAIT).await;

    let run = berth(&c, &["sagas", "retry", &done]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    assert_eq!(
        run.stderr(),
        format!(
            "berth: the coordinator refused (only a failed or paused saga can be retried; saga {done} is completed)"
        )
    );
    assert_eq!(run.stdout, "");

    // A saga that failed after its pivot: skip the failed step and it completes.
    let failed = c
        .start_demo(json!([{"step": "noop"}, {"step": "destroy_like"}, {"step": "fail"}]))
        .await;
    assert_eq!(
        c.wait_saga(&failed, WAIT).await.saga_status(),
        SagaStatus::Failed
    );
    let run = berth(&c, &["sagas", "skip", &failed, "7"]).await;
    assert_eq!(run.code(), exit::INVALID, "no step 7: {}", run.stderr());
    // A retry says where it goes on from, and the error that stopped the saga is cleared.
    let run = berth(&c, &["sagas", "retry", &failed]).await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    assert!(
        run.stdout
            .starts_with(&format!("saga {failed}: retrying from step 2 (fail)\n")),
        "{}",
        run.stdout
    );
    assert_contains(&run.stdout, "\nstatus:   running\n");
    assert_contains(&run.stdout, "\nerror:    -\n");
    assert_eq!(
        c.wait_saga(&failed, WAIT).await.saga_status(),
        SagaStatus::Failed,
        "the fail step fails again"
    );
    let run = berth(
        &c,
        &[
            "sagas",
            "skip",
            &failed,
            "2",
            "--reason",
            "done by hand",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let skipped = run.json();
    assert_eq!(skipped["steps"][2]["status"], StepStatus::Skipped.as_str());
    assert_eq!(
        skipped["steps"][2]["attempts"], 1,
        "a skipped step keeps its attempts"
    );
    assert_eq!(
        skipped["error"],
        serde_json::Value::Null,
        "the saga's error is cleared"
    );
    let run = berth(&c, &["sagas", "watch", &failed]).await;
    assert_eq!(run.code(), exit::OK, "{}\n{}", run.stderr(), run.stdout);
    assert_contains(&run.stdout, " operator_skip step=- done by hand");
    assert!(
        run.stdout.ends_with(" watch_end step=- saga completed\n"),
        "{}",
        run.stdout
    );

    // An unknown kind or malformed inputs: refused by the coordinator, or before sending.
    let run = berth(&c, &["sagas", "start", "nope", "--inputs", "{}"]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    assert_contains(run.stderr(), r#"unknown saga kind "nope""#);
    let run = berth(
        &c,
        &[
            "sagas",
            "start",
            "demo",
            "--inputs",
            r#"{"steps":[{"step":"sleep"}]}"#,
        ],
    )
    .await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    assert_contains(run.stderr(), "missing field `ms`");
}

#[tokio::test]
async fn an_unknown_saga_is_not_found() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["sagas", "show", unknown.as_str()],
        vec!["sagas", "watch", unknown.as_str()],
        vec!["sagas", "cancel", unknown.as_str()],
        vec!["sagas", "retry", unknown.as_str()],
    ] {
        let run = berth(&c, &args).await;
        assert_eq!(run.code(), exit::NOT_FOUND, "{args:?}: {}", run.stderr());
        assert!(
            run.stderr().starts_with("berth: not found"),
            "{}",
            run.stderr()
        );
    }
}

#[tokio::test]
async fn a_malformed_saga_id_is_refused_without_contacting_the_coordinator() {
    // Nothing listens here: had berth tried to connect, the exit code would be 3.
    let nowhere = "http://127.0.0.1:1";
    for args in [
        vec!["sagas", "show", "not-a-uuid"],
        vec!["sagas", "watch", "42"],
        vec!["sagas", "cancel", "../etc"],
        vec!["sagas", "retry", ""],
        vec!["sagas", "resume", "0197a0c2-7b1e"],
        vec!["sagas", "abandon", "x"],
        vec!["sagas", "skip", "x", "1"],
    ] {
        let run = berth_at(nowhere, "any-token", &args).await;
        assert_eq!(run.code(), exit::INVALID, "{args:?}: {}", run.stderr());
        assert_contains(run.stderr(), "is not a uuid");
    }
    let run = berth_at(nowhere, "t", &["sagas", "start", "demo", "--inputs", "[]"]).await;
    assert_eq!(run.code(), exit::INVALID, "{}", run.stderr());
    // A well-formed id does try to connect, which shows the test above means something.
    let run = berth_at(
        nowhere,
        "t",
        &["sagas", "show", &uuid::Uuid::now_v7().to_string()],
    )
    .await;
    assert_eq!(run.code(), exit::UNAVAILABLE, "{}", run.stderr());
}

#[tokio::test]
async fn watch_resumes_when_the_coordinator_is_killed_and_restarted() {
    let db = TestDb::sqlite();
    let token = admin_token(&db.url).await;
    let p = CoordinatorProcess::start("cli-watch", &db.url, SagaTiming::default()).await;
    let inputs =
        demo(json!([{"step": "noop"}, {"step": "sleep", "ms": 2_000}, {"step": "record"}]));
    let url = p.url();
    let run = berth_at(
        &url,
        &token,
        &["sagas", "start", "demo", "--inputs", &inputs],
    )
    .await;
    assert_eq!(run.code(), exit::OK, "{}", run.stderr());
    let id = run.stdout.trim().to_owned();
    let sleeping = || async {
        let run = berth_at(&url, &token, &["sagas", "show", &id, "--output", "json"]).await;
        (run.json()["steps"][1]["status"] == StepStatus::Running.as_str()).then_some(())
    };
    eventually(WAIT, "the sleep step to start", sleeping).await;

    let args = ["sagas", "watch", id.as_str()];
    let (run, ()) = tokio::join!(berth_at(&url, &token, &args), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.restart().await;
    });
    assert_eq!(
        run.code(),
        exit::OK,
        "{}\n{}\n{}",
        run.stderr(),
        run.stdout,
        p.log()
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let seen = |kind: &str| lines.iter().filter(|l| l.contains(kind)).count();
    assert_eq!(
        seen(" saga_started "),
        1,
        "no event twice after resuming: {}",
        run.stdout
    );
    assert_eq!(seen(" step_succeeded step=0 "), 1, "{}", run.stdout);
    assert_eq!(seen(" step_succeeded step=2 "), 1, "{}", run.stdout);
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with(" watch_end step=- saga completed"),
        "{}",
        run.stdout
    );
}

/// `script` (Debian's bsdutils), which runs a command on a pseudo-terminal.
fn script() -> std::path::PathBuf {
    berth_tests::which("script").unwrap_or_else(|| {
        panic!("`script` is missing: this test runs the CLI on a terminal. Install Debian's bsdutils (`apt-get install -y bsdutils`)")
    })
}

#[tokio::test]
async fn a_watch_on_a_terminal_draws_a_steps_done_bar_with_elapsed_time() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    // Long enough that the watch, started on a loaded machine, still sees the saga run.
    let id = c
        .start_demo(
            json!([{"step": "sleep", "ms": 1500}, {"step": "sleep", "ms": 1500}, {"step": "noop"}]),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, &c.admin_token).unwrap();
    let command = format!(
        "{} --coordinator {} --token-file {} sagas watch {id}",
        berth_tests::bin::path("berth").display(),
        c.url(),
        token.display()
    );
    // The real binary on a pseudo-terminal, as an operator at a shell runs it.
    let out = tokio::process::Command::new(script())
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("3/3 steps done"),
        "the bar ends with every step done:\n{screen}"
    );
    assert!(
        screen.contains("0/3 steps done") || screen.contains("1/3 steps done"),
        "the bar moved while the saga ran:\n{screen}"
    );
    assert!(
        screen.contains("00:00:0"),
        "the bar shows the elapsed time:\n{screen}"
    );
    assert!(
        screen.contains("\u{1b}["),
        "a terminal gets a drawn view, not plain lines"
    );
    // Piped, the same watch prints plain lines: no bar, no escape codes.
    let run = berth(&c, &["sagas", "watch", &id]).await;
    assert!(
        !run.stdout.contains("steps done") && !run.stdout.contains('\u{1b}'),
        "{}",
        run.stdout
    );
}
