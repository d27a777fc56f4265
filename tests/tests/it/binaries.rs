//! The real binaries: the README's run command end to end, and start-up errors on bad config.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::assert_contains;
use berth_tests::{TestDb, bin};

/// Runs a binary to completion with a time limit.
fn run(cmd: &mut Command) -> Output {
    // Start-up errors are judged without the info logs that precede them.
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.wait_with_output().expect("wait")
}

/// The single stderr line a failed start prints, checked to be one line.
fn one_error_line(out: &Output, program: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{program} should exit 2: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{program} should print exactly one line, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with(&format!("{program}: ")),
        "{}",
        lines[0]
    );
    lines[0].to_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_config_stops_each_program_at_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = bin::path("berth-coordinator");
    let agent = bin::path("berth-agent");

    let cfg = write(
        dir.path(),
        "unknown.toml",
        "insecure_plaintext = true\nlisten_addr = \"0.0.0.0:1\"\n",
    );
    let line = one_error_line(
        &run(Command::new(&coordinator).arg("--config").arg(&cfg)),
        "berth-coordinator",
    );
    assert_contains(&line, "listen_addr");

    let cfg = write(
        dir.path(),
        "nodb.toml",
        "insecure_plaintext = true\nlisten = \"127.0.0.1:0\"\ndatabase_url_file = \"/nonexistent/db-url\"\n",
    );
    let line = one_error_line(
        &run(Command::new(&coordinator).arg("--config").arg(&cfg)),
        "berth-coordinator",
    );
    assert_contains(&line, "/nonexistent/db-url");

    let cfg = write(
        dir.path(),
        "unreachable.toml",
        "insecure_plaintext = true\nlisten = \"127.0.0.1:0\"\n\
         database_url = \"postgres://berth:s3cret@127.0.0.1:1/berth\"\n",
    );
    let line = one_error_line(
        &run(Command::new(&coordinator).arg("--config").arg(&cfg)),
        "berth-coordinator",
    );
    assert_contains(
        &line,
        "cannot connect to database postgres://berth:***@127.0.0.1:1/berth",
    );
    assert!(
        !line.contains("s3cret"),
        "the password must not be printed: {line}"
    );

    let cfg = write(dir.path(), "plain.toml", "listen = \"127.0.0.1:0\"\n");
    let line = one_error_line(
        &run(Command::new(&coordinator).arg("--config").arg(&cfg)),
        "berth-coordinator",
    );
    assert_contains(&line, "insecure_plaintext");

    let cfg = write(
        dir.path(),
        "agent.toml",
        &format!(
            "coordinator_url = \"http://127.0.0.1:1\"\ntoken_file = \"{}/missing.token\"\nstate_dir = \"{}\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    );
    let line = one_error_line(
        &run(Command::new(&agent).arg("--config").arg(&cfg)),
        "berth-agent",
    );
    assert_contains(&line, "missing.token");

    let cfg = write(
        dir.path(),
        "agent-unknown.toml",
        "coordinator_url = \"http://x\"\ntokenfile = \"x\"\n",
    );
    let line = one_error_line(
        &run(Command::new(&agent).arg("--config").arg(&cfg)),
        "berth-agent",
    );
    assert_contains(&line, "tokenfile");
}

/// The `berth` CLI's `hosts list --output json`, as a CI script would call it.
fn hosts_json(dev: &Path, port: u16) -> Option<serde_json::Value> {
    let out = run(Command::new(bin::path("berth"))
        .args(["--output", "json", "hosts", "list"])
        .env("BERTH_COORDINATOR", format!("http://127.0.0.1:{port}"))
        .env("BERTH_TOKEN_FILE", dev.join("admin.token"))
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONFIG"));
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json output"))
}

/// `berth args` against the dev coordinator as its admin; panics unless it succeeds.
fn berth_dev(dev: &Path, port: u16, args: &[&str]) -> String {
    let out = run(Command::new(bin::path("berth"))
        .args(args)
        .env("BERTH_COORDINATOR", format!("http://127.0.0.1:{port}"))
        .env("BERTH_TOKEN_FILE", dev.join("admin.token"))
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONFIG"));
    assert!(
        out.status.success(),
        "berth {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_online(dev: &Path, port: u16, host: &str) -> Option<bool> {
    let hosts = hosts_json(dev, port)?;
    hosts
        .as_array()?
        .iter()
        .find(|h| h["host_id"] == host)
        .map(|h| h["online"] == true)
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn pid(dev: &Path, name: &str) -> i32 {
    std::fs::read_to_string(dev.join(format!("{name}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn kill(pid: i32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_run_command_brings_up_a_coordinator_and_an_agent() {
    let _ = TestDb::sqlite(); // the embedded default needs nothing else
    let dev = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    bin::path("berth"); // build once, so the script's own build is a no-op
    let script = bin::workspace_root().join("deploy/dev.sh");
    let _dev = KillOnDrop(
        Command::new("bash")
            .arg(&script)
            .env("BERTH_DEV_DIR", dev.path())
            .env("BERTH_DEV_PORT", port.to_string())
            .env("BERTH_DEV_WEB_PORT", berth_tests::free_port().to_string())
            .env_remove("BERTH_DEV_HOST_ID") // as the README runs it: named after this host
            .env("BERTH_DEV_NO_BUILD", "1")
            .env("BERTH_BIN_DIR", bin::path("").as_os_str())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the coordinator to answer", || {
        hosts_json(dev.path(), port).is_some()
    });
    let agent_toml = std::fs::read_to_string(dev.path().join("agent.toml")).unwrap();
    let host = agent_toml
        .lines()
        .find_map(|l| l.strip_prefix("host_id = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("dev.sh names the host")
        .to_owned();
    let host = host.as_str();
    let took = wait_until(Duration::from_secs(5), "the host online", || {
        host_online(dev.path(), port, host) == Some(true)
    });
    eprintln!("host online {took:?} after the coordinator answered");

    // Berth's main job on the embedded defaults: an app archived into the local store and
    // restored under another name.
    let app = dev.path().join("apps/myapp/data");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("a.txt"), "hello\n").unwrap();
    let (d, p) = (dev.path(), port);
    berth_dev(
        d,
        p,
        &[
            "archive", "create", "--host", host, "--app", "myapp", "--wait",
        ],
    );
    let listed = berth_dev(
        d,
        p,
        &["--output", "json", "archive", "list", "--app", "myapp"],
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let uuid = listed[0]["uuid"].as_str().expect("one archive").to_owned();
    let restore = [
        "archive", "restore", &uuid, "--host", host, "--as", "copy", "--wait",
    ];
    berth_dev(d, p, &restore);
    assert_eq!(
        std::fs::read_to_string(dev.path().join("apps/copy/data/a.txt")).unwrap(),
        "hello\n"
    );
    assert!(
        std::fs::read_dir(dev.path().join("archives"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("myapp:")),
        "the archive is in the dev store"
    );

    // Kill the agent: the host shows offline (the dev heartbeat timeout is 6 s).
    kill(pid(dev.path(), "agent"), "-KILL");
    wait_until(Duration::from_secs(10), "the host offline", || {
        host_online(dev.path(), port, host) == Some(false)
    });

    // Restart the agent by hand, then restart the coordinator: the agent comes back by itself.
    let agent = KillOnDrop(
        Command::new(bin::path("berth-agent"))
            .arg("--config")
            .arg(dev.path().join("agent.toml"))
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(5), "the restarted agent online", || {
        host_online(dev.path(), port, host) == Some(true)
    });
    kill(pid(dev.path(), "coordinator"), "-KILL");
    wait_until(Duration::from_secs(5), "the coordinator down", || {
        hosts_json(dev.path(), port).is_none()
    });
    let _coordinator = KillOnDrop(
        Command::new(bin::path("berth-coordinator"))
            .arg("--config")
            .arg(dev.path().join("coordinator.toml"))
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(10),
        "the agent back online after the coordinator restart",
        || host_online(dev.path(), port, host) == Some(true),
    );
    drop(agent);
}
