//! `sagas` rendering with an injected "now", argument parsing and the requests they make.

use berth_shared::saga::StepStatus;
use clap::Parser;
use serde_json::json;

use super::*;
use crate::error::{exit, exit_code};
use crate::{Cli, Command};

const NOW: i64 = 1_750_000_000_000;
const ID: &str = "0197a0c2-7b1e-7cc0-9d7c-1a2b3c4d5e6f";

fn step(index: u32, name: &str, status: StepStatus) -> pb::SagaStep {
    pb::SagaStep {
        index,
        name: name.into(),
        status: status.as_str().into(),
        attempts: u32::from(status != StepStatus::Pending),
        output_json: String::new(),
        error: String::new(),
        started_at_ms: 0,
        attempt_started_at_ms: 0,
        finished_at_ms: 0,
        pivot: false,
    }
}

fn compensated_saga() -> pb::Saga {
    let mut noop = step(0, "noop", StepStatus::Compensated);
    noop.output_json = "null".into();
    noop.started_at_ms = NOW - 65_000;
    noop.finished_at_ms = NOW - 64_990;
    let mut flaky = step(1, "flaky", StepStatus::Completed);
    flaky.attempts = 2;
    flaky.output_json = r#"{"attempts":2}"#.into();
    flaky.started_at_ms = NOW - 64_990;
    // The second attempt's 300 ms, not the 1.29 s since the first began.
    flaky.attempt_started_at_ms = NOW - 64_000;
    flaky.finished_at_ms = NOW - 63_700;
    let mut fail = step(2, "fail", StepStatus::Failed);
    fail.error = "failed on purpose\n(demo step `fail`)".into();
    fail.started_at_ms = NOW - 63_700;
    fail.finished_at_ms = NOW - 63_690;
    let mut pivot = step(3, "destroy_like", StepStatus::Pending);
    pivot.pivot = true;
    pb::Saga {
        saga_id: ID.into(),
        kind: "demo".into(),
        status: SagaStatus::Compensated.as_str().into(),
        inputs_json: r#"{"steps":[{"step":"noop"},{"step":"flaky","failures":1},{"step":"fail"},{"step":"destroy_like"}]}"#.into(),
        steps: vec![noop, flaky, fail, pivot],
        created_at_ms: NOW - 65_000,
        updated_at_ms: NOW - 3_000,
        epoch: 2,
        owner_id: String::new(),
        error: "failed on purpose (demo step `fail`) and then some more words to make it long".into(),
        output_json: String::new(),
        cancel_requested_at_ms: 0,
    }
}

fn running_saga() -> pb::Saga {
    let mut sleep = step(0, "sleep", StepStatus::Running);
    sleep.started_at_ms = NOW - 2_500;
    pb::Saga {
        saga_id: "0197a0c2-0000-7000-8000-000000000001".into(),
        kind: "demo".into(),
        status: SagaStatus::Running.as_str().into(),
        inputs_json: r#"{"steps":[{"step":"sleep","ms":9000},{"step":"record"}]}"#.into(),
        steps: vec![sleep, step(1, "record", StepStatus::Pending)],
        created_at_ms: NOW - 2_600,
        updated_at_ms: NOW - 2_500,
        epoch: 1,
        owner_id: "coord-a".into(),
        error: String::new(),
        output_json: String::new(),
        cancel_requested_at_ms: 0,
    }
}

