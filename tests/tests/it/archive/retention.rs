//! Tiered retention through the real coordinator on the real S3 server: archives planted
//! with chosen timestamps, the coordinator's `[archive]` tiers in Europe/Berlin, a dry run by
//! the CLI listing why each survivor stays, the same rules in UTC over gRPC choosing other
//! days, an unknown zone refused, and a real prune deleting exactly what the dry run said.

use berth_proto::v1 as pb;
use berth_shared::archive::{ArchiveMeta, SOURCE_VOLUMES, parse_timezone};
use berth_tests::cli::berth_at;
use berth_tests::s3::S3Server;
use berth_tests::{TestCoordinator, TestDb};
use chrono::TimeZone;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const PREFIX: &str = "tiers";

fn uuid(n: u32) -> String {
    format!("0190a5c4-0000-7000-8000-{n:012}")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    chrono::Utc
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp()
}

/// Plants archive `n` of `app` at `ts`: its data object and, when `good`, its metadata (of
/// a volume archive when `volumes`).
async fn plant(store: &dyn ObjectStore, app: &str, n: u32, ts: i64, good: bool, volumes: bool) {
    let data = b"archive bytes";
    store
        .put(
            &Path::from(format!("{app}:{}:-:{ts}", uuid(n)).as_str()),
            PutPayload::from_static(data),
        )
        .await
        .unwrap();
    if good {
        let mut meta = ArchiveMeta::new(uuid(n), app, ts);
        meta.push_size(data.len() as u64);
        if volumes {
            meta.source = Some(SOURCE_VOLUMES.to_owned());
        }
        store
            .put(
                &Path::from(format!("_metadata/{}", uuid(n)).as_str()),
                PutPayload::from(meta.to_json()),
            )
            .await
            .unwrap();
    }
}

/// The row of the dry run's table that names `uuid`.
fn row<'a>(table: &'a str, uuid: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(uuid))
        .unwrap_or_else(|| panic!("no row for {uuid} in\n{table}"))
}

