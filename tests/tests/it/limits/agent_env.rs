//! The agent binary reads only its own environment (`BERTH_AGENT_*`): started in a shell set
//! up for the CLI (`BERTH_TOKEN_FILE`, `BERTH_COORDINATOR_URL`, `BERTH_HOST_ID`), it still
//! dials with its config; its own variables override the config.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_shared::Role;
use berth_tests::{TestCoordinator, TestDb, bin};

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path, url: &str, token_file: &Path, host_id: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    std::fs::write(
        &path,
        format!(
            "coordinator_url = {url:?}\ntoken_file = {token:?}\nhost_id = {host_id:?}\n\
             state_dir = {state:?}\nwarm_root = {warm:?}\napps_root = {apps:?}\n\
             reconnect_max_backoff_ms = 300\n\n[archive]\nstore_url = {archive:?}\n",
            token = token_file.display().to_string(),
            state = dir.join("state").display().to_string(),
            warm = dir.join("warm").display().to_string(),
            apps = dir.join("apps").display().to_string(),
            archive = format!("file://{}", dir.join("archives").display()),
        ),
    )
    .unwrap();
    path
}

fn agent(config: &Path, env: &[(&str, &str)], log: &Path) -> Agent {
    let mut cmd = Command::new(bin::path("berth-agent"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") && key != "BERTH_BIN_DIR" {
            cmd.env_remove(&key);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Agent(cmd.spawn().expect("spawn berth-agent"))
}

#[tokio::test]
async fn the_agent_ignores_the_clis_environment_and_takes_its_own() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let admin_file = write("admin.token", &c.admin_token);

    // The CLI's variables, as `.berth-dev/env` exports them, point elsewhere: ignored.
    let host_a = "env-a";
    let token_a = write("a.token", &c.token(Role::Agent, Some(host_a)).await);
    let cfg_a = config(&dir.path().join("a"), &c.url(), &token_a, host_a);
    let admin = admin_file.display().to_string();
    let _a = agent(
        &cfg_a,
        &[
            ("BERTH_TOKEN_FILE", &admin),
            ("BERTH_COORDINATOR_URL", "http://127.0.0.1:1"),
            ("BERTH_COORDINATOR", "http://127.0.0.1:1"),
            ("BERTH_HOST_ID", "not-this-host"),
        ],
        &dir.path().join("a.log"),
    );
    c.wait_host(host_a, true, Duration::from_secs(30)).await;

    // The agent's own variables win over its config.
    let host_b = "env-b";
    let token_b = write("b.token", &c.token(Role::Agent, Some(host_b)).await);
    let cfg_b = config(
        &dir.path().join("b"),
        "http://127.0.0.1:1",
        &dir.path().join("missing.token"),
        "config-host",
    );
    let token_b = token_b.display().to_string();
    let url = c.url();
    let _b = agent(
        &cfg_b,
        &[
            ("BERTH_AGENT_TOKEN_FILE", &token_b),
            ("BERTH_AGENT_COORDINATOR_URL", &url),
            ("BERTH_AGENT_HOST_ID", host_b),
        ],
        &dir.path().join("b.log"),
    );
    c.wait_host(host_b, true, Duration::from_secs(30)).await;
    assert!(
        !c.list_hosts()
            .await
            .iter()
            .any(|h| h.host_id == "config-host" || h.host_id == "not-this-host"),
        "no host under another id"
    );
}
