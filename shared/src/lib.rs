//! Domain types and rules shared by the coordinator, agents and the CLI: names that become
//! paths or keys, roles, task identities, the saga ledger's vocabulary, and `chain` (an
//! error with its sources on one line). No I/O lives here.

pub mod archive;
pub mod config_doc;
pub mod human;
pub mod name;
pub mod net;
pub mod role;
pub mod saga;
pub mod secret;
pub mod task;
pub mod time;

// `#[derive(ConfigDoc)]` names `::berth_shared`, here too.
extern crate self as berth_shared;

pub use name::{AppName, HostId, NameError, StackName};
pub use role::Role;
pub use secret::Secret;
pub use task::Task;

/// `error` and its sources joined by ": ", so a log line or an answer says what failed
/// underneath.
pub fn chain<E: std::error::Error + ?Sized>(error: &E) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_joins_an_error_and_its_sources() {
        let outer = WithSource(std::io::Error::other("disk on fire"));
        assert_eq!(super::chain(&outer), "cannot write: disk on fire");
    }

    #[derive(Debug)]
    struct WithSource(std::io::Error);

    impl std::fmt::Display for WithSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot write")
        }
    }

    impl std::error::Error for WithSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
