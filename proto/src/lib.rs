//! Berth's wire API, `berth.v1`: messages and tonic clients/servers generated from `proto/berth/v1`.
//!
//! This crate is the only API boundary between the coordinator, agents and the CLI.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("berth.v1");

    /// Encoded descriptor set of every Berth service, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_descriptor");

    /// Fully qualified names of every Berth service, as reflection lists them.
    pub const SERVICE_NAMES: &[&str] = &[
        "berth.v1.SagaService",
        "berth.v1.DropletService",
        "berth.v1.WarmService",
        "berth.v1.ArchiveService",
        "berth.v1.DriftService",
        "berth.v1.HostService",
        "berth.v1.TokenService",
        "berth.v1.ScheduleService",
        "berth.v1.AgentLink",
    ];
}
