//! The `berth` CLI run in process, as a CI script would run it (stdout not a terminal).

use std::time::Duration;

use berth_cli::credential::Secret;
use berth_cli::{Cli, CliError, ProcessEnv, exit, exit_code};
use clap::Parser;
use serde_json::Value;

/// How long one CLI run may take in tests.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// What one `berth` run produced.
pub struct CliRun {
    pub stdout: String,
    pub result: Result<(), CliError>,
}

impl CliRun {
    /// The exit code `main` would return.
    pub fn code(&self) -> i32 {
        self.result.as_ref().map_or_else(exit_code, |()| exit::OK)
    }

    /// The line `main` would print on stderr.
    pub fn stderr(&self) -> String {
        match &self.result {
            Ok(()) => String::new(),
            Err(e) => format!("berth: {e}"),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `berth --coordinator URL ARGS…` with `token` in BERTH_TOKEN.
pub async fn berth_at(url: &str, token: &str, args: &[&str]) -> CliRun {
    let argv = ["berth", "--coordinator", url]
        .into_iter()
        .chain(args.iter().copied());
    let mut cli = Cli::try_parse_from(argv).expect("arguments parse");
    cli.env = ProcessEnv {
        token: Some(Secret::new(token)),
        ..ProcessEnv::default()
    };
    let mut out = Vec::new();
    let result = tokio::time::timeout(CLI_TIMEOUT, berth_cli::run(cli, &mut out))
        .await
        .unwrap_or_else(|_| panic!("berth {args:?} did not finish within {CLI_TIMEOUT:?}"));
    CliRun {
        stdout: String::from_utf8(out).expect("utf-8 output"),
        result,
    }
}

/// The uuids `berth archive list --app APP` prints, newest first.
pub async fn archive_uuids(url: &str, token: &str, app: &str) -> Vec<String> {
    let listed = berth_at(
        url,
        token,
        &["--output", "json", "archive", "list", "--app", app],
    )
    .await;
    assert_eq!(listed.code(), 0, "{}", listed.stderr());
    listed
        .json()
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|a| a["uuid"].as_str().expect("a uuid").to_owned())
        .collect()
}
