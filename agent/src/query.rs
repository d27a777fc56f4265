//! Answers to the coordinator's queries: short, read-only requests outside any saga.

use std::path::Path;
use std::time::Duration;

use berth_proto::v1 as pb;
use pb::query::Kind;
use pb::query_reply::Reply;

use crate::describe;
use crate::error::chain;

/// How long a query may take before the agent answers with an error instead.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The reply to `query`; failures become the reply's `error`, never a broken stream.
pub(crate) async fn answer(query: pb::Query, warm_root: &Path) -> pb::QueryReply {
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
        None => Reply::Error(
            "unknown query kind; the agent may be older than the coordinator".to_owned(),
        ),
    };
    pb::QueryReply {
        query_id: query.query_id,
        reply: Some(reply),
    }
}
