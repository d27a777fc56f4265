//! Every client operation against the simulator, with DigitalOcean's lags in the way.

use std::time::Duration;

use berth_coordinator::digitalocean::{
    ActionStatus, Deleted, DoApi, DoErrorKind, DropletStatus, ImageKind, NotFoundIsNone, Patience,
    TagResource, find_droplet_snapshot, find_droplets_by_tag,
};
use berth_tests::dosim::ActionFailure;
use berth_tests::eventually;

use super::{TOKEN, active_droplet, droplet_request, sim, wait_action, wait_droplet};

#[tokio::test]
async fn account_round_trip() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let account = api.get_account().await.unwrap();
    assert_eq!(account.status, "active");
    assert_eq!(account.droplet_limit, sim.config().droplet_limit);
    sim.assert_no_violations();
}

#[tokio::test]
async fn a_droplet_is_created_turns_active_gets_an_address_and_is_destroyed() {
    let sim = sim().await;
    let mut timings = sim.config().timings;
    timings.delete_linger = Duration::from_millis(800);
    sim.set_timings(timings);
    let api = sim.client(TOKEN);

    let created = api
        .create_droplet(&droplet_request("web-1", "berth-saga-0123abcd"))
        .await
        .unwrap();
    let d = &created.droplet;
    assert_eq!(d.status, DropletStatus::New);
    assert_eq!(d.public_ipv4(), None, "no address before active");
    assert_eq!(d.tags, ["berth-saga-0123abcd", "managed-by-berth"]);
    let create_action = created.action_id.expect("a create action link");
    let a = api.get_action(create_action).await.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.status),
        ("create", ActionStatus::InProgress)
    );

    let ready = wait_droplet(&api, d.id, "active with an address", |d| d.is_ready()).await;
    assert_eq!(ready.size_slug, "s-1vcpu-1gb");
    assert_eq!(ready.region.slug, "nyc3");
    let ip = ready.public_ipv4().unwrap();
    assert_eq!(sim.droplet(d.id.0).unwrap().public_ipv4, Some(ip));
    assert_eq!(
        api.get_action(create_action).await.unwrap().status,
        ActionStatus::Completed
    );

    let by_tag = api
        .list_droplets_by_tag("berth-saga-0123abcd")
        .await
        .unwrap();
    assert_eq!(by_tag.iter().map(|d| d.id).collect::<Vec<_>>(), [d.id]);
    assert!(
        api.list_droplets_by_tag("berth-saga-other")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(api.list_droplets().await.unwrap().len(), 1);

    assert_eq!(api.destroy_droplet(d.id).await.unwrap(), Deleted::Now);
    assert!(
        sim.droplets().is_empty(),
        "nothing is left that costs money"
    );
    // A destroyed droplet lingers for a while (readable and listed), then answers 404.
    assert!(api.get_droplet(d.id).await.found().unwrap().is_some());
    assert_eq!(
        api.destroy_droplet(d.id).await.unwrap(),
        Deleted::AlreadyGone
    );
    eventually(Duration::from_secs(3), "the droplet to be gone", || async {
        api.get_droplet(d.id)
            .await
            .found()
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let err = api.get_droplet(d.id).await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::NotFound);
    assert!(api.list_droplets().await.unwrap().is_empty());
    sim.assert_no_violations();
}

#[tokio::test]
async fn power_off_resize_power_on_and_shutdown() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let d = active_droplet(&api, "resize-me").await;

    let err = api.resize(d.id, "s-2vcpu-2gb", false).await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Validation, "{err}");
    assert!(err.message().contains("power it off"), "{err}");

    let off = api.power_off(d.id).await.unwrap();
    assert_eq!(
        (off.kind.as_str(), off.status),
        ("power_off", ActionStatus::InProgress)
    );
    assert_eq!(off.resource_id, Some(d.id.0));
    let off = wait_action(&api, &off).await;
    assert_eq!(off.status, ActionStatus::Completed);
    assert!(off.completed_at.is_some());
    wait_droplet(&api, d.id, "the droplet to be off", |d| {
        d.status == DropletStatus::Off
    })
    .await;

    let resize = wait_action(&api, &api.resize(d.id, "s-2vcpu-2gb", false).await.unwrap()).await;
    assert_eq!(resize.status, ActionStatus::Completed);
    assert_eq!(
        api.get_droplet(d.id).await.unwrap().size_slug,
        "s-2vcpu-2gb"
    );
    assert_eq!(sim.droplet(d.id.0).unwrap().size_slug, "s-2vcpu-2gb");

    let on = api.power_on(d.id).await.unwrap();
    let scoped = api.get_droplet_action(d.id, on.id).await.unwrap();
    assert_eq!(scoped.id, on.id);
    wait_action(&api, &on).await;
    wait_droplet(&api, d.id, "the droplet to be active", |d| {
        d.status == DropletStatus::Active
    })
    .await;

    let shutdown = wait_action(&api, &api.shutdown(d.id).await.unwrap()).await;
    assert_eq!(shutdown.kind, "shutdown");
    wait_droplet(&api, d.id, "the droplet to be off", |d| {
        d.status == DropletStatus::Off
    })
    .await;
    sim.assert_no_violations();
}

