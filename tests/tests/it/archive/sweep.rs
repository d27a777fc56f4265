//! The upload sweep on the real S3 server: multipart uploads under archive keys whose
//! `archive.create` saga has ended or is unknown are aborted once past the grace period, by
//! the catalog's sweep, by `berth archive prune` and by the periodic job; uploads of a live
//! saga, young ones and ones under other keys are left alone.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use berth_coordinator::archive::{Catalog, SWEEP_JOB};
use berth_coordinator::store::{Fence, NewEvent, NewSaga, SagaWrite, Store};
use berth_shared::saga::{EventKind, SagaStatus};
use berth_shared::time::unix_ms;
use berth_tests::cli::berth_at;
use berth_tests::s3::S3Server;
use berth_tests::{TestCoordinator, TestDb, eventually};

const PREFIX: &str = "prod";
const OLD: Duration = Duration::from_secs(2 * 3600);

fn key(uuid: &str) -> String {
    format!("web:{uuid}:-:1767225600")
}

/// An `archive.create` saga held by another coordinator for an hour (so this one's engine
/// leaves it alone), optionally ended as `completed`.
async fn saga(store: &Store, id: &str, ended: bool) {
    let now = unix_ms(SystemTime::now());
    store
        .insert_saga(&NewSaga {
            id,
            kind: "archive.create",
            inputs: "{}",
            start_key: None,
            steps: &[("archive", false)],
            now_ms: now,
            started_by: None,
        })
        .await
        .unwrap();
    let row = store
        .claim_saga("elsewhere", now, 3_600_000)
        .await
        .unwrap()
        .expect("the saga is claimable");
    assert_eq!(row.id, id);
    if ended {
        let fence = Fence {
            saga_id: id.into(),
            owner_id: "elsewhere".into(),
            epoch: row.epoch,
            lease_ms: 3_600_000,
        };
        let write = SagaWrite::to(SagaStatus::Completed);
        let event = NewEvent::saga(EventKind::SagaCompleted, "done");
        store
            .write_saga_status(&fence, &write, event, now)
            .await
            .unwrap();
    }
}

async fn pending_keys(s3: &S3Server) -> BTreeSet<String> {
    s3.uploads(PREFIX)
        .await
        .into_iter()
        .map(|u| u.key)
        .collect()
}

#[tokio::test]
async fn the_sweep_and_prune_abort_orphaned_uploads_and_leave_the_rest() {
    let s3 = S3Server::start().await;
    let db = TestDb::sqlite();
    let ended = "0190a5c4-0000-7000-8000-0000000000e1";
    let live = "0190a5c4-0000-7000-8000-0000000000e2";
    let unknown = "0190a5c4-0000-7000-8000-0000000000e3";
    let young = "0190a5c4-0000-7000-8000-0000000000e4";
    {
        // Before the coordinator starts, so its engine cannot claim them first.
        let store = Store::open(&db.url).await.unwrap();
        saga(&store, ended, true).await;
        saga(&store, live, false).await;
        store.close().await;
    }
    let coordinator = {
        let mut config = s3.coordinator_config(PREFIX);
        config.upload_sweep_interval_secs = 0;
        TestCoordinator::start_with(&db, None, move |c| c.archive = config).await
    };
    let store = coordinator.store();
    assert_eq!(
        store.get_saga(ended).await.unwrap().status,
        SagaStatus::Completed
    );

    for uuid in [ended, live, unknown] {
        let id = s3.start_upload(PREFIX, &key(uuid)).await;
        s3.backdate_upload(&id, OLD);
    }
    s3.start_upload(PREFIX, &key(young)).await;
    let foreign = s3.start_upload(PREFIX, "notes.txt").await;
    s3.backdate_upload(&foreign, OLD);
    assert_eq!(s3.uploads(PREFIX).await.len(), 5);

    let catalog = Catalog::open(s3.coordinator_config(PREFIX)).unwrap();
    let outcome = catalog
        .sweep_uploads(store, SystemTime::now(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(outcome.aborted.len(), 2, "{outcome:?}");
    assert_eq!(
        (
            outcome.owned,
            outcome.young,
            outcome.foreign,
            outcome.failed
        ),
        (1, 1, 1, 0)
    );
    let expected: BTreeSet<String> = [key(live), key(young), "notes.txt".into()].into();
    assert_eq!(pending_keys(&s3).await, expected);

    // A second sweep finds nothing more to do.
    let again = catalog
        .sweep_uploads(store, SystemTime::now(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(again.aborted.is_empty(), "{again:?}");

    // `berth archive prune` sweeps too (its retention has nothing to delete here).
    let later = "0190a5c4-0000-7000-8000-0000000000e5";
    let id = s3.start_upload(PREFIX, &key(later)).await;
    s3.backdate_upload(&id, OLD);
    let run = berth_at(
        &coordinator.url(),
        &coordinator.admin_token,
        &["archive", "prune", "--app", "web", "--keep-last", "3"],
    )
    .await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(pending_keys(&s3).await, expected);

    // A dry run aborts nothing.
    let id = s3.start_upload(PREFIX, &key(later)).await;
    s3.backdate_upload(&id, OLD);
    let run = berth_at(
        &coordinator.url(),
        &coordinator.admin_token,
        &[
            "archive",
            "prune",
            "--app",
            "web",
            "--keep-last",
            "3",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(pending_keys(&s3).await.contains(&key(later)));
}

#[tokio::test]
async fn one_coordinator_sweeps_on_a_schedule() {
    let s3 = S3Server::start().await;
    let db = TestDb::sqlite();
    let coordinator = {
        let mut config = s3.coordinator_config(PREFIX);
        config.upload_sweep_interval_secs = 1;
        TestCoordinator::start_with(&db, None, move |c| c.archive = config).await
    };
    let orphan = "0190a5c4-0000-7000-8000-0000000000f1";
    let young = "0190a5c4-0000-7000-8000-0000000000f2";
    let id = s3.start_upload(PREFIX, &key(orphan)).await;
    s3.backdate_upload(&id, OLD);
    s3.start_upload(PREFIX, &key(young)).await;

    eventually(Duration::from_secs(60), "the orphaned upload swept", || {
        let s3 = &s3;
        async move { (!pending_keys(s3).await.contains(&key(orphan))).then_some(()) }
    })
    .await;
    assert_eq!(pending_keys(&s3).await, [key(young)].into());
    let job = coordinator.store().get_job(SWEEP_JOB).await.unwrap();
    assert!(job.is_some_and(|j| j.last_finished_at_ms.is_some()));
}
