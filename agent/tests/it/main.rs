//! The agent's integration tests: the real agent against a scripted fake coordinator on
//! loopback and the real Docker engine of this machine.

mod fake;
mod link;
