//! Domain types and rules shared by the coordinator, agents and the CLI: names that become
//! paths or keys, roles, task identities. No I/O lives here.

pub mod archive;
pub mod name;
pub mod net;
pub mod role;
pub mod saga;
pub mod task;
pub mod time;

pub use name::{AppName, HostId, NameError, StackName};
pub use role::Role;
pub use task::Task;
