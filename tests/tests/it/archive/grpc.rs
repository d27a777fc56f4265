//! `ArchiveService` over gRPC on a real coordinator: paging, labels, get, links, errors and
//! their codes, roles, prune and delete.

use berth_agent::archive::{
    ArchiveConfig as AgentArchiveConfig, ArchiveProgress, Archiver, CreateInput,
};
use berth_coordinator::archive::ArchiveConfig as CoordArchiveConfig;
use berth_proto::v1 as pb;
use berth_tests::{TestCoordinator, TestDb};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::build_app;

#[tokio::test]
async fn the_archive_service_answers_over_grpc() {
    let db = TestDb::sqlite();
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let coordinator = {
        let url = url.clone();
        TestCoordinator::start_with(&db, None, move |c| {
            c.archive = CoordArchiveConfig::for_url(url)
        })
        .await
    };
    let apps = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let agent =
        Archiver::new(AgentArchiveConfig::for_url(&url), apps.path(), state.path()).unwrap();
    build_app(&apps.path().join("web"));
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let mut made = Vec::new();
    for index in ["a", "b", "a"] {
        let input = CreateInput {
            app: "web".into(),
            index_label: index.into(),
            ..Default::default()
        };
        made.push(
            agent
                .create(input, &progress, &CancellationToken::new())
                .await
                .unwrap(),
        );
    }

    let ci = coordinator.token(berth_shared::Role::Ci, None).await;
    let mut reader = pb::archive_service_client::ArchiveServiceClient::with_interceptor(
        coordinator.channel().await,
        berth_tests::cluster::Bearer::new(&ci),
    );
    let mut admin = pb::archive_service_client::ArchiveServiceClient::with_interceptor(
        coordinator.channel().await,
        berth_tests::cluster::Bearer::new(&coordinator.admin_token),
    );

    // Pages of one, newest first, then by label.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = reader
            .list_archives(pb::ListArchivesRequest {
                apps: vec!["web".into()],
                index_label: String::new(),
                page: Some(pb::PageRequest {
                    page_size: 1,
                    page_token: token.clone(),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.archives.into_iter().map(|a| a.uuid));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = made.iter().map(|m| m.uuid.clone()).collect();
    expected.reverse();
    assert_eq!(seen, expected);
    let by_label = reader
        .list_archives(pb::ListArchivesRequest {
            apps: vec![],
            index_label: "a".into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_label.archives.len(), 2);
    assert!(
        by_label
            .archives
            .iter()
            .all(|a| a.index_label == "a" && a.app == "web")
    );

    let one = reader
        .get_archive(pb::GetArchiveRequest {
            uuid: made[0].uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (one.size_bytes, one.sha256.as_str()),
        (made[0].size, made[0].sha256.as_str())
    );
    assert_eq!(one.ts_ms, made[0].ts * 1000);
    // A link hands out the data: operators and admins only.
    let status = reader
        .get_archive_link(pb::GetArchiveLinkRequest {
            uuid: made[0].uuid.clone(),
            expires_secs: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let link = admin
        .get_archive_link(pb::GetArchiveLinkRequest {
            uuid: made[0].uuid.clone(),
            expires_secs: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.url, format!("{url}/{}", made[0].key));

    // Errors map to codes; a CI token may read but not delete.
    let status = reader
        .get_archive(pb::GetArchiveRequest {
            uuid: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let missing = "0190a5c4-0000-7000-8000-00000000dead".to_owned();
    let status = reader
        .get_archive(pb::GetArchiveRequest { uuid: missing })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = reader
        .delete_archive(pb::DeleteArchiveRequest {
            uuid: made[0].uuid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = admin
        .create_archive(pb::CreateArchiveRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("host id"),
        "a create names its host: {}",
        status.message()
    );
    let status = admin
        .prune_archives(pb::PruneArchivesRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "no retention rule: {status:?}"
    );

    // Prune (dry run, then real), delete one, delete the app.
    let dry = admin
        .prune_archives(pb::PruneArchivesRequest {
            app: "web".into(),
            keep_last: 2,
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.deleted_uuids, vec![made[0].uuid.clone()]);
    let real = admin
        .prune_archives(pb::PruneArchivesRequest {
            app: "web".into(),
            keep_last: 2,
            dry_run: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(real.deleted_uuids, dry.deleted_uuids);
    let one = admin
        .delete_archive(pb::DeleteArchiveRequest {
            uuid: made[1].uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.deleted_uuids, vec![made[1].uuid.clone()]);
    let rest = admin
        .delete_app_archives(pb::DeleteAppArchivesRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.deleted_uuids, vec![made[2].uuid.clone()]);
    assert_eq!(
        std::fs::read_dir(store.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count(),
        0
    );
}
