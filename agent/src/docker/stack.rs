//! An app's stack on the local engine: its volumes, found by label (never by name prefix), and
//! what still runs of it — swarm services of the stack and live containers mounting its volumes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use berth_shared::StackName;
use berth_shared::name::VolumeName;
use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptions, ListServicesOptions, ListVolumesOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DockerError;
use super::timed;

/// Label that `docker stack deploy` puts on a stack's objects.
pub const SWARM_LABEL: &str = "com.docker.stack.namespace";
/// Label that `docker compose` puts on a project's objects.
pub const COMPOSE_LABEL: &str = "com.docker.compose.project";

/// How often `wait_undeployed` looks again.
const POLL: Duration = Duration::from_millis(500);

/// One volume of a stack, as the engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackVolume {
    pub name: VolumeName,
    /// Where the volume's data lives on this host (`.../volumes/<name>/_data` for `local`).
    pub mountpoint: PathBuf,
    pub driver: String,
    /// Driver options; a `local` volume with options (`type`, `device`, `o`) keeps its data
    /// elsewhere and is only mounted while in use.
    pub options: HashMap<String, String>,
}

impl StackVolume {
    /// Why Berth cannot copy this volume from its mountpoint, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.driver != "local" {
            return Some(format!(
                "volume {} uses driver {:?}; only the local driver keeps its data at its mountpoint",
                self.name, self.driver
            ));
        }
        if !self.options.is_empty() {
            let mut keys: Vec<_> = self.options.keys().map(String::as_str).collect();
            keys.sort_unstable();
            return Some(format!(
                "volume {} is a local volume with mount options ({}); its data is not at its \
                 mountpoint while the volume is unused",
                self.name,
                keys.join(", ")
            ));
        }
        if self.mountpoint.as_os_str().is_empty() || !self.mountpoint.is_absolute() {
            return Some(format!(
                "volume {} has no usable mountpoint ({:?})",
                self.name, self.mountpoint
            ));
        }
        None
    }
}

/// The volumes labelled as belonging to `stack` (swarm or compose), sorted by name.
pub async fn stack_volumes(
    docker: &Docker,
    stack: &StackName,
) -> Result<Vec<StackVolume>, DockerError> {
    let mut found = HashMap::new();
    for label in [SWARM_LABEL, COMPOSE_LABEL] {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{label}={}", stack.as_str())],
        )]);
        let options = ListVolumesOptions {
            filters: Some(filters),
        };
        let listed = timed(docker.list_volumes(Some(options))).await?;
        for v in listed.volumes.unwrap_or_default() {
            // The engine filtered already; check again so a lax engine cannot widen the set.
            if v.labels.get(label).map(String::as_str) != Some(stack.as_str()) {
                continue;
            }
            let name = VolumeName::new(v.name.clone()).map_err(|source| {
                DockerError::Unexpected(format!(
                    "the engine listed a volume with a bad name: {source}"
                ))
            })?;
            found.insert(
                v.name,
                StackVolume {
                    name,
                    mountpoint: PathBuf::from(v.mountpoint),
                    driver: v.driver,
                    options: v.options,
                },
            );
        }
    }
    let mut volumes: Vec<_> = found.into_values().collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(volumes)
}

/// The mountpoints of every local volume of the engine (for recovery at start).
pub async fn all_mountpoints(docker: &Docker) -> Result<Vec<PathBuf>, DockerError> {
    let listed = timed(docker.list_volumes(None::<ListVolumesOptions>)).await?;
    Ok(listed
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.driver == "local" && !v.mountpoint.is_empty())
        .map(|v| PathBuf::from(v.mountpoint))
        .collect())
}

/// A container that is alive and mounts a volume of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveContainer {
    pub name: String,
    pub state: String,
    pub volumes: Vec<String>,
}

/// What still runs of a stack; empty means undeployed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    pub services: Vec<String>,
    pub containers: Vec<LiveContainer>,
}

impl Deployment {
    pub fn is_undeployed(&self) -> bool {
        self.services.is_empty() && self.containers.is_empty()
    }
}

