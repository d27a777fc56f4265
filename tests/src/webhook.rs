//! An alert webhook receiver on loopback: records every POST (headers and body) and answers
//! with scripted statuses (say, 500 to the first attempt, then 200).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub event: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub answered: u16,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once used up.
    script: VecDeque<u16>,
}

pub struct Webhook {
    pub url: String,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

impl Webhook {
    /// Listens on 127.0.0.1; answers `script` in order, then 200.
    pub async fn start(script: &[u16]) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks/berth", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            received: Vec::new(),
            script: script.iter().copied().collect(),
        }));
        let shutdown = CancellationToken::new();
        let (st, stop) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let sock = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Webhook {
            url,
            state,
            shutdown,
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (event_id, event, timestamp, signature) = (
        header("x-berth-event-id"),
        header("x-berth-event"),
        header("x-berth-timestamp"),
        header("x-berth-signature"),
    );
    let body = req.into_body().collect().await?.to_bytes();
    let mut s = state.lock().unwrap();
    let answered = s.script.pop_front().unwrap_or(200);
    s.received.push(Received {
        event_id,
        event,
        timestamp,
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
    });
    Ok(Response::builder()
        .status(StatusCode::from_u16(answered).unwrap())
        .body(Full::new(Bytes::new()))
        .unwrap())
}
