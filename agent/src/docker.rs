//! The connection to the local Docker engine: bollard on `DOCKER_HOST` or the default socket,
//! with the API version negotiated and every call bounded in time. `stack` finds an app's
//! volumes and what still runs of it.

pub(crate) mod stack;

use std::future::Future;
use std::time::Duration;

use bollard::Docker;

use crate::error_kind::chain;

/// How a call to the Docker engine failed: the engine's own error, no answer in time, or an
/// answer that makes no sense. Warm, archive and the host description each wrap it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker engine")]
    Api(#[source] Box<bollard::errors::Error>),
    #[error("docker engine did not answer within {secs} s")]
    Timeout { secs: u64 },
    #[error("docker engine answered something unexpected: {0}")]
    Unexpected(String),
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        DockerError::Api(Box::new(e))
    }
}

/// How long one call to the engine may take before we give up on it.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the version probe may delay a connection attempt.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the local engine, speaking the highest API version both sides know.
pub(crate) async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults()?;
    timed(docker.negotiate_version()).await
}

/// Runs one engine call with `CALL_TIMEOUT`.
pub(crate) async fn timed<T>(
    call: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DockerError::Timeout {
            secs: CALL_TIMEOUT.as_secs(),
        }),
    }
}

/// The engine's version for `Hello`, or an empty string (and a warning) when it is unreachable:
/// an agent without Docker still connects, so the coordinator can show the host.
pub(crate) async fn version_for_hello() -> String {
    let version = async {
        let docker = connect().await?;
        timed(docker.version()).await
    };
    let version = async {
        match tokio::time::timeout(HELLO_TIMEOUT, version).await {
            Ok(result) => result,
            Err(_) => Err(DockerError::Timeout {
                secs: HELLO_TIMEOUT.as_secs(),
            }),
        }
    };
    match version.await {
        Ok(v) => v.version.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "docker engine unreachable; saying hello without its version");
            String::new()
        }
    }
}
