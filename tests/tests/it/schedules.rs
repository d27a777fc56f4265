//! Schedules end to end: archives started by the clock through real coordinators and agents,
//! under the faults schedules meet (the firing replica killed, every replica down across
//! occurrences), and alerts posted to a webhook receiver on loopback.

use std::time::{Duration, SystemTime};

use berth_coordinator::store::{RunRow, Store};
use berth_shared::Role;
use berth_shared::saga::SagaStatus;
use berth_shared::time::unix_ms;
use berth_tests::cli::{archive_uuids, berth_at};
use berth_tests::fleet::Fleet;
use berth_tests::process::SagaTiming;
use berth_tests::s3::{S3Server, flip_middle_byte};
use berth_tests::webhook::Webhook;
use berth_tests::{SagaStatused, TestAgent, TestCoordinator, TestDb, eventually};
use serde_json::Value;
use sqlx::Row;

const LONG: Duration = Duration::from_secs(120);

/// `[schedules]` for process tests: fast ticks, a short fire lease, schedules every second
/// allowed, and `grace_secs` of lateness counted as on time.
fn fast(grace_secs: u64) -> String {
    format!(
        "[schedules]\ntick_ms = 200\nlease_secs = 2\nmin_interval_secs = 1\n\
         late_grace_secs = {grace_secs}\n"
    )
}

async fn runs(store: &Store, schedule: &str) -> Vec<RunRow> {
    let mut runs = store.schedule_runs(schedule, 1000).await.unwrap();
    runs.reverse();
    runs
}

/// Creates `name` through the CLI on `url`: an archive of app `site` on `host-0`.
async fn create(url: &str, token: &str, name: &str, cron: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--output", "json", "schedule", "create", name, "--cron", cron,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["archive", "--host", "host-0", "--app", "site"]);
    let run = berth_at(url, token, &args).await;
    assert_eq!(run.code(), 0, "schedule create failed: {}", run.stderr());
    run.json()
}

fn make_site(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("site/data")).unwrap();
    std::fs::write(
        root.join("site/data/index.html"),
        "<h1>hi</h1>\n".repeat(50),
    )
    .unwrap();
}

/// How many sagas carry each occurrence's idempotency key (`schedule:<name>:<slot>`).
async fn sagas_per_slot(f: &Fleet, name: &str) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT start_key, COUNT(*) AS n FROM saga_runs WHERE start_key LIKE $1 \
         GROUP BY start_key ORDER BY start_key",
    )
    .bind(format!("schedule:{name}:%"))
    .fetch_all(&f.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("start_key"), r.get("n")))
    .collect()
}

#[tokio::test]
async fn the_firing_replica_killed_just_after_an_occurrence_runs_it_exactly_once() {
    let f = Fleet::start_configured(2, 1, SagaTiming::default(), None, &fast(60)).await;
    make_site(&f.agents[0].apps_root());
    let url = f.coordinators[0].url();
    // Every run archives, so each is an agent task to count.
    let created = create(
        &url,
        &f.admin_token,
        "often",
        "*/4 * * * * *",
        &["--skip-unchanged", "false"],
    )
    .await;
    assert_eq!(created["next_runs_ms"].as_array().unwrap().len(), 5);

    // The moment the first occurrence is recorded, kill the replica that fired it.
    let first = eventually(Duration::from_secs(30), "a first scheduled run", || async {
        runs(&f.store, "often").await.into_iter().next()
    })
    .await;
    let (saga, firer) = (first.saga_id.clone().unwrap(), first.fired_by.clone());
    let killed = f.replica(&firer);
    f.coordinators[killed].kill9();
    let survivor = f.coordinators[1 - killed].name.clone();

    // The survivor takes over firing; the first occurrence is recorded with the saga that
    // was started for it, and runs once.
    let all = eventually(LONG, "three settled runs", || async {
        let r = runs(&f.store, "often").await;
        (r.len() >= 3 && r[..3].iter().all(|x| x.outcome.is_some())).then_some(r)
    })
    .await;
    assert_eq!(all[0].saga_id.as_deref(), Some(saga.as_str()), "{all:?}");
    for run in &all[..3] {
        assert_eq!(
            run.outcome.as_deref(),
            Some("succeeded"),
            "{run:?}\n{}",
            f.logs_tail()
        );
        let id = run.saga_id.as_deref().unwrap();
        assert_eq!(f.saga(id).await.0, SagaStatus::Completed);
        assert_eq!(
            f.agents[0].runs(id, 0).0,
            1,
            "saga {id}'s archive ran more than once"
        );
    }
    assert!(all[1..].iter().any(|r| r.fired_by == survivor), "{all:?}");
    let slots: Vec<i64> = all.iter().map(|r| r.slot_ms).collect();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(slots, unique, "an occurrence was recorded twice");
    assert!(
        sagas_per_slot(&f, "often")
            .await
            .iter()
            .all(|(_, n)| *n == 1)
    );
}

