//! The simulator's HTTP server (hyper, HTTP/1.1 on 127.0.0.1) and the way every request goes:
//! route by the spec, authenticate, injected faults, rate limits, validation against the spec,
//! the handler, response validation, headers (`x-request-id`, `ratelimit-*`), the log.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::droplets::{self, Req};
use super::faults::FaultKind;
use super::images;
use super::ratelimit::Verdict;
use super::spec::{Operation, SPEC};
use super::state::{Scope, World};
use super::wire::Reply;
use super::{LoggedRequest, Side, Violation};

pub struct Shared {
    pub world: Mutex<World>,
}

impl Shared {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("simulator lock")
    }
}

/// Accepts connections until `shutdown`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let sock = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => sock,
                Err(_) => continue,
            },
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Returned to hyper to close the connection without an answer.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

struct Incoming1 {
    request_id: String,
    method: String,
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    let mut r = Incoming1 {
        request_id: uuid::Uuid::new_v4().to_string(),
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: Bytes::new(),
    };
    r.body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };

    // Route and authenticate.
    let route = SPEC.route(&r.method, &r.path);
    let (op, token) = {
        let mut w = shared.world();
        w.advance(Instant::now());
        let token = r
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| w.tokens.iter().find(|e| e.secret == t).cloned());
        arrive(
            &mut w,
            &r,
            route.as_ref().map(|(op, _)| *op),
            token.as_ref().map(|t| t.label.clone()),
        );
        let Some((op, _)) = &route else {
            let problem = format!("no operation in the spec for {} {}", r.method, r.path);
            record(&mut w, &r, None, Side::Request, problem);
            let reply = Reply::not_found();
            return Ok(finish(&mut w, &r, None, reply, None, None));
        };
        let Some(token) = token else {
            let reply = Reply::error(401, "Unable to authenticate you.");
            return Ok(finish(&mut w, &r, Some(op), reply, None, None));
        };
        (*op, token)
    };
    let params = route.map(|(_, p)| p).unwrap_or_default();

    // A fault before the work.
    let before = shared.world().faults.take(&op.id, false);
    if let Some(reply) = apply_fault(&shared, &r, before.clone()).await? {
        let mut w = shared.world();
        return Ok(finish(&mut w, &r, Some(op), reply, None, before));
    }

    // Rate limits, validation, the work.
    let (reply, verdict, after) = {
        let mut w = shared.world();
        let now = Instant::now();
        w.advance(now);
        let limits = w.config.rate_limits;
        let verdict = w.windows.check(&token.label, &limits, now);
        let reply = if !verdict.allowed {
            Reply {
                retry_after: verdict.retry_after,
                ..Reply::error(429, "API rate limit exceeded.")
            }
        } else if token.scope == Scope::ReadOnly && r.method != "GET" {
            Reply::error(403, "You are not authorized to perform this operation.")
        } else {
            let problems =
                SPEC.check_request(op, &params, &r.query, r.content_type.as_deref(), &r.body);
            let body_problem = problems
                .iter()
                .any(|p| p.starts_with("request body") || p.starts_with("content-type"));
            for p in problems.clone() {
                record(&mut w, &r, Some(op), Side::Request, p);
            }
            let body: Option<Value> = serde_json::from_slice(&r.body).ok();
            if body_problem {
                if op.id == "tags_create" {
                    let name = body
                        .as_ref()
                        .and_then(|b| b["name"].as_str())
                        .unwrap_or_default();
                    images::invalid_tag(name)
                } else {
                    Reply::error(422, &format!("invalid request: {}", problems.join("; ")))
                }
            } else {
                let req = Req {
                    params: &params,
                    query: &r.query,
                    body: body.as_ref(),
                };
                dispatch(&mut w, &op.id, &req, now)
            }
        };
        let after = if verdict.allowed {
            w.faults.take(&op.id, true)
        } else {
            None
        };
        (reply, verdict, after)
    };

    // A fault after the work: the answer is lost or replaced.
    let reply = match apply_fault(&shared, &r, after.clone()).await? {
        Some(faulted) => faulted,
        None => reply,
    };
    let fault = before.or(after);
    let mut w = shared.world();
    Ok(finish(&mut w, &r, Some(op), reply, Some(verdict), fault))
}