impl fmt::Display for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.services.is_empty() {
            parts.push(format!("services {}", self.services.join(", ")));
        }
        for c in &self.containers {
            parts.push(format!(
                "container {} ({}, mounts {})",
                c.name,
                c.state,
                c.volumes.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// What runs of `stack` now: its swarm services and the live containers mounting `volumes`.
pub async fn deployment(
    docker: &Docker,
    stack: &StackName,
    volumes: &[VolumeName],
) -> Result<Deployment, DockerError> {
    let services = swarm_services(docker, stack).await?;
    let options = ListContainersOptions {
        all: true,
        ..Default::default()
    };
    let listed = timed(docker.list_containers(Some(options))).await?;
    let wanted: BTreeSet<&str> = volumes.iter().map(VolumeName::as_str).collect();
    let mut containers = Vec::new();
    for c in listed {
        if !is_live(c.state) {
            continue;
        }
        let mounted: Vec<String> = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.name)
            .filter(|n| wanted.contains(n.as_str()))
            .collect();
        if mounted.is_empty() {
            continue;
        }
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .or(c.id)
            .unwrap_or_default();
        let state = c
            .state
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        containers.push(LiveContainer {
            name,
            state,
            volumes: mounted,
        });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Deployment {
        services,
        containers,
    })
}

/// Exited and dead containers hold nothing open; every other state (running, restarting,
/// paused, created, removing, stopping, or one we do not know) counts as live.
fn is_live(state: Option<ContainerSummaryStateEnum>) -> bool {
    !matches!(
        state,
        Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD)
    )
}

/// The stack's swarm services; none when this engine is not a swarm manager.
async fn swarm_services(docker: &Docker, stack: &StackName) -> Result<Vec<String>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{SWARM_LABEL}={}", stack.as_str())],
    )]);
    let options = ListServicesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let services = match timed(docker.list_services(Some(options))).await {
        Ok(services) => services,
        Err(DockerError::Api(e)) if is_not_swarm_manager(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = services
        .into_iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.labels.as_ref())
                .and_then(|l| l.get(SWARM_LABEL))
                .is_some_and(|v| v == stack.as_str())
        })
        .map(|s| {
            s.spec
                .and_then(|spec| spec.name)
                .or(s.id)
                .unwrap_or_default()
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The engine's answer when swarm is inactive (or this node is only a worker).
fn is_not_swarm_manager(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 503, message }
            if message.contains("not a swarm manager") || message.contains("swarm")
    )
}

/// Why waiting for a stack to go away ended without it gone.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{0}")]
    Engine(#[from] DockerError),
    #[error("still deployed: {0}")]
    Deployed(Deployment),
    #[error("cancelled while waiting for the stack to be undeployed")]
    Cancelled,
}

/// Waits until nothing of `stack` runs, looking again every half second until `deadline`;
/// with a deadline already past it looks once.
pub async fn wait_undeployed(
    docker: &Docker,
    stack: &StackName,
    volumes: &[VolumeName],
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), WaitError> {
    loop {
        let now = deployment(docker, stack, volumes).await?;
        if now.is_undeployed() {
            return Ok(());
        }
        if Instant::now() + POLL > deadline {
            return Err(WaitError::Deployed(now));
        }
        tracing::debug!(stack = %stack, still = %now, "waiting for the stack to be undeployed");
        tokio::select! {
            () = cancel.cancelled() => return Err(WaitError::Cancelled),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_states_are_all_but_exited_and_dead() {
        use ContainerSummaryStateEnum::*;
        for s in [
            RUNNING, RESTARTING, PAUSED, CREATED, REMOVING, STOPPING, EMPTY,
        ] {
            assert!(is_live(Some(s)), "{s}");
        }
        assert!(is_live(None));
        assert!(!is_live(Some(EXITED)) && !is_live(Some(DEAD)));
    }

    #[test]
    fn a_deployment_names_what_runs() {
        let d = Deployment {
            services: vec!["kc_app".into(), "kc_db".into()],
            containers: vec![LiveContainer {
                name: "kc_db.1.x".into(),
                state: "running".into(),
                volumes: vec!["kc_db_data".into()],
            }],
        };
        assert_eq!(
            d.to_string(),
            "services kc_app, kc_db; container kc_db.1.x (running, mounts kc_db_data)"
        );
        assert!(!d.is_undeployed() && Deployment::default().is_undeployed());
    }

    #[test]
    fn swarm_inactive_means_no_services() {
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: 503,
            message: "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.".into(),
        };
        assert!(is_not_swarm_manager(&e));
        let other = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert!(!is_not_swarm_manager(&other));
    }

    #[test]
    fn only_plain_local_volumes_are_supported() {
        let mut v = StackVolume {
            name: VolumeName::new("s_db").unwrap(),
            mountpoint: PathBuf::from("/var/lib/docker/volumes/s_db/_data"),
            driver: "local".into(),
            options: HashMap::new(),
        };
        assert_eq!(v.unsupported(), None);
        v.options.insert("type".into(), "nfs".into());
        assert!(v.unsupported().unwrap().contains("mount options (type)"));
        v.options.clear();
        v.driver = "rexray".into();
        assert!(v.unsupported().unwrap().contains("rexray"));
    }
}
