//! The host description an agent gives when asked: what the Docker engine reports and how
//! much room the filesystem holding the warm root has.

use std::io;
use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use bollard::models::{LocalNodeState, SystemInfo, SystemVersion};

use crate::{AgentError, docker};

/// Free and total bytes of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to unprivileged users.
    pub free: u64,
    pub total: u64,
}

/// Asks the local Docker engine and the filesystem about this host.
pub async fn describe_host(warm_root: &Path) -> Result<pb::HostDescription, AgentError> {
    let docker = docker::connect().await?;
    let (info, version) = tokio::try_join!(
        docker::timed(docker.info()),
        docker::timed(docker.version())
    )?;
    let root = warm_root.to_owned();
    let space = tokio::task::spawn_blocking(move || filesystem_space(&root))
        .await
        .map_err(AgentError::Join)??;
    Ok(description(&info, &version, warm_root, space))
}

/// Space of the filesystem holding `path`, or of its nearest existing ancestor when `path`
/// does not exist yet (a fresh host has no warm root until its first snapshot).
pub fn filesystem_space(path: &Path) -> Result<Space, AgentError> {
    let mut last_err = None;
    for candidate in path.ancestors() {
        let candidate = if candidate.as_os_str().is_empty() {
            Path::new(".")
        } else {
            candidate
        };
        match rustix::fs::statvfs(candidate) {
            Ok(st) => {
                return Ok(Space {
                    free: st.f_bavail.saturating_mul(st.f_frsize),
                    total: st.f_blocks.saturating_mul(st.f_frsize),
                });
            }
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
                last_err = Some(e);
            }
            Err(e) => {
                return Err(AgentError::Statvfs {
                    path: candidate.to_owned(),
                    source: e.into(),
                });
            }
        }
    }
    Err(AgentError::Statvfs {
        path: PathBuf::from(path),
        source: last_err.map_or_else(|| io::ErrorKind::NotFound.into(), Into::into),
    })
}

/// The wire description from what the engine and the filesystem said.
pub(crate) fn description(
    info: &SystemInfo,
    version: &SystemVersion,
    warm_root: &Path,
    space: Space,
) -> pb::HostDescription {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let count = |n: Option<i64>| n.map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    pb::HostDescription {
        docker_version: info
            .server_version
            .clone()
            .or_else(|| version.version.clone())
            .unwrap_or_default(),
        docker_api_version: text(&version.api_version),
        os: text(&info.operating_system),
        kernel_version: text(&info.kernel_version),
        architecture: text(&info.architecture),
        cpus: count(info.ncpu),
        memory_bytes: info.mem_total.map_or(0, |m| u64::try_from(m).unwrap_or(0)),
        containers_running: count(info.containers_running),
        containers_total: count(info.containers),
        swarm_active: info
            .swarm
            .as_ref()
            .and_then(|s| s.local_node_state)
            .is_some_and(|s| s == LocalNodeState::ACTIVE),
        warm_root: warm_root.display().to_string(),
        warm_root_free_bytes: space.free,
        warm_root_total_bytes: space.total,
        storage_driver: text(&info.driver),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::SwarmInfo;

    use super::*;

    #[test]
    fn description_maps_engine_fields() {
        let info = SystemInfo {
            server_version: Some("27.3.1".into()),
            operating_system: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel_version: Some("6.1.0-28-amd64".into()),
            architecture: Some("x86_64".into()),
            ncpu: Some(4),
            mem_total: Some(8_000_000_000),
            containers_running: Some(3),
            containers: Some(7),
            driver: Some("overlay2".into()),
            swarm: Some(SwarmInfo {
                local_node_state: Some(LocalNodeState::ACTIVE),
                ..Default::default()
            }),
            ..Default::default()
        };
        let version = SystemVersion {
            api_version: Some("1.47".into()),
            ..Default::default()
        };
        let space = Space {
            free: 10,
            total: 20,
        };
        let d = description(&info, &version, Path::new("/var/lib/ci-warm"), space);
        assert_eq!(d.docker_version, "27.3.1");
        assert_eq!(d.docker_api_version, "1.47");
        assert_eq!(d.os, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(d.kernel_version, "6.1.0-28-amd64");
        assert_eq!(d.architecture, "x86_64");
        assert_eq!((d.cpus, d.memory_bytes), (4, 8_000_000_000));
        assert_eq!((d.containers_running, d.containers_total), (3, 7));
        assert!(d.swarm_active);
        assert_eq!(d.storage_driver, "overlay2");
        assert_eq!(d.warm_root, "/var/lib/ci-warm");
        assert_eq!((d.warm_root_free_bytes, d.warm_root_total_bytes), (10, 20));
    }

    #[test]
    fn inactive_or_unknown_swarm_is_not_active() {
        let version = SystemVersion::default();
        let space = Space { free: 0, total: 0 };
        for state in [
            None,
            Some(LocalNodeState::INACTIVE),
            Some(LocalNodeState::PENDING),
        ] {
            let info = SystemInfo {
                swarm: Some(SwarmInfo {
                    local_node_state: state,
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert!(!description(&info, &version, Path::new("/w"), space).swarm_active);
        }
        let d = description(&SystemInfo::default(), &version, Path::new("/w"), space);
        assert!(!d.swarm_active);
        assert_eq!(d.cpus, 0);
    }

    #[test]
    fn space_of_a_missing_path_is_that_of_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let existing = filesystem_space(dir.path()).unwrap();
        assert!(existing.total > 0 && existing.free <= existing.total);
        let missing = filesystem_space(&dir.path().join("not/yet/there")).unwrap();
        assert_eq!(missing.total, existing.total);
        filesystem_space(Path::new("relative/missing")).unwrap();
    }
}
