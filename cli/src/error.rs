//! `CliError`: every way a `berth` command fails, its one-line message and its exit code.

use std::error::Error as StdError;
use std::path::PathBuf;

use berth_shared::saga::SagaStatus;
use tonic::Code;

/// Exit codes a CI script can branch on. `exit_code` is the only place that picks one.
pub mod exit {
    /// The command did what was asked.
    pub const OK: i32 = 0;
    /// Any failure without a more specific code.
    pub const FAILURE: i32 = 1;
    /// The command line or configuration is wrong (clap uses 2 for its own usage errors).
    pub const USAGE: i32 = 2;
    /// The coordinator cannot be reached or is unavailable: worth retrying later.
    pub const UNAVAILABLE: i32 = 3;
    /// The coordinator refused the token, or the token's role may not do this.
    pub const AUTH: i32 = 4;
    /// What was named does not exist.
    pub const NOT_FOUND: i32 = 5;
    /// An argument was refused (invalid argument, failed precondition), before or after sending.
    pub const INVALID: i32 = 6;
    /// A watched saga ended but did not complete: failed, compensated, cancelled,
    /// compensation_failed, paused or abandoned.
    pub const SAGA_NOT_COMPLETED: i32 = 7;
    /// `berth archive verify --wait` found the archive bad.
    pub const VERIFY_FAILED: i32 = 8;
}

/// The text `berth --help` shows about exit codes; kept beside `exit_code` so they agree.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other failure
  2  usage error: bad flag, argument, URL or config file
  3  cannot connect to the coordinator, or it is unavailable (retry later)
  4  the coordinator refused the token, or its role may not do this
  5  not found
  6  invalid argument or failed precondition (nothing was changed)
  7  the saga ended but did not complete: failed, compensated, cancelled,
     compensation_failed, paused or abandoned (`sagas watch`, `--wait`)
  8  the archive failed its verification (`archive verify --wait`)

Environment:
  BERTH_COORDINATOR, BERTH_TOKEN_FILE, BERTH_CA_FILE, BERTH_CONFIG  as the flags of the same name
  BERTH_TOKEN  the bearer token itself (there is no flag for it, so it stays out of `ps`)

Precedence: flag > environment > config file > default. The config file is --config, or
$XDG_CONFIG_HOME/berth/cli.toml, or ~/.config/berth/cli.toml, read only if it exists; its keys
are coordinator, token_file and ca_file. A token file given by flag or BERTH_TOKEN_FILE wins
over BERTH_TOKEN, which wins over the config file's token_file.";

