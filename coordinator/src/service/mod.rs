//! gRPC services: each parses its requests at the boundary and calls into the domain.

pub mod agent_link;
pub mod archives;
pub mod drift;
pub mod droplets;
pub mod hosts;
pub mod not_built;
pub mod sagas;
pub mod schedules;
pub mod tokens;
pub mod warm;

use berth_proto::v1 as pb;
use serde::Serialize;
use tonic::{Request, Status};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::saga::{Engine, StartedBy};

/// The caller as the saga records it; a ci caller is held to the engine's ci caps.
pub(crate) fn started_by(caller: &Principal) -> StartedBy<'_> {
    StartedBy {
        token_id: &caller.token_id,
        ci: caller.role == berth_shared::Role::Ci,
    }
}

/// Starts saga `kind` with `inputs` for `caller` (idempotent under a non-empty `key`).
pub(crate) async fn start_saga(
    engine: &Engine,
    caller: &Principal,
    kind: &str,
    inputs: &impl Serialize,
    key: &str,
) -> Result<pb::SagaRef, ApiError> {
    let inputs = serde_json::to_string(inputs).expect("saga inputs serialize");
    let key = (!key.is_empty()).then_some(key);
    let (saga_id, existing) = engine
        .start_by(kind, &inputs, key, Some(started_by(caller)))
        .await?;
    Ok(pb::SagaRef {
        saga_id,
        kind: kind.to_owned(),
        existing,
    })
}

/// Refuses a warm restore outside the caller's token scope; `inputs` are the saga's inputs
/// (`host_id`, `app`). Missing names are refused by a scoped token, never waved through.
pub(crate) fn check_restore_scope(
    caller: &Principal,
    inputs: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    let name = |k: &str| inputs.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    caller
        .may_restore(name("host_id"), name("app"))
        .map_err(ApiError::from)
}

/// The caller that the auth layer put in the request.
pub(crate) fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
