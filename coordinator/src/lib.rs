//! berth-coordinator: the central gRPC service. It authorizes every call, keeps the hosts and
//! tokens in its store (SQLite or PostgreSQL), and holds each agent's stream in the hub.

pub mod archive;
pub mod auth;
pub mod config;
pub mod digitalocean;
pub mod drift;
pub mod droplet;
pub mod error;
pub mod hub;
pub mod limits;
pub mod saga;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use server::{StartError, run};
