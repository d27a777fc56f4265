//! What every agent error shares, as a leaf the errors of each module can use without
//! reaching the agent's own error: [`ErrorKind`], what a failure means for retrying, and
//! [`chain`], an error with its sources on one line.

/// What a failure means for whoever decides to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration or local files: retrying will not help until an operator acts.
    Invalid,
    /// The coordinator refused our credentials.
    Unauthorized,
    /// The network, the coordinator or Docker may be back later.
    Transient,
    /// The peer broke the protocol.
    Protocol,
}

pub use berth_shared::chain;
