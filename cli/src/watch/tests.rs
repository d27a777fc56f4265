//! Watch rendering: plain lines, NDJSON, the live view's steps, and the exit code of the end.

use std::sync::{Arc, Mutex};

use berth_shared::saga::StepStatus;
use indicatif::{ProgressDrawTarget, TermLike};
use serde_json::{Value, json};

use super::live::LiveView;
use super::*;
use crate::error::{exit, exit_code};

const NOW: i64 = 1_750_000_000_000;
const ID: &str = "0197a0c2-7b1e-7cc0-9d7c-1a2b3c4d5e6f";

fn event(seq: u64, kind: &str, step_index: i32, message: &str) -> pb::SagaEvent {
    pb::SagaEvent {
        seq,
        saga_id: ID.into(),
        kind: kind.into(),
        step_index,
        message: message.into(),
        at_ms: NOW + seq as i64 * 10,
        progress: None,
        final_status: String::new(),
    }
}

fn progress(done: u64, total: u64) -> pb::Progress {
    pb::Progress {
        bytes_done: done,
        bytes_total: total,
        entries_done: 3,
        entries_total: 40,
        bytes_written: 0,
        phase: "uploading".into(),
    }
}

fn watch_end(seq: u64, status: &str) -> pb::SagaEvent {
    pb::SagaEvent {
        at_ms: 0,
        final_status: status.into(),
        ..event(seq, WATCH_END, -1, &format!("saga {status}"))
    }
}

/// A short history: start, a step that reports progress, a retry, success, the end.
fn history() -> Vec<pb::SagaEvent> {
    let mut p = event(4, "step_progress", 0, "uploading");
    p.progress = Some(progress(3 * 1024 * 1024, 12 * 1024 * 1024));
    vec![
        event(1, "saga_started", -1, "demo"),
        event(2, "saga_running", -1, "coord-a"),
        event(3, "step_started", 0, "attempt 1"),
        p,
        event(5, "step_succeeded", 0, "upload"),
        event(6, "step_started", 1, "attempt 1"),
        event(
            7,
            "step_retrying",
            1,
            "failing on purpose,\nattempt 1 of 1 planned failures",
        ),
        event(8, "step_started", 1, "attempt 2"),
        event(9, "step_succeeded", 1, "flaky"),
        event(10, "saga_completed", -1, SagaStatus::Completed.as_str()),
        watch_end(10, SagaStatus::Completed.as_str()),
    ]
}