#[tokio::test]
async fn a_snapshot_is_found_despite_the_listing_lag_then_tagged_and_deleted() {
    let sim = sim().await;
    let mut timings = sim.config().timings;
    timings.snapshot_listing_lag = Duration::from_millis(800);
    timings.delete_linger = Duration::from_millis(800);
    sim.set_timings(timings);
    let api = sim.client(TOKEN);
    let d = active_droplet(&api, "snap-me").await;
    let name = format!("berth-snap-{}-0123abcd", d.id);

    let action = api.snapshot(d.id, &name).await.unwrap();
    assert_eq!(
        (action.kind.as_str(), action.resource_id),
        ("snapshot", Some(d.id.0))
    );
    let done = wait_action(&api, &action).await;
    assert_eq!(done.status, ActionStatus::Completed);
    // Completed, but not listed yet: a single look misses it.
    let once = find_droplet_snapshot(&api, d.id, &name, None, Patience::ONCE)
        .await
        .unwrap();
    assert!(once.is_none(), "the listing lags the action");
    let patience = Patience::new(80, Duration::from_millis(25));
    let snap = find_droplet_snapshot(&api, d.id, &name, None, patience)
        .await
        .unwrap()
        .expect("found after the lag");
    assert_eq!(snap.kind, ImageKind::Snapshot);
    assert_eq!(
        Some(snap.created_at),
        done.started_at,
        "created at the action's start"
    );
    let id = snap.snapshot_id();

    let all = api.list_snapshots().await.unwrap();
    assert_eq!(all.iter().map(|s| &s.id).collect::<Vec<_>>(), [&id]);
    assert_eq!(
        all[0].resource_id.as_deref(),
        Some(d.id.to_string().as_str())
    );
    assert_eq!(api.get_snapshot(&id).await.unwrap().name, name);
    assert!(
        api.get_droplet(d.id)
            .await
            .unwrap()
            .snapshot_ids
            .contains(&snap.id)
    );

    // Tagging creates the tag when DigitalOcean says it does not exist.
    api.ensure_tagged("berth-keep", &[TagResource::snapshot(&id)])
        .await
        .unwrap();
    assert_eq!(api.get_snapshot(&id).await.unwrap().tags, ["berth-keep"]);

    assert_eq!(api.delete_snapshot(&id).await.unwrap(), Deleted::Now);
    assert!(sim.snapshots().is_empty());
    assert_eq!(
        api.delete_snapshot(&id).await.unwrap(),
        Deleted::AlreadyGone
    );
    assert!(api.get_snapshot(&id).await.unwrap_err().is_not_found());
    // The listing still shows it for a while.
    assert_eq!(api.list_droplet_snapshots(d.id).await.unwrap().len(), 1);
    eventually(
        Duration::from_secs(3),
        "the snapshot to leave the listing",
        || async {
            api.list_droplet_snapshots(d.id)
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    sim.assert_no_violations();
}

#[tokio::test]
async fn an_errored_snapshot_action_makes_no_snapshot() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let d = active_droplet(&api, "fail-snap").await;
    sim.fail_next_action(ActionFailure {
        droplet: Some(d.id.0),
        kind: Some("snapshot".into()),
    });
    let done = wait_action(&api, &api.snapshot(d.id, "never").await.unwrap()).await;
    assert_eq!(done.status, ActionStatus::Errored);
    tokio::time::sleep(sim.config().timings.snapshot_listing_lag * 2).await;
    assert!(sim.snapshots().is_empty());
    assert!(api.list_droplet_snapshots(d.id).await.unwrap().is_empty());
    sim.assert_no_violations();
}

#[tokio::test]
async fn tags_are_created_and_attached_and_a_missing_tag_is_not_found() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let d = active_droplet(&api, "tag-me").await;

    let err = api
        .tag_resources("Berth-Env", &[TagResource::droplet(d.id)])
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "the tag must exist first: {err}");
    assert_eq!(api.create_tag("Berth-Env").await.unwrap().name, "Berth-Env");
    api.tag_resources("Berth-Env", &[TagResource::droplet(d.id)])
        .await
        .unwrap();
    let tagged = api.list_droplets_by_tag("Berth-Env").await.unwrap();
    assert_eq!(tagged.len(), 1);
    assert!(tagged[0].tags.contains(&"Berth-Env".to_owned()));

    // Names that cannot be tags are refused before any request.
    let before = sim.request_log().len();
    let err = api.create_tag("bad tag/../x").await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Validation);
    assert_eq!(sim.request_log().len(), before);
    sim.assert_no_violations();
}

