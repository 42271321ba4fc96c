//! The demo services: every instance is a small HTTP app with `GET /health` → 200
//! `{"up":true}` and a work endpoint (any other path) that sleeps a per-service latency,
//! calls each upstream in turn through its own sidecar, and answers 502 if any upstream
//! answer was not 2xx — so errors travel up the chain — else 200.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::lock;
use super::sidecar::Sidecar;

/// Timeout of one call from the app to its sidecar (the sidecar's own is shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Faults injected into one instance. Nothing sets them yet: latency / 5xx injection comes
/// with a later issue, the app already honours them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fault {
    /// Added to every work request.
    pub extra_latency: Duration,
    /// Work requests answered 500, per thousand (deterministic, by request count).
    pub error_permille: u32,
    /// Status `/health` answers instead of 200.
    pub health_status: Option<u16>,
}

/// One upstream call the app makes.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCall {
    /// Service name.
    pub service: String,
    /// Path on that service.
    pub path: String,
}

/// Everything one instance's app needs; survives stop / start.
#[derive(Debug)]
pub(crate) struct AppCtx {
    /// Instance id.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    upstreams: Vec<UpstreamCall>,
    sidecar_url: String,
    latency: Duration,
    requests: AtomicU64,
    client: reqwest::Client,
    sidecar: Arc<Sidecar>,
    fault: Mutex<Fault>,
}

impl AppCtx {
    /// An app calling `upstreams` through the sidecar at `sidecar_port`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: &str,
        service: &str,
        version: &str,
        upstreams: Vec<UpstreamCall>,
        sidecar_port: u16,
        latency: Duration,
        client: reqwest::Client,
        sidecar: Arc<Sidecar>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            service: service.to_owned(),
            version: version.to_owned(),
            upstreams,
            sidecar_url: format!("http://{}:{sidecar_port}", super::state::LOOPBACK),
            latency,
            requests: AtomicU64::new(0),
            client,
            sidecar,
            fault: Mutex::new(Fault::default()),
        }
    }

    fn fault(&self) -> Fault {
        lock(&self.fault).clone()
    }
}

/// The app's HTTP routes.
pub(crate) fn router(app: Arc<AppCtx>) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(work)
        .with_state(app)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn health(State(app): State<Arc<AppCtx>>) -> Response {
    match app.fault().health_status {
        Some(code) => json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &serde_json::json!({"up": false}),
        ),
        None => json(StatusCode::OK, &serde_json::json!({"up": true})),
    }
}

async fn work(State(app): State<Arc<AppCtx>>) -> Response {
    let started = Instant::now();
    let n = app.requests.fetch_add(1, Ordering::Relaxed);
    let fault = app.fault();
    // Deterministic jitter: 0..=4 ms on top of the service's base latency.
    let jitter = Duration::from_millis((n * 7) % 5);
    tokio::time::sleep(app.latency + jitter + fault.extra_latency).await;

    let mut failures: Vec<String> = Vec::new();
    for up in &app.upstreams {
        let url = format!("{}/upstream/{}{}", app.sidecar_url, up.service, up.path);
        match app.client.get(&url).timeout(CALL_TIMEOUT).send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body);
                    failures.push(format!(
                        "{} answered {}: {}",
                        up.service,
                        status.as_u16(),
                        text.chars().take(200).collect::<String>()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", up.service)),
        }
    }

    let injected = fault.error_permille > 0 && (n % 1000) < u64::from(fault.error_permille);
    let (status, body) = if !failures.is_empty() {
        (
            StatusCode::BAD_GATEWAY,
            serde_json::json!({"instance": app.id, "error": failures.join("; ")}),
        )
    } else if injected {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"instance": app.id, "error": "injected fault"}),
        )
    } else {
        (
            StatusCode::OK,
            serde_json::json!({"service": app.service, "version": app.version, "instance": app.id}),
        )
    };
    app.sidecar
        .record_inbound(status.as_u16(), started.elapsed());
    json(status, &body)
}
