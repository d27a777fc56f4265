//! The systemd units in `deploy/systemd/`: the hardening each needs is there, `systemd-analyze
//! verify` is clean on the tree `deploy/install.sh` stages, the credentials match the example
//! configs, and both binaries speak the notify protocol (READY, watchdog, STOPPING).

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::bin;

use super::{repo_file, staged_root, systemd_analyze};

/// `(section, key, value)` of every assignment in a unit file.
fn directives(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment: {line:?}"));
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn values<'a>(d: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    d.iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Asserts `key=value` is set in `section` (for a key given several times, one of them).
fn assert_has(unit: &str, d: &[(String, String, String)], section: &str, key: &str, value: &str) {
    assert!(
        d.iter()
            .any(|(s, k, v)| s == section && k == key && v == value),
        "{unit} lacks [{section}] {key}={value} (has: {:?})",
        values(d, key)
    );
}

const BOTH: &[(&str, &str, &str)] = &[
    ("Unit", "StartLimitIntervalSec", "300"),
    ("Unit", "StartLimitBurst", "5"),
    ("Service", "Type", "notify"),
    ("Service", "WatchdogSec", "30s"),
    ("Service", "Restart", "on-failure"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "PrivateMounts", "yes"),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectKernelLogs", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "ProtectClock", "yes"),
    ("Service", "ProtectHostname", "yes"),
    ("Service", "RestrictNamespaces", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "MemoryDenyWriteExecute", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Service", "SystemCallFilter", "@system-service"),
    (
        "Service",
        "RestrictAddressFamilies",
        "AF_UNIX AF_INET AF_INET6",
    ),
    ("Service", "AmbientCapabilities", ""),
    ("Install", "WantedBy", "multi-user.target"),
];

#[test]
fn the_coordinator_unit_runs_unprivileged_with_the_strictest_hardening() {
    let name = "deploy/systemd/berth-coordinator.service";
    let d = directives(&repo_file(name));
    for (section, key, value) in BOTH.iter().chain(&[
        (
            "Service",
            "ExecStart",
            "/usr/local/bin/berth-coordinator --config /etc/berth/coordinator.toml serve",
        ),
        ("Service", "DynamicUser", "yes"),
        ("Service", "CapabilityBoundingSet", ""),
        ("Service", "PrivateUsers", "yes"),
        ("Service", "PrivateDevices", "yes"),
        ("Service", "DevicePolicy", "closed"),
        ("Service", "RestrictSUIDSGID", "yes"),
        ("Service", "ProtectProc", "invisible"),
        ("Service", "ProcSubset", "pid"),
        ("Service", "UMask", "0077"),
        ("Service", "SystemCallFilter", "~@privileged @resources"),
        ("Service", "StateDirectory", "berth-coordinator"),
        ("Service", "CacheDirectory", "berth-coordinator"),
    ]) {
        assert_has(name, &d, section, key, value);
    }
    assert!(values(&d, "User").is_empty() && values(&d, "ReadWritePaths").is_empty());
}

#[test]
fn the_agent_unit_is_root_with_a_narrow_capability_set_and_writes_only_its_paths() {
    let name = "deploy/systemd/berth-agent.service";
    let d = directives(&repo_file(name));
    for (section, key, value) in BOTH.iter().chain(&[
        (
            "Service",
            "ExecStart",
            "/usr/local/bin/berth-agent --config /etc/berth/agent.toml run",
        ),
        ("Service", "StateDirectory", "berth-agent"),
        ("Service", "CacheDirectory", "berth-agent"),
        ("Service", "ProcSubset", "pid"),
        ("Unit", "After", "network-online.target docker.service"),
    ]) {
        assert_has(name, &d, section, key, value);
    }
    let caps: BTreeSet<&str> = values(&d, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    let expected: BTreeSet<&str> = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_MKNOD",
        "CAP_SETFCAP",
    ]
    .into();
    assert_eq!(
        caps, expected,
        "the agent's capabilities are what extraction needs"
    );
    let writable: BTreeSet<&str> = values(&d, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert_eq!(
        writable,
        [
            "/var/lib/ci-warm",
            "/var/lib/berth",
            "-/var/lib/docker/volumes"
        ]
        .into()
    );
    // Device nodes and setuid files in volumes must survive a restore.
    for key in [
        "PrivateDevices",
        "DevicePolicy",
        "RestrictSUIDSGID",
        "User",
        "DynamicUser",
    ] {
        assert!(values(&d, key).is_empty(), "{name} must not set {key}");
    }
}

/// Every `/run/credentials/<unit>/<id>` an example config names is loaded by the unit from
/// `/etc/berth/secrets/<id>`, with a default so a missing source does not stop the unit; and
/// the unit loads nothing the config does not name.
#[test]
fn the_units_load_exactly_the_credentials_the_example_configs_name() {
    for role in ["coordinator", "agent"] {
        let unit_name = format!("berth-{role}.service");
        let config = repo_file(&format!("deploy/config/{role}.toml"));
        let prefix = format!("/run/credentials/{unit_name}/");
        let named: BTreeSet<String> = config
            .match_indices(&prefix)
            .map(|(at, _)| {
                config[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect()
            })
            .collect();
        assert!(!named.is_empty(), "{role}.toml names no credential");
        let d = directives(&repo_file(&format!("deploy/systemd/{unit_name}")));
        let loaded: BTreeSet<String> = values(&d, "LoadCredential")
            .iter()
            .map(|v| {
                let (id, source) = v.split_once(':').expect("id:source");
                assert_eq!(source, format!("/etc/berth/secrets/{id}"), "{unit_name}");
                id.to_owned()
            })
            .collect();
        assert_eq!(loaded, named, "{unit_name} vs deploy/config/{role}.toml");
        let defaults: BTreeSet<String> = values(&d, "SetCredential")
            .iter()
            .map(|v| v.split_once(':').expect("id:value").0.to_owned())
            .collect();
        assert_eq!(
            defaults, loaded,
            "{unit_name}: every credential has a default"
        );
    }
    // The state the configs point at is the state the units create and may write.
    let c = berth_coordinator::Config::parse(&repo_file("deploy/config/coordinator.toml")).unwrap();
    assert_eq!(
        c.data_dir,
        std::path::Path::new("/var/lib/berth-coordinator")
    );
    let a =
        berth_agent::Config::parse(&repo_file("deploy/config/agent.toml"), "agent.toml").unwrap();
    assert_eq!(a.state_dir, std::path::Path::new("/var/lib/berth-agent"));
    assert!(
        a.warm_root.starts_with("/var/lib/ci-warm") && a.apps_root.starts_with("/var/lib/berth")
    );
}

#[test]
fn systemd_analyze_verify_passes_on_both_installed_units() {
    let analyze = systemd_analyze();
    let root = staged_root();
    for unit in ["berth-coordinator.service", "berth-agent.service"] {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("/usr/local/lib/systemd/system/{unit}"))
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .expect("run systemd-analyze");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // verify exits 0 on ignored lines too (unknown keys, bad values): it must say nothing.
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit}: {:?}\n{said}",
            out.status
        );

        let out = Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("/usr/local/lib/systemd/system/{unit}"))
            .output()
            .expect("run systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
        // The agent is root with file capabilities by necessity; the coordinator has none.
        let limit = if unit.starts_with("berth-agent") {
            3.5
        } else {
            1.5
        };
        eprintln!("{unit}: systemd-analyze security exposure {exposure}");
        assert!(
            exposure <= limit,
            "{unit} exposure {exposure} > {limit}:\n{text}"
        );
    }
}

/// What a notify socket received, one datagram per entry, until `until` matches or `timeout`.
fn listen(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < timeout && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
    }
    got
}

