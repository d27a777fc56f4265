//! Services whose capabilities are not built yet. Each RPC answers `UNIMPLEMENTED` naming
//! what is missing and which capability brings it, so clients fail clearly, not mysteriously.

use std::pin::Pin;

use berth_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::not_built;

/// The placeholder for every service that is not built yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotBuilt;

macro_rules! not_built_service {
    (
        $trait:path, $what:literal, $arrives:literal;
        { $($extra:tt)* }
        $( $method:ident($req:ty) -> $resp:ty; )*
    ) => {
        #[tonic::async_trait]
        impl $trait for NotBuilt {
            $($extra)*
            $(
                async fn $method(&self, _req: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(not_built(concat!($what, " (", stringify!($method), ")"), $arrives))
                }
            )*
        }
    };
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SagaEvent, Status>> + Send>>;

not_built_service! {
    pb::saga_service_server::SagaService, "the saga engine", "the saga engine (issue #3)";
    { type WatchSagaStream = EventStream; }
    start_saga(pb::StartSagaRequest) -> pb::SagaRef;
    get_saga(pb::GetSagaRequest) -> pb::Saga;
    list_sagas(pb::ListSagasRequest) -> pb::ListSagasResponse;
    watch_saga(pb::WatchSagaRequest) -> EventStream;
    cancel_saga(pb::SagaIdRequest) -> pb::Saga;
    retry_saga(pb::SagaIdRequest) -> pb::Saga;
    skip_step(pb::SkipStepRequest) -> pb::Saga;
    resume_compensation(pb::SagaIdRequest) -> pb::Saga;
    abandon_saga(pb::SagaIdRequest) -> pb::Saga;
}

not_built_service! {
    pb::droplet_service_server::DropletService, "droplet management",
    "the DigitalOcean client and droplet sagas (issue #4)";
    {}
    provision_droplet(pb::ProvisionDropletRequest) -> pb::SagaRef;
    destroy_droplet(pb::DestroyDropletRequest) -> pb::SagaRef;
    snapshot_droplet(pb::SnapshotDropletRequest) -> pb::SagaRef;
    resize_droplet(pb::ResizeDropletRequest) -> pb::SagaRef;
    list_droplets(pb::ListDropletsRequest) -> pb::ListDropletsResponse;
}

not_built_service! {
    pb::warm_service_server::WarmService, "warm snapshots", "warm snapshots and restores (issue #6)";
    {}
    warm_snapshot(pb::WarmSnapshotRequest) -> pb::SagaRef;
    warm_restore(pb::WarmRestoreRequest) -> pb::SagaRef;
    list_warm_snapshots(pb::ListWarmSnapshotsRequest) -> pb::ListWarmSnapshotsResponse;
}

not_built_service! {
    pb::archive_service_server::ArchiveService, "app archives", "app archives in object storage (issue #7)";
    {}
    create_archive(pb::CreateArchiveRequest) -> pb::SagaRef;
    restore_archive(pb::RestoreArchiveRequest) -> pb::SagaRef;
    list_archives(pb::ListArchivesRequest) -> pb::ListArchivesResponse;
    get_archive(pb::GetArchiveRequest) -> pb::Archive;
    get_archive_link(pb::GetArchiveLinkRequest) -> pb::ArchiveLink;
    delete_archive(pb::DeleteArchiveRequest) -> pb::DeleteArchivesResponse;
    delete_app_archives(pb::DeleteAppArchivesRequest) -> pb::DeleteArchivesResponse;
    prune_archives(pb::PruneArchivesRequest) -> pb::DeleteArchivesResponse;
}

not_built_service! {
    pb::drift_service_server::DriftService, "the drift inbox", "inventory sync and drift detection (issue #5)";
    {}
    list_drift(pb::ListDriftRequest) -> pb::ListDriftResponse;
    accept_drift(pb::DriftIdRequest) -> pb::Drift;
    revert_drift(pb::DriftIdRequest) -> pb::SagaRef;
    resource_history(pb::ResourceHistoryRequest) -> pb::ResourceHistoryResponse;
    record_desired_spec(pb::RecordDesiredSpecRequest) -> pb::DesiredSpec;
    sync_inventory(pb::SyncInventoryRequest) -> pb::SyncInventoryResponse;
}