#[tokio::test]
async fn adopt_before_create_finds_the_droplet_by_its_saga_tag() {
    let sim = sim().await;
    // A new droplet is missing from listings for a while, as on DigitalOcean.
    let mut timings = sim.config().timings;
    timings.list_lag_after_create = Duration::from_millis(800);
    sim.set_timings(timings);
    let api = sim.client(TOKEN);
    let created = api
        .create_droplet(&droplet_request("adopt-me", "berth-saga-feedbeef"))
        .await
        .unwrap();
    let once = find_droplets_by_tag(&api, "berth-saga-feedbeef", Patience::ONCE)
        .await
        .unwrap();
    assert!(once.is_empty(), "the listing lags the create");
    let found = find_droplets_by_tag(
        &api,
        "berth-saga-feedbeef",
        Patience::new(80, Duration::from_millis(25)),
    )
    .await
    .unwrap();
    assert_eq!(
        found.iter().map(|d| d.id).collect::<Vec<_>>(),
        [created.droplet.id]
    );
    sim.assert_no_violations();
}

#[tokio::test]
async fn an_errored_create_leaves_the_droplet_new_for_good() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.fail_next_action(ActionFailure {
        droplet: None,
        kind: Some("create".into()),
    });
    let created = api
        .create_droplet(&droplet_request("doomed", "berth-saga-dead0001"))
        .await
        .unwrap();
    let action = api.get_action(created.action_id.unwrap()).await.unwrap();
    let done = wait_action(&api, &action).await;
    assert_eq!(done.status, ActionStatus::Errored);
    let d = api.get_droplet(created.droplet.id).await.unwrap();
    assert_eq!((d.status, d.public_ipv4()), (DropletStatus::New, None));
    // What a saga does next: destroy it (and create again).
    assert_eq!(api.destroy_droplet(d.id).await.unwrap(), Deleted::Now);
    assert!(sim.droplets().is_empty());
    sim.assert_no_violations();
}
