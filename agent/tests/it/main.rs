//! The agent's integration tests: the real agent against a scripted fake coordinator on
//! loopback and the real Docker engine of this machine (warm tests need root).

mod archive;
mod env;
mod fake;
mod hostile_tar;
mod link;
mod locks;
mod tree;
mod warm;
mod warm_compat;
mod warm_interrupt;
mod warm_safety;
mod warm_spare;
mod warm_task;
