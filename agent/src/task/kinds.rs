//! The kinds of task this agent runs, behind the narrow `Executor` seam the runner calls:
//! `warm_snapshot` and `warm_restore`, `archive_create`, `archive_restore` and
//! `archive_verify`. Inputs arrive
//! as the wire JSON of the shared task contract (`berth_shared::task::Task`), parsed once
//! here; outputs go back as JSON.
//!
//! ```text
//! warm_snapshot    in  {"app", "domain", "stack"?, "commit"?, "version"?, "wait_undeployed_secs"?,
//!                       "no_spare"?}
//!                  out {"app", "volumes": [..], "bytes", "entries", "ts"}
//! warm_restore     in  {"app", "domain", "stack"?, "wait_undeployed_secs"?}
//!                  out {"app", "volumes": [{"name", "method": "spare"|"swap"|"clear",
//!                       "swap_us"?, "spare_age_secs"?}], "bytes", "entries"}
//! archive_create   in  archive::CreateInput   out archive::CreateOutput
//! archive_restore  in  archive::RestoreInput  out archive::RestoreOutput
//! archive_verify   in  archive::VerifyInput   out archive::VerifyOutput
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_shared::task::{MAX_WAIT_UNDEPLOYED_SECS, Task};
use berth_shared::{AppName, StackName};
use tokio_util::sync::CancellationToken;

use crate::archive::{self, ArchiveError, ArchiveProgress, Archiver};
use crate::error_kind::chain;
use crate::warm::{
    AppTarget, Progress, RestoreRequest, SnapshotRequest, Spares, Warm, WarmError, WarmErrorKind,
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
    /// The spare builder warm snapshots and restores tell (none in tests of the runner).
    pub spares: Option<Spares>,
}

