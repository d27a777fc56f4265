//! Pagination over many droplets, and rate limits: the simulator's per-token windows and
//! headers, the client's shared limiter, `retry-after`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_coordinator::digitalocean::{DoApi, DoErrorKind, RateBudget};
use berth_tests::dosim::{Fault, RateLimits};

use super::{TOKEN, sim};

#[tokio::test]
async fn a_thousand_droplets_are_listed_in_five_pages() {
    let sim = sim().await;
    let fleet: HashSet<u64> = sim.seed_droplets(1000, &["fleet"]).into_iter().collect();
    sim.seed_droplets(5, &["other"]);
    let api = sim.client(TOKEN);

    let listed = api.list_droplets_by_tag("fleet").await.unwrap();
    assert_eq!(listed.len(), 1000);
    let ids: HashSet<u64> = listed.iter().map(|d| d.id.0).collect();
    assert_eq!(ids, fleet, "every droplet once");
    assert_eq!(sim.calls("droplets_list"), 5, "per_page=200");
    let queries: Vec<String> = sim.request_log().into_iter().map(|r| r.query).collect();
    for page in 1..=5 {
        assert!(
            queries
                .iter()
                .any(|q| q.contains(&format!("page={page}&per_page=200"))),
            "page {page} asked for: {queries:?}"
        );
    }
    // The links name api.digitalocean.com: the client read the page numbers, not the URLs.
    assert_eq!(api.list_droplets().await.unwrap().len(), 1005);
    assert_eq!(sim.calls("droplets_list"), 11);
    sim.assert_no_violations();
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::rate_limited("account_get", 1));
    let start = Instant::now();
    api.get_account().await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(sim.calls("account_get"), 2);
    assert_eq!(api.stats().rate_limited, 1);
    sim.assert_no_violations();
}

#[tokio::test]
async fn one_429_slows_every_caller_sharing_the_token() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::rate_limited("account_get", 1));
    let start = Instant::now();
    let refused = tokio::spawn({
        let api = api.clone();
        async move { api.get_account().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.list_droplets().await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "the other caller waited too: {took:?}"
    );
    refused.await.unwrap().unwrap();
    sim.assert_no_violations();
}

/// 250 a minute, scaled to 100 per 2 s: 100 callers sending 2 requests each stay under it
/// through the client's limiter (40/s, bursts of 10), with no request refused.
#[tokio::test]
async fn a_hundred_callers_share_one_token_without_a_refusal() {
    let sim = sim().await;
    sim.set_rate_limits(RateLimits {
        burst: 100,
        burst_window: Duration::from_secs(2),
        long: 100_000,
        long_window: Duration::from_secs(3600),
    });
    let mut settings = sim.client_settings();
    settings.budget = RateBudget {
        per_minute: 40 * 60,
        burst: 10,
        // Pauses on the server's word are capped at its (scaled) burst window.
        max_pause: Duration::from_secs(2),
        ..settings.budget
    };
    let api = sim.client_with(TOKEN, settings);
    let start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..100 {
        let api = api.clone();
        callers.push(tokio::spawn(async move {
            api.get_account().await?;
            api.list_droplets().await?;
            Ok::<_, berth_coordinator::digitalocean::DoApiError>(())
        }));
    }
    for c in callers {
        c.await.unwrap().unwrap();
    }
    let took = start.elapsed();
    assert_eq!(sim.count_status(429), 0, "no request refused");
    assert_eq!(sim.request_log().len(), 200);
    // 200 requests at 40/s after a burst of 10: about 4.75 s.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    let stats = api
        .limiter_stats(berth_coordinator::digitalocean::TokenPurpose::Read)
        .unwrap();
    assert_eq!(stats.acquired, 200);
    sim.assert_no_violations();
}

/// The same crowd with no client budget: the simulator refuses half, the client honours
/// `retry-after` for everyone and every call still succeeds.
#[tokio::test]
async fn without_a_budget_the_crowd_is_refused_and_recovers_by_retry_after() {
    let sim = sim().await;
    sim.set_rate_limits(RateLimits {
        burst: 50,
        burst_window: Duration::from_secs(1),
        long: 100_000,
        long_window: Duration::from_secs(3600),
    });
    let mut settings = sim.client_settings();
    settings.retry.max_attempts = 10;
    settings.budget.max_pause = Duration::from_secs(1);
    let api = sim.client_with(TOKEN, settings);
    let start = Instant::now();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.get_account().await })
        })
        .collect();
    for c in callers {
        c.await.unwrap().unwrap();
    }
    let refused = sim.count_status(429);
    assert!(refused >= 1, "the simulator enforces its limit");
    assert_eq!(api.stats().rate_limited as usize, refused);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "retry-after was honoured"
    );
    sim.assert_no_violations();
}

#[tokio::test]
async fn the_long_limit_gives_429_without_retry_after_and_the_client_gives_up_typed() {
    let sim = sim().await;
    sim.set_rate_limits(RateLimits {
        burst: 100,
        burst_window: Duration::from_secs(60),
        long: 3,
        long_window: Duration::from_secs(3600),
    });
    let mut settings = sim.client_settings();
    settings.retry.max_attempts = 2;
    settings.budget.max_pause = Duration::from_millis(200);
    let api = sim.client_with(TOKEN, settings);
    for _ in 0..3 {
        api.get_account().await.unwrap();
    }
    let err = api.get_account().await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::RateLimited, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.message(), "API rate limit exceeded.");
    assert_eq!(err.failure().attempts, 2);
    assert_eq!(
        err.failure().retry_after,
        None,
        "no retry-after past the long limit"
    );
    assert!(err.request_id().is_some());
    sim.assert_no_violations();
}

#[tokio::test]
async fn every_answer_carries_the_rate_limit_headers_and_a_request_id() {
    let sim = Arc::new(sim().await);
    sim.add_token(TOKEN, berth_tests::dosim::Scope::ReadWrite);
    let http = reqwest::Client::new();
    let get = |auth: Option<&str>| {
        let mut r = http.get(format!("{}/v2/account", sim.url()));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ok = get(Some(TOKEN)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let h = |name: &str| ok.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(h("ratelimit-limit"), "5000");
    assert_eq!(
        h("ratelimit-remaining"),
        "249",
        "the burst limit is the tighter one"
    );
    let reset: u64 = h("ratelimit-reset").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset > now && reset <= now + 3601, "{reset} vs {now}");
    assert!(!h("x-request-id").is_empty());

    let denied = get(Some("dop_v1_wrong")).await.unwrap();
    assert_eq!(denied.status(), 401);
    assert!(denied.headers().contains_key("x-request-id"));
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["id"], "unauthorized");
    assert!(body["request_id"].is_string());
    sim.assert_no_violations();
}

/// Past the burst limit, `ratelimit-reset` (the hour's oldest request) is far away; the client
/// waits for the 429's `retry-after`, not for the reset.
#[tokio::test]
async fn a_burst_429_waits_its_retry_after_not_a_far_reset() {
    let sim = sim().await;
    sim.set_rate_limits(RateLimits {
        burst: 5,
        burst_window: Duration::from_secs(1),
        long: 5000,
        long_window: Duration::from_secs(3600),
    });
    let mut settings = sim.client_settings();
    settings.budget.max_pause = Duration::from_secs(30);
    let api = sim.client_with(TOKEN, settings);
    let start = Instant::now();
    for _ in 0..8 {
        api.get_account().await.unwrap();
    }
    let took = start.elapsed();
    assert!(sim.count_status(429) >= 1, "the burst limit was hit");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    sim.assert_no_violations();
}
