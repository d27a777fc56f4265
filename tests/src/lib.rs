//! Berth's end-to-end harness: real coordinators and agents in process (or as processes), a
//! fresh SQLite file or PostgreSQL database per test, and a throwaway PKI for TLS.
//!
//! Scenarios read like prose: `TestCoordinator::start(TestDb::sqlite()).await` then
//! `coordinator.agent("host-a").await`.

pub mod bin;
pub mod browser;
pub mod cli;
pub mod cloud;
pub mod cluster;
pub mod db;
pub mod docker;
pub mod dosim;
pub mod fake_agent;
pub mod fleet;
pub mod ledger;
pub mod pki;
pub mod process;
pub mod s3;
pub mod webhook;

pub use cluster::{TestAgent, TestCoordinator, eventually};
pub use db::{DbKind, TestDb};
pub use ledger::{SagaStatused, StepStatused};
pub use pki::Pki;

/// Held by tests that load the whole machine (fleets of processes, floods, chaos) or whose
/// assertions are bounds in time, so they do not run at the same time as each other on a
/// two-core runner. Other tests still run beside them.
pub async fn heavy() -> tokio::sync::OwnedMutexGuard<()> {
    static HEAVY: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::LazyLock::new(Default::default);
    HEAVY.clone().lock_owned().await
}

/// Panics, showing the whole of `haystack`, unless it contains `needle`.
#[track_caller]
pub fn assert_contains(haystack: impl AsRef<str>, needle: impl AsRef<str>) {
    let (haystack, needle) = (haystack.as_ref(), needle.as_ref());
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

/// Where `program` is on `PATH`, if it is.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

/// A TCP port on loopback that was free a moment ago (for a listener a test configures).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}
