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

use tonic::{Request, Status};

use crate::auth::Principal;

/// The caller that the auth layer put in the request.
pub(crate) fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
