//! Berth's end-to-end harness: real coordinators and agents in process (or as processes), a
//! fresh SQLite file or PostgreSQL database per test, and a throwaway PKI for TLS.
//!
//! Scenarios read like prose: `TestCoordinator::start(TestDb::sqlite()).await` then
//! `coordinator.agent("host-a").await`.

pub mod bin;
pub mod cli;
pub mod cloud;
pub mod cluster;
pub mod db;
pub mod docker;
pub mod dosim;
pub mod fleet;
pub mod ledger;
pub mod pki;
pub mod process;
pub mod s3;

pub use cluster::{TestAgent, TestCoordinator, eventually};
pub use db::{DbKind, TestDb};
pub use pki::Pki;
