//! The console's pages and actions. Each names the gRPC method it stands for, is allowed or
//! refused by the API's policy for the session's role, and calls that method's service.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use berth_proto::v1 as pb;
use berth_proto::v1::archive_service_server::ArchiveService;
use berth_proto::v1::drift_service_server::DriftService;
use berth_proto::v1::host_service_server::HostService;
use berth_proto::v1::saga_service_server::SagaService;
use berth_proto::v1::schedule_service_server::ScheduleService;
use berth_proto::v1::warm_service_server::WarmService;
use berth_shared::human::{human_bytes, human_duration_ms};
use futures::{Stream, StreamExt};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Console;
use super::render::{Nav, WebError, empty, json_text, now_ms, page, status, when};
use super::session::{CsrfForm, Session};

type Page = Result<Response, WebError>;

const LIST_SAGAS: &str = "/berth.v1.SagaService/ListSagas";
const GET_SAGA: &str = "/berth.v1.SagaService/GetSaga";
const WATCH_SAGA: &str = "/berth.v1.SagaService/WatchSaga";
const LIST_HOSTS: &str = "/berth.v1.HostService/ListHosts";
const GET_HOST: &str = "/berth.v1.HostService/GetHost";
const LIST_DRIFT: &str = "/berth.v1.DriftService/ListDrift";
const ACCEPT_DRIFT: &str = "/berth.v1.DriftService/AcceptDrift";
const REVERT_DRIFT: &str = "/berth.v1.DriftService/RevertDrift";
const LIST_WARM: &str = "/berth.v1.WarmService/ListWarmSnapshots";
const LIST_ARCHIVES: &str = "/berth.v1.ArchiveService/ListArchives";
const LINK_ARCHIVE: &str = "/berth.v1.ArchiveService/GetArchiveLink";
const RESTORE_ARCHIVE: &str = "/berth.v1.ArchiveService/RestoreArchive";
const LIST_SCHEDULES: &str = "/berth.v1.ScheduleService/ListSchedules";

/// Sagas still at work.
const ACTIVE: [&str; 3] = ["pending", "running", "compensating"];