/// Waits until the wall clock is `offset` past a multiple of `period`.
async fn sleep_until_phase(period: Duration, offset: Duration) {
    let now = unix_ms(SystemTime::now()) as u64;
    let p = period.as_millis() as u64;
    let target = (now / p + 1) * p + offset.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(target - now)).await;
}

#[tokio::test]
async fn occurrences_missed_while_every_replica_was_down_run_once_or_not_at_all() {
    let f = Fleet::start_configured(2, 1, SagaTiming::default(), None, &fast(3)).await;
    make_site(&f.agents[0].apps_root());
    let url = f.coordinators[0].url();
    create(
        &url,
        &f.admin_token,
        "catch",
        "*/10 * * * * *",
        &["--catch-up", "true"],
    )
    .await;
    create(
        &url,
        &f.admin_token,
        "skip",
        "*/10 * * * * *",
        &["--catch-up", "false"],
    )
    .await;
    for name in ["catch", "skip"] {
        eventually(LONG, "a first run to succeed", || async {
            let r = runs(&f.store, name).await;
            r.iter()
                .any(|x| x.outcome.as_deref() == Some("succeeded"))
                .then_some(())
        })
        .await;
    }
    // Down from just after one occurrence until 6 s after the second one after it (past the
    // 3 s grace).
    sleep_until_phase(Duration::from_secs(10), Duration::from_millis(500)).await;
    for c in &f.coordinators {
        c.kill9();
    }
    let down_at = unix_ms(SystemTime::now());
    let before = (
        runs(&f.store, "catch").await.len(),
        runs(&f.store, "skip").await.len(),
    );
    sleep_until_phase(Duration::from_secs(10), Duration::ZERO).await;
    sleep_until_phase(Duration::from_secs(10), Duration::from_secs(6)).await;
    let last_missed = (unix_ms(SystemTime::now()) / 10_000) * 10_000;
    f.coordinators[0].restart().await;

    let after = |name: &'static str, n: usize| {
        let store = f.store.clone();
        async move {
            eventually(Duration::from_secs(20), "the catch-up decision", || async {
                let r = runs(&store, name).await;
                (r.len() > n).then(|| r[n..].to_vec())
            })
            .await
        }
    };
    let caught = after("catch", before.0).await;
    let skipped = after("skip", before.1).await;
    // One run for both missed occurrences, standing for the newer one; never two.
    assert_eq!(caught[0].trigger, "catch_up", "{caught:?}");
    assert_eq!(caught[0].slot_ms, last_missed, "{caught:?}");
    assert!(caught[0].saga_id.is_some());
    assert_eq!(skipped[0].trigger, "missed", "{skipped:?}");
    assert_eq!(skipped[0].slot_ms, last_missed);
    assert_eq!(skipped[0].saga_id, None, "a missed run must start nothing");
    assert_eq!(skipped[0].outcome.as_deref(), Some("missed"));
    for r in caught.iter().chain(&skipped) {
        assert!(
            r.slot_ms >= last_missed,
            "an occurrence from the outage ran on its own: {r:?}"
        );
        assert!(r.slot_ms > down_at);
    }
    let catch_up = caught[0].saga_id.clone().unwrap();
    f.assert_completes(&catch_up, LONG).await;
    // Both go on with the next occurrence (on time, unless this loaded machine was slow).
    for name in ["catch", "skip"] {
        eventually(
            Duration::from_secs(30),
            "a run after the outage",
            || async {
                let r = runs(&f.store, name).await;
                r.iter().any(|x| x.slot_ms > last_missed).then_some(())
            },
        )
        .await;
    }
}

