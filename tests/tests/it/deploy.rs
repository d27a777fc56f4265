//! Installing on real hosts: the systemd units and the install script (`deploy/`), agent
//! enrollment end to end, and upgrades (a newer schema refused, an agent restarted mid-task).

mod config;
mod enroll;
mod install;
mod prometheus;
mod units;
mod upgrade;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_tests::bin;

/// `systemd-analyze`, or a failure that says how to get it.
fn systemd_analyze() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "systemd-analyze is missing: these tests verify the units with it. Install Debian's \
             systemd package (`apt-get install -y systemd`; .ci/run does this); systemd need not \
             be running"
        )
    })
}

/// Runs `deploy/install.sh` with `args` under `DESTDIR=root`, with the test build's binaries.
fn install(root: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(bin::workspace_root().join("deploy/install.sh"))
        .args(args)
        .arg("--bin-dir")
        .arg(bin::path("berth-agent").parent().expect("bin dir"))
        .env("DESTDIR", root)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/install.sh");
    assert!(
        out.status.success(),
        "install.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A root with both programs installed by `deploy/install.sh` and this machine's own systemd
/// units (targets like `sysinit.target`), so `systemd-analyze verify --root` resolves
/// dependencies and `ExecStart=` paths inside it.
fn staged_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    install(root.path(), &["--role", "coordinator"]);
    install(root.path(), &["--role", "agent"]);
    let system = Path::new("/usr/lib/systemd/system");
    assert!(
        system.is_dir(),
        "{} is missing: install Debian's systemd package (`apt-get install -y systemd`)",
        system.display()
    );
    let into = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&into).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system)
        .arg(&into)
        .status()
        .expect("cp");
    assert!(copied.success(), "copying {} failed", system.display());
    root
}

/// Text of a file of the repository.
fn repo_file(path: &str) -> String {
    let p = bin::workspace_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}
