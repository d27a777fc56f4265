//! The kinds of task this agent runs, behind the narrow `Executor` seam the runner calls:
//! `warm_snapshot` and `warm_restore`, `archive_create` and `archive_restore`, with their JSON
//! inputs and outputs.
//!
//! ```text
//! warm_snapshot    in  {"app", "domain", "stack"?, "commit"?, "version"?, "wait_undeployed_secs"?}
//!                  out {"app", "volumes": [..], "bytes", "entries", "ts"}
//! warm_restore     in  {"app", "domain", "stack"?, "wait_undeployed_secs"?}
//!                  out {"app", "volumes": [{"name", "method": "swap"|"clear"}], "bytes", "entries"}
//! archive_create   in  archive::CreateInput   out archive::CreateOutput
//! archive_restore  in  archive::RestoreInput  out archive::RestoreOutput
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::archive::{self, ArchiveError, ArchiveProgress, Archiver};
use crate::error::chain;
use crate::warm::{
    AppTarget, Progress, RestoreRequest, SnapshotRequest, Warm, WarmError, WarmErrorKind,
};

pub(crate) const WARM_SNAPSHOT: &str = "warm_snapshot";
pub(crate) const WARM_RESTORE: &str = "warm_restore";

/// Why a task failed, and whether sending it again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub error: String,
    pub retryable: bool,
}

impl Failure {
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retryable: false,
        }
    }
}

pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<String, Failure>> + Send>>;

/// Runs task kinds; the runner around it handles identity, epochs, results and progress.
pub(crate) trait Executor: Send + Sync + 'static {
    fn supports(&self, kind: &str) -> bool;
    /// Runs one task to its output JSON.
    fn run(
        &self,
        kind: String,
        inputs_json: String,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> TaskFuture;
}

/// The agent's real kinds.
#[derive(Debug, Clone)]
pub(crate) struct AgentKinds {
    pub warm_root: PathBuf,
    pub archiver: Archiver,
}

#[derive(Debug, Deserialize)]
struct SnapshotInputs {
    app: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    stack: Option<String>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    wait_undeployed_secs: u64,
}

#[derive(Debug, Deserialize)]
struct RestoreInputs {
    app: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    stack: Option<String>,
    #[serde(default)]
    wait_undeployed_secs: u64,
}

/// Longest wait for a stack to go away that a task may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Executor for AgentKinds {
    fn supports(&self, kind: &str) -> bool {
        matches!(
            kind,
            WARM_SNAPSHOT | WARM_RESTORE | archive::CREATE_TASK | archive::RESTORE_TASK
        )
    }

    fn run(
        &self,
        kind: String,
        inputs_json: String,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> TaskFuture {
        let root = self.warm_root.clone();
        let archiver = self.archiver.clone();
        Box::pin(async move {
            match kind.as_str() {
                archive::CREATE_TASK | archive::RESTORE_TASK => {
                    run_archive(&archiver, &kind, &inputs_json, &progress, &cancel).await
                }
                WARM_SNAPSHOT => {
                    let i: SnapshotInputs = parse(&kind, &inputs_json)?;
                    let req = SnapshotRequest {
                        target: target(&i.app, &i.domain, i.stack.as_deref())?,
                        commit: i.commit.filter(|c| !c.is_empty()),
                        version: i.version.filter(|v| !v.is_empty()),
                        wait_undeployed: wait(i.wait_undeployed_secs),
                    };
                    let warm = Warm::connect(root).await.map_err(failure)?;
                    let out = warm
                        .snapshot(&req, progress, cancel)
                        .await
                        .map_err(failure)?;
                    Ok(serde_json::to_string(&out).expect("outcome serializes"))
                }
                WARM_RESTORE => {
                    let i: RestoreInputs = parse(&kind, &inputs_json)?;
                    let req = RestoreRequest {
                        target: target(&i.app, &i.domain, i.stack.as_deref())?,
                        wait_undeployed: wait(i.wait_undeployed_secs),
                    };
                    let warm = Warm::connect(root).await.map_err(failure)?;
                    let out = warm
                        .restore(&req, progress, cancel)
                        .await
                        .map_err(failure)?;
                    Ok(serde_json::to_string(&out).expect("outcome serializes"))
                }
                other => Err(Failure::permanent(format!(
                    "task kind {other:?} is not supported by this agent"
                ))),
            }
        })
    }
}

/// Runs an archive task, copying its progress into the runner's as it changes.
async fn run_archive(
    archiver: &Archiver,
    kind: &str,
    inputs_json: &str,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<String, Failure> {
    let (tx, mut rx) = tokio::sync::watch::channel(ArchiveProgress::default());
    let task = archiver.run_task(kind, inputs_json, &tx, cancel);
    tokio::pin!(task);
    loop {
        tokio::select! {
            out = &mut task => {
                progress.replace(&(&*rx.borrow_and_update()).into());
                return out.map_err(archive_failure);
            }
            Ok(()) = rx.changed() => progress.replace(&(&*rx.borrow_and_update()).into()),
        }
    }
}

fn archive_failure(e: ArchiveError) -> Failure {
    Failure {
        error: chain(&e),
        retryable: e.retryable(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(kind: &str, json: &str) -> Result<T, Failure> {
    serde_json::from_str(json)
        .map_err(|e| Failure::permanent(format!("invalid inputs for {kind}: {e}")))
}

fn target(app: &str, domain: &str, stack: Option<&str>) -> Result<AppTarget, Failure> {
    AppTarget::new(app, domain, stack).map_err(failure)
}

fn wait(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_WAIT)
}

fn failure(e: WarmError) -> Failure {
    Failure {
        error: chain(&e),
        retryable: e.kind() == WarmErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: &str, inputs: &str) -> Result<String, Failure> {
        let kinds = AgentKinds {
            warm_root: PathBuf::from("/nonexistent-warm-root"),
            archiver: Archiver::with_store(
                archive::ArchiveConfig::default(),
                "/nonexistent-apps-root",
                Arc::new(object_store::memory::InMemory::new()),
            ),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(kinds.run(
            kind.into(),
            inputs.into(),
            Arc::new(Progress::new()),
            CancellationToken::new(),
        ))
    }

    #[test]
    fn bad_inputs_fail_permanently_naming_the_problem() {
        let e = run(WARM_SNAPSHOT, "not json").unwrap_err();
        assert!(
            !e.retryable && e.error.starts_with("invalid inputs for warm_snapshot"),
            "{e:?}"
        );
        let e = run(WARM_RESTORE, r#"{"domain":"x.org"}"#).unwrap_err();
        assert!(e.error.contains("missing field `app`"), "{e:?}");
        for app in ["a/b", "..", "a\u{0}b"] {
            let inputs = serde_json::json!({"app": app, "domain": "x.org"}).to_string();
            let e = run(WARM_RESTORE, &inputs).unwrap_err();
            assert!(
                !e.retryable && e.error.contains("invalid app name"),
                "{e:?}"
            );
        }
        let e = run(archive::CREATE_TASK, r#"{"app":"a:b"}"#).unwrap_err();
        assert!(!e.retryable && e.error.contains("app name"), "{e:?}");
        let e = run(archive::RESTORE_TASK, r#"{"uuid":"x","extra":1}"#).unwrap_err();
        assert!(!e.retryable && e.error.contains("unknown field"), "{e:?}");
        let e = run("frobnicate", "{}").unwrap_err();
        assert!(e.error.contains("not supported"), "{e:?}");
    }
}