/// A coordinator (SQLite, fast schedule ticks) and the agent of `host-0`, both on `prefix` of
/// a real S3 server; with `hook`, alerts go to it signed with [`SIGNING_KEY`].
struct Rig {
    c: TestCoordinator,
    agent: TestAgent,
    s3: S3Server,
    operator: String,
    _db: TestDb,
    _secrets: tempfile::TempDir,
}

const SIGNING_KEY: &str = "s3cret-signing-key";

async fn rig(prefix: &str, tick_ms: u64, hook: Option<&Webhook>) -> Rig {
    let db = TestDb::sqlite();
    let s3 = S3Server::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("alert-secret");
    std::fs::write(&secret_file, format!("{SIGNING_KEY}\n")).unwrap();
    let archive = s3.coordinator_config(prefix);
    let url = hook.map(|h| h.url.clone());
    let c = TestCoordinator::start_with(&db, None, move |c| {
        c.archive = archive;
        c.schedules.tick_ms = tick_ms;
        c.schedules.lease_secs = 2;
        c.schedules.min_interval_secs = 1;
        if let Some(url) = url {
            c.alerts.webhook_url = Some(url);
            c.alerts.webhook_secret_file = Some(secret_file);
        }
    })
    .await;
    let token = c.token(Role::Agent, Some("host-0")).await;
    let agent_archive = s3.agent_config(prefix);
    let agent = TestAgent::start(&c, "host-0", &token, move |a| a.archive = agent_archive).await;
    agent.wait_connected(Duration::from_secs(10)).await;
    let operator = c.token(Role::Operator, None).await;
    Rig {
        c,
        agent,
        s3,
        operator,
        _db: db,
        _secrets: secrets,
    }
}

