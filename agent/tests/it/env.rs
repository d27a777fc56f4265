//! The real Docker engine for the warm tests: a locally built busybox image, stacks of
//! labelled volumes and containers that are cleaned up when dropped, and the checks that
//! fail (saying how to fix it) when the engine or root is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use berth_agent::warm::{COMPOSE_LABEL, SWARM_LABEL, Warm};

/// The image our test containers run, built here from Debian's busybox-static.
pub const IMAGE: &str = "berth-test-busybox:latest";

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn docker(args: &[&str]) -> String {
    run("docker", args)
}

/// Fails, saying how to fix it, when the engine does not answer or we are not root.
pub async fn require_docker_as_root() {
    let reachable = match bollard::Docker::connect_with_defaults() {
        Ok(docker) => docker.ping().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = reachable {
        panic!(
            "the Docker engine is unreachable ({e}); start it (e.g. `systemctl start docker`, or \
             `bash .ci/docker-check.sh`) and set DOCKER_HOST if it does not listen on \
             /var/run/docker.sock"
        );
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the warm tests write volumes owned by other users and mount filesystems: run them as root"
    );
}

/// Builds `IMAGE` once (idempotent across test binaries too): Debian's busybox-static in an
/// otherwise empty rootfs, imported with `docker import`. Installs busybox-static if needed.
pub fn ensure_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "busybox-static"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("apt-get").args(["update", "-qq"]).status();
                assert!(
                    install(),
                    "cannot install busybox-static: run `apt-get install -y busybox-static`"
                );
            }
        }
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("bin")).unwrap();
        std::fs::copy(busybox, rootfs.path().join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.path().join("bin").join(applet)).unwrap();
        }
        let script = format!(
            "tar -C {} -c . | docker import -c 'CMD [\"/bin/sleep\", \"3600\"]' - {IMAGE}",
            rootfs.path().display()
        );
        run("sh", &["-c", &script]);
    }
    *built = true;
}

/// How a stack's volumes are labelled.
#[derive(Debug, Clone, Copy)]
pub enum Labels {
    Swarm,
    Compose,
}

/// A stack of labelled volumes (and containers) removed when dropped.
pub struct TestStack {
    pub name: String,
    volumes: Vec<String>,
    containers: Vec<String>,
}

impl TestStack {
    /// A fresh stack name: `bt<random>` plus `suffix`.
    pub fn new(suffix: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self::named(&format!("bt{}{suffix}", &id[..10]))
    }

    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            volumes: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// Creates `<stack>_<short>` labelled as `labels` does; returns its mountpoint.
    pub fn volume(&mut self, short: &str, labels: Labels) -> PathBuf {
        let name = format!("{}_{short}", self.name);
        let label = match labels {
            Labels::Swarm => format!("{SWARM_LABEL}={}", self.name),
            Labels::Compose => format!("{COMPOSE_LABEL}={}", self.name),
        };
        let mut args = vec!["volume", "create", "--label", &label];
        let extra = format!("com.docker.compose.volume={short}");
        if matches!(labels, Labels::Compose) {
            args.extend(["--label", &extra]);
        }
        args.push(&name);
        docker(&args);
        self.volumes.push(name.clone());
        mountpoint(&name)
    }

    /// Starts a container (no network) that mounts `volume` (`<short>` of this stack).
    pub fn container(&mut self, short: &str, volume: &str) -> String {
        ensure_image();
        let name = format!("{}_{short}", self.name);
        let mount = format!("{}_{volume}:/data", self.name);
        docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "-v",
            &mount,
            IMAGE,
            "sleep",
            "600",
        ]);
        self.containers.push(name.clone());
        name
    }

    pub fn remove_container(&mut self, name: &str) {
        docker(&["rm", "-f", name]);
        self.containers.retain(|c| c != name);
    }

    pub fn remove_volume(&mut self, short: &str) {
        let name = format!("{}_{short}", self.name);
        docker(&["volume", "rm", "-f", &name]);
        self.volumes.retain(|v| *v != name);
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for v in &self.volumes {
            // A background removal of old contents may still be running inside the volume.
            for _ in 0..20 {
                let removed = Command::new("docker")
                    .args(["volume", "rm", "-f", v])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if removed {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
}

pub fn mountpoint(volume: &str) -> PathBuf {
    PathBuf::from(docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume]).trim())
}

/// A `Warm` on the local engine with `root` as warm root.
pub async fn warm(root: &Path) -> Warm {
    Warm::connect(root)
        .await
        .expect("the docker engine answers")
}

/// A tmpfs of `size` (e.g. "2m") mounted at a new temporary dir, unmounted when dropped.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        mount_tmpfs(dir.path(), size);
        Self { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

pub fn mount_tmpfs(at: &Path, size: &str) {
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &at.to_string_lossy(),
        ],
    );
}