#[tokio::test]
async fn tiers_count_in_the_zone_and_a_dry_run_says_what_a_prune_then_does() {
    let s3 = S3Server::start().await;
    let store = s3.client(PREFIX);
    // Two wiki archives on 30 November UTC, of which the later is already 1 December in
    // Berlin; the newest (3 December) is incomplete: no metadata.
    plant(&*store, "wiki", 1, utc(2026, 11, 30, 22, 30), true, false).await;
    plant(&*store, "wiki", 2, utc(2026, 11, 30, 23, 30), true, false).await;
    plant(&*store, "wiki", 3, utc(2026, 12, 1, 10, 0), true, false).await;
    plant(&*store, "wiki", 4, utc(2026, 12, 2, 10, 0), true, false).await;
    plant(&*store, "wiki", 5, utc(2026, 12, 3, 10, 0), false, false).await;
    // A volume archive is its own history; another app is out of the prune's reach.
    plant(&*store, "wiki", 6, utc(2026, 12, 2, 11, 0), true, true).await;
    plant(&*store, "blog", 7, utc(2026, 11, 1, 10, 0), true, false).await;

    let db = TestDb::sqlite();
    let coordinator = {
        let mut config = s3.coordinator_config(PREFIX);
        config.keep_daily = Some(3);
        config.keep_monthly = Some(2);
        config.retention_timezone = Some(parse_timezone("Europe/Berlin").unwrap());
        TestCoordinator::start_with(&db, None, move |c| c.archive = config).await
    };
    let keys_before = s3.keys().await;

    // The dry run with the coordinator's rules: in Berlin, archives 2 and 3 share 1
    // December, so 2 goes; the incomplete 5 takes no day and goes too.
    let dry = berth_at(
        &coordinator.url(),
        &coordinator.admin_token,
        &["archive", "prune", "wiki", "--dry-run"],
    )
    .await;
    assert_eq!(dry.code(), 0, "{}", dry.stderr());
    let table = &dry.stdout;
    assert!(
        row(table, &uuid(4)).starts_with("keep")
            && row(table, &uuid(4)).contains("2026-12-02 11:00 CET")
            && row(table, &uuid(4)).ends_with("daily 2026-12-02, monthly 2026-12"),
        "{table}"
    );
    assert!(
        row(table, &uuid(3)).ends_with("daily 2026-12-01"),
        "{table}"
    );
    assert!(
        row(table, &uuid(1)).ends_with("daily 2026-11-30, monthly 2026-11"),
        "{table}"
    );
    for gone in [2, 5] {
        assert!(
            row(table, &uuid(gone)).starts_with("would delete"),
            "{table}"
        );
    }
    assert!(
        row(table, &uuid(6)).ends_with("daily 2026-12-02, monthly 2026-12"),
        "the volume archive fills its own history's slots: {table}"
    );
    assert!(!table.contains(&uuid(7)), "{table}");
    assert!(
        table.contains("4 kept, 2 would delete (dry run: nothing deleted)"),
        "{table}"
    );
    assert_eq!(s3.keys().await, keys_before, "a dry run deletes nothing");

    // The same rules counted in UTC (over gRPC): 1 and 2 share 30 November, so 1 goes.
    let mut admin = pb::archive_service_client::ArchiveServiceClient::with_interceptor(
        coordinator.channel().await,
        berth_tests::cluster::Bearer::new(&coordinator.admin_token),
    );
    let in_utc = admin
        .prune_archives(pb::PruneArchivesRequest {
            app: "wiki".into(),
            timezone: "UTC".into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_utc.timezone, "UTC");
    let mut deleted = in_utc.deleted_uuids.clone();
    deleted.sort();
    assert_eq!(deleted, vec![uuid(1), uuid(5)]);
    let kept_2 = in_utc.kept.iter().find(|k| k.uuid == uuid(2)).unwrap();
    let reasons: Vec<(&str, &str)> = kept_2
        .reasons
        .iter()
        .map(|r| (r.rule.as_str(), r.bucket.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![("daily", "2026-11-30"), ("monthly", "2026-11")]
    );

    // A zone that is not one is refused, naming the field and an example.
    let status = admin
        .prune_archives(pb::PruneArchivesRequest {
            app: "wiki".into(),
            keep_daily: 1,
            timezone: "Europe/Berln".into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("timezone")
            && status.message().contains("Europe/Berln")
            && status.message().contains("Europe/Berlin"),
        "{}",
        status.message()
    );

    // The real prune deletes what the Berlin dry run listed, data and metadata.
    let real = berth_at(
        &coordinator.url(),
        &coordinator.admin_token,
        &["--output", "json", "archive", "prune", "wiki"],
    )
    .await;
    assert_eq!(real.code(), 0, "{}", real.stderr());
    let json: serde_json::Value = serde_json::from_str(&real.stdout).unwrap();
    let mut deleted: Vec<String> = serde_json::from_value(json["deleted"].clone()).unwrap();
    deleted.sort();
    assert_eq!(deleted, vec![uuid(2), uuid(5)], "{json}");
    assert_eq!(json["timezone"], "Europe/Berlin");
    let keys = s3.keys().await;
    for gone in [2, 5] {
        assert!(
            !keys.iter().any(|k| k.contains(&uuid(gone))),
            "archive {gone} is gone with its metadata: {keys:?}"
        );
    }
    for stays in [1, 3, 4, 6, 7] {
        assert!(
            keys.iter()
                .any(|k| k.contains(&format!("_metadata/{}", uuid(stays)))),
            "archive {stays} stays: {keys:?}"
        );
    }
    assert_eq!(keys.len(), keys_before.len() - 3, "{keys:?}");
}

#[tokio::test]
async fn an_archive_counts_for_the_days_of_the_unchanged_runs_it_stands_for_and_a_fresh_one_is_left_alone()
 {
    let s3 = S3Server::start().await;
    let store = s3.client("covers");
    plant(&*store, "site", 1, utc(2026, 11, 1, 2, 0), true, false).await;
    plant(&*store, "site", 2, utc(2026, 11, 2, 2, 0), true, false).await;
    plant(&*store, "site", 3, utc(2026, 11, 4, 2, 0), true, false).await;
    // An archive whose create is finishing right now: data, no metadata yet.
    let now = chrono::Utc::now().timestamp();
    plant(&*store, "site", 4, now - 5, false, false).await;
    let db = TestDb::sqlite();
    let config = s3.coordinator_config("covers");
    let c = TestCoordinator::start_with(&db, None, move |c| c.archive = config).await;
    let prune = |dry: bool| {
        let mut args = vec![
            "--output",
            "json",
            "archive",
            "prune",
            "site",
            "--keep-daily",
            "2",
        ];
        if dry {
            args.push("--dry-run");
        }
        let (url, token) = (c.url(), c.admin_token.clone());
        async move {
            let run = berth_at(&url, &token, &args).await;
            assert_eq!(run.code(), 0, "{}", run.stderr());
            let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            let mut deleted: Vec<String> = serde_json::from_value(json["deleted"].clone()).unwrap();
            deleted.sort();
            (deleted, json)
        }
    };
    // Without runs to stand for: the two newest days, 4 and 2 November.
    let (deleted, json) = prune(true).await;
    assert_eq!(deleted, vec![uuid(1)], "{json}");
    let fresh = json["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["uuid"] == uuid(4).as_str())
        .unwrap_or_else(|| panic!("the fresh archive is not listed as kept: {json}"));
    assert_eq!(fresh["kept_by"][0], "in_progress", "{json}");
    // A scheduled run on 3 November found the source unchanged since archive 1: archive 1
    // holds 3 November's slot, and 2 November's archive goes instead.
    c.store()
        .add_archive_cover(
            "saga-of-the-unchanged-run",
            &uuid(1),
            utc(2026, 11, 3, 2, 0) * 1000,
        )
        .await
        .unwrap();
    let (deleted, json) = prune(false).await;
    assert_eq!(deleted, vec![uuid(2)], "{json}");
    let keys = s3.keys().await;
    assert!(keys.iter().any(|k| k.contains(&uuid(1))) && keys.iter().any(|k| k.contains(&uuid(4))));
}