/// Both binaries under a fake service manager: `READY=1` once serving, `WATCHDOG=1` every half
/// `WATCHDOG_USEC`, `STOPPING=1` (coordinator) and a clean exit on SIGTERM.
#[test]
fn both_binaries_notify_ready_and_feed_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coordinator = dir.path().join("coordinator.toml");
    std::fs::write(
        &coordinator,
        format!(
            "listen = \"127.0.0.1:{port}\"\ninsecure_plaintext = true\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("agent.token"), "berth_x\n").unwrap();
    let agent = dir.path().join("agent.toml");
    std::fs::write(
        &agent,
        format!(
            "coordinator_url = \"http://127.0.0.1:{port}\"\ntoken_file = \"{d}/agent.token\"\n\
             host_id = \"notify-1\"\nstate_dir = \"{d}/state\"\nwarm_root = \"{d}/warm\"\n\
             apps_root = \"{d}/apps\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    for (program, config) in [("berth-coordinator", &coordinator), ("berth-agent", &agent)] {
        let socket = dir.path().join(format!("{program}.notify"));
        let sock = UnixDatagram::bind(&socket).unwrap();
        let mut child = Command::new(bin::path(program))
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let got = listen(&sock, Duration::from_secs(20), |g| {
            g.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 4
        });
        let ready = got.iter().position(|m| m == "READY=1");
        let pings = got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
        assert!(
            ready.is_some() && pings >= 4 && got.iter().position(|m| m == "WATCHDOG=1") > ready,
            "{program}: READY=1 then watchdog pings every 100 ms, got {got:?}"
        );
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        if program == "berth-coordinator" {
            let got = listen(&sock, Duration::from_secs(10), |g| {
                g.iter().any(|m| m == "STOPPING=1")
            });
            assert!(got.iter().any(|m| m == "STOPPING=1"), "{program}: {got:?}");
        }
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{program} exits cleanly on SIGTERM: {status:?}"
        );
    }
}