pub async fn overview(State(c): State<Arc<Console>>, s: Session) -> Page {
    s.allow(LIST_HOSTS)?;
    s.allow(LIST_SAGAS)?;
    let now = now_ms();
    let hosts = c
        .hosts
        .list_hosts(s.request(pb::ListHostsRequest {}))
        .await?
        .into_inner()
        .hosts;
    let active = c
        .sagas
        .list_sagas(s.request(pb::ListSagasRequest {
            statuses: ACTIVE.map(str::to_owned).to_vec(),
            page: Some(pb::PageRequest {
                page_size: 20,
                page_token: String::new(),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let failed = c
        .sagas
        .list_sagas(s.request(pb::ListSagasRequest {
            statuses: vec![
                "failed".into(),
                "compensation_failed".into(),
                "paused".into(),
            ],
            page: Some(pb::PageRequest {
                page_size: 5,
                page_token: String::new(),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    // Drift is an admin's inbox: others see that it exists, not its count.
    let drift = if s.may(LIST_DRIFT) {
        let open = open_drift(&c, &s, 100).await?;
        Some((open.drift.len(), !open.next_page_token.is_empty()))
    } else {
        None
    };
    let schedules = c
        .schedules
        .list_schedules(s.request(pb::ListSchedulesRequest {}))
        .await?
        .into_inner()
        .schedules;
    let failing: Vec<&pb::Schedule> = schedules
        .iter()
        .filter(|x| x.runs.first().is_some_and(|r| r.outcome == "failed"))
        .collect();
    let online = hosts.iter().filter(|h| h.online).count();
    let more = |n: usize, more: bool| if more { format!("{n}+") } else { n.to_string() };
    let body = html! {
        section.cards {
            a.card href="/hosts" { b { (online) " / " (hosts.len()) } span { "hosts online" } }
            a.card href="/sagas?status=running" { b { (more(active.sagas.len(), !active.next_page_token.is_empty())) } span { "sagas at work" } }
            @match drift {
                Some((n, m)) => a.card.(if n > 0 { "alarm" } else { "" }) href="/drift" { b { (more(n, m)) } span { "open drift" } },
                None => div.card { b { "—" } span { "drift (admins)" } },
            }
            a.card.(if failing.is_empty() { "" } else { "alarm" }) href="/schedules" { b { (failing.len()) } span { "failing schedules" } }
        }
        h2 { "Hosts" }
        (host_table(&hosts, now, false))
        h2 { "At work" }
        (saga_table(&active.sagas, now, "Nothing is running.", ""))
        h2 { "Stopped, waiting for an operator" }
        (saga_table(&failed.sagas, now, "No saga waits for an operator.", ""))
    };
    Ok(page("Overview", Nav::Overview, &s, body))
}

fn saga_table(sagas: &[pb::Saga], now: i64, none: &str, command: &str) -> Markup {
    if sagas.is_empty() {
        return empty(none, command);
    }
    html! {
        table.sagas {
            thead { tr { th { "saga" } th { "kind" } th { "status" } th { "steps" } th { "created" } th { "error" } } }
            tbody { @for x in sagas {
                tr {
                    td { a href={"/sagas/" (x.saga_id)} { code { (short(&x.saga_id, 13)) "…" } } }
                    td { (x.kind) }
                    td { (status(&x.status)) }
                    td { (x.steps.iter().filter(|st| matches!(st.status.as_str(), "completed" | "skipped")).count()) "/" (x.steps.len()) }
                    td { (when(now, x.created_at_ms)) }
                    td.error { (x.error.lines().next().unwrap_or_default()) }
                }
            } }
        }
    }
}

#[derive(Deserialize, Serialize, Default, Clone)]
pub struct SagaFilter {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    page: String,
}

pub async fn sagas(State(c): State<Arc<Console>>, s: Session, Query(f): Query<SagaFilter>) -> Page {
    s.allow(LIST_SAGAS)?;
    let list = c
        .sagas
        .list_sagas(
            s.request(pb::ListSagasRequest {
                statuses: f
                    .status
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect(),
                kind: f.kind.clone(),
                host_id: f.host.clone(),
                app: f.app.clone(),
                page: Some(pb::PageRequest {
                    page_size: 50,
                    page_token: f.page.clone(),
                }),
                ..Default::default()
            }),
        )
        .await?
        .into_inner();
    let statuses = [
        "",
        "running",
        "pending",
        "compensating",
        "completed",
        "failed",
        "compensated",
        "compensation_failed",
        "cancelled",
        "paused",
        "abandoned",
    ];
    let body = html! {
        form.filters method="get" action="/sagas" {
            label { "kind " input name="kind" value=(f.kind) placeholder="archive.create"; }
            label { "host " input name="host" value=(f.host) placeholder="ci-1"; }
            label { "app " input name="app" value=(f.app) placeholder="wiki"; }
            label { "status "
                select name="status" {
                    @for st in statuses {
                        option value=(st) selected[st == f.status] { (if st.is_empty() { "any" } else { st }) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        (saga_table(&list.sagas, now_ms(), "No saga matches.", "berth sagas start demo --inputs '{\"steps\":[{\"step\":\"noop\"}]}'"))
        @if !list.next_page_token.is_empty() {
            p { a.next href=(link_to("/sagas", &SagaFilter { page: list.next_page_token.clone(), ..f.clone() })) { "Older sagas →" } }
        }
    };
    Ok(page("Sagas", Nav::Sagas, &s, body))
}

/// The first `n` characters of `s` (an agent or the bucket may have put any text there).
fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `path?query` for `filter`, query-encoded.
fn link_to<Q: Serialize>(path: &str, filter: &Q) -> String {
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(filter).unwrap_or_default()
    )
}

pub async fn saga(State(c): State<Arc<Console>>, s: Session, Path(id): Path<String>) -> Page {
    s.allow(GET_SAGA)?;
    let x = c
        .sagas
        .get_saga(s.request(pb::GetSagaRequest {
            saga_id: id.clone(),
        }))
        .await?
        .into_inner();
    let now = now_ms();
    let active = ACTIVE.contains(&x.status.as_str());
    let actions: Vec<(&str, &str, &str)> = [
        (
            "cancel",
            "CancelSaga",
            "Cancel this saga? Its running step is stopped and the steps before it are undone.",
        ),
        (
            "retry",
            "RetrySaga",
            "Run this saga again from its failed step?",
        ),
        (
            "resume",
            "ResumeCompensation",
            "Resume undoing this saga's steps?",
        ),
        (
            "abandon",
            "AbandonSaga",
            "Abandon this saga? Nothing more runs, and nothing it did is undone: clean up by hand.",
        ),
    ]
    .into_iter()
    .filter(|(action, method, _)| {
        let fits = match *action {
            "cancel" => active,
            "retry" => matches!(x.status.as_str(), "failed" | "paused"),
            "resume" => matches!(x.status.as_str(), "compensation_failed" | "paused"),
            _ => !matches!(
                x.status.as_str(),
                "completed" | "compensated" | "cancelled" | "abandoned"
            ),
        };
        fits && s.may(&format!("/berth.v1.SagaService/{method}"))
    })
    .collect();
    let may_skip = matches!(
        x.status.as_str(),
        "failed" | "paused" | "compensation_failed"
    ) && s.may("/berth.v1.SagaService/SkipStep");
    let body = html! {
        div.saga #saga data-saga=(x.saga_id) data-live=(if active { "yes" } else { "no" }) {
            dl.facts {
                dt { "status" } dd #saga-status { (status(&x.status)) @if x.cancel_requested_at_ms > 0 && active { " " span.muted { "(cancelling)" } } }
                dt { "kind" } dd { (x.kind) }
                dt { "id" } dd { code { (x.saga_id) } }
                dt { "created" } dd { (when(now, x.created_at_ms)) }
                dt { "owner" } dd { (if x.owner_id.is_empty() { "—" } else { &x.owner_id }) }
            }
            @if !x.error.is_empty() { p.error #saga-error { (x.error) } }
            @if !actions.is_empty() {
                div.actions {
                    @for (action, _, confirm) in &actions {
                        form method="post" action={"/sagas/" (x.saga_id) "/" (action)} data-confirm=(confirm) {
                            input type="hidden" name="csrf" value=(s.csrf);
                            input name="reason" placeholder="reason (kept in the history)";
                            button type="submit" class=(action) { (action) }
                        }
                    }
                }
            }
            ol.timeline {
                @for st in &x.steps {
                    li.step #{"step-" (st.index)} data-status=(st.status) {
                        div.head {
                            span.idx { (st.index) }
                            b { (st.name) }
                            @if st.pivot { span.pivot title="a step that cannot be undone" { "pivot" } }
                            span.st { (status(&st.status)) }
                            span.attempts { (st.attempts) " attempt" (if st.attempts == 1 { "" } else { "s" }) }
                            span.took { (step_took(st, now)) }
                        }
                        div.progress hidden { progress max="100" value="0" {} span.ptext {} }
                        @if !st.error.is_empty() { p.error { (st.error) } }
                        @if !st.output_json.is_empty() && st.output_json != "null" {
                            details { summary { "output" } pre { (json_text(&st.output_json)) } }
                        }
                        @if may_skip && matches!(st.status.as_str(), "failed" | "cancelled" | "pending" | "running" | "compensating") {
                            form method="post" action={"/sagas/" (x.saga_id) "/skip"} data-confirm="Skip this step? Berth will go on as if it had succeeded (or, while undoing, as if it had been undone)." {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="step" value=(st.index);
                                input name="reason" placeholder="reason";
                                button type="submit" { "skip step " (st.index) }
                            }
                        }
                    }
                }
            }
            details.inputs { summary { "inputs" } pre { (json_text(&x.inputs_json)) } }
            @if !x.output_json.is_empty() { details.inputs { summary { "output" } pre { (json_text(&x.output_json)) } } }
            h2 { "History" }
            ol.events #events {}
        }
    };
    Ok(page(&format!("Saga {}", x.kind), Nav::Sagas, &s, body))
}

/// How long a step's latest attempt took, or has run so far.
fn step_took(st: &pb::SagaStep, now: i64) -> String {
    let start = if st.attempt_started_at_ms > 0 {
        st.attempt_started_at_ms
    } else {
        st.started_at_ms
    };
    match (start, st.finished_at_ms) {
        (0, _) => String::new(),
        (a, b) if b >= a => human_duration_ms(b - a),
        (a, _) if matches!(st.status.as_str(), "running" | "compensating") => {
            format!("{} so far", human_duration_ms(now - a))
        }
        _ => String::new(),
    }
}

/// The saga's events as server-sent events, from the same `WatchSaga` stream the CLI follows:
/// its history first, then each event as it happens, then its end.
pub async fn saga_events(
    State(c): State<Arc<Console>>,
    s: Session,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    s.allow(WATCH_SAGA)?;
    // A browser that reconnects (a replica restarted) says the last event it had.
    let after_seq = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stream = c
        .sagas
        .watch_saga(s.request(pb::WatchSagaRequest {
            saga_id: id,
            after_seq,
        }))
        .await?
        .into_inner();
    let events = stream.map(|item| {
        let seq = item.as_ref().map_or(0, |e| e.seq);
        let data = match item {
            Ok(e) => serde_json::json!({
                "seq": e.seq,
                "kind": e.kind,
                "step": e.step_index,
                "message": e.message,
                "at_ms": e.at_ms,
                "final_status": e.final_status,
                "progress": e.progress.map(|p| serde_json::json!({
                    "bytes_done": p.bytes_done, "bytes_total": p.bytes_total,
                    "entries_done": p.entries_done, "entries_total": p.entries_total,
                    "phase": p.phase,
                })),
            }),
            Err(status) => serde_json::json!({ "kind": "error", "message": status.message() }),
        };
        let event = Event::default().event("saga").data(data.to_string());
        // The end of the stream has no sequence number of its own.
        Ok(if seq > 0 {
            event.id(seq.to_string())
        } else {
            event
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    step: Option<u32>,
}

pub async fn saga_action(
    State(c): State<Arc<Console>>,
    s: Session,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Page {
    s.check_csrf(&f.csrf)?;
    let req = || pb::SagaIdRequest {
        saga_id: id.clone(),
        reason: f.reason.clone(),
    };
    let method = |m: &str| format!("/berth.v1.SagaService/{m}");
    match action.as_str() {
        "cancel" => {
            s.allow(&method("CancelSaga"))?;
            c.sagas.cancel_saga(s.request(req())).await?;
        }
        "retry" => {
            s.allow(&method("RetrySaga"))?;
            c.sagas.retry_saga(s.request(req())).await?;
        }
        "resume" => {
            s.allow(&method("ResumeCompensation"))?;
            c.sagas.resume_compensation(s.request(req())).await?;
        }
        "abandon" => {
            s.allow(&method("AbandonSaga"))?;
            c.sagas.abandon_saga(s.request(req())).await?;
        }
        "skip" => {
            s.allow(&method("SkipStep"))?;
            let step = f
                .step
                .ok_or_else(|| WebError::BadRequest("skip needs the step's index".into()))?;
            c.sagas
                .skip_step(s.request(pb::SkipStepRequest {
                    saga_id: id.clone(),
                    step_index: step,
                    reason: f.reason.clone(),
                }))
                .await?;
        }
        other => {
            return Err(WebError::BadRequest(format!(
                "no saga action {other:?}: cancel, retry, resume, abandon or skip"
            )));
        }
    }
    Ok(Redirect::to(&format!("/sagas/{id}")).into_response())
}

/// The first `n` open drifts, newest first.
async fn open_drift(c: &Console, s: &Session, n: u32) -> Result<pb::ListDriftResponse, WebError> {
    let req = pb::ListDriftRequest {
        statuses: vec!["open".into()],
        page: Some(pb::PageRequest {
            page_size: n,
            page_token: String::new(),
        }),
        ..Default::default()
    };
    Ok(c.drift.list_drift(s.request(req)).await?.into_inner())
}

pub async fn drift(State(c): State<Arc<Console>>, s: Session) -> Page {
    s.allow(LIST_DRIFT)?;
    let now = now_ms();
    let open = open_drift(&c, &s, 200).await?.drift;
    let may_accept = s.may(ACCEPT_DRIFT);
    let may_revert = s.may(REVERT_DRIFT);
    let body = html! {
        p.muted { "A drift is a droplet that differs from the spec its saga recorded. Accepting makes the live value the desired one; reverting starts a saga that changes it back." }
        @if open.is_empty() {
            (empty("No open drift: every droplet matches its spec.", "berth drift sync"))
        } @else {
            table.drift {
                thead { tr { th { "resource" } th { "field" } th { "expected" } th { "actual" } th { "detected" } th {} } }
                tbody { @for d in &open {
                    tr #{"drift-" (d.drift_id)} {
                        td { code { (d.resource_id) } }
                        td { (d.field) }
                        td { code { (d.expected_json) } }
                        td { code { (d.actual_json) } }
                        td { (when(now, d.detected_at_ms)) }
                        td.actions {
                            @if may_accept {
                                form method="post" action={"/drift/" (d.drift_id) "/accept"} data-confirm="Accept this drift? The live value becomes the desired one." {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    input name="reason" placeholder="reason";
                                    button.accept type="submit" { "accept" }
                                }
                            }
                            @if may_revert && d.field == "size_slug" {
                                form method="post" action={"/drift/" (d.drift_id) "/revert"} data-confirm="Revert this drift? A saga resizes the droplet back (it is powered off meanwhile)." {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    input type="hidden" name="reason" value="";
                                    button.revert type="submit" { "revert" }
                                }
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok(page("Drift", Nav::Drift, &s, body))
}

pub async fn drift_action(
    State(c): State<Arc<Console>>,
    s: Session,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Page {
    s.check_csrf(&f.csrf)?;
    let req = pb::DriftIdRequest {
        drift_id: id,
        reason: f.reason,
    };
    match action.as_str() {
        "accept" => {
            s.allow(ACCEPT_DRIFT)?;
            c.drift.accept_drift(s.request(req)).await?;
            Ok(Redirect::to("/drift").into_response())
        }
        "revert" => {
            s.allow(REVERT_DRIFT)?;
            let saga = c.drift.revert_drift(s.request(req)).await?.into_inner();
            Ok(Redirect::to(&format!("/sagas/{}", saga.saga_id)).into_response())
        }
        other => Err(WebError::BadRequest(format!(
            "no drift action {other:?}: accept or revert"
        ))),
    }
}

pub async fn hosts(State(c): State<Arc<Console>>, s: Session) -> Page {
    s.allow(LIST_HOSTS)?;
    let now = now_ms();
    let hosts = c
        .hosts
        .list_hosts(s.request(pb::ListHostsRequest {}))
        .await?
        .into_inner()
        .hosts;
    Ok(page("Hosts", Nav::Hosts, &s, host_table(&hosts, now, true)))
}

/// The hosts, each with its status, last heartbeat and warm-root free space; `full` adds the
/// versions and the replica holding its session.
fn host_table(hosts: &[pb::Host], now: i64, full: bool) -> Markup {
    if hosts.is_empty() {
        return empty(
            "No agent has connected yet.",
            "berth-agent enroll --coordinator URL --ca-file CA < enrollment.token",
        );
    }
    html! {
        table {
            thead { tr {
                th { "host" } th { "status" } th { "last heartbeat" } th { "warm root free" }
                @if full { th { "agent" } th { "docker" } th { "connected to" } }
            } }
            tbody { @for h in hosts {
                tr {
                    td { a href={"/hosts/" (h.host_id)} { (h.host_id) } }
                    td { (status(if h.online { "online" } else { "offline" })) }
                    td { (when(now, h.last_heartbeat_ms)) }
                    td { (h.warm_root_free_bytes.map(human_bytes).unwrap_or_else(|| "—".into())) }
                    @if full { td { (h.agent_version) } td { (h.docker_version) } td { (h.connected_to) } }
                }
            } }
        }
    }
}

pub async fn host(State(c): State<Arc<Console>>, s: Session, Path(id): Path<String>) -> Page {
    s.allow(GET_HOST)?;
    s.allow(LIST_WARM)?;
    let now = now_ms();
    let detail = c
        .hosts
        .get_host(s.request(pb::GetHostRequest {
            host_id: id.clone(),
        }))
        .await?
        .into_inner();
    let snaps = c
        .warm
        .list_warm_snapshots(s.request(pb::ListWarmSnapshotsRequest {
            host_id: id.clone(),
            app: String::new(),
        }))
        .await?
        .into_inner()
        .snapshots;
    let h = detail.host.unwrap_or_default();
    let body = html! {
        dl.facts {
            dt { "status" } dd { (status(if h.online { "online" } else { "offline" })) }
            dt { "hostname" } dd { (h.hostname) }
            dt { "last heartbeat" } dd { (when(now, h.last_heartbeat_ms)) }
            dt { "agent" } dd { (h.agent_version) }
            @if let Some(d) = &detail.description {
                dt { "docker" } dd { (d.docker_version) " (API " (d.docker_api_version) ", " (d.storage_driver) ")" }
                dt { "system" } dd { (d.os) ", " (d.kernel_version) ", " (d.architecture) ", " (d.cpus) " CPUs, " (human_bytes(d.memory_bytes)) }
                dt { "containers" } dd { (d.containers_running) " running of " (d.containers_total) }
                dt { "warm root" } dd { code { (d.warm_root) } " — " (human_bytes(d.warm_root_free_bytes)) " free of " (human_bytes(d.warm_root_total_bytes)) }
            }
            @if !detail.description_error.is_empty() { dt { "description" } dd.error { (detail.description_error) } }
        }
        h2 { "Warm snapshots" }
        @if snaps.is_empty() {
            (empty("No warm snapshot on this host yet.", &format!("berth warm snapshot --host {id} --app APP --domain DOMAIN --version VERSION --wait")))
        } @else {
            table {
                thead { tr { th { "app" } th { "version" } th { "volumes" } th { "size" } th { "taken" } th { "complete" } th { "spare" } } }
                tbody { @for w in &snaps {
                    tr {
                        td { (w.app) }
                        td { (w.version) @if !w.commit.is_empty() { " " code { (short(&w.commit, 12)) } } }
                        td { (w.volumes.join(", ")) }
                        td { (human_bytes(w.size_bytes)) }
                        td { (when(now, w.taken_at_ms)) }
                        td { (status(if w.complete { "ok" } else { "bad" })) }
                        td { (if w.spare.is_empty() { "—" } else { &w.spare }) }
                    }
                } }
            }
        }
    };
    Ok(page(&format!("Host {id}"), Nav::Hosts, &s, body))
}

#[derive(Deserialize, Serialize, Default, Clone)]
pub struct ArchiveFilter {
    #[serde(default)]
    app: String,
    #[serde(default)]
    page: String,
}

pub async fn archives(
    State(c): State<Arc<Console>>,
    s: Session,
    Query(f): Query<ArchiveFilter>,
) -> Page {
    s.allow(LIST_ARCHIVES)?;
    let now = now_ms();
    let list = c
        .archives
        .list_archives(s.request(pb::ListArchivesRequest {
            apps: if f.app.is_empty() {
                vec![]
            } else {
                vec![f.app.clone()]
            },
            page: Some(pb::PageRequest {
                page_size: 50,
                page_token: f.page.clone(),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let hosts = if s.may(RESTORE_ARCHIVE) {
        c.hosts
            .list_hosts(s.request(pb::ListHostsRequest {}))
            .await?
            .into_inner()
            .hosts
    } else {
        Vec::new()
    };
    let may_link = s.may(LINK_ARCHIVE);
    let body = html! {
        form.filters method="get" action="/archives" {
            label { "app " input name="app" value=(f.app) placeholder="wiki"; }
            button type="submit" { "Filter" }
        }
        @if list.archives.is_empty() {
            (empty("No archive yet.", "berth archive create --host HOST --app APP --wait"))
        } @else {
            table.archives {
                thead { tr { th { "app" } th { "taken" } th { "size" } th { "sha256" } th { "labels" } th {} } }
                tbody { @for a in &list.archives {
                    tr {
                        td { (a.app) @if !a.index_label.is_empty() { " " span.muted { (a.index_label) } } }
                        td { (when(now, a.ts_ms)) }
                        td { (human_bytes(a.size_bytes)) }
                        td { code title=(a.sha256) { (short(&a.sha256, 12)) } }
                        td { (a.labels.join(", ")) }
                        td.actions {
                            @if may_link {
                                form method="post" action={"/archives/" (a.uuid) "/link"} {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button type="submit" { "download link" }
                                }
                            }
                            @if !hosts.is_empty() {
                                form method="post" action={"/archives/" (a.uuid) "/restore"} data-confirm="Restore this archive on the chosen host? The app directory there (the archive's app, or the name under as) is replaced once the whole archive has checked out." {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    select name="host" { @for h in &hosts { option value=(h.host_id) { (h.host_id) } } }
                                    input name="as" placeholder={"as (default " (a.app) ")"};
                                    button type="submit" { "restore" }
                                }
                            }
                        }
                    }
                } }
            }
            @if !list.next_page_token.is_empty() {
                p { a.next href=(link_to("/archives", &ArchiveFilter { page: list.next_page_token.clone(), ..f.clone() })) { "Older archives →" } }
            }
        }
    };
    Ok(page("Archives", Nav::Archives, &s, body))
}

pub async fn archive_link(
    State(c): State<Arc<Console>>,
    s: Session,
    Path(uuid): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Page {
    s.check_csrf(&f.csrf)?;
    s.allow(LINK_ARCHIVE)?;
    let link = c
        .archives
        .get_archive_link(s.request(pb::GetArchiveLinkRequest {
            uuid: uuid.clone(),
            expires_secs: 0,
        }))
        .await?
        .into_inner();
    let now = now_ms();
    let body = html! {
        p { "Valid until " (when(now, link.expires_at_ms)) "; anyone holding it can download the archive." }
        @if link.url.starts_with("http") { p { a.download href=(link.url) rel="noreferrer" { "Download" } } }
        pre.link { (link.url) }
        p { a href="/archives" { "Back to the archives" } }
    };
    Ok(page(&format!("Archive {uuid}"), Nav::Archives, &s, body))
}

#[derive(Deserialize)]
pub struct RestoreForm {
    #[serde(default)]
    csrf: String,
    host: String,
    #[serde(default, rename = "as")]
    target: String,
}

pub async fn archive_restore(
    State(c): State<Arc<Console>>,
    s: Session,
    Path(uuid): Path<String>,
    Form(f): Form<RestoreForm>,
) -> Page {
    s.check_csrf(&f.csrf)?;
    s.allow(RESTORE_ARCHIVE)?;
    let saga = c
        .archives
        .restore_archive(s.request(pb::RestoreArchiveRequest {
            host_id: f.host,
            uuid,
            target_app: f.target.trim().to_owned(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(Redirect::to(&format!("/sagas/{}", saga.saga_id)).into_response())
}

pub async fn schedules(State(c): State<Arc<Console>>, s: Session) -> Page {
    s.allow(LIST_SCHEDULES)?;
    let now = now_ms();
    let list = c
        .schedules
        .list_schedules(s.request(pb::ListSchedulesRequest {}))
        .await?
        .into_inner()
        .schedules;
    let body = html! {
        @if list.is_empty() {
            (empty("No schedule yet.", "berth schedule create NAME --cron \"30 2 * * *\" archive --host HOST --app APP"))
        } @else {
            table {
                thead { tr { th { "name" } th { "runs" } th { "cron" } th { "last run" } th { "next" } th { "state" } } }
                tbody { @for x in &list {
                    tr {
                        td { (x.name) }
                        td { (x.kind) }
                        td { code { (x.cron) } " " span.muted { (x.timezone) } }
                        td { @match x.runs.first() {
                            Some(r) => { (status(&r.outcome)) " " (when(now, r.started_at_ms))
                                @if !r.saga_id.is_empty() { " " a href={"/sagas/" (r.saga_id)} { "saga" } } }
                            None => span.muted { "never" },
                        } }
                        td { @match x.next_runs_ms.first() { Some(t) => (when(now, *t)), None => span.muted { "—" } } }
                        td { (status(if x.paused { "paused" } else { "active" })) }
                    }
                } }
            }
        }
    };
    Ok(page("Schedules", Nav::Schedules, &s, body))
}