impl Executor for AgentKinds {
    fn supports(&self, kind: &str) -> bool {
        matches!(
            kind,
            WARM_SNAPSHOT
                | WARM_RESTORE
                | archive::CREATE_TASK
                | archive::RESTORE_TASK
                | archive::VERIFY_TASK
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
        let spares = self.spares.clone();
        let archiver = self.archiver.clone();
        Box::pin(async move {
            let task = Task::from_json(&kind, &inputs_json)
                .map_err(|e| Failure::permanent(e.to_string()))?;
            match task {
                Task::ArchiveCreate(t) => {
                    let input = archive::CreateInput {
                        app: t.app.to_string(),
                        stack: t.stack.map(String::from),
                        labels: t.labels,
                        index_label: t.index_label,
                        zstd_level: t.zstd_level,
                        uuid: t.uuid.map(String::from),
                        recipients: t.recipients,
                        unchanged_since: t.unchanged_since,
                    };
                    run_archive(&progress, |tx| {
                        let archiver = archiver.clone();
                        let cancel = cancel.clone();
                        async move { archiver.create(input, &tx, &cancel).await.map(json) }
                    })
                    .await
                }
                Task::ArchiveRestore(t) => {
                    let input = archive::RestoreInput {
                        uuid: t.uuid.to_string(),
                        recorded: t.recorded,
                        target_app: t.target_app.map(String::from),
                        stack: t.stack.map(String::from),
                        identity: t.identity,
                    };
                    run_archive(&progress, |tx| {
                        let archiver = archiver.clone();
                        let cancel = cancel.clone();
                        async move { archiver.restore(input, &tx, &cancel).await.map(json) }
                    })
                    .await
                }
                Task::ArchiveVerify(t) => {
                    let input = archive::VerifyInput {
                        uuid: t.uuid.to_string(),
                        recorded: t.recorded,
                    };
                    run_archive(&progress, |tx| {
                        let archiver = archiver.clone();
                        let cancel = cancel.clone();
                        async move { archiver.verify(input, &tx, &cancel).await.map(json) }
                    })
                    .await
                }
                Task::WarmSnapshot(t) => {
                    let req = SnapshotRequest {
                        target: target(&t.app, &t.domain, t.stack.as_ref())?,
                        commit: t.commit.filter(|c| !c.is_empty()),
                        version: t.version.filter(|v| !v.is_empty()),
                        wait_undeployed: wait(t.wait_undeployed_secs),
                        spare: !t.no_spare,
                    };
                    let warm = connect(root, &spares).await?;
                    let out = warm
                        .snapshot(&req, progress, cancel)
                        .await
                        .map_err(failure)?;
                    Ok(json(out))
                }
                Task::WarmRestore(t) => {
                    let req = RestoreRequest {
                        target: target(&t.app, &t.domain, t.stack.as_ref())?,
                        wait_undeployed: wait(t.wait_undeployed_secs),
                        use_spare: true,
                    };
                    let warm = connect(root, &spares).await?;
                    let out = warm
                        .restore(&req, progress, cancel)
                        .await
                        .map_err(failure)?;
                    Ok(json(out))
                }
            }
        })
    }
}

/// A `Warm` on the local engine, telling the spare builder when there is one.
async fn connect(root: PathBuf, spares: &Option<Spares>) -> Result<Warm, Failure> {
    let warm = Warm::connect(root).await.map_err(failure)?;
    Ok(match spares {
        Some(s) => warm.with_spares(s.clone()),
        None => warm,
    })
}

fn json(out: impl serde::Serialize) -> String {
    serde_json::to_string(&out).expect("outcomes serialize")
}

/// Runs an archive task, copying its progress into the runner's as it changes.
async fn run_archive<F, Fut>(progress: &Progress, task: F) -> Result<String, Failure>
where
    F: FnOnce(tokio::sync::watch::Sender<ArchiveProgress>) -> Fut,
    Fut: Future<Output = Result<String, ArchiveError>>,
{
    let (tx, mut rx) = tokio::sync::watch::channel(ArchiveProgress::default());
    let task = task(tx);
    tokio::pin!(task);
    loop {
        tokio::select! {
            out = &mut task => {
                progress.replace(&wire(&rx.borrow_and_update()));
                return out.map_err(archive_failure);
            }
            Ok(()) = rx.changed() => progress.replace(&wire(&rx.borrow_and_update())),
        }
    }
}

/// An archive's progress as a task reports it: the phase carries the compression ratio.
fn wire(p: &ArchiveProgress) -> berth_proto::v1::Progress {
    berth_proto::v1::Progress {
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        entries_done: p.entries_done,
        entries_total: p.entries_total,
        bytes_written: p.bytes_stored,
        phase: format!("{} (ratio {:.2})", p.phase.as_str(), p.compression_ratio()),
    }
}

fn archive_failure(e: ArchiveError) -> Failure {
    Failure {
        error: chain(&e),
        retryable: e.retryable(),
    }
}

fn target(app: &AppName, domain: &str, stack: Option<&StackName>) -> Result<AppTarget, Failure> {
    AppTarget::new(app.as_str(), domain, stack.map(StackName::as_str)).map_err(failure)
}

fn wait(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.unwrap_or(0).min(MAX_WAIT_UNDEPLOYED_SECS))
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
            spares: None,
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
            assert!(!e.retryable && e.error.contains("app name"), "{e:?}");
        }
        let e = run(archive::CREATE_TASK, r#"{"app":"a:b"}"#).unwrap_err();
        assert!(!e.retryable && e.error.contains("app name"), "{e:?}");
        let e = run(archive::RESTORE_TASK, r#"{"uuid":"x","extra":1}"#).unwrap_err();
        assert!(!e.retryable && e.error.contains("unknown field"), "{e:?}");
        let e = run("frobnicate", "{}").unwrap_err();
        assert!(e.error.contains("unknown variant `frobnicate`"), "{e:?}");
    }

    #[test]
    fn archive_progress_maps_to_the_wire() {
        let p = ArchiveProgress {
            phase: berth_shared::archive::Phase::Archiving,
            bytes_done: 300,
            bytes_total: 1000,
            entries_done: 2,
            entries_total: 9,
            bytes_transformed: 100,
            bytes_stored: 50,
        };
        let pb = wire(&p);
        assert_eq!(pb.bytes_written, 50);
        assert_eq!(pb.phase, "archiving (ratio 3.00)");
    }
}