fn text(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn list_table_shows_steps_done_relative_times_and_a_truncated_error() {
    let out = text(|o| write_saga_table(&[running_saga(), compensated_saga()], NOW, o));
    assert_eq!(
        out,
        "SAGA ID                               KIND  STATUS       STEPS  CREATED  UPDATED  ERROR\n\
         0197a0c2-0000-7000-8000-000000000001  demo  running      0/2    2s ago   2s ago   -\n\
         0197a0c2-7b1e-7cc0-9d7c-1a2b3c4d5e6f  demo  compensated  1/4    1m ago   3s ago   failed on purpose (demo step `fail`) and then some more wor…\n"
    );
}

#[test]
fn an_empty_list_is_its_header() {
    let out = text(|o| write_saga_table(&[], NOW, o));
    assert_eq!(
        out,
        "SAGA ID  KIND  STATUS  STEPS  CREATED  UPDATED  ERROR\n"
    );
}

#[test]
fn show_prints_the_fields_then_a_steps_table() {
    let out = text(|o| write_saga_detail(&compensated_saga(), NOW, o));
    assert_eq!(
        out,
        "saga id:  0197a0c2-7b1e-7cc0-9d7c-1a2b3c4d5e6f\n\
         kind:     demo\n\
         status:   compensated\n\
         steps:    1/4\n\
         created:  1m ago (2025-06-15T15:05:35.000Z)\n\
         updated:  3s ago (2025-06-15T15:06:37.000Z)\n\
         owner:    -\n\
         epoch:    2\n\
         error:    failed on purpose (demo step `fail`) and then some more words to make it long\n\
         inputs:   {\"steps\":[{\"step\":\"noop\"},{\"failures\":1,\"step\":\"flaky\"},{\"step\":\"fail\"},{\"step\":\"destroy_like\"}]}\n\
         output:   -\n\
         \n\
         INDEX  NAME          STATUS       ATTEMPTS  PIVOT  DURATION  ERROR\n\
         0      noop          compensated  1         -      10ms      -\n\
         1      flaky         completed    2         -      300ms     -\n\
         2      fail          failed       1         -      10ms      failed on purpose (demo step `fail`)\n\
         3      destroy_like  pending      0         yes    -         -\n"
    );
}

#[test]
fn a_running_step_shows_how_long_it_has_run() {
    let out = text(|o| write_saga_detail(&running_saga(), NOW, o));
    assert!(out.contains("owner:    coord-a\n"), "{out}");
    assert!(
        out.contains("0      sleep   running  1         -      2.5s      -\n"),
        "{out}"
    );
    assert!(
        out.contains("1      record  pending  0         -      -         -\n"),
        "{out}"
    );
}

#[test]
fn saga_json_parses_inputs_and_outputs() {
    let mut saga = compensated_saga();
    saga.output_json = r#"{"0:noop":null}"#.into();
    saga.steps[1].output_json = "not json".into();
    let json = serde_json::to_value(SagaView::from(&saga)).unwrap();
    assert_eq!(
        json["inputs"]["steps"][1],
        json!({"step": "flaky", "failures": 1})
    );
    assert_eq!(json["output"], json!({"0:noop": null}));
    assert_eq!(json["owner_id"], Value::Null);
    assert_eq!(json["epoch"], 2);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0]["output"], Value::Null);
    assert_eq!(
        steps[1]["output"], "not json",
        "unparsable text stays a string"
    );
    assert_eq!(steps[2]["error"], "failed on purpose\n(demo step `fail`)");
    assert_eq!(steps[3]["pivot"], true);
    assert_eq!(steps[3]["started_at_ms"], Value::Null);
    assert_eq!(steps[3]["error"], Value::Null);
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cancel_requested_at_ms",
            "created_at_ms",
            "epoch",
            "error",
            "inputs",
            "kind",
            "output",
            "owner_id",
            "saga_id",
            "status",
            "steps",
            "updated_at_ms"
        ]
    );
    let mut step_keys: Vec<&String> = steps[0].as_object().unwrap().keys().collect();
    step_keys.sort();
    assert_eq!(
        step_keys,
        [
            "attempt_started_at_ms",
            "attempts",
            "error",
            "finished_at_ms",
            "index",
            "name",
            "output",
            "pivot",
            "started_at_ms",
            "status"
        ]
    );
}

#[test]
fn list_json_is_an_object_with_sagas_and_the_next_page() {
    let view = SagaListView {
        sagas: vec![SagaView::from(&running_saga())],
        next_page_token: None,
    };
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["next_page_token"], Value::Null);
    assert_eq!(json["sagas"][0]["status"], SagaStatus::Running.as_str());
    assert_eq!(json["sagas"][0]["inputs"]["steps"][0]["ms"], 9000);
}

#[test]
fn saga_ids_must_be_uuids() {
    assert_eq!(parse_saga_id(ID).unwrap(), ID);
    assert_eq!(
        parse_saga_id(" 0197A0C2-7B1E-7CC0-9D7C-1A2B3C4D5E6F ").unwrap(),
        ID,
        "normalized as the coordinator writes them"
    );
    for bad in [
        "",
        "42",
        "not-a-uuid",
        "0197a0c2-7b1e-7cc0-9d7c",
        "../etc/passwd",
    ] {
        let e = parse_saga_id(bad).unwrap_err();
        assert!(matches!(e, CliError::InvalidArgument(_)), "{bad}: {e:?}");
        assert_eq!(exit_code(&e), exit::INVALID);
        assert!(e.to_string().contains("is not a uuid"), "{e}");
        assert!(e.to_string().contains("berth sagas list"), "{e}");
    }
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(["berth", "sagas"].iter().chain(args))
}

fn list_args(args: &[&str]) -> ListArgs {
    let mut argv = vec!["list"];
    argv.extend_from_slice(args);
    match parse(&argv).unwrap().command {
        Command::Sagas(SagasCommand::List(a)) => a,
        other => panic!("not sagas list: {other:?}"),
    }
}

