//! The workspace's real binaries, built once per test run, for tests that run processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a built binary of the workspace (`berth`, `berth-coordinator`, `berth-agent`),
/// building them first if this test run has not. `BERTH_BIN_DIR` names a folder of binaries
/// built beforehand instead.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "berth-coordinator",
                "-p",
                "berth-agent",
                "-p",
                "berth-cli",
                "--bins",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        // Test executables live in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(|p| p.parent())
            .expect("target profile dir")
            .to_path_buf()
    });
    dir.join(name)
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
