//! The simulator holds requests, and its own answers, to DigitalOcean's OpenAPI spec: what
//! the client sends passes, a malformed request is caught, pagination looks like DigitalOcean's.

use berth_tests::assert_contains;
use berth_tests::dosim::spec::SPEC;
use berth_tests::dosim::{Scope, Side};
use serde_json::{Value, json};

use super::{TOKEN, sim};

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = http.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn malformed_requests_are_caught_and_named() {
    let sim = sim().await;
    sim.add_token(TOKEN, Scope::ReadWrite);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", sim.url());

    // No size, a name that is no hostname.
    let r = send(
        &http,
        reqwest::Method::POST,
        url("/v2/droplets"),
        Some(json!({"name": "not a hostname!", "image": "ubuntu-24-04-x64"})),
    )
    .await;
    assert_eq!(r.status(), 422);
    assert!(
        sim.droplets().is_empty(),
        "a malformed create makes nothing"
    );
    let v = sim.violations();
    assert!(!v.is_empty());
    assert!(
        v.iter()
            .all(|v| v.side == Side::Request && v.op.as_deref() == Some("droplets_create"))
    );

    // An action type the spec does not know, a page size it does not allow, a query parameter
    // it does not have, a path it does not have, a body where none goes.
    send(
        &http,
        reqwest::Method::POST,
        url("/v2/droplets/1/actions"),
        Some(json!({"type": "explode"})),
    )
    .await;
    send(
        &http,
        reqwest::Method::GET,
        url("/v2/droplets?per_page=500"),
        None,
    )
    .await;
    send(
        &http,
        reqwest::Method::GET,
        url("/v2/snapshots?resource_type=droplet&sort=name"),
        None,
    )
    .await;
    send(&http, reqwest::Method::GET, url("/v2/droplets/abc"), None).await;
    send(&http, reqwest::Method::GET, url("/v2/volumes"), None).await;
    send(
        &http,
        reqwest::Method::GET,
        url("/v2/account"),
        Some(json!({})),
    )
    .await;
    let r = send(
        &http,
        reqwest::Method::POST,
        url("/v2/tags"),
        Some(json!({"name": "здорово"})),
    )
    .await;
    assert_eq!(r.status(), 400);
    let tag_error: Value = r.json().await.unwrap();
    assert!(
        tag_error["root_causes"].is_array(),
        "tags answer their own error shape"
    );

    let problems: Vec<String> = sim.violations().iter().map(ToString::to_string).collect();
    let expect = [
        "request body",
        "size",
        "explode",
        "per_page",
        "sort",
        "droplet_id",
        "no operation in the spec for GET /v2/volumes",
        "takes no request body",
        "tags_create",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "{e:?} not caught in {problems:#?}"
        );
    }
    assert!(
        sim.violations().iter().all(|v| v.side == Side::Request),
        "the simulator's own answers are valid: {problems:#?}"
    );
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.assert_no_violations()));
    assert!(panicked.is_err(), "the test helper fails on violations");
}

#[tokio::test]
async fn pagination_links_are_absolute_digitalocean_urls_with_a_total() {
    let sim = sim().await;
    sim.add_token(TOKEN, Scope::ReadWrite);
    sim.seed_droplets(5, &["p"]);
    let http = reqwest::Client::new();
    let page = |n: u32| {
        let url = format!("{}/v2/droplets?tag_name=p&page={n}&per_page=2", sim.url());
        let http = http.clone();
        async move {
            send(&http, reqwest::Method::GET, url, None)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let first = page(1).await;
    assert_eq!(first["meta"]["total"], 5);
    assert_eq!(first["droplets"].as_array().unwrap().len(), 2);
    let next = first["links"]["pages"]["next"].as_str().unwrap();
    assert!(
        next.starts_with("https://api.digitalocean.com/v2/droplets?page=2&per_page=2"),
        "{next}"
    );
    assert_contains(next, "tag_name=p");
    assert!(
        first["links"]["pages"]["last"]
            .as_str()
            .unwrap()
            .contains("page=3")
    );
    let last = page(3).await;
    assert_eq!(last["droplets"].as_array().unwrap().len(), 1);
    assert!(last["links"]["pages"].get("next").is_none());
    assert!(
        last["links"]["pages"]["prev"]
            .as_str()
            .unwrap()
            .contains("page=2")
    );
    sim.assert_no_violations();
}

/// The validator itself: DigitalOcean's examples pass, broken answers do not.
#[test]
fn the_spec_examples_validate_and_broken_answers_do_not() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digitalocean/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let parts: Vec<&str> = name.split('.').collect();
        let Some(status) = parts.get(1).and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        let Some(op) = SPEC.operations().iter().find(|o| o.id == parts[0]) else {
            continue;
        };
        let body: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let problems = SPEC.check_response(op, status, Some(&body));
        assert!(problems.is_empty(), "{name}: {problems:?}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} examples checked");

    let get = SPEC
        .operations()
        .iter()
        .find(|o| o.id == "droplets_get")
        .unwrap();
    let broken = json!({"droplet": {"id": "3164444", "name": "x", "status": "running"}});
    let problems = SPEC.check_response(get, 200, Some(&broken));
    assert!(
        problems.iter().any(|p| p.contains("status")),
        "{problems:?}"
    );
    let destroy = SPEC
        .operations()
        .iter()
        .find(|o| o.id == "droplets_destroy")
        .unwrap();
    assert!(SPEC.check_response(destroy, 204, None).is_empty());
    assert!(
        !SPEC
            .check_response(destroy, 204, Some(&json!({})))
            .is_empty()
    );
}

/// Operations the client does not use yet answer within the spec too.
#[tokio::test]
async fn the_simulators_other_answers_match_the_spec() {
    let sim = sim().await;
    sim.add_token(TOKEN, Scope::ReadWrite);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", sim.url());
    let r = send(
        &http,
        reqwest::Method::POST,
        url("/v2/droplets"),
        Some(json!({"names": ["a-1", "a-2"], "size": "s-1vcpu-1gb", "image": "debian-12-x64", "tags": ["batch"]})),
    )
    .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["droplets"].as_array().unwrap().len(), 2);
    assert_eq!(body["links"]["actions"].as_array().unwrap().len(), 2);
    for path in [
        "/v2/sizes?per_page=2",
        "/v2/regions",
        "/v2/snapshots?resource_type=volume",
    ] {
        assert_eq!(
            send(&http, reqwest::Method::GET, url(path), None)
                .await
                .status(),
            200
        );
    }
    let r = send(
        &http,
        reqwest::Method::DELETE,
        url("/v2/droplets?tag_name=batch"),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(sim.droplets().is_empty());
    let r = send(
        &http,
        reqwest::Method::GET,
        url("/v2/snapshots/160000001"),
        None,
    )
    .await;
    assert_eq!(r.status(), 400, "a public image is not a snapshot");
    sim.assert_no_violations();
}
