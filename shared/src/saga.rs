//! The saga ledger's vocabulary: the statuses of sagas and steps, the kinds of history
//! events, and the one table of legal status changes that the engine (on every write, in
//! debug builds) and the tests' ledger checker both read. Stored as the strings `as_str`
//! gives; a row holding anything else is corrupt.

use std::fmt;
use std::str::FromStr;

/// A stored value that is not one of an enum's strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of {expected}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! ledger_enum {
    ($(#[$doc:meta])* $name:ident as $what:literal {
        $($(#[$vdoc:meta])* $variant:ident => $text:literal),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownValue {
                        what: $what,
                        value: other.to_owned(),
                        expected: [$($text),*].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

ledger_enum!(
    /// Where a saga is in its life.
    SagaStatus as "saga status" {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Compensating => "compensating",
        Compensated => "compensated",
        CompensationFailed => "compensation_failed",
        Cancelled => "cancelled",
        Paused => "paused",
        Failed => "failed",
        Abandoned => "abandoned",
    }
);

ledger_enum!(
    /// Where one step of a saga is.
    StepStatus as "step status" {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Compensating => "compensating",
        Compensated => "compensated",
        Skipped => "skipped",
        /// Stopped by an operator's cancel; the saga compensates the steps before it.
        Cancelled => "cancelled",
        /// In flight when an operator abandoned the saga: nothing will finish or undo it.
        Abandoned => "abandoned",
    }
);

ledger_enum!(
    /// What one entry of a saga's history records.
    EventKind as "event kind" {
        SagaStarted => "saga_started",
        /// Claimed by an executor (first time, or taken over).
        SagaRunning => "saga_running",
        /// Handed back by an executor that shut down.
        SagaReleased => "saga_released",
        SagaPaused => "saga_paused",
        SagaCompleted => "saga_completed",
        SagaFailed => "saga_failed",
        SagaCompensated => "saga_compensated",
        SagaCompensationFailed => "saga_compensation_failed",
        SagaCancelled => "saga_cancelled",
        SagaAbandoned => "saga_abandoned",
        CancelRequested => "cancel_requested",
        StepStarted => "step_started",
        StepProgress => "step_progress",
        StepRetrying => "step_retrying",
        StepSucceeded => "step_succeeded",
        StepFailed => "step_failed",
        StepCancelled => "step_cancelled",
        CompensationStarted => "compensation_started",
        CompensationStepStarted => "compensation_step_started",
        CompensationRetrying => "compensation_retrying",
        StepCompensated => "step_compensated",
        OperatorRetry => "operator_retry",
        OperatorSkip => "operator_skip",
        OperatorResumeCompensation => "operator_resume_compensation",
        OperatorAbandon => "operator_abandon",
        /// Only on a `WatchSaga` stream, never stored: the saga reached a resting status.
        WatchEnd => "watch_end",
    }
);

impl SagaStatus {
    /// Statuses an executor claims and works on.
    pub const ACTIVE: [SagaStatus; 3] = [
        SagaStatus::Pending,
        SagaStatus::Running,
        SagaStatus::Compensating,
    ];

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// No executor will touch the saga again without an operator.
    pub fn is_final(self) -> bool {
        !self.is_active()
    }

    /// Nothing, not even an operator, can run the saga again: no change is legal from here.
    pub fn is_over(self) -> bool {
        !Self::ALL
            .iter()
            .any(|&next| next != self && self.can_become(next))
    }

    /// Whether a saga in `self` may be written as `next`: the one table of legal changes
    /// (an executor's or an operator's). Writing the same status again is always legal.
    pub fn can_become(self, next: SagaStatus) -> bool {
        use SagaStatus::*;
        self == next
            || match self {
                // An executor drives forward, starts compensating, fails forward after a
                // pivot or a step that waits for an operator, finishes, or pauses a saga
                // reclaimed too often.
                Pending | Running => matches!(
                    next,
                    Running | Compensating | Completed | Failed | Paused | Abandoned
                ),
                // Failed: a saga whose kind this build no longer runs.
                Compensating => matches!(
                    next,
                    Compensated | Cancelled | CompensationFailed | Paused | Abandoned | Failed
                ),
                // Operators: retry or skip (forward), resume compensation, abandon.
                Failed => matches!(next, Running | Abandoned),
                Paused => matches!(next, Running | Compensating | Abandoned),
                CompensationFailed => matches!(next, Compensating | Abandoned),
                Completed | Compensated | Cancelled | Abandoned => false,
            }
    }
}

impl StepStatus {
    /// Whether a step in `self` may be written as `next` (writing the same status again is
    /// always legal: a retry, a takeover).
    pub fn can_become(self, next: StepStatus) -> bool {
        use StepStatus::*;
        self == next
            || match self {
                Pending => matches!(next, Running | Failed | Skipped),
                // A step left running by a dead executor may be compensated, or reset by an
                // operator.
                Running => matches!(
                    next,
                    Completed | Failed | Cancelled | Compensating | Pending | Skipped | Abandoned
                ),
                // A cancelled step after a pivot fails the saga forward, for an operator.
                Failed | Cancelled => matches!(next, Pending | Running | Skipped),
                Completed => matches!(next, Compensating),
                Compensating => matches!(next, Compensated | Skipped | Abandoned),
                Compensated | Skipped | Abandoned => false,
            }
    }
}

impl EventKind {
    /// The status a step has after this event about it, for events that set one.
    pub fn step_status(self) -> Option<StepStatus> {
        use EventKind::*;
        Some(match self {
            StepStarted => StepStatus::Running,
            StepSucceeded => StepStatus::Completed,
            StepFailed => StepStatus::Failed,
            StepCancelled => StepStatus::Cancelled,
            CompensationStepStarted => StepStatus::Compensating,
            StepCompensated => StepStatus::Compensated,
            _ => return None,
        })
    }

    /// The event that records a saga coming to rest in `status`, if that is a resting one.
    pub fn saga_ended(status: SagaStatus) -> Option<EventKind> {
        use SagaStatus::*;
        Some(match status {
            Completed => EventKind::SagaCompleted,
            Failed => EventKind::SagaFailed,
            Compensated => EventKind::SagaCompensated,
            CompensationFailed => EventKind::SagaCompensationFailed,
            Cancelled => EventKind::SagaCancelled,
            Paused => EventKind::SagaPaused,
            Abandoned => EventKind::SagaAbandoned,
            Pending | Running | Compensating => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_string() {
        for s in SagaStatus::ALL {
            assert_eq!(s.as_str().parse::<SagaStatus>(), Ok(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
        }
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
        }
        let err = "done".parse::<SagaStatus>().unwrap_err();
        assert_eq!(err.what, "saga status");
        assert!(err.to_string().contains("compensation_failed"), "{err}");
    }

    #[test]
    fn resting_sagas_move_only_by_operators_and_finished_ones_never() {
        use SagaStatus::*;
        for done in [Completed, Compensated, Cancelled, Abandoned] {
            for next in SagaStatus::ALL {
                assert_eq!(done.can_become(*next), done == *next, "{done} -> {next}");
            }
        }
        assert!(Failed.can_become(Running) && Paused.can_become(Compensating));
        assert!(
            !Failed.can_become(Compensating),
            "a failed saga is retried or abandoned"
        );
        assert!(
            !Running.can_become(Cancelled),
            "cancelling goes through compensating"
        );
        assert!(!Failed.can_become(Completed));
        for s in SagaStatus::ALL {
            assert!(EventKind::saga_ended(*s).is_some() == s.is_final(), "{s}");
        }
    }

    #[test]
    fn a_saga_is_over_only_when_no_change_is_legal() {
        use SagaStatus::*;
        let over: Vec<SagaStatus> = SagaStatus::ALL
            .iter()
            .copied()
            .filter(|s| s.is_over())
            .collect();
        assert_eq!(over, [Completed, Compensated, Cancelled, Abandoned]);
    }

    #[test]
    fn events_set_the_statuses_the_step_table_allows() {
        use StepStatus::*;
        assert!(!Compensated.can_become(Running) && !Skipped.can_become(Pending));
        assert!(Running.can_become(Cancelled) && Running.can_become(Abandoned));
        assert!(Compensating.can_become(Abandoned) && !Failed.can_become(Abandoned));
        assert!(
            StepStatus::ALL
                .iter()
                .all(|s| !Abandoned.can_become(*s) || *s == Abandoned),
            "an abandoned step is over"
        );
        assert_eq!(EventKind::StepCancelled.step_status(), Some(Cancelled));
        assert!(
            !Completed.can_become(Failed),
            "a completed step is only compensated"
        );
        for k in EventKind::ALL {
            if let Some(s) = k.step_status() {
                assert!(
                    StepStatus::ALL
                        .iter()
                        .any(|from| *from != s && from.can_become(s)),
                    "{k} sets {s}, which nothing may become"
                );
            }
        }
    }
}
