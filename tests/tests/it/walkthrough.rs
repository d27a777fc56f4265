//! The README walk-through: every bash block the README marks `<!-- runnable -->` is run, in
//! the README's order, against the dev environment its "Run it" section starts
//! (`BERTH_DEV_DO_SIM=1 deploy/dev.sh`: a coordinator on SQLite, an agent on the local Docker
//! engine, the DigitalOcean simulator). Each command must exit 0. A README whose commands drift
//! from the programs (a renamed flag, a changed default, a flow that no longer works) fails here.
//!
//! Placeholders stand for what the walk-through made just before: `SAGA_ID` the newest saga,
//! `DROPLET_ID` the droplet the README provisioned, `TOKEN_ID` the newest token, `UUID` the
//! newest archive of `wiki`; the
//! example hosts `web-1`, `web-2` and `ci-1` are the dev agent's host. Commands run with the
//! binaries first on `PATH`, in a directory where `target/debug` and `deploy/` are what the
//! README's relative paths expect.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{bin, free_port};
use serde_json::Value;

/// The README's runnable blocks: for each, its line number and its commands (continuations
/// joined, comment lines dropped).
fn runnable_blocks(readme: &str) -> Vec<(usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if line.trim() != "<!-- runnable -->" {
            continue;
        }
        let (at, fence) = lines.next().expect("a block after the marker");
        assert_eq!(
            fence,
            "```bash",
            "README line {}: the runnable marker precedes a ```bash block",
            at + 1
        );
        let block = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"));
        let commands = crate::readme::joined(block, |l| !l.is_empty() && !l.starts_with('#'));
        blocks.push((at + 1, commands));
    }
    blocks
}

struct Dev {
    dir: PathBuf,
    port: u16,
    host: String,
    bin: PathBuf,
    /// `deploy/dev.sh` itself; killed (it stops what it started) when the test ends.
    script: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.script.id().to_string()])
            .status();
        let _ = self.script.wait();
    }
}

impl Dev {
    /// `deploy/dev.sh` as the README runs it, with the simulator, in `root/.berth-dev`.
    fn start(root: &Path) -> Dev {
        // The programs in one directory, as `target/debug` holds them after a build.
        let bin = root.join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["berth", "berth-coordinator", "berth-agent"] {
            symlink(bin::path(name), bin.join(name)).unwrap();
        }
        symlink(env!("CARGO_BIN_EXE_do-sim"), bin.join("do-sim")).unwrap();
        std::fs::create_dir(root.join("target")).unwrap();
        symlink(&bin, root.join("target/debug")).unwrap();
        symlink(bin::workspace_root().join("deploy"), root.join("deploy")).unwrap();

        let dir = root.join(".berth-dev");
        let port = free_port();
        let script = Command::new("bash")
            .arg(bin::workspace_root().join("deploy/dev.sh"))
            .env("BERTH_DEV_DIR", &dir)
            .env("BERTH_DEV_PORT", port.to_string())
            .env("BERTH_DEV_DO_SIM", "1")
            .env("BERTH_DEV_DO_SIM_PORT", free_port().to_string())
            .env("BERTH_DEV_WEB_PORT", free_port().to_string())
            .env("BERTH_DEV_NO_BUILD", "1")
            .env("BERTH_BIN_DIR", &bin)
            .env_remove("BERTH_DEV_HOST_ID")
            .stdin(Stdio::null())
            .spawn()
            .expect("run deploy/dev.sh");
        let mut dev = Dev {
            dir,
            port,
            host: String::new(),
            bin,
            script,
        };
        let agent_toml = eventually(
            Duration::from_secs(30),
            "dev.sh to write agent.toml",
            || {
                std::fs::read_to_string(dev.dir.join("agent.toml"))
                    .ok()
                    .filter(|t| t.contains("[archive]"))
            },
        );
        dev.host = agent_toml
            .lines()
            .find_map(|l| l.strip_prefix("host_id = \"")?.strip_suffix('"'))
            .expect("dev.sh names the host")
            .to_owned();
        eventually(Duration::from_secs(30), "the dev agent online", || {
            let hosts = dev.json(&["hosts", "list"])?;
            hosts
                .as_array()?
                .iter()
                .any(|h| h["host_id"] == dev.host.as_str() && h["online"] == true)
                .then_some(())
        });
        dev
    }

