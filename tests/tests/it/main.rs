//! Berth's end-to-end suite: one test binary (linking dominates on small machines) with a
//! module per capability. Every test uses the real parts: SQLite and PostgreSQL, tonic servers
//! on 127.0.0.1, the Docker engine, the built binaries.

mod api;
mod auth;
mod binaries;
mod hosts;
mod store;
mod tls;
