//! Failures, typed and retried as they should be: 422 pending event, 404, 5xx, dropped
//! connections, timeouts, lost answers to creates, auth; and no token in any of it.

use std::time::Duration;

use berth_coordinator::digitalocean::{
    DoApi, DoErrorKind, DropletId, HttpDoApi, NotFoundIsNone, Patience, Token, TokenPurpose,
    Tokens, find_droplets_by_tag,
};
use berth_tests::dosim::{Fault, Scope};

use super::{TOKEN, active_droplet, assert_no_token, droplet_request, sim};

#[tokio::test]
async fn an_action_on_a_busy_droplet_is_a_conflict_to_retry_later() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let d = active_droplet(&api, "busy").await;
    api.power_off(d.id).await.unwrap();
    let err = api.power_on(d.id).await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Conflict, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), Some(422));
    assert_eq!(err.message(), "Droplet already has a pending event.");
    assert_eq!(
        sim.calls("dropletActions_post"),
        2,
        "a 422 is not resent by the client"
    );
    sim.assert_no_violations();
}

#[tokio::test]
async fn not_found_is_typed_and_a_value_where_the_caller_says_so() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    let err = api.get_droplet(DropletId(1)).await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::NotFound);
    assert!(!err.is_retryable());
    assert_eq!(err.failure().code.as_deref(), Some("not_found"));
    assert!(err.request_id().is_some(), "the request id is kept");
    assert_eq!(api.get_droplet(DropletId(1)).await.found().unwrap(), None);
    assert!(api.get_action(1.into()).await.unwrap_err().is_not_found());
    assert!(
        api.get_snapshot(&"42".into())
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(sim.calls("droplets_get"), 2, "a 404 is not retried");
    sim.assert_no_violations();
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::status("account_get", 503).times(2));
    api.get_account().await.unwrap();
    assert_eq!(sim.calls("account_get"), 3);
    assert_eq!(api.stats().retries, 2);

    sim.inject(Fault::status("droplets_list", 500));
    api.list_droplets().await.unwrap();
    assert_eq!(sim.calls("droplets_list"), 2);
    sim.assert_no_violations();
}

#[tokio::test]
async fn a_501_is_permanent() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::status("account_get", 501));
    let err = api.get_account().await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Validation);
    assert_eq!(sim.calls("account_get"), 1);
}

#[tokio::test]
async fn retries_give_up_with_the_last_answer_kept() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::status("account_get", 500).always());
    let err = api.get_account().await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Transient);
    assert!(err.is_retryable());
    let f = err.failure();
    assert_eq!((f.status, f.attempts), (Some(500), 5));
    assert_eq!(f.message, "Unexpected server-side error");
    assert!(!f.may_have_applied, "a GET changes nothing");
    let log = sim.request_log();
    assert_eq!(
        err.request_id(),
        Some(log.last().unwrap().request_id.as_str())
    );
    assert!(
        err.to_string()
            .starts_with("account_get: transient failure: 500"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::drop_connection("droplets_list"));
    assert!(api.list_droplets().await.unwrap().is_empty());
    assert_eq!(sim.calls("droplets_list"), 2);
    sim.assert_no_violations();
}

#[tokio::test]
async fn a_timeout_is_transient_and_retried() {
    let sim = sim().await;
    let mut settings = sim.client_settings();
    settings.request_timeout = Duration::from_millis(300);
    let api = sim.client_with(TOKEN, settings);
    sim.inject(Fault::delay("account_get", Duration::from_secs(2)));
    api.get_account().await.unwrap();
    assert_eq!(sim.calls("account_get"), 2);

    sim.inject(Fault::delay("account_get", Duration::from_secs(2)).always());
    let err = api.get_account().await.unwrap_err();
    assert_eq!(
        (err.kind(), err.message()),
        (DoErrorKind::Transient, "timed out")
    );
    sim.clear_faults();
}

