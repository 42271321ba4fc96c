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
use crate::model::types::{DemoFault, Health};

/// Timeout of one call from the app to its sidecar (the sidecar's own is shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest latency a fault may add (longer values are cut to this).
pub(crate) const MAX_FAULT_LATENCY_MS: u32 = 60_000;

/// Whether work request number `n` (0-based) fails under `error_pct`: failures are spread
/// evenly (10 % fails every tenth request, 50 % every other one), so a partial error rate
/// shows as a failing lane rather than as runs of consecutive failures that eject the host.
pub(crate) fn injected_failure(n: u64, error_pct: u8) -> bool {
    let p = u64::from(error_pct.min(100));
    (n + 1) * p / 100 > n * p / 100
}

/// The status `/health` answers under a health override (Consul: 2xx passing, 429 warning,
/// anything else critical).
fn health_status(h: Health) -> StatusCode {
    match h {
        Health::Passing => StatusCode::OK,
        Health::Warning => StatusCode::TOO_MANY_REQUESTS,
        Health::Critical => StatusCode::SERVICE_UNAVAILABLE,
    }
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
    fault: Mutex<DemoFault>,
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
            fault: Mutex::new(DemoFault::default()),
        }
    }

    /// The faults injected now.
    pub(crate) fn fault(&self) -> DemoFault {
        *lock(&self.fault)
    }

    /// Replaces the injected faults; latency is capped at [`MAX_FAULT_LATENCY_MS`], the
    /// error share at 100 %. Takes effect with the next request (health: the next check).
    pub(crate) fn set_fault(&self, fault: DemoFault) {
        *lock(&self.fault) = DemoFault {
            latency_ms: fault.latency_ms.min(MAX_FAULT_LATENCY_MS),
            error_pct: fault.error_pct.min(100),
            health: fault.health,
        };
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
    match app.fault().health {
        Some(h) => json(
            health_status(h),
            &serde_json::json!({"up": h == Health::Passing, "override": h.as_str()}),
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
    let extra = Duration::from_millis(u64::from(fault.latency_ms));
    tokio::time::sleep(app.latency + jitter + extra).await;

    let mut failures: Vec<String> = Vec::new();
    for up in &app.upstreams {
        let url = format!("{}/upstream/{}{}", app.sidecar_url, up.service, up.path);
        match app.client.get(&url).timeout(CALL_TIMEOUT).send().await {
            Ok(mut resp) => {
                let status = resp.status();
                let body = crate::net::read_body(
                    &mut resp,
                    crate::net::limits::MAX_ERROR_BODY_BYTES,
                    true,
                )
                .await
                .unwrap_or_default();
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

    let injected = injected_failure(n, fault.error_pct);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(pct: u8, n: u64) -> Vec<u64> {
        (0..n).filter(|&i| injected_failure(i, pct)).collect()
    }

    #[test]
    fn injected_failures_are_spread_evenly() {
        assert!(failures(0, 1000).is_empty());
        assert_eq!(failures(100, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(failures(50, 6), vec![1, 3, 5]);
        assert_eq!(failures(10, 30), vec![9, 19, 29]);
        assert_eq!(failures(1, 1000).len(), 10);
        // Never two in a row below 50 %.
        let f = failures(33, 1000);
        assert_eq!(f.len(), 330);
        assert!(f.windows(2).all(|w| w[1] - w[0] >= 2));
        assert_eq!(failures(250, 3).len(), 3, "above 100 % is 100 %");
    }
}
