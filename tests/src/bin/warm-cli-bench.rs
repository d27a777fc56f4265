//! What a CI runner waits for: `berth warm restore --wait` end to end (the `berth` process,
//! the coordinator's saga, the agent's task, the real Docker volumes), from a ready spare and,
//! side by side, from a snapshot kept without one (`--no-spare`: the restore extracts). The
//! stack is 4 volumes of 256 MiB (`--mib` per volume); the coordinator (SQLite) and the agent
//! run in this process, the CLI as its own process.
//!
//!   cargo build --release -p berth-cli -p berth-tests --bin berth --bin warm-cli-bench
//!   target/release/warm-cli-bench [--runs 10] [--mib 256]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_shared::Role;
use berth_tests::docker::Volume;
use berth_tests::{TestAgent, TestCoordinator, TestDb};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut runs = 10usize;
    let mut mib = 256u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context("a flag without its value");
        match a.as_str() {
            "--runs" => runs = value()?.parse()?,
            "--mib" => mib = value()?.parse()?,
            other => bail!("unknown flag {other}; see the header of this file"),
        }
    }
    let berth = std::env::current_exe()?
        .parent()
        .context("the binary's folder")?
        .join("berth");
    if !berth.exists() {
        bail!(
            "{} is missing: cargo build --release -p berth-cli",
            berth.display()
        );
    }

    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let agent_token = c.token(Role::Agent, Some("bench-1")).await;
    let agent = TestAgent::start(&c, "bench-1", &agent_token, |config| {
        config.warm.spare_min_free_bytes = 0;
        config.warm.spare_max_mib_per_sec = 0;
    })
    .await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, c.token(Role::Operator, None).await)?;

    let project = format!("warmcli{}", std::process::id());
    let volumes: Vec<Volume> = (0..4)
        .map(|i| Volume::create(&project, &format!("v{i}")))
        .collect();
    eprintln!("filling 4 volumes of {mib} MiB");
    for v in &volumes {
        fill(&v.mountpoint, mib)?;
    }
    let cli = Cli {
        berth,
        url: c.url(),
        token_file,
        project: project.clone(),
    };

    let mut spare = Vec::new();
    let mut extract = Vec::new();
    for (label, no_spare, times) in [
        ("spare", false, &mut spare),
        ("extract", true, &mut extract),
    ] {
        eprintln!(
            "== {label}: snapshot{}",
            if no_spare { " --no-spare" } else { "" }
        );
        cli.run(&["warm", "snapshot", "--wait"], no_spare)?;
        for i in 0..runs {
            if !no_spare {
                cli.wait_spare_ready().await?;
            }
            let t = Instant::now();
            let out = cli.run(&["warm", "restore", "--wait"], false)?;
            let took = t.elapsed().as_secs_f64() * 1000.0;
            let want = if no_spare { ": swap" } else { ": spare" };
            if !out.contains(want) {
                bail!("restore {i} did not go the {label} way:\n{out}");
            }
            eprintln!("{label} restore {i}: {took:.0} ms");
            times.push(took);
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "berth warm restore --wait, 4 volumes of {mib} MiB, {runs} runs each (ms)"
    )?;
    writeln!(out, "{:<10} {:>8} {:>8} {:>8}", "way", "p50", "min", "max")?;
    for (label, t) in [("spare", &mut spare), ("extract", &mut extract)] {
        t.sort_by(f64::total_cmp);
        writeln!(
            out,
            "{:<10} {:>8.0} {:>8.0} {:>8.0}",
            label,
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        )?;
    }
    Ok(())
}

/// `mib` MiB in files of at most 64 MiB whose bytes do not repeat.
fn fill(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let mut left = mib;
    let mut i = 0u32;
    while left > 0 {
        let n = left.min(64);
        let data: Vec<u8> = (0..(n << 20) as u32)
            .map(|x| (x.wrapping_add(i).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.join(format!("f{i}")), data)?;
        left -= n;
        i += 1;
    }
    Ok(())
}

struct Cli {
    berth: PathBuf,
    url: String,
    token_file: PathBuf,
    project: String,
}

impl Cli {
    fn run(&self, args: &[&str], no_spare: bool) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.berth);
        cmd.args(["--coordinator", &self.url])
            .env("BERTH_TOKEN_FILE", &self.token_file)
            .args(args)
            .args([
                "--host",
                "bench-1",
                "--app",
                "bench",
                "--stack",
                &self.project,
            ]);
        if no_spare {
            cmd.arg("--no-spare");
        }
        let out = cmd.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "berth {args:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    async fn wait_spare_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let out = Command::new(&self.berth)
                .args(["--coordinator", &self.url, "--output", "json"])
                .env("BERTH_TOKEN_FILE", &self.token_file)
                .args(["warm", "list", "--host", "bench-1", "--app", "bench"])
                .output()?;
            let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if listed[0]["spare"] == "ready" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the spare is not ready after 10 minutes: {listed}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
