//! Answers to the coordinator's queries: short, read-only requests outside any saga.

use std::path::Path;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::AppName;
use pb::query::Kind;
use pb::query_reply::Reply;

use crate::error_kind::chain;
use crate::{describe, warm};

/// How long a query may take before the agent answers with an error instead.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The reply to `query`; failures become the reply's `error`, never a broken stream.
pub(crate) async fn answer(
    query: pb::Query,
    warm_root: &Path,
    spares: Option<&warm::Spares>,
    host_id: &str,
) -> pb::QueryReply {
    let reply = match query.kind {
        Some(Kind::DescribeHost(_)) => {
            match tokio::time::timeout(QUERY_TIMEOUT, describe::describe_host(warm_root)).await {
                Ok(Ok(description)) => Reply::HostDescription(description),
                Ok(Err(e)) => {
                    let error = chain(&e);
                    tracing::warn!(query_id = %query.query_id, error = %error, "cannot describe host");
                    Reply::Error(error)
                }
                Err(_) => Reply::Error(format!(
                    "describing the host took longer than {} s",
                    QUERY_TIMEOUT.as_secs()
                )),
            }
        }
        Some(Kind::ListWarmSnapshots(q)) => {
            match tokio::time::timeout(QUERY_TIMEOUT, list_warm(warm_root, spares, &q.app, host_id))
                .await
            {
                Ok(Ok(snapshots)) => Reply::WarmSnapshots(pb::ListWarmSnapshotsReply { snapshots }),
                Ok(Err(error)) => {
                    tracing::warn!(query_id = %query.query_id, error = %error, "cannot list warm snapshots");
                    Reply::Error(error)
                }
                Err(_) => Reply::Error(format!(
                    "listing warm snapshots took longer than {} s",
                    QUERY_TIMEOUT.as_secs()
                )),
            }
        }
        None => Reply::Error(
            "unknown query kind; the agent may be older than the coordinator".to_owned(),
        ),
    };
    pb::QueryReply {
        query_id: query.query_id,
        reply: Some(reply),
    }
}

/// The warm snapshots under `warm_root` (of `app`, or of every app when it is empty).
async fn list_warm(
    warm_root: &Path,
    spares: Option<&warm::Spares>,
    app: &str,
    host_id: &str,
) -> Result<Vec<pb::WarmSnapshotInfo>, String> {
    let app = match app {
        "" => None,
        a => Some(AppName::new(a).map_err(|e| format!("invalid app name: {e}"))?),
    };
    let root = warm_root.to_owned();
    let listed = tokio::task::spawn_blocking(move || warm::list_snapshots(&root, app.as_ref()))
        .await
        .map_err(|e| format!("listing failed: {e}"))?
        .map_err(|e| chain(&e))?;
    Ok(listed
        .into_iter()
        .map(|s| pb::WarmSnapshotInfo {
            host_id: host_id.to_owned(),
            spare: spares
                .and_then(|sp| sp.state(&s.app))
                .unwrap_or_else(|| "none".to_owned()),
            ..s.into()
        })
        .collect())
}
