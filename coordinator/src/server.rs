//! Wiring: open the store, build every service behind the auth layer, serve on a bound listener
//! until the shutdown token fires.

mod tls;

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::alert::Alerter;
use crate::archive::{Catalog, UploadSweeper};
use crate::auth::{AuthLayer, Tokens};
use crate::config::Config;
use crate::digitalocean::HttpDoApi;
use crate::drift::Inventory;
use crate::droplet::Cloud;
use crate::hub::Hub;
use crate::limits::WatchSlots;
use crate::remote::AgentTaskSettings;
use crate::saga::{CiCaps, Deps, Engine, EngineConfig, Registry, SagaStatus};
use crate::schedule::Scheduler;
use crate::service::agent_link::AgentLinkService;
use crate::service::archives::ArchivesService;
use crate::service::drift::DriftService;
use crate::service::droplets::DropletsService;
use crate::service::hosts::HostsService;
use crate::service::sagas::SagasService;
use crate::service::schedules::SchedulesService;
use crate::service::tokens::TokensService;
use crate::service::warm::WarmsService;
use crate::store::{Store, StoreError, redact_url};

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} is empty{hint}")]
    EmptyFile {
        what: &'static str,
        path: String,
        hint: String,
    },
    #[error("cannot listen on {what} {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    let bytes = std::fs::read(path).map_err(|source| StartError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Under systemd, a credential whose source file is missing arrives empty.
        let hint = match path.strip_prefix("/run/credentials") {
            Ok(_) => format!(
                " (a systemd credential: is /etc/berth/secrets/{} missing?)",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            Err(_) => String::new(),
        };
        return Err(StartError::EmptyFile {
            what,
            path: path.display().to_string(),
            hint,
        });
    }
    Ok(bytes)
}

/// Opens the configured store, creating the data directory for the SQLite default.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    let url = config
        .database_url()
        .map_err(|e| StartError::Config(format!("{e:#}")))?;
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    }
    tracing::info!(database = %redact_url(&url), "opening store");
    Ok(Store::open(&url).await?)
}

/// Sets the counters alert rules watch to 0 for each of their labels, so each exists from the
/// start and `increase()` sees its first event (Prometheus cannot rate a series that appears
/// at 1).
fn zero_counters() {
    for status in SagaStatus::ALL.iter().filter(|s| s.is_final()) {
        metrics::counter!("berth_sagas_finished_total", "status" => status.as_str()).absolute(0);
    }
    for cause in crate::saga::LEASE_LOSS_CAUSES {
        metrics::counter!("berth_saga_lease_losses_total", "cause" => *cause).absolute(0);
    }
    for reason in crate::auth::FAILURE_REASONS {
        metrics::counter!("berth_auth_failures_total", "reason" => *reason).absolute(0);
    }
    // A plain-text coordinator has none: its 0 is true, and one rules file fits both.
    for reason in tls::FAILURE_REASONS {
        metrics::counter!("berth_tls_handshake_failures_total", "reason" => *reason).absolute(0);
    }
}

/// How long a shutdown waits for agent sessions to record their disconnects.
const SESSIONS_DRAIN: Duration = Duration::from_secs(5);

/// This instance's id: configured, or `<hostname>-<random>`.
pub fn instance_id(config: &Config) -> String {
    config.instance_id.clone().unwrap_or_else(|| {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    })
}

