//! Bounded inputs: every field over its limit is refused with INVALID_ARGUMENT naming the
//! field and the limit; `ListSagas` pages are capped in bytes; the `demo` kind runs only on a
//! coordinator that enables it.

use std::collections::HashSet;

use berth_proto::v1 as pb;
use berth_shared::saga::{EventKind, SagaStatus};
use berth_tests::assert_contains;
use berth_tests::{SagaStatused, TestCoordinator, TestDb};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn oversized_inputs_are_refused_naming_the_field_and_the_limit() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start(&db).await;
    let long = |n: usize| "a".repeat(n);
    let target = |domain: String| pb::AppTarget {
        host_id: "ci-1".into(),
        app: "kc".into(),
        domain,
        stack: String::new(),
    };
    let mut warm = pb::warm_service_client::WarmServiceClient::with_interceptor(
        c.channel().await,
        berth_tests::cluster::Bearer::new(&c.admin_token),
    );
    let snapshot = |commit: String, version: String, domain: String| pb::WarmSnapshotRequest {
        target: Some(target(domain)),
        commit,
        version,
        ..Default::default()
    };
    let cases: Vec<(pb::WarmSnapshotRequest, &str)> = vec![
        (
            snapshot(long(129), String::new(), "kc.example.org".into()),
            "commit is 129 bytes long; the limit is 128",
        ),
        (
            snapshot(String::new(), long(500), "kc.example.org".into()),
            "version is 500 bytes long; the limit is 128",
        ),
        (
            snapshot(String::new(), String::new(), long(254)),
            "domain is 254 bytes long; the limit is 253",
        ),
    ];
    for (request, expected) in cases {
        let refused = warm.warm_snapshot(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_contains(refused.message(), expected);
    }

    let mut sagas = c.sagas().await;
    let start = |kind: &str, inputs: serde_json::Value, key: String| pb::StartSagaRequest {
        kind: kind.into(),
        inputs_json: inputs.to_string(),
        idempotency_key: key,
    };
    let labels = json!({"host_id": "ci-1", "app": "kc", "labels": vec!["x"; 33]});
    let label = json!({"host_id": "ci-1", "app": "kc", "labels": [long(300)]});
    let huge = json!({"steps": vec![json!({"step": "noop"}); 10_000]});
    let cases = [
        (
            start("archive.create", labels, String::new()),
            "labels has 33 entries; the limit is 32",
        ),
        (
            start("archive.create", label, String::new()),
            "labels is 300 bytes long; the limit is 256",
        ),
        (
            start("demo", huge, String::new()),
            "inputs_json is 160011 bytes long; the limit is 131072",
        ),
        (
            start("demo", json!({"steps": [{"step": "noop"}]}), long(300)),
            "idempotency_key is 300 bytes long; the limit is 256",
        ),
        (
            start(&long(65), json!({}), String::new()),
            "kind is 65 bytes long; the limit is 64",
        ),
    ];
    for (request, expected) in cases {
        let refused = sagas.start_saga(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_contains(refused.message(), expected);
    }
}

#[tokio::test]
async fn list_pages_are_capped_in_bytes_and_page_through_everything() {
    let db = TestDb::sqlite();
    const CAP: usize = 8 * 1024;
    let c = TestCoordinator::start_with(&db, None, |config| {
        config.limits.list_page_max_bytes = CAP;
    })
    .await;
    // Big sagas: a long first step keeps them from running through their many steps.
    let mut steps = vec![json!({"step": "sleep", "ms": 600_000})];
    steps.extend(std::iter::repeat_n(json!({"step": "noop"}), 60));
    let mut started = HashSet::new();
    for _ in 0..20 {
        started.insert(c.start_demo(json!(steps)).await);
    }
    let mut sagas = c.sagas().await;
    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = sagas
            .list_sagas(pb::ListSagasRequest {
                page: Some(pb::PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        let size = prost::Message::encoded_len(&page);
        assert!(!page.sagas.is_empty(), "page {pages} is empty");
        assert!(
            size <= CAP || page.sagas.len() == 1,
            "page {pages} is {size} bytes with {} sagas (cap {CAP})",
            page.sagas.len()
        );
        for s in &page.sagas {
            assert!(
                seen.insert(s.saga_id.clone()),
                "saga {} listed twice",
                s.saga_id
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen, started, "every saga is listed once across the pages");
    assert!(pages > 1, "the byte cap split the listing ({pages} page)");
}

#[tokio::test]
async fn the_demo_kind_runs_only_where_enabled() {
    let db = TestDb::sqlite();
    let mut off = TestCoordinator::start_with(&db, None, |config| {
        config.sagas.demo = false;
        config.instance_id = Some("no-demo".into());
    })
    .await;
    let refused = off
        .sagas()
        .await
        .start_saga(pb::StartSagaRequest {
            kind: "demo".into(),
            inputs_json: json!({"steps": [{"step": "noop"}]}).to_string(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("demo is refused when not enabled");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_contains(refused.message(), "unknown saga kind \"demo\"");
    // Both run on one database: the replica without the demo kind never claims the demo
    // saga (it would fail it), and the saga completes on the one that has the kind.
    let on = TestCoordinator::start_with(&db, None, |config| config.sagas.demo = true).await;
    for _ in 0..5 {
        let id = on.start_demo(json!([{"step": "noop"}])).await;
        let saga = on.wait_saga(&id, std::time::Duration::from_secs(20)).await;
        assert_eq!(saga.saga_status(), SagaStatus::Completed, "{saga:?}");
        let owners: Vec<String> = on
            .history(&id)
            .await
            .into_iter()
            .filter(|e| e.kind == EventKind::SagaRunning.as_str())
            .map(|e| e.message)
            .collect();
        assert!(!owners.is_empty(), "{id} ran");
        assert!(
            !owners.iter().any(|o| o == "no-demo"),
            "the replica without the demo kind claimed {id}: {owners:?}"
        );
    }
    off.stop().await;
}
