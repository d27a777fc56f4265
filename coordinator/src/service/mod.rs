//! gRPC services: each parses its requests at the boundary and calls into the domain.

pub mod agent_link;
pub mod archives;
pub mod drift;
pub mod droplets;
pub mod hosts;
pub mod not_built;
pub mod sagas;
pub mod tokens;
pub mod warm;

use berth_proto::v1 as pb;
use serde::Serialize;
use tonic::{Request, Status};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::saga::Engine;

/// Starts saga `kind` with `inputs` (idempotent under a non-empty `key`).
pub(crate) async fn start_saga(
    engine: &Engine,
    kind: &str,
    inputs: &impl Serialize,
    key: &str,
) -> Result<pb::SagaRef, ApiError> {
    let inputs = serde_json::to_string(inputs).expect("saga inputs serialize");
    let key = (!key.is_empty()).then_some(key);
    let (saga_id, existing) = engine.start(kind, &inputs, key).await?;
    Ok(pb::SagaRef {
        saga_id,
        kind: kind.to_owned(),
        existing,
    })
}

/// The caller that the auth layer put in the request.
pub(crate) fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