/// Carries out a fault: a reply to send instead, a delay (then `None`), or a dropped connection.
async fn apply_fault(
    shared: &Shared,
    r: &Incoming1,
    fault: Option<FaultKind>,
) -> Result<Option<Reply>, DropConnection> {
    match fault {
        None => Ok(None),
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(None)
        }
        Some(FaultKind::Status(s)) => Ok(Some(Reply::error(
            s,
            if s >= 500 {
                "Unexpected server-side error"
            } else {
                "injected fault"
            },
        ))),
        Some(FaultKind::RateLimited { retry_after_secs }) => Ok(Some(Reply {
            retry_after: Some(retry_after_secs),
            ..Reply::error(429, "API rate limit exceeded.")
        })),
        Some(FaultKind::Drop) => {
            let mut w = shared.world();
            settle(&mut w, r, None, Some(FaultKind::Drop));
            Err(DropConnection)
        }
    }
}

fn dispatch(w: &mut World, op: &str, req: &Req, now: Instant) -> Reply {
    let base = w.config.links_base.clone();
    match op {
        "droplets_create" => droplets::create(w, req, now, &base),
        "droplets_list" => droplets::list(w, req, now, &base),
        "droplets_get" => droplets::get(w, req, now),
        "droplets_destroy" => droplets::destroy(w, req, now),
        "droplets_destroy_byTag" => droplets::destroy_by_tag(w, req, now),
        "dropletActions_post" => droplets::post_action(w, req, now),
        "dropletActions_get" => droplets::get_droplet_action(w, req, now),
        "actions_get" => droplets::get_action(w, req, now),
        "droplets_list_snapshots" => droplets::list_snapshots(w, req, now, &base),
        "snapshots_list" => images::list_snapshots(w, req, now, &base),
        "snapshots_get" => images::get_snapshot(w, req),
        "snapshots_delete" => images::delete_snapshot(w, req, now),
        "tags_create" => images::create_tag(w, req),
        "tags_assign_resources" => images::tag_resources(w, req),
        "account_get" => images::account(w),
        "sizes_list" => images::sizes(req, &base),
        "regions_list" => images::regions(req, &base),
        other => Reply::error(501, &format!("the simulator does not implement {other}")),
    }
}

fn record(w: &mut World, r: &Incoming1, op: Option<&Operation>, side: Side, problem: String) {
    debug!(request_id = %r.request_id, ?side, %problem, "spec violation");
    w.violations.push(Violation {
        request_id: r.request_id.clone(),
        op: op.map(|o| o.id.clone()),
        method: r.method.clone(),
        path: r.path.clone(),
        side,
        problem,
    });
}

/// Logs a request as it arrives: one that never gets an answer is in the log too.
fn arrive(w: &mut World, r: &Incoming1, op: Option<&Operation>, token: Option<String>) {
    w.log.push(LoggedRequest {
        at: Instant::now(),
        request_id: r.request_id.clone(),
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.raw_query.clone(),
        op: op.map(|o| o.id.clone()),
        token,
        status: None,
        fault: None,
        body: serde_json::from_slice(&r.body).ok(),
    });
}

/// Records how a logged request ended.
fn settle(w: &mut World, r: &Incoming1, status: Option<u16>, fault: Option<FaultKind>) {
    if let Some(entry) = w
        .log
        .iter_mut()
        .rev()
        .find(|e| e.request_id == r.request_id)
    {
        entry.status = status;
        entry.fault = fault;
    }
}

/// Validates the answer, logs the request and builds the HTTP response.
fn finish(
    w: &mut World,
    r: &Incoming1,
    op: Option<&Operation>,
    mut reply: Reply,
    verdict: Option<Verdict>,
    fault: Option<FaultKind>,
) -> Response<Full<Bytes>> {
    if reply.status >= 400
        && let Some(Value::Object(body)) = &mut reply.body
        && body.contains_key("message")
    {
        body.insert("request_id".into(), Value::String(r.request_id.clone()));
    }
    if let Some(op) = op
        && w.config.validate_responses
    {
        for problem in SPEC.check_response(op, reply.status, reply.body.as_ref()) {
            record(w, r, Some(op), Side::Response, problem);
        }
    }
    settle(w, r, Some(reply.status), fault);
    let mut response = Response::builder()
        .status(reply.status)
        .header("x-request-id", &r.request_id);
    if let Some(v) = verdict {
        response = response
            .header("ratelimit-limit", v.limit)
            .header("ratelimit-remaining", v.remaining)
            .header("ratelimit-reset", v.reset);
    }
    if let Some(secs) = reply.retry_after {
        response = response.header("retry-after", secs);
    }
    let body = match reply.body {
        Some(b) => {
            response = response.header("content-type", "application/json; charset=utf-8");
            Bytes::from(serde_json::to_vec(&b).expect("json values serialize"))
        }
        None => Bytes::new(),
    };
    response
        .body(Full::new(body))
        .expect("valid response parts")
}