fn render_all(render: &mut dyn Render, events: &[pb::SagaEvent]) -> String {
    let mut out = Vec::new();
    for e in events {
        render.event(e, NOW + 5_000, &mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn plain_lines_are_time_kind_step_message() {
    let out = render_all(&mut Lines, &history());
    assert_eq!(
        out,
        "2025-06-15T15:06:40.010Z saga_started step=- demo\n\
         2025-06-15T15:06:40.020Z saga_running step=- coord-a\n\
         2025-06-15T15:06:40.030Z step_started step=0 attempt 1\n\
         2025-06-15T15:06:40.040Z step_progress step=0 uploading [uploading] 3.0 MiB/12.0 MiB (25%) 3/40 entries\n\
         2025-06-15T15:06:40.050Z step_succeeded step=0 upload\n\
         2025-06-15T15:06:40.060Z step_started step=1 attempt 1\n\
         2025-06-15T15:06:40.070Z step_retrying step=1 failing on purpose, attempt 1 of 1 planned failures\n\
         2025-06-15T15:06:40.080Z step_started step=1 attempt 2\n\
         2025-06-15T15:06:40.090Z step_succeeded step=1 flaky\n\
         2025-06-15T15:06:40.100Z saga_completed step=- completed\n\
         2025-06-15T15:06:45.000Z watch_end step=- saga completed\n"
    );
}

#[test]
fn progress_text_shows_what_is_known() {
    assert_eq!(progress_text(&pb::Progress::default()), "");
    let p = pb::Progress {
        bytes_done: 1536,
        bytes_total: 0,
        entries_done: 7,
        entries_total: 0,
        bytes_written: 512,
        phase: "tarring keycloak_db".into(),
    };
    assert_eq!(
        progress_text(&p),
        "[tarring keycloak_db] 1.5 KiB 7 entries 512 B written"
    );
    let mut done = progress(10, 10);
    done.entries_total = 0;
    done.entries_done = 0;
    assert_eq!(progress_text(&done), "[uploading] 10 B/10 B (100%)");
    let e = event(1, "step_progress", 2, "");
    assert_eq!(
        plain_line(&e, NOW),
        "2025-06-15T15:06:40.010Z step_progress step=2"
    );
}

#[test]
fn ndjson_is_one_object_per_event_per_line() {
    let events = history();
    let out = render_all(&mut Ndjson, &events);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), events.len());
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        parsed[0],
        json!({
            "seq": 1,
            "saga_id": ID,
            "kind": "saga_started",
            "step_index": null,
            "message": "demo",
            "at_ms": NOW + 10,
            "progress": null,
            "final_status": null,
        })
    );
    assert_eq!(parsed[3]["step_index"], 0);
    assert_eq!(
        parsed[3]["progress"],
        json!({
            "phase": "uploading",
            "bytes_done": 3 * 1024 * 1024,
            "bytes_total": 12 * 1024 * 1024,
            "entries_done": 3,
            "entries_total": 40,
            "bytes_written": 0,
        })
    );
    let last = parsed.last().unwrap();
    assert_eq!(last["kind"], "watch_end");
    assert_eq!(last["final_status"], SagaStatus::Completed.as_str());
    assert_eq!(
        last["at_ms"],
        NOW + 5_000,
        "the end carries the time it was seen"
    );
}

#[test]
fn json_output_streams_and_a_terminal_gets_the_live_view() {
    assert_eq!(WatchMode::pick(OutputFormat::Json, true), WatchMode::Json);
    assert_eq!(WatchMode::pick(OutputFormat::Json, false), WatchMode::Json);
    assert_eq!(WatchMode::pick(OutputFormat::Table, true), WatchMode::Live);
    assert_eq!(
        WatchMode::pick(OutputFormat::Table, false),
        WatchMode::Lines
    );
}

#[test]
fn only_a_completed_saga_exits_0() {
    let end = |status: &str| SagaEnd {
        saga_id: ID.into(),
        final_status: status.into(),
    };
    assert!(end(SagaStatus::Completed.as_str()).into_result().is_ok());
    for status in SagaStatus::ALL
        .iter()
        .filter(|s| s.is_final() && **s != SagaStatus::Completed)
    {
        let e = end(status.as_str()).into_result().unwrap_err();
        assert_eq!(exit_code(&e), exit::SAGA_NOT_COMPLETED, "{status}");
        assert!(e.to_string().contains(ID), "{e}");
    }
}

