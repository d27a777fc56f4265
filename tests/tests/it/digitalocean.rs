//! The coordinator's DigitalOcean client against the simulator: a round trip of every
//! operation, pagination, rate limits, retries and typed errors; and the simulator itself
//! holding every request (and its own answers) to DigitalOcean's OpenAPI spec.

mod faults;
mod limits;
mod roundtrip;
mod spec;

use std::time::Duration;

use berth_coordinator::digitalocean::{
    Action, CreateDroplet, DoApi, Droplet, DropletId, HttpDoApi, ImageSpec,
};
use berth_tests::dosim::{DoSim, SimConfig};
use berth_tests::eventually;

/// The test token; no output of the client may ever contain it.
pub const TOKEN: &str = "dop_v1_berth_test_secret_0123456789abcdef";

pub async fn sim() -> DoSim {
    DoSim::start(SimConfig::fast())
        .await
        .expect("the simulator starts")
}

pub fn droplet_request(name: &str, tag: &str) -> CreateDroplet {
    CreateDroplet {
        name: name.to_owned(),
        region: Some("nyc3".to_owned()),
        size: "s-1vcpu-1gb".to_owned(),
        image: ImageSpec::Slug("ubuntu-24-04-x64".to_owned()),
        ssh_keys: Vec::new(),
        tags: vec![tag.to_owned(), "managed-by-berth".to_owned()],
        user_data: None,
        vpc_uuid: None,
        monitoring: false,
        ipv6: true,
    }
}

/// Polls `GET /v2/actions/{id}` until the action is done.
pub async fn wait_action(api: &HttpDoApi, action: &Action) -> Action {
    eventually(Duration::from_secs(5), "the action to finish", || async {
        let a = api.get_action(action.id).await.expect("get action");
        a.is_done().then_some(a)
    })
    .await
}

/// Polls the droplet until `done` holds.
pub async fn wait_droplet(
    api: &HttpDoApi,
    id: DropletId,
    what: &str,
    done: impl Fn(&Droplet) -> bool,
) -> Droplet {
    eventually(Duration::from_secs(5), what, || async {
        let d = api.get_droplet(id).await.expect("get droplet");
        done(&d).then_some(d)
    })
    .await
}

/// Creates a droplet and waits until it is active with a public IPv4.
pub async fn active_droplet(api: &HttpDoApi, name: &str) -> Droplet {
    let created = api
        .create_droplet(&droplet_request(name, &format!("berth-saga-{name}")))
        .await
        .expect("create droplet");
    wait_droplet(
        api,
        created.droplet.id,
        "the droplet to be ready",
        Droplet::is_ready,
    )
    .await
}

/// Text a token must never appear in.
#[track_caller]
pub fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked into: {text}");
    assert!(
        !text.contains("secret_0123456789"),
        "part of the token leaked into: {text}"
    );
}