#[tokio::test]
async fn a_failed_run_and_an_overdue_schedule_reach_the_webhook_signed_once_each() {
    // The receiver fails the first delivery; the alert is retried and delivered once.
    let hook = Webhook::start(&[500]).await;
    let r = rig("failing", 200, Some(&hook)).await;
    let Rig { c, operator, .. } = &r;
    // No `site` directory on the host: every run fails.
    create(
        &c.url(),
        operator,
        "broken",
        "*/3 * * * * *",
        &["--alert-after", "4s"],
    )
    .await;

    let failed = eventually(LONG, "a failed run", || async {
        let r = runs(c.store(), "broken").await;
        r.into_iter()
            .find(|x| x.outcome.as_deref() == Some("failed"))
    })
    .await;
    let failed_id = format!("schedule.run_failed:broken:{}", failed.slot_ms);
    let overdue_prefix = "schedule.overdue:broken:";
    let got = eventually(LONG, "both alerts delivered", || async {
        let got = hook.received();
        let ok = |p: &dyn Fn(&str) -> bool| got.iter().any(|r| p(&r.event_id) && r.answered == 200);
        (ok(&|id| id == failed_id) && ok(&|id| id.starts_with(overdue_prefix))).then_some(got)
    })
    .await;
    assert_eq!(
        got[0].answered, 500,
        "the first attempt was meant to fail: {got:?}"
    );
    for r in &got {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], r.event_id.as_str());
        assert_eq!(body["kind"], r.event.as_str());
        assert_eq!(body["schedule"], "broken");
        let ts: i64 = r.timestamp.parse().unwrap();
        assert_eq!(
            r.signature,
            berth_coordinator::alert::signature(SIGNING_KEY, ts, &r.body),
            "bad signature on {}",
            r.event_id
        );
    }
    let failed_alert = got.iter().find(|r| r.event_id == failed_id).unwrap();
    let body: Value = serde_json::from_str(&failed_alert.body).unwrap();
    assert_eq!(body["kind"], "schedule.run_failed");
    assert_eq!(body["saga_id"], failed.saga_id.as_deref().unwrap());
    assert!(
        body["message"].as_str().unwrap().contains("broken"),
        "{body}"
    );
    // Delivered once per event id: the 500 is followed by exactly one 200, and the overdue
    // alert is raised once however many ticks see the schedule overdue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = hook.received();
    let delivered = |id: &str| {
        got.iter()
            .filter(|r| r.event_id == id && r.answered == 200)
            .count()
    };
    assert_eq!(delivered(&failed_id), 1, "{got:?}");
    let overdue: Vec<_> = got
        .iter()
        .filter(|r| r.event_id.starts_with(overdue_prefix))
        .collect();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    // The alert whose first delivery failed was sent again, with the same id, and once.
    let first = &got[0].event_id;
    assert_eq!(delivered(first), 1, "{got:?}");
    let outbox = c.store().list_alerts(100).await.unwrap();
    let row = outbox.iter().find(|a| &a.event_id == first).unwrap();
    assert!(row.delivered_at_ms.is_some());
    assert_eq!(row.attempts, 2, "{row:?}");
    // The secret never reaches the outbox or the webhook body.
    assert!(outbox.iter().all(|a| !a.body.contains("s3cret")));
}

