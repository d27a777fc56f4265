//! `berth_cli::run` against a scripted fake coordinator served by tonic on 127.0.0.1.

mod fake;
mod hosts;
mod tls;
mod tokens;

use berth_cli::{Cli, CliError, ProcessEnv, exit_code};
use clap::Parser;

/// What one `berth` run produced: its stdout and its error, if any.
pub struct Outcome {
    pub stdout: String,
    pub result: Result<(), CliError>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        self.result.as_ref().map_or_else(exit_code, |()| 0)
    }

    /// The error line `main` would print.
    pub fn stderr(&self) -> String {
        match &self.result {
            Ok(()) => String::new(),
            Err(e) => format!("berth: {e}"),
        }
    }
}

/// Runs `berth ARGS…` in process with `env` standing in for BERTH_TOKEN, HOME and XDG_CONFIG_HOME.
pub async fn berth(args: &[&str], env: ProcessEnv) -> Outcome {
    let argv = std::iter::once("berth").chain(args.iter().copied());
    let mut cli = Cli::try_parse_from(argv).expect("arguments parse");
    cli.env = env;
    let mut out = Vec::new();
    let result = berth_cli::run(cli, &mut out).await;
    Outcome {
        stdout: String::from_utf8(out).expect("utf-8 output"),
        result,
    }
}

/// A ProcessEnv holding only BERTH_TOKEN (no HOME, so no config file is read).
pub fn env_token(token: &str) -> ProcessEnv {
    ProcessEnv {
        token: Some(berth_cli::credential::Secret::new(token)),
        ..ProcessEnv::default()
    }
}