    /// `cmd` with the CLI's environment pointing at the dev coordinator as its admin.
    fn as_admin<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env(
            "BERTH_COORDINATOR",
            format!("http://127.0.0.1:{}", self.port),
        )
        .env("BERTH_TOKEN_FILE", self.dir.join("admin.token"))
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONFIG")
    }

    /// `berth --output json ARGS` as the dev admin; `None` unless it succeeds.
    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = self
            .as_admin(
                Command::new(self.bin.join("berth"))
                    .args(["--output", "json"])
                    .args(args),
            )
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("JSON output"))
    }

    /// `command` with its placeholders given the values they stand for now.
    fn fill(&self, command: &str) -> String {
        let mut out = command.to_owned();
        for host in ["web-1", "web-2", "ci-1"] {
            out = out.replace(host, &self.host);
        }
        if out.contains("SAGA_ID") {
            let list = self
                .json(&["sagas", "list", "--limit", "1"])
                .expect("sagas list");
            let id = list["sagas"][0]["saga_id"]
                .as_str()
                .expect("a saga to stand for SAGA_ID");
            out = out.replace("SAGA_ID", id);
        }
        if out.contains("DROPLET_ID") {
            let list = self.json(&["droplet", "list"]).expect("droplet list");
            let id = list["droplets"][0]["droplet_id"]
                .as_u64()
                .expect("a droplet to stand for DROPLET_ID");
            out = out.replace("DROPLET_ID", &id.to_string());
        }
        if out.contains("TOKEN_ID") {
            let list = self.json(&["token", "list"]).expect("token list");
            let tokens = list
                .as_array()
                .or_else(|| list["tokens"].as_array())
                .expect("tokens");
            let newest = tokens
                .iter()
                .max_by_key(|t| t["created_at_ms"].as_i64())
                .expect("a token to stand for TOKEN_ID");
            out = out.replace("TOKEN_ID", newest["token_id"].as_str().unwrap());
        }
        if out.contains("UUID") {
            let list = self
                .json(&["archive", "list", "--app", "wiki"])
                .expect("archive list");
            let archives = list
                .as_array()
                .or_else(|| list["archives"].as_array())
                .expect("archives");
            let uuid = archives[0]["uuid"]
                .as_str()
                .expect("an archive to stand for UUID");
            out = out.replace("UUID", uuid);
        }
        out
    }

    /// Runs one README command in a shell as an operator would in the README's directory.
    fn run(&self, root: &Path, line: usize, command: &str) {
        let filled = self.fill(command);
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = Instant::now();
        let out = self
            .as_admin(Command::new("bash").args(["-euo", "pipefail", "-c", &filled]))
            .current_dir(root)
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "README block at line {line}: `{command}` (run as `{filled}`) exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("README:{line}: {filled}  ({:?})", started.elapsed());
    }
}

fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_runnable_readme_block_runs_against_the_dev_environment() {
    let readme =
        std::fs::read_to_string(bin::workspace_root().join("README.md")).expect("README.md");
    assert!(
        readme.contains("```bash\ndeploy/dev.sh\n```"),
        "the README's Run it command is deploy/dev.sh"
    );
    let blocks = runnable_blocks(&readme);
    let commands: usize = blocks.iter().map(|(_, c)| c.len()).sum();
    assert!(
        blocks.len() >= 6 && commands >= 20,
        "too few runnable commands: {blocks:?}"
    );

    let root = tempfile::tempdir().unwrap();
    let dev = Dev::start(root.path());
    // The app the archive examples name, as an operator's app directory holds it.
    let wiki = dev.dir.join("apps/wiki/data");
    std::fs::create_dir_all(&wiki).unwrap();
    std::fs::write(wiki.join("page.md"), "# Welcome\n").unwrap();

    for (line, commands) in &blocks {
        for command in commands {
            dev.run(root.path(), *line, command);
        }
    }
    // What the walk-through did is there: the droplet is gone again, the copy restored.
    eventually(Duration::from_secs(10), "the README's droplet gone", || {
        let droplets = dev.json(&["droplet", "list"])?;
        droplets["droplets"].as_array()?.is_empty().then_some(())
    });
    let copy = std::fs::read_to_string(dev.dir.join("apps/wiki-copy/data/page.md"))
        .expect("the restored copy");
    assert_eq!(copy, "# Welcome\n");
}