fn saga(steps: &[&str]) -> pb::Saga {
    pb::Saga {
        saga_id: ID.into(),
        kind: "demo".into(),
        status: SagaStatus::Running.as_str().into(),
        steps: steps
            .iter()
            .enumerate()
            .map(|(i, name)| pb::SagaStep {
                index: i as u32,
                name: (*name).into(),
                status: StepStatus::Pending.as_str().into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn the_live_view_follows_each_step() {
    let mut view = LiveView::new(
        &saga(&["upload", "flaky", "fail"]),
        ProgressDrawTarget::hidden(),
    );
    let pending = || ("· pending".to_owned(), None);
    assert_eq!(view.lines(), [pending(), pending(), pending()]);
    assert_eq!(view.steps_done(), (0, 3));

    let events = history();
    render_all(&mut view, &events[..4]);
    assert_eq!(
        view.lines()[0],
        (
            "uploading".to_owned(),
            Some((3 * 1024 * 1024, 12 * 1024 * 1024))
        ),
        "a step that reports bytes gets a bar"
    );
    render_all(&mut view, &events[4..7]);
    let lines = view.lines();
    assert_eq!(lines[0], ("✓ completed in 20ms".to_owned(), None));
    assert_eq!(
        view.steps_done(),
        (1, 3),
        "the steps-done bar moves with each step"
    );
    assert_eq!(
        lines[1].0,
        "retrying: failing on purpose, attempt 1 of 1 planned failures"
    );
    render_all(&mut view, &events[7..9]);
    assert_eq!(
        view.lines()[1].0,
        "✓ completed in 10ms",
        "the second attempt's time, not the wait since the first"
    );
    assert_eq!(view.steps_done(), (2, 3));
    render_all(&mut view, &[event(20, "step_started", 2, "attempt 1")]);
    assert_eq!(view.lines()[2].0, "running (attempt 1)");
    render_all(
        &mut view,
        &[
            event(21, "step_failed", 2, "failed on purpose"),
            event(22, "compensation_step_started", 1, "flaky"),
        ],
    );
    assert_eq!(view.lines()[2].0, "✗ failed: failed on purpose");
    assert_eq!(
        view.steps_done(),
        (1, 3),
        "neither a failed step nor one being undone"
    );
    assert_eq!(view.lines()[1].0, "undoing");
    render_all(&mut view, &[event(23, "step_compensated", 1, "flaky")]);
    assert_eq!(view.lines()[1].0, "↺ compensated");
    assert_eq!(
        view.steps_done(),
        (1, 3),
        "an undone step is no longer done"
    );
    // Events for steps the view does not know are ignored, not a panic.
    render_all(&mut view, &[event(24, "step_started", 9, "attempt 1")]);
}

#[test]
fn the_live_view_ends_on_the_ledger_and_a_summary_line() {
    let mut view = LiveView::new(
        &saga(&["noop", "fail", "record"]),
        ProgressDrawTarget::hidden(),
    );
    let mut ended = saga(&["noop", "fail", "record"]);
    ended.status = SagaStatus::Failed.as_str().into();
    ended.created_at_ms = NOW;
    ended.updated_at_ms = NOW + 1_500;
    ended.error = "failed on purpose".into();
    ended.steps[0].status = StepStatus::Completed.as_str().into();
    ended.steps[0].started_at_ms = NOW + 10;
    ended.steps[0].finished_at_ms = NOW + 15;
    ended.steps[1].status = StepStatus::Skipped.as_str().into();
    ended.steps[2].status = StepStatus::Failed.as_str().into();
    ended.steps[2].error = "failed\non purpose".into();
    let end = SagaEnd {
        saga_id: ID.into(),
        final_status: SagaStatus::Failed.as_str().into(),
    };
    let mut out = Vec::new();
    view.finish(Some(&ended), &end, &mut out).unwrap();
    let messages: Vec<String> = view.lines().into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        messages,
        [
            "✓ completed in 5ms",
            "↷ skipped",
            "✗ failed: failed on purpose"
        ]
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("saga {ID} failed after 1.5s: failed on purpose\n")
    );
}

/// `s` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut plain = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// A terminal that keeps what is drawn on it.
#[derive(Debug, Clone, Default)]
struct Screen(Arc<Mutex<Vec<String>>>);

impl TermLike for Screen {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push(s.to_owned());
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_live_view_draws_names_bars_and_saga_events() {
    let screen = Screen::default();
    let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
    let mut view = LiveView::new(&saga(&["upload", "flaky"]), target);
    let events = history();
    render_all(&mut view, &events[..4]);
    view.tick();
    let drawn = screen.0.lock().unwrap().join("\n");
    let plain = strip_ansi(&drawn);
    assert!(plain.contains("0  upload"), "{plain}");
    assert!(plain.contains("1  flaky   · pending"), "{plain}");
    assert!(
        plain.contains("3.00 MiB/12.00 MiB"),
        "bytes of the bar: {plain}"
    );
    assert!(plain.contains("eta "), "{plain}");
    assert!(
        plain.contains("saga_started demo"),
        "saga events scroll above: {plain}"
    );
}
