//! berth-coordinator: the central gRPC service. It authorizes every call by role, runs
//! durable sagas (the engine in `saga`, its ledger in `store`, SQLite or PostgreSQL, safe
//! against crashes and against replicas racing), hands agent work to whichever replica holds
//! the host's stream (`hub`), provisions and watches DigitalOcean droplets (`droplet`,
//! `digitalocean`), keeps the cloud inventory and its drift (`drift`), and catalogs the
//! archive bucket (`archive`).
//!
//! Entry point: [`run`] with a [`Config`]; `server` wires the parts together.

pub mod alert;
pub mod archive;
pub mod auth;
pub mod config;
pub mod digitalocean;
pub mod drift;
pub mod droplet;
pub mod error;
pub mod hub;
pub mod limits;
pub mod remote;
pub mod saga;
pub mod schedule;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod web;

pub use config::Config;
pub use server::{StartError, run};