#[test]
fn since_is_a_duration_counted_back_from_now() {
    let (failed, paused, compensated) = (
        SagaStatus::Failed.as_str(),
        SagaStatus::Paused.as_str(),
        SagaStatus::Compensated.as_str(),
    );
    let args = list_args(&[
        "--since",
        "2h",
        "--status",
        failed,
        "--status",
        &format!("{paused},{compensated}"),
    ]);
    assert_eq!(args.since, Some(Duration::from_secs(7200)));
    let req = list_request(&args, NOW, String::new());
    assert_eq!(req.created_after_ms, NOW - 7_200_000);
    assert_eq!(req.created_before_ms, 0);
    assert_eq!(req.statuses, [failed, paused, compensated]);
    assert_eq!(req.kind, "");
    assert_eq!(
        req.page,
        Some(pb::PageRequest {
            page_size: 50,
            page_token: String::new()
        })
    );

    let args = list_args(&["--since", "1d12h", "--kind", "demo", "--limit", "7"]);
    let req = list_request(&args, NOW, "tok".into());
    assert_eq!(req.created_after_ms, NOW - 129_600_000);
    assert_eq!(req.kind, "demo");
    assert_eq!(
        req.page.unwrap(),
        pb::PageRequest {
            page_size: 7,
            page_token: "tok".into()
        }
    );

    let req = list_request(&list_args(&[]), NOW, String::new());
    assert_eq!(req.created_after_ms, 0, "no --since: no lower bound");
    assert!(req.statuses.is_empty());
}

#[test]
fn list_flags_are_checked_by_the_parser() {
    let e = parse(&["list", "--since", "30"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    assert!(e.to_string().contains("lacks a unit"), "{e}");
    let e = parse(&["list", "--since", "yesterday"]).unwrap_err();
    assert!(e.to_string().contains("not a duration"), "{e}");
    let e = parse(&["list", "--status", "done"]).unwrap_err();
    assert!(
        e.to_string()
            .contains(SagaStatus::CompensationFailed.as_str()),
        "lists the statuses: {e}"
    );
    let e = parse(&["list", "--limit", "0"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    let e = parse(&["list", "--limit", "501"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    let e = parse(&["list", "--all-pages", "--page-token", "x"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    assert!(list_args(&["--all-pages"]).all_pages);
}

fn start_args(args: &[&str]) -> StartArgs {
    let mut argv = vec!["start"];
    argv.extend_from_slice(args);
    match parse(&argv).unwrap().command {
        Command::Sagas(SagasCommand::Start(a)) => a,
        other => panic!("not sagas start: {other:?}"),
    }
}

#[test]
fn start_sends_the_inputs_as_given_after_checking_them() {
    let inputs = r#"{"steps":[{"step":"noop"}]}"#;
    let req = start_request(&start_args(&["demo", "--inputs", inputs, "--key", "k1"])).unwrap();
    assert_eq!(req.kind, "demo");
    assert_eq!(req.inputs_json, inputs);
    assert_eq!(req.idempotency_key, "k1");

    let req = start_request(&start_args(&["demo"])).unwrap();
    assert_eq!(req.inputs_json, "{}");
    assert_eq!(req.idempotency_key, "");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inputs.json");
    std::fs::write(&path, inputs).unwrap();
    let req = start_request(&start_args(&[
        "demo",
        "--inputs-file",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(req.inputs_json, inputs);
}

#[test]
fn start_refuses_inputs_that_are_not_a_json_object() {
    for (args, says) in [
        (vec!["demo", "--inputs", "{"], "--inputs is not valid JSON"),
        (
            vec!["demo", "--inputs", "[1]"],
            "--inputs must hold a JSON object",
        ),
        (
            vec!["demo", "--inputs", "42"],
            "--inputs must hold a JSON object",
        ),
        (
            vec!["demo", "--inputs-file", "/nonexistent/inputs.json"],
            "cannot read --inputs-file",
        ),
        (vec![" ", "--inputs", "{}"], "the saga kind is empty"),
    ] {
        let e = start_request(&start_args(&args)).unwrap_err();
        assert_eq!(exit_code(&e), exit::INVALID, "{args:?}");
        assert!(e.to_string().contains(says), "{args:?}: {e}");
    }
    let e = parse(&["start", "demo", "--inputs", "{}", "--inputs-file", "x"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
}

#[test]
fn actions_and_skip_parse_their_reason_and_step() {
    match parse(&["skip", ID, "3", "--reason", "done by hand"])
        .unwrap()
        .command
    {
        Command::Sagas(SagasCommand::Skip {
            saga_id,
            step_index,
            reason,
        }) => {
            assert_eq!(saga_id, ID);
            assert_eq!(step_index, 3);
            assert_eq!(reason.as_deref(), Some("done by hand"));
        }
        other => panic!("not skip: {other:?}"),
    }
    for action in ["cancel", "retry", "resume", "abandon"] {
        assert!(parse(&[action, ID]).is_ok(), "{action}");
    }
    assert!(parse(&["skip", ID, "-1"]).is_err());
    assert!(parse(&["watch"]).is_err());
}