/// Serves the coordinator on `listener` until `shutdown` is cancelled. `ready` is called once
/// the store is open and the server is about to accept connections.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: impl FnOnce() + Send,
) -> Result<(), StartError> {
    let store = open_store(&config).await?;
    store.listen(shutdown.clone());
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::acceptor(t, &[b"h2"]))
        .transpose()?;
    let instance_id = instance_id(&config);
    let hub = Hub::new(store.clone());
    let tokens = Tokens::new(store.clone()).with_unknown_cache(config.limits.unknown_tokens());

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    for name in pb::SERVICE_NAMES {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let sessions = TaskTracker::new();
    let agent_link = AgentLinkService {
        store: store.clone(),
        hub: hub.clone(),
        instance_id: instance_id.clone(),
        heartbeat_interval_secs: config.heartbeat_interval_secs,
        require_client_cert: config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some()),
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
    };
    let hosts = HostsService {
        store: store.clone(),
        hub: hub.clone(),
        heartbeat_timeout_ms: i64::from(config.heartbeat_timeout_secs) * 1000,
    };
    let token_service = TokensService {
        store: store.clone(),
        tokens: tokens.clone(),
    };
    let cloud = match &config.digitalocean {
        Some(section) => {
            let api = HttpDoApi::from_config(section)
                .map_err(|e| StartError::Config(format!("[digitalocean]: {e}")))?;
            Some(Arc::new(Cloud::new(Arc::new(api), config.droplets.pace())))
        }
        None => None,
    };
    let catalog = Arc::new(
        Catalog::open(config.archive.clone())
            .map_err(|e| StartError::Config(format!("[archive]: {:#}", anyhow::Error::new(e))))?
            .with_checks(store.clone()),
    );
    // Every saga kind this coordinator runs, side by side.
    let mut registry = Registry::default();
    crate::remote::kinds::register(&mut registry);
    crate::droplet::register(&mut registry);
    if config.sagas.demo {
        registry.enable_demo();
    }
    let mut deps = Deps::new(store.clone())
        .with(catalog.clone())
        .with(AgentTaskSettings {
            offline_wait: Duration::from_secs(config.sagas.agent_offline_wait_secs),
            heartbeat_timeout: Duration::from_secs(u64::from(config.heartbeat_timeout_secs)),
            ..AgentTaskSettings::default()
        });
    if let Some(cloud) = &cloud {
        deps = deps.with(cloud.clone());
    }
    let engine = Engine::new(
        store.clone(),
        registry,
        deps,
        EngineConfig {
            owner_id: instance_id.clone(),
            lease: Duration::from_millis(config.sagas.lease_ms),
            renew_every: Duration::from_millis(config.sagas.renew_ms),
            poll_interval: Duration::from_millis(config.sagas.poll_interval_ms),
            max_concurrent: config.sagas.max_concurrent,
            max_reclaims: config.sagas.max_reclaims,
            ci_caps: CiCaps {
                per_token: config.limits.max_active_sagas_per_ci_token,
                all_tokens: config.limits.max_active_ci_sagas,
            },
        },
    );
    let sweeper = UploadSweeper::new(catalog.clone(), store.clone(), instance_id.clone());
    let scheduler = Scheduler::new(
        engine.clone(),
        instance_id.clone(),
        config.schedules.clone(),
    )
    .with_catalog(catalog.clone())
    .keeping_alerts(config.alerts.keep_delivered());
    let alerter = Alerter::new(store.clone(), instance_id.clone(), &config.alerts)
        .map_err(StartError::Config)?;
    let schedules = SchedulesService {
        engine: engine.clone(),
        scheduler: scheduler.clone(),
        config: config.schedules.clone(),
    };
    let archives = ArchivesService {
        catalog,
        engine: engine.clone(),
        store: store.clone(),
    };
    let warm = WarmsService {
        engine: engine.clone(),
        hub: hub.clone(),
        store: store.clone(),
        heartbeat_timeout_ms: i64::from(config.heartbeat_timeout_secs) * 1000,
    };
    let droplets = DropletsService {
        engine: engine.clone(),
        cloud: cloud.clone(),
    };
    let sagas = SagasService {
        engine: engine.clone(),
        shutdown: shutdown.clone(),
        watches: WatchSlots::new(config.limits.max_watches_per_token),
        page_max_bytes: config.limits.list_page_max_bytes,
    };
    let inventory = Inventory::new(
        store.clone(),
        cloud.as_ref().map(|c| c.api.clone()),
        config.inventory.clone(),
        instance_id.clone(),
    );
    let drift = DriftService {
        engine: engine.clone(),
        inventory: inventory.clone(),
    };
    let console = match config.web_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    what: "web_listen",
                    addr,
                    source,
                })?;
            let router = crate::web::router(crate::web::Console {
                store: store.clone(),
                tokens: tokens.clone(),
                hosts: hosts.clone(),
                sagas: sagas.clone(),
                drift: drift.clone(),
                archives: archives.clone(),
                warm: warm.clone(),
                schedules: schedules.clone(),
                secure: tls.is_some(),
            });
            // Browsers may speak HTTP/1.1 or HTTP/2 to it.
            let incoming = match &config.tls {
                Some(t) => {
                    let acceptor = tls::acceptor(t, &[b"h2", b"http/1.1"])?;
                    let addr = listener.local_addr().unwrap_or(addr);
                    let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
                    let timeout = config.limits.tls_handshake_timeout();
                    crate::web::Incoming::Tls {
                        streams: tls::accept(tcp, acceptor, timeout, shutdown.clone()),
                        addr,
                    }
                }
                None => crate::web::Incoming::Plain(listener),
            };
            Some((incoming, router))
        }
        None => None,
    };

    // Limits per connection: HTTP/2 streams (clients queue beyond it), TCP keepalive, and
    // the TLS handshake timeout (in `tls::accept`).
    let builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(config.limits.max_streams_per_connection);
    let router = builder
        .layer(AuthLayer::new(tokens.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(pb::agent_link_server::AgentLinkServer::new(agent_link))
        .add_service(pb::host_service_server::HostServiceServer::new(hosts))
        .add_service(pb::token_service_server::TokenServiceServer::new(
            token_service,
        ))
        .add_service(pb::saga_service_server::SagaServiceServer::new(sagas))
        .add_service(pb::droplet_service_server::DropletServiceServer::new(
            droplets,
        ))
        .add_service(pb::warm_service_server::WarmServiceServer::new(warm))
        .add_service(pb::archive_service_server::ArchiveServiceServer::new(
            archives,
        ))
        .add_service(pb::drift_service_server::DriftServiceServer::new(drift))
        .add_service(pb::schedule_service_server::ScheduleServiceServer::new(
            schedules,
        ));

    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        instance_id,
        tls = config.tls.is_some(),
        "coordinator serving"
    );
    zero_counters();
    let engine_task = tokio::spawn(engine.run(shutdown.clone()));
    let inventory_task = tokio::spawn(inventory.run(shutdown.clone()));
    let sweep_task = tokio::spawn(sweeper.run(shutdown.clone()));
    let schedule_task = tokio::spawn(scheduler.run(shutdown.clone()));
    let alert_task = tokio::spawn(alerter.run(shutdown.clone()));
    let host_gauges = tokio::spawn(crate::telemetry::report_host_gauges(
        store.clone(),
        i64::from(config.heartbeat_timeout_secs) * 1000,
        shutdown.clone(),
    ));
    let console_task = console.map(|(incoming, router)| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::web::serve(incoming, router, shutdown).await {
                tracing::error!(error = %e, "web console stopped");
            }
        })
    });
    ready();
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(config.limits.tcp_keepalive()));
    let stop = shutdown.clone().cancelled_owned();
    let served = match tls {
        Some(acceptor) => {
            let timeout = config.limits.tls_handshake_timeout();
            let incoming = tls::accept(incoming, acceptor, timeout, shutdown.clone());
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        None => router.serve_with_incoming_shutdown(incoming, stop).await,
    };
    // The engine hands its sagas back before the store closes, so another coordinator
    // continues them at once instead of after a lease timeout.
    shutdown.cancel();
    let _ = engine_task.await;
    let _ = inventory_task.await;
    let _ = sweep_task.await;
    let _ = schedule_task.await;
    let _ = alert_task.await;
    let _ = host_gauges.await;
    if let Some(task) = console_task {
        let _ = task.await;
    }
    // Agent sessions end with the shutdown; each records its disconnect in the store first.
    sessions.close();
    if tokio::time::timeout(SESSIONS_DRAIN, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = sessions.len(),
            "agent sessions did not end within {SESSIONS_DRAIN:?}; their hosts show online until their heartbeats lapse"
        );
    }
    served?;
    store.close().await;
    tracing::info!("coordinator stopped");
    Ok(())
}
