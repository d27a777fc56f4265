//! The `berth` binary: parse, capture the environment, run, report the error as one line.

use std::io::Write;
use std::process::ExitCode;

use berth_cli::{Cli, CliError, ProcessEnv, exit_code};
use clap::Parser;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.env = ProcessEnv::capture();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = runtime
        .block_on(berth_cli::run(cli, &mut out))
        .and_then(|()| out.flush().map_err(CliError::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `berth … | head` closing the pipe early is not a failure.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(u8::try_from(exit_code(&e)).unwrap_or(1))
        }
    }
}
