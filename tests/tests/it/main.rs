//! Berth's end-to-end suite: one test binary (linking dominates on small machines) with a
//! module per capability. Every test uses the real parts: SQLite and PostgreSQL, tonic servers
//! on 127.0.0.1, the Docker engine, the built binaries.

mod api;
mod archive;
mod auth;
mod binaries;
mod cli_sagas;
mod console;
mod deploy;
mod digitalocean;
mod drift;
mod droplets;
mod failover;
mod fencing;
mod golden;
mod hosts;
mod layout;
mod limits;
mod metrics;
mod readme;
mod saga_crash;
mod sagas;
mod schedules;
mod store;
mod tls;
mod trust;
mod walkthrough;
mod warm_e2e;
mod warm_spares;
