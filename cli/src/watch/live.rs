//! The live view of a watched saga on a terminal: a bar of the steps done with the time since
//! the watch began, then one line per step: a spinner with the step's own elapsed time while
//! it runs, a bar with bytes, rate and ETA while it reports progress, and the ledger at the
//! end.

use std::io::{self, Write};

use berth_proto::v1 as pb;
use berth_shared::saga::{EventKind, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Render, SagaEnd, WATCH_END, event_time, one_line, progress_text};
use crate::output::{human_duration_ms, utc_time};

/// Where a step's line is: only running lines turn their spinner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Transfer,
    Done,
}

struct StepLine {
    bar: ProgressBar,
    phase: Phase,
    /// When the step's first attempt started, from its events.
    started_ms: Option<i64>,
}

/// The bar styles; templates are fixed, so they parse (a unit test makes sure).
struct Styles {
    still: ProgressStyle,
    spinner: ProgressStyle,
    transfer: ProgressStyle,
}

const STEPS: &str = "{prefix}  [{bar:24.green/blue}] {pos}/{len} steps done  {elapsed_precise}";
const STILL: &str = "{prefix}  {msg}";
const SPINNER: &str = "{prefix}  {spinner:.cyan} {elapsed:>4} {wide_msg}";
const TRANSFER: &str = "{prefix}  {spinner:.cyan} [{bar:24.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}";

impl Styles {
    fn new() -> Self {
        let style = |t: &str| {
            ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_spinner())
        };
        Self {
            still: style(STILL),
            spinner: style(SPINNER),
            transfer: style(TRANSFER).progress_chars("=> "),
        }
    }
}

/// The live view: a [`MultiProgress`] with one bar per step of the saga.
pub(super) struct LiveView {
    multi: MultiProgress,
    /// Steps done (completed or skipped) of all, over the step lines.
    done: ProgressBar,
    steps: Vec<StepLine>,
    styles: Styles,
}

impl LiveView {
    /// A view drawn on stdout, after a header line naming the saga written to `out`.
    pub(super) fn to_stdout(saga: &pb::Saga, out: &mut dyn Write) -> io::Result<Self> {
        writeln!(out, "saga {} ({})", saga.saga_id, saga.kind)?;
        out.flush()?;
        Ok(Self::new(saga, ProgressDrawTarget::stdout()))
    }

    /// A view of `saga`'s steps drawn on `target`, every step waiting.
    pub(super) fn new(saga: &pb::Saga, target: ProgressDrawTarget) -> Self {
        let styles = Styles::new();
        let multi = MultiProgress::with_draw_target(target);
        let done = multi.add(ProgressBar::new(saga.steps.len() as u64));
        done.set_style(
            ProgressStyle::with_template(STEPS)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        done.set_prefix("saga");
        let index_width = saga.steps.len().saturating_sub(1).to_string().len();
        let name_width = saga
            .steps
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let steps = saga
            .steps
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(styles.still.clone());
                bar.set_prefix(format!(
                    "{:>index_width$}  {:<name_width$}",
                    s.index, s.name
                ));
                bar.set_message("· pending");
                StepLine {
                    bar,
                    phase: Phase::Waiting,
                    started_ms: None,
                }
            })
            .collect();
        Self {
            multi,
            done,
            steps,
            styles,
        }
    }

    /// Moves the steps-done bar to the lines that completed or were skipped.
    fn count_done(&self) {
        let n = self
            .steps
            .iter()
            .filter(|l| l.phase == Phase::Done && l.bar.message().starts_with(['✓', '↷']))
            .count();
        self.done.set_position(n as u64);
    }

    fn set(line: &mut StepLine, styles: &Styles, phase: Phase, message: String) {
        if line.phase != phase {
            line.bar.set_style(match phase {
                Phase::Waiting | Phase::Done => styles.still.clone(),
                Phase::Running => styles.spinner.clone(),
                Phase::Transfer => styles.transfer.clone(),
            });
            line.phase = phase;
        }
        line.bar.set_message(message);
    }

    /// A step's line from the ledger, for the end of the watch.
    fn settle(line: &mut StepLine, styles: &Styles, step: &pb::SagaStep) {
        let took = match (crate::output::attempt_start(step), step.finished_at_ms) {
            (s, f) if s > 0 && f >= s => format!(" in {}", human_duration_ms(f - s)),
            _ => String::new(),
        };
        let error = one_line(&step.error);
        let message = match step.status.parse().ok() {
            Some(StepStatus::Completed) => format!("✓ completed{took}"),
            Some(StepStatus::Skipped) => "↷ skipped".to_owned(),
            Some(StepStatus::Compensated) => "↺ compensated".to_owned(),
            Some(StepStatus::Pending) => "· not run".to_owned(),
            Some(StepStatus::Failed) if error.is_empty() => "✗ failed".to_owned(),
            Some(StepStatus::Failed) => format!("✗ failed: {error}"),
            Some(StepStatus::Cancelled) => format!("⊘ cancelled{took}"),
            Some(StepStatus::Abandoned) => format!("⊘ abandoned{took}"),
            _ if error.is_empty() => step.status.clone(),
            _ => format!("{}: {error}", step.status),
        };
        Self::set(line, styles, Phase::Done, message);
    }
}