#[tokio::test]
async fn a_minutely_schedule_archives_an_app_each_minute_and_its_retention_keeps_the_last_two() {
    let r = rig("minutely", 500, None).await;
    let Rig {
        c, agent, operator, ..
    } = &r;
    make_site(&agent.dir.path().join("apps"));
    // Every run archives (the app does not change, and would be skipped by default).
    let shown = create(
        &c.url(),
        operator,
        "minutely",
        "* * * * *",
        &["--keep-last", "2", "--skip-unchanged", "false"],
    )
    .await;
    assert_eq!(shown["skip_unchanged"], false, "{shown}");
    assert_eq!(shown["inputs"]["retention"]["keep_last"], 2, "{shown}");
    let next: Vec<i64> = shown["next_runs_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(next.windows(2).all(|w| w[1] - w[0] == 60_000), "{next:?}");

    let done = eventually(
        Duration::from_secs(300),
        "three runs a minute apart",
        || async {
            let r = runs(c.store(), "minutely").await;
            (r.len() >= 3 && r[..3].iter().all(|x| x.outcome.is_some())).then_some(r)
        },
    )
    .await;
    let three = &done[..3];
    for r in three {
        assert_eq!(r.outcome.as_deref(), Some("succeeded"), "{r:?}");
        assert_eq!(r.trigger, "scheduled");
        assert_eq!(r.slot_ms % 60_000, 0);
    }
    assert!(
        three
            .windows(2)
            .all(|w| w[1].slot_ms - w[0].slot_ms == 60_000)
    );
    // Each create ends with the schedule's retention (the coordinator has none configured):
    // the bucket holds the newest two, the third is gone.
    let uuids = archive_uuids(&c.url(), operator, "site").await;
    let newest: Vec<String> = done
        .iter()
        .rev()
        .take(2)
        .map(|r| r.saga_id.clone().unwrap())
        .collect();
    assert_eq!(uuids.len(), 2, "{uuids:?}");
    assert!(
        newest.iter().all(|id| uuids.contains(id)),
        "{uuids:?} vs {newest:?}"
    );
    // `list` shows the last run and the next; `show` the history.
    let list = berth_at(&c.url(), operator, &["schedule", "list"]).await;
    assert_eq!(list.code(), 0);
    assert!(
        list.stdout.contains("minutely") && list.stdout.contains("succeeded"),
        "{}",
        list.stdout
    );
}

#[tokio::test]
async fn a_scheduled_run_over_an_unchanged_app_writes_nothing_until_a_file_changes() {
    let r = rig("unchanged", 200, None).await;
    let Rig {
        c, agent, operator, ..
    } = &r;
    let apps = agent.dir.path().join("apps");
    make_site(&apps);
    let shown = create(&c.url(), operator, "quiet", "*/2 * * * * *", &[]).await;
    assert_eq!(shown["skip_unchanged"], true);
    let settled = |n: usize| {
        let store = c.store().clone();
        async move {
            eventually(LONG, "settled runs", || async {
                let r = runs(&store, "quiet").await;
                (r.iter().filter(|x| x.outcome.is_some()).count() >= n).then_some(r)
            })
            .await
        }
    };
    let first = settled(1).await;
    assert_eq!(first[0].outcome.as_deref(), Some("succeeded"), "{first:?}");
    let a = first[0].saga_id.clone().unwrap();
    // The next runs find the app as it was: nothing is written.
    let more = settled(3).await;
    for r in &more[1..3] {
        let saga = c.get_saga(r.saga_id.as_deref().unwrap()).await;
        assert_eq!(r.outcome.as_deref(), Some("unchanged"), "{r:?}\n{saga:?}");
        assert_eq!(
            r.detail.as_deref(),
            Some(format!("unchanged since {a}").as_str())
        );
        let saga = c.get_saga(r.saga_id.as_deref().unwrap()).await;
        assert_eq!(saga.saga_status(), SagaStatus::Completed);
    }
    assert_eq!(
        archive_uuids(&c.url(), operator, "site").await,
        vec![a.clone()]
    );
    // Retention counts the archive for the runs that found nothing new.
    let covers = c.store().archive_covers(&[a.as_str()]).await.unwrap();
    assert!(covers.get(&a).is_some_and(|at| at.len() >= 2), "{covers:?}");
    // Touching one file makes the next run archive again.
    let file = apps.join("site/data/index.html");
    let f = std::fs::File::options().append(true).open(&file).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
    drop(f);
    let touched_at = unix_ms(SystemTime::now());
    let b = eventually(LONG, "an archive after the touch", || async {
        runs(c.store(), "quiet")
            .await
            .into_iter()
            .find(|r| r.started_at_ms > touched_at && r.outcome.as_deref() == Some("succeeded"))
            .and_then(|r| r.saga_id)
    })
    .await;
    let now = archive_uuids(&c.url(), operator, "site").await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&a) && now.contains(&b));
}