/// DigitalOcean has no idempotency key: a create whose answer is lost is not sent again (that
/// would make a second droplet); the error says it may have happened, and the saga tag finds it.
#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_resent_and_is_adopted_by_its_tag() {
    for fault in [
        Fault::status("droplets_create", 500).after_processing(),
        Fault::drop_connection("droplets_create").after_processing(),
    ] {
        let sim = sim().await;
        let api = sim.client(TOKEN);
        sim.inject(fault.clone());
        let err = api
            .create_droplet(&droplet_request("lost", "berth-saga-0badc0de"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), DoErrorKind::Transient, "{fault:?}: {err}");
        assert!(err.may_have_applied(), "{fault:?}: {err}");
        assert_eq!(sim.calls("droplets_create"), 1, "{fault:?}: not sent again");
        assert_eq!(sim.droplets().len(), 1, "{fault:?}: the droplet was made");
        let found = find_droplets_by_tag(&api, "berth-saga-0badc0de", Patience::ONCE)
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{fault:?}: adopted");
        sim.assert_no_violations();
    }
}

#[tokio::test]
async fn a_create_refused_with_429_or_never_connected_is_sent_again() {
    let sim = sim().await;
    let api = sim.client(TOKEN);
    sim.inject(Fault::rate_limited("droplets_create", 0));
    sim.inject(Fault::status("droplets_create", 503));
    // A 503 before the work: still not resent (the client cannot know it was before).
    let err = api
        .create_droplet(&droplet_request("once", "berth-saga-1"))
        .await
        .unwrap_err();
    assert!(err.may_have_applied());
    assert_eq!(
        sim.calls("droplets_create"),
        2,
        "the 429 was resent, the 503 was not"
    );
    assert!(sim.droplets().is_empty());
    api.create_droplet(&droplet_request("once", "berth-saga-1"))
        .await
        .unwrap();
    assert_eq!(sim.droplets().len(), 1);

    // Nothing listens: a connection that never opened is safe to retry, and fails typed.
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        port.local_addr().unwrap()
    };
    let mut settings = sim.client_settings();
    settings.api_url = format!("http://{dead}").parse().unwrap();
    settings.retry.max_attempts = 3;
    let token = Token::new(TokenPurpose::Provisioning, TOKEN).unwrap();
    let api = HttpDoApi::new(settings, Tokens::single(token)).unwrap();
    let err = api
        .create_droplet(&droplet_request("nowhere", "berth-saga-2"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.message()),
        (DoErrorKind::Transient, "could not connect")
    );
    assert_eq!(err.failure().attempts, 3);
    assert!(!err.may_have_applied());
    let text = format!("{err} {err:?}");
    assert_no_token(&format!("{text} {:#}", anyhow::Error::new(err)));
    sim.assert_no_violations();
}

#[tokio::test]
async fn auth_failures_are_typed_and_tokens_never_show() {
    let sim = sim().await;
    // A token DigitalOcean does not know.
    let token = Token::new(TokenPurpose::Provisioning, TOKEN).unwrap();
    let api = HttpDoApi::new(sim.client_settings(), Tokens::single(token.clone())).unwrap();
    let err = api.get_account().await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Unauthorized);
    assert_eq!(err.message(), "Unable to authenticate you.");
    assert_eq!(sim.calls("account_get"), 1, "401 is not retried");
    let mut texts = vec![format!("{err} {err:?}"), format!("{api:?}")];

    // A read-only token used for a write: 403.
    sim.add_token(TOKEN, Scope::ReadOnly);
    let err = api.create_tag("berth").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (DoErrorKind::Unauthorized, Some(403))
    );
    texts.push(format!("{err} {err:?}"));

    // No provisioning token at all: refused without a request.
    let read_only = Tokens {
        read: Some(Token::new(TokenPurpose::Read, TOKEN).unwrap()),
        provisioning: None,
    };
    let api = HttpDoApi::new(sim.client_settings(), read_only).unwrap();
    let before = sim.request_log().len();
    let err = api.destroy_droplet(DropletId(7)).await.unwrap_err();
    assert_eq!(err.kind(), DoErrorKind::Unauthorized);
    assert_eq!(err.message(), "no provisioning token configured");
    assert_eq!(sim.request_log().len(), before);
    api.get_account().await.unwrap();
    texts.push(format!("{err} {err:?} {api:?} {token:?}"));

    for t in &texts {
        assert_no_token(t);
    }
    for r in sim.request_log() {
        assert_no_token(&format!("{r:?}"));
    }
    sim.assert_no_violations();
}