impl Render for LiveView {
    fn event(&mut self, e: &pb::SagaEvent, now_ms: i64, _out: &mut dyn Write) -> io::Result<()> {
        let at = event_time(e, now_ms);
        let message = one_line(&e.message);
        let Some(line) = usize::try_from(e.step_index)
            .ok()
            .and_then(|i| self.steps.get_mut(i))
        else {
            if e.kind != WATCH_END {
                // The saga's own events scroll above the steps.
                let time = utc_time(at);
                let time = time.get(11..19).unwrap_or(&time);
                self.multi.println(format!("{time} {} {message}", e.kind))?;
            }
            return Ok(());
        };
        let styles = &self.styles;
        match e.kind.parse().ok() {
            Some(EventKind::StepStarted) => {
                // Each attempt starts the clock again: a duration is the latest attempt's.
                line.started_ms = Some(at);
                if line.phase != Phase::Running {
                    line.bar.reset_elapsed();
                }
                Self::set(line, styles, Phase::Running, format!("running ({message})"));
            }
            Some(EventKind::StepProgress) => match &e.progress {
                Some(p) if p.bytes_total > 0 => {
                    line.bar.set_length(p.bytes_total);
                    line.bar.set_position(p.bytes_done.min(p.bytes_total));
                    let phase = if p.phase.is_empty() {
                        message
                    } else {
                        one_line(&p.phase)
                    };
                    Self::set(line, styles, Phase::Transfer, phase);
                }
                Some(p) => Self::set(line, styles, Phase::Running, progress_text(p)),
                None => Self::set(line, styles, Phase::Running, message),
            },
            Some(EventKind::StepRetrying) => {
                Self::set(line, styles, Phase::Running, format!("retrying: {message}"));
            }
            Some(EventKind::StepSucceeded) => {
                let took = line
                    .started_ms
                    .map(|s| format!(" in {}", human_duration_ms(at - s)))
                    .unwrap_or_default();
                Self::set(line, styles, Phase::Done, format!("✓ completed{took}"));
            }
            Some(EventKind::StepFailed) => {
                Self::set(line, styles, Phase::Done, format!("✗ failed: {message}"))
            }
            Some(EventKind::StepCancelled) => {
                Self::set(line, styles, Phase::Done, "⊘ cancelled".to_owned())
            }
            Some(EventKind::CompensationStepStarted) => {
                Self::set(line, styles, Phase::Running, "undoing".to_owned());
            }
            Some(EventKind::CompensationRetrying) => {
                Self::set(
                    line,
                    styles,
                    Phase::Running,
                    format!("undoing, retrying: {message}"),
                );
            }
            Some(EventKind::StepCompensated) => {
                Self::set(line, styles, Phase::Done, "↺ compensated".to_owned())
            }
            Some(EventKind::SagaCompensationFailed) => {
                Self::set(
                    line,
                    styles,
                    Phase::Done,
                    format!("✗ undo failed: {message}"),
                );
            }
            _ => line.bar.set_message(format!("{}: {message}", e.kind)),
        }
        self.count_done();
        Ok(())
    }

    fn tick(&mut self) {
        self.done.tick();
        for line in &self.steps {
            if matches!(line.phase, Phase::Running | Phase::Transfer) {
                line.bar.tick();
            }
        }
    }

    fn finish(
        &mut self,
        saga: Option<&pb::Saga>,
        end: &SagaEnd,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        if let Some(saga) = saga {
            for (line, step) in self.steps.iter_mut().zip(&saga.steps) {
                Self::settle(line, &self.styles, step);
            }
        }
        self.count_done();
        self.done.finish();
        for line in &self.steps {
            line.bar.finish();
        }
        let took = saga
            .filter(|s| s.created_at_ms > 0 && s.updated_at_ms >= s.created_at_ms)
            .map(|s| {
                format!(
                    " after {}",
                    human_duration_ms(s.updated_at_ms - s.created_at_ms)
                )
            })
            .unwrap_or_default();
        let error = saga
            .map(|s| one_line(&s.error))
            .filter(|e| !e.is_empty())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "saga {} {}{took}{error}",
            end.saga_id, end.final_status
        )
    }
}

#[cfg(test)]
impl LiveView {
    /// The steps-done bar: (done, of all).
    pub(super) fn steps_done(&self) -> (u64, u64) {
        (self.done.position(), self.done.length().unwrap_or(0))
    }

    /// Each step's message and, while it transfers, its position and length.
    pub(super) fn lines(&self) -> Vec<(String, Option<(u64, u64)>)> {
        self.steps
            .iter()
            .map(|l| {
                let transfer = (l.phase == Phase::Transfer)
                    .then(|| (l.bar.position(), l.bar.length().unwrap_or(0)));
                (l.bar.message(), transfer)
            })
            .collect()
    }
}