#[tokio::test]
async fn a_scheduled_verify_that_finds_a_flipped_byte_labels_the_archive_and_alerts_once() {
    let hook = Webhook::start(&[503]).await;
    let r = rig("verify-sched", 200, Some(&hook)).await;
    let Rig {
        c,
        agent,
        s3,
        operator,
        ..
    } = &r;
    make_site(&agent.dir.path().join("apps"));
    let made = berth_at(
        &c.url(),
        operator,
        &[
            "archive", "create", "--host", "host-0", "--app", "site", "--wait",
        ],
    )
    .await;
    assert_eq!(made.code(), 0, "{}", made.stderr());
    let uuid = made.stdout.lines().next().unwrap().trim().to_owned();
    // Someone with write access to the bucket flips one byte of the archive.
    let store = s3.client("verify-sched");
    let key = s3
        .keys()
        .await
        .into_iter()
        .find(|k| k.contains(&format!("site:{uuid}")))
        .unwrap();
    flip_middle_byte(&store, key.strip_prefix("verify-sched/").unwrap()).await;

    let args = [
        "schedule",
        "create",
        "check-site",
        "--cron",
        "*/2 * * * * *",
        "verify",
        "--host",
        "host-0",
        "--app",
        "site",
    ];
    let created = berth_at(&c.url(), operator, &args).await;
    assert_eq!(created.code(), 0, "{}", created.stderr());
    let failed = eventually(LONG, "the scheduled verify to fail", || async {
        runs(c.store(), "check-site")
            .await
            .into_iter()
            .find(|r| r.outcome.is_some())
    })
    .await;
    assert_eq!(failed.outcome.as_deref(), Some("failed"), "{failed:?}");
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap()
            .contains("failed verification"),
        "{failed:?}"
    );
    let verify_saga = failed.saga_id.clone().unwrap();
    // The alert is retried past the receiver's 503 and delivered once, signed.
    let event_id = format!("archive.verify_failed:{verify_saga}");
    let got = eventually(LONG, "the verify alert delivered", || async {
        let got = hook.received();
        got.iter()
            .any(|r| r.event_id == event_id && r.answered == 200)
            .then_some(got)
    })
    .await;
    let mine: Vec<_> = got.iter().filter(|r| r.event_id == event_id).collect();
    assert_eq!(mine[0].answered, 503, "{mine:?}");
    assert_eq!(
        mine.iter().filter(|r| r.answered == 200).count(),
        1,
        "{mine:?}"
    );
    let delivered = mine.last().unwrap();
    let body: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(body["kind"], "archive.verify_failed");
    assert_eq!(body["uuid"], uuid.as_str());
    assert_eq!(
        delivered.signature,
        berth_coordinator::alert::signature(
            SIGNING_KEY,
            delivered.timestamp.parse().unwrap(),
            &delivered.body
        )
    );
    // Labelled, and no longer anyone's newest good archive: the next scheduled verify has
    // nothing to verify and says so (a failed run, alerted as such).
    let shown = berth_at(
        &c.url(),
        operator,
        &["--output", "json", "archive", "show", &uuid],
    )
    .await;
    assert!(shown.stdout.contains("verify-failed"), "{}", shown.stdout);
    let next = eventually(LONG, "the next verify run", || async {
        runs(c.store(), "check-site")
            .await
            .into_iter()
            .find(|r| r.slot_ms > failed.slot_ms && r.outcome.is_some())
    })
    .await;
    assert_eq!(next.saga_id, None, "{next:?}");
    assert!(next.detail.unwrap().contains("no good archive to verify"));
}

/// A firer that died after starting an occurrence's saga, before recording it, leaves that
/// saga under the occurrence's key; the next firer may choose other inputs (the newest
/// archive moved on meanwhile), and still records that saga instead of failing the run.
#[tokio::test]
async fn an_occurrence_started_before_with_other_inputs_records_that_saga() {
    let r = rig("prestarted", 200, None).await;
    let Rig {
        c, agent, operator, ..
    } = &r;
    make_site(&agent.dir.path().join("apps"));
    let slot = (unix_ms(SystemTime::now()) / 10_000 + 2) * 10_000;
    let key = format!("schedule:pre:{slot}");
    let args = [
        "archive",
        "create",
        "--host",
        "host-0",
        "--app",
        "site",
        "--label",
        "pre:started",
        "--key",
        &key,
    ];
    let pre = berth_at(&c.url(), operator, &args).await;
    assert_eq!(pre.code(), 0, "{}", pre.stderr());
    let pre = pre.stdout.lines().next().unwrap().trim().to_owned();
    create(
        &c.url(),
        operator,
        "pre",
        "*/10 * * * * *",
        &["--skip-unchanged", "false"],
    )
    .await;
    let run = eventually(LONG, "the pre-started occurrence to settle", || async {
        runs(c.store(), "pre")
            .await
            .into_iter()
            .find(|r| r.slot_ms == slot && r.outcome.is_some())
    })
    .await;
    assert_eq!(run.saga_id.as_deref(), Some(pre.as_str()), "{run:?}");
    assert_eq!(run.outcome.as_deref(), Some("succeeded"), "{run:?}");
}