/// Why a `berth` command failed. Messages are one line, lowercase, say what to do, and never
/// contain the token.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or configuration is wrong in a way clap could not see.
    #[error("{0}")]
    Usage(String),
    /// The config file could not be read or parsed.
    #[error("config file {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// The token file could not be read or holds no usable token.
    #[error("token file {}: {message}; check --token-file or BERTH_TOKEN_FILE", path.display())]
    TokenFile { path: PathBuf, message: String },
    /// BERTH_TOKEN holds no usable token.
    #[error("BERTH_TOKEN {0}; set it to the token alone")]
    TokenEnv(&'static str),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {}: {message}; check --ca-file or BERTH_CA_FILE", path.display())]
    CaFile { path: PathBuf, message: String },
    /// An argument the coordinator would refuse, caught before anything was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// No connection to the coordinator could be made.
    #[error("cannot connect to the coordinator at {url}: {reason}; {hint}")]
    Connect {
        url: String,
        reason: String,
        /// What to do about it, e.g. check --coordinator, or pass --ca-file.
        hint: &'static str,
    },
    /// The coordinator answered with an error status.
    #[error("{}", rpc_message(url, status, *token_given))]
    Rpc {
        url: String,
        status: tonic::Status,
        token_given: bool,
    },
    /// The coordinator's answer lacks something it must hold.
    #[error("the coordinator's answer lacks {0}; is it the same version as this berth?")]
    Protocol(&'static str),
    /// A watched saga reached a final status other than `completed`.
    #[error("{}", saga_not_completed_message(saga_id, status))]
    SagaNotCompleted { saga_id: String, status: String },
    /// An archive verify completed and found the archive bad.
    #[error("archive {uuid} failed verification: {problem}")]
    VerifyFailed { uuid: String, problem: String },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The process exit code for an error (see [`exit`]).
pub fn exit_code(e: &CliError) -> i32 {
    match e {
        CliError::Usage(_) | CliError::Config { .. } => exit::USAGE,
        CliError::Connect { .. } => exit::UNAVAILABLE,
        CliError::InvalidArgument(_) => exit::INVALID,
        CliError::Rpc { status, .. } => exit_code_for_status(status.code()),
        CliError::SagaNotCompleted { .. } => exit::SAGA_NOT_COMPLETED,
        CliError::VerifyFailed { .. } => exit::VERIFY_FAILED,
        CliError::TokenFile { .. }
        | CliError::TokenEnv(_)
        | CliError::CaFile { .. }
        | CliError::Protocol(_)
        | CliError::Output(_) => exit::FAILURE,
    }
}

/// The exit code for a gRPC status code the coordinator answered with.
pub fn exit_code_for_status(code: Code) -> i32 {
    match code {
        Code::Ok => exit::OK,
        Code::Unavailable => exit::UNAVAILABLE,
        Code::Unauthenticated | Code::PermissionDenied => exit::AUTH,
        Code::NotFound => exit::NOT_FOUND,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => exit::INVALID,
        Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => exit::FAILURE,
    }
}

/// Why a saga did not complete, and what an operator can do next.
fn saga_not_completed_message(id: &str, status: &str) -> String {
    let show = format!("`berth sagas show {id}`");
    match status.parse().ok() {
        Some(SagaStatus::Failed) => format!(
            "saga {id} failed and was left for an operator (nothing to undo, or a pivot step had completed): {show} says which step and why; fix the cause, then `berth sagas retry {id}` or `berth sagas skip {id} STEP`"
        ),
        Some(SagaStatus::Compensated) => format!(
            "saga {id} did not complete: a step failed and the completed steps were undone; {show} says which step and why"
        ),
        Some(SagaStatus::Cancelled) => {
            format!("saga {id} was cancelled before it completed; {show} shows how far it got")
        }
        Some(SagaStatus::CompensationFailed) => format!(
            "saga {id} did not complete and undoing a step failed: {show} says which; fix the cause, then `berth sagas resume {id}` (or `skip` or `abandon` it)"
        ),
        Some(SagaStatus::Paused) => format!(
            "saga {id} is paused for an operator: {show}, then `berth sagas retry`, `resume` or `abandon` it"
        ),
        Some(SagaStatus::Abandoned) => {
            format!("saga {id} was abandoned by an operator; {show} shows how far it got")
        }
        _ => format!("saga {id} ended {status}, not completed; {show} says why"),
    }
}

fn rpc_message(url: &str, status: &tonic::Status, token_given: bool) -> String {
    let detail = one_line(status.message());
    let because = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    match status.code() {
        Code::Unauthenticated if token_given => {
            format!("the coordinator refused the token{because}: check BERTH_TOKEN or --token-file")
        }
        Code::Unauthenticated => {
            format!("the coordinator wants a token{because}: set BERTH_TOKEN or pass --token-file")
        }
        Code::PermissionDenied => {
            format!("the token's role may not do this{because}: use a token with a role that may")
        }
        Code::NotFound => format!("not found{because}"),
        Code::Unavailable => format!(
            "the coordinator at {url} is unavailable{because}: check --coordinator and that it is running, then retry"
        ),
        Code::InvalidArgument | Code::OutOfRange => {
            format!("the coordinator refused an argument{because}")
        }
        Code::FailedPrecondition => format!("the coordinator refused{because}"),
        Code::Unimplemented => format!(
            "the coordinator at {url} does not offer this call{because}: is it older than this berth?"
        ),
        code => format!("the coordinator failed: {}{because}", code_name(code)),
    }
}

/// gRPC's canonical upper-case name of a code, as grpcurl and the spec print it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::output::escape_controls(&joined).into_owned()
}

/// An error and its sources as one line, skipping sources that repeat their parent's text
/// (tonic's transport errors say only "transport error" at the top).
pub(crate) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = one_line(&err.to_string());
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "transport error")
        .collect();
    if parts.is_empty() {
        "transport error".to_owned()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: Code) -> CliError {
        CliError::Rpc {
            url: "http://c:7400".into(),
            status: tonic::Status::new(code, "boom"),
            token_given: true,
        }
    }

    #[test]
    fn every_status_code_maps_to_its_exit_code() {
        let expected = [
            (Code::Ok, 0),
            (Code::Cancelled, 1),
            (Code::Unknown, 1),
            (Code::InvalidArgument, 6),
            (Code::DeadlineExceeded, 1),
            (Code::NotFound, 5),
            (Code::AlreadyExists, 1),
            (Code::PermissionDenied, 4),
            (Code::ResourceExhausted, 1),
            (Code::FailedPrecondition, 6),
            (Code::Aborted, 1),
            (Code::OutOfRange, 6),
            (Code::Unimplemented, 1),
            (Code::Internal, 1),
            (Code::Unavailable, 3),
            (Code::DataLoss, 1),
            (Code::Unauthenticated, 4),
        ];
        for (code, want) in expected {
            assert_eq!(exit_code(&rpc(code)), want, "{code:?}");
        }
    }

    #[test]
    fn local_errors_have_their_exit_codes() {
        let connect = CliError::Connect {
            url: "http://x".into(),
            reason: "refused".into(),
            hint: "check --coordinator",
        };
        assert_eq!(exit_code(&connect), exit::UNAVAILABLE);
        assert_eq!(exit_code(&CliError::Usage("x".into())), exit::USAGE);
        assert_eq!(
            exit_code(&CliError::InvalidArgument("x".into())),
            exit::INVALID
        );
        assert_eq!(exit_code(&CliError::Protocol("host")), exit::FAILURE);
    }

    #[test]
    fn a_saga_that_ends_without_completing_exits_7() {
        let not_completed = SagaStatus::ALL
            .iter()
            .filter(|s| s.is_final() && **s != SagaStatus::Completed)
            .map(|s| s.as_str());
        for status in not_completed.chain(["something_new"]) {
            let e = CliError::SagaNotCompleted {
                saga_id: "0197a0c2-7b1e-7cc0-9d7c-3f3f3f3f3f3f".into(),
                status: status.into(),
            };
            assert_eq!(exit_code(&e), exit::SAGA_NOT_COMPLETED, "{status}");
            assert_eq!(exit_code(&e), 7);
            let msg = e.to_string();
            assert!(
                msg.starts_with("saga 0197a0c2-7b1e-7cc0-9d7c-3f3f3f3f3f3f "),
                "{msg}"
            );
            assert!(msg.contains("berth sagas "), "says what to do: {msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
        assert!(EXIT_CODES_HELP.contains("  7  the saga ended but did not complete"));
    }

    #[test]
    fn messages_say_what_to_do() {
        let unauth = rpc(Code::Unauthenticated).to_string();
        assert_eq!(
            unauth,
            "the coordinator refused the token (boom): check BERTH_TOKEN or --token-file"
        );
        let no_token = CliError::Rpc {
            url: "http://c:7400".into(),
            status: tonic::Status::unauthenticated(""),
            token_given: false,
        };
        assert_eq!(
            no_token.to_string(),
            "the coordinator wants a token: set BERTH_TOKEN or pass --token-file"
        );
        assert!(rpc(Code::Unavailable).to_string().contains("http://c:7400"));
        assert_eq!(
            rpc(Code::Internal).to_string(),
            "the coordinator failed: INTERNAL (boom)"
        );
    }

    #[test]
    fn status_messages_are_kept_on_one_line() {
        let e = CliError::Rpc {
            url: "u".into(),
            status: tonic::Status::not_found("host\nh1  not found"),
            token_given: true,
        };
        assert_eq!(e.to_string(), "not found (host h1 not found)");
    }
}
