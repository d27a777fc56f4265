use super::*;

fn view(status: SagaStatus, steps: &[(StepStatus, bool)]) -> SagaView {
    SagaView {
        status,
        cancel_requested: false,
        steps: steps
            .iter()
            .map(|&(status, pivot)| StepView {
                status,
                pivot,
                on_failure: OnFailure::Compensate,
            })
            .collect(),
    }
}

use StepStatus::*;

#[test]
fn runs_steps_in_order_then_completes() {
    let s = view(SagaStatus::Pending, &[(Pending, false), (Pending, false)]);
    assert_eq!(next(&s), Next::Execute(0));
    let s = view(SagaStatus::Running, &[(Completed, false), (Pending, false)]);
    assert_eq!(next(&s), Next::Execute(1));
    let s = view(SagaStatus::Running, &[(Completed, false), (Skipped, false)]);
    assert_eq!(next(&s), Next::Finish(SagaStatus::Completed));
}

#[test]
fn a_step_found_running_is_executed_again_in_adopt_mode() {
    let s = view(SagaStatus::Running, &[(Completed, false), (Running, false)]);
    assert_eq!(next(&s), Next::Execute(1));
}

#[test]
fn failure_before_a_pivot_compensates_completed_steps_in_reverse() {
    let s = view(
        SagaStatus::Running,
        &[(Completed, false), (Completed, false), (Failed, false)],
    );
    assert_eq!(next(&s), Next::BeginCompensation);
    let s = view(
        SagaStatus::Compensating,
        &[(Completed, false), (Completed, false), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Compensate(1));
    let s = view(
        SagaStatus::Compensating,
        &[(Completed, false), (Compensated, false), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Compensate(0));
    let s = view(
        SagaStatus::Compensating,
        &[(Compensated, false), (Compensated, false), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Finish(SagaStatus::Compensated));
}

#[test]
fn a_crash_during_compensation_resumes_the_step_being_compensated() {
    let s = view(
        SagaStatus::Compensating,
        &[(Completed, false), (Compensating, false), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Compensate(1));
}

#[test]
fn failure_after_a_pivot_fails_forward() {
    let s = view(
        SagaStatus::Running,
        &[(Completed, false), (Completed, true), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Finish(SagaStatus::Failed));
}

#[test]
fn pivots_are_never_compensated() {
    // An operator forcing compensation after a pivot: only non-pivot steps are undone.
    let s = view(
        SagaStatus::Compensating,
        &[(Completed, false), (Completed, true), (Failed, false)],
    );
    assert_eq!(next(&s), Next::Compensate(0));
}

#[test]
fn cancel_before_a_pivot_compensates_and_ends_cancelled() {
    let mut s = view(SagaStatus::Running, &[(Completed, false), (Pending, false)]);
    s.cancel_requested = true;
    assert_eq!(next(&s), Next::BeginCompensation);
    let mut s = view(
        SagaStatus::Compensating,
        &[(Compensated, false), (Pending, false)],
    );
    s.cancel_requested = true;
    assert_eq!(next(&s), Next::Finish(SagaStatus::Cancelled));
}

#[test]
fn cancel_after_a_pivot_is_ignored_and_the_saga_goes_on() {
    let mut s = view(SagaStatus::Running, &[(Completed, true), (Pending, false)]);
    s.cancel_requested = true;
    assert_eq!(next(&s), Next::Execute(1));
}

#[test]
fn final_statuses_stay_final() {
    for st in [
        SagaStatus::Completed,
        SagaStatus::Failed,
        SagaStatus::Paused,
        SagaStatus::Abandoned,
    ] {
        assert_eq!(next(&view(st, &[(Pending, false)])), Next::Finish(st));
        assert!(st.is_final());
    }
}

#[test]
fn backoff_grows_stays_in_bounds_and_is_capped() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(60),
        deadline: Duration::from_secs(600),
    };
    let ceilings: Vec<_> = (1..=7).map(|a| p.ceiling(a).as_secs()).collect();
    assert_eq!(ceilings, [2, 4, 8, 16, 32, 60, 60]);
    for attempt in 1..=40 {
        for unit in [0.0, 0.25, 0.5, 0.999] {
            let w = p.backoff(attempt, unit);
            assert!(
                w >= p.ceiling(attempt) / 2 && w <= p.ceiling(attempt),
                "{attempt} {unit} {w:?}"
            );
        }
    }
}

#[test]
fn retries_stop_at_the_attempt_limit_or_the_deadline() {
    let p = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(10),
        deadline: Duration::from_secs(30),
    };
    assert!(p.may_retry(1, Duration::ZERO, Duration::from_secs(1)));
    assert!(!p.may_retry(3, Duration::ZERO, Duration::from_secs(1)));
    assert!(!p.may_retry(1, Duration::from_secs(29), Duration::from_secs(2)));
    assert!(!RetryPolicy::NONE.may_retry(1, Duration::ZERO, Duration::ZERO));
}

#[test]
fn a_step_left_running_by_a_crash_is_compensated_when_the_saga_unwinds() {
    let s = view(
        SagaStatus::Compensating,
        &[(Completed, false), (Running, false), (Pending, false)],
    );
    assert_eq!(next(&s), Next::Compensate(1));
}

#[test]
fn a_step_that_waits_for_an_operator_fails_the_saga_unless_it_was_cancelled() {
    let mut s = view(SagaStatus::Running, &[(Failed, false), (Pending, false)]);
    s.steps[0].on_failure = OnFailure::WaitForOperator;
    assert_eq!(next(&s), Next::Finish(SagaStatus::Failed));
    s.cancel_requested = true;
    assert_eq!(next(&s), Next::BeginCompensation);
}
