//! Real Docker objects for tests: compose-labelled volumes removed on drop, and the check
//! that the engine is there.

use std::path::PathBuf;
use std::process::Command;

pub const DOCKER_HELP: &str =
    "the Docker engine must be running for this test (`docker info` must work)";

/// Runs `docker args`, failing the test with the engine's message if it fails; its stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect(DOCKER_HELP);
    assert!(
        out.status.success(),
        "docker {args:?}: {DOCKER_HELP}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A compose project's volume, labelled as `docker compose` labels it, removed on drop.
pub struct Volume {
    pub name: String,
    pub mountpoint: PathBuf,
}

impl Volume {
    pub fn create(project: &str, short: &str) -> Volume {
        let name = format!("{project}_{short}");
        let project_label = format!("com.docker.compose.project={project}");
        let volume_label = format!("com.docker.compose.volume={short}");
        docker(&[
            "volume",
            "create",
            "--label",
            &project_label,
            "--label",
            &volume_label,
            &name,
        ]);
        let mountpoint = PathBuf::from(docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            &name,
        ]));
        Volume { name, mountpoint }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.name])
            .output();
    }
}

/// A busybox container (`berth-test-busybox`, built by `.ci/test-image.sh`) sleeping with a
/// volume mounted, removed on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn mounting(name: &str, volume: &str) -> Container {
        let image = Command::new("docker")
            .args(["image", "inspect", "berth-test-busybox:latest"])
            .output();
        assert!(
            image.is_ok_and(|o| o.status.success()),
            "the test image is missing: build it with `bash .ci/test-image.sh`"
        );
        let mount = format!("{volume}:/data");
        docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            "-v",
            &mount,
            "berth-test-busybox:latest",
            "sleep",
            "300",
        ]);
        Container {
            name: name.to_owned(),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}
