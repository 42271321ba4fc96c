//! The demo registry's HTTP face: the Consul HTTP API subset the dashboard and the
//! design's SDK use, with Consul's status codes, bodies and headers (`X-Consul-Index` on
//! reads, JSON bodies, `text/plain` errors).
//!
//! Blocking queries work as in Consul: `?index=N&wait=D` holds the answer until the
//! answer's own index (catalog, checks, one service, one config kind, a KV prefix) passes
//! `N` or `wait` (default 5 m, at most 10 m, plus up to `wait/16` of jitter) runs out;
//! `index=0` or no index answers at once. `?dc=` other than the demo's datacenter is
//! `500 No path to datacenter`, as a Consul agent without that datacenter answers.
//!
//! Every answer is counted per path ([`RequestCounter`]): benchmarks and tests read how
//! many requests a dashboard sends (`DemoSpine::registry_requests`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use super::filter::Filter;
use super::lock;
use super::state::{
    ApiError, KvPut, RegistryState, is_catalog_selector, is_health_selector, parse_go_duration,
};

/// Consul's default `wait`.
const DEFAULT_WAIT: Duration = Duration::from_mins(5);
/// Consul's largest `wait`.
const MAX_WAIT: Duration = Duration::from_mins(10);

/// Shared state of the registry server.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// The registry.
    pub registry: Arc<Mutex<RegistryState>>,
    /// What `/v1/status/leader` answers (`127.0.0.1:PORT`).
    pub leader: String,
    /// Answers sent, per path.
    pub requests: Arc<RequestCounter>,
}

/// Answers the registry sent, per request path (without the query).
#[derive(Debug, Default)]
pub(crate) struct RequestCounter {
    by_path: Mutex<HashMap<String, u64>>,
}

impl RequestCounter {
    fn count(&self, path: &str) {
        let mut map = lock(&self.by_path);
        if let Some(n) = map.get_mut(path) {
            *n += 1;
        } else {
            map.insert(path.to_owned(), 1);
        }
    }

    /// Answers so far, per path (e.g. `/v1/health/state/any`,
    /// `/v1/health/service/identity`).
    #[must_use]
    pub(crate) fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.by_path)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Counts each answer once it is sent (a blocking query counts when it answers).
async fn count_answers(
    State(counter): State<Arc<RequestCounter>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    counter.count(&path);
    response
}

type Params = Query<HashMap<String, String>>;

/// The registry's routes.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let counter = Arc::clone(&state.requests);
    Router::new()
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/datacenters", get(catalog_datacenters))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/connect/{name}", get(health_connect))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/service/register", put(agent_register))
        .route("/v1/agent/service/deregister/{id}", put(agent_deregister))
        .route("/v1/agent/check/pass/{id}", put(agent_check_pass))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/config", put(config_put))
        .route("/v1/config/{kind}", get(config_list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config_get).delete(config_delete),
        )
        .route("/v1/status/leader", get(status_leader))
        .fallback(|| async {
            text_error(&ApiError {
                status: 404,
                message: "404 page not found".into(),
            })
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(counter, count_answers))
}

const ACL_POLICY: HeaderName = HeaderName::from_static("x-consul-default-acl-policy");
const INDEX: HeaderName = HeaderName::from_static("x-consul-index");
const KNOWN_LEADER: HeaderName = HeaderName::from_static("x-consul-knownleader");
const LAST_CONTACT: HeaderName = HeaderName::from_static("x-consul-lastcontact");

/// 200 with a JSON body; `index` adds the blocking-read headers.
fn json_ok(index: Option<u64>, body: Vec<u8>) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(ACL_POLICY, HeaderValue::from_static("allow"));
    if let Some(index) = index {
        h.insert(INDEX, HeaderValue::from(index));
        h.insert(KNOWN_LEADER, HeaderValue::from_static("true"));
        h.insert(LAST_CONTACT, HeaderValue::from_static("0"));
    }
    resp
}

fn text_error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, e.message.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(ACL_POLICY, HeaderValue::from_static("allow"));
    resp
}

fn bool_answer(b: bool) -> Response {
    json_ok(
        None,
        if b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        },
    )
}

/// Parses `?filter=`, checking selectors with `known`.
fn parse_filter(
    params: &HashMap<String, String>,
    known: fn(&str) -> bool,
) -> Result<Option<Filter>, ApiError> {
    let Some(text) = params.get("filter").filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    Filter::parse(text)
        .and_then(|f| f.check_selectors(known).map(|()| f))
        .map(Some)
        .map_err(|e| ApiError {
            status: 400,
            message: format!("Failed to create boolean expression evaluator: {e}"),
        })
}

fn parse_cas(params: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    params
        .get("cas")
        .map(|v| {
            v.parse::<u64>().map_err(|_| ApiError {
                status: 400,
                message: format!("Request decoding failed: invalid cas value {v:?}"),
            })
        })
        .transpose()
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true"))
}

/// `?dc=` naming another datacenter: Consul's answer when it has no route there.
fn check_dc(st: &ApiState, params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.get("dc").filter(|d| !d.is_empty()) {
        Some(dc) if dc != lock(&st.registry).datacenter() => Err(ApiError {
            status: 500,
            message: "No path to datacenter".into(),
        }),
        _ => Ok(()),
    }
}

/// `?index=` and `?wait=` of a blocking query (`None`: answer at once).
fn blocking_params(params: &HashMap<String, String>) -> Result<Option<(u64, Duration)>, ApiError> {
    let wait = match params.get("wait").filter(|w| !w.is_empty()) {
        None => DEFAULT_WAIT,
        Some(w) => parse_go_duration(w).ok_or_else(|| ApiError {
            status: 400,
            message: "Invalid wait time".into(),
        })?,
    };
    let Some(index) = params.get("index").filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let index: u64 = index.parse().map_err(|_| ApiError {
        status: 400,
        message: "Invalid index".into(),
    })?;
    Ok((index > 0).then_some((index, wait.min(MAX_WAIT))))
}

/// Up to `wait/16` more, as Consul adds.
fn jitter(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wait.as_nanos() as u64);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    (wait / 16).mul_f64(unit)
}

/// Checks `?dc=`, then holds a blocking query until `index_of` passes its index or its
/// wait runs out. Errors are Consul's 400/500 answers.
async fn block(
    st: &ApiState,
    params: &HashMap<String, String>,
    index_of: impl Fn(&RegistryState) -> u64,
) -> Result<(), ApiError> {
    check_dc(st, params)?;
    let Some((min, wait)) = blocking_params(params)? else {
        return Ok(());
    };
    let mut waiter = lock(&st.registry).subscribe();
    let deadline = tokio::time::Instant::now() + wait + jitter(wait);
    loop {
        let current = index_of(&lock(&st.registry));
        if current > min {
            return Ok(());
        }
        tokio::select! {
            changed = waiter.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(()),
        }
    }
}

async fn catalog_services(State(st): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let filter = match parse_filter(&params, is_catalog_selector) {
        Ok(f) => f,
        Err(e) => return text_error(&e),
    };
    if let Err(e) = block(&st, &params, RegistryState::catalog_index).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    let map = reg.catalog_services(filter.as_ref());
    match serde_json::to_vec(&map) {
        Ok(body) => json_ok(Some(reg.catalog_index()), body),
        Err(e) => text_error(&ApiError {
            status: 500,
            message: e.to_string(),
        }),
    }
}

async fn catalog_datacenters(State(st): State<Arc<ApiState>>) -> Response {
    let dc = lock(&st.registry).datacenter().to_owned();
    match serde_json::to_vec(&[dc]) {
        Ok(body) => json_ok(None, body),
        Err(e) => text_error(&ApiError {
            status: 500,
            message: e.to_string(),
        }),
    }
}

async fn health_answer(st: &ApiState, name: &str, params: &HashMap<String, String>) -> Response {
    let filter = match parse_filter(params, is_health_selector) {
        Ok(f) => f,
        Err(e) => return text_error(&e),
    };
    let service = name
        .strip_suffix(super::state::PROXY_SUFFIX)
        .unwrap_or(name);
    if let Err(e) = block(st, params, |r| r.service_index(service)).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    match reg.health_service_json(name, flag(params, "passing"), filter.as_ref()) {
        Ok(body) => {
            let mut resp = json_ok(Some(reg.service_index(service)), body);
            resp.headers_mut().insert(
                HeaderName::from_static("x-consul-query-backend"),
                HeaderValue::from_static("blocking-query"),
            );
            resp
        }
        Err(e) => text_error(&e),
    }
}

async fn health_service(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Response {
    health_answer(&st, &name, &params).await
}

async fn health_connect(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Response {
    health_answer(
        &st,
        &format!("{name}{}", super::state::PROXY_SUFFIX),
        &params,
    )
    .await
}

async fn health_state(
    State(st): State<Arc<ApiState>>,
    Path(state): Path<String>,
    Query(params): Params,
) -> Response {
    if let Err(e) = block(&st, &params, RegistryState::checks_index).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    match reg.health_state_json(&state) {
        Ok(body) => json_ok(Some(reg.checks_index()), body),
        Err(e) => text_error(&e),
    }
}

async fn config_get(
    State(st): State<Arc<ApiState>>,
    Path((kind, name)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    if let Err(e) = block(&st, &params, |r| r.config_index(&kind)).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    match reg.config_get_json(&kind, &name) {
        Ok(body) => json_ok(Some(reg.config_index(&kind)), body),
        Err(e) => text_error(&e),
    }
}

async fn config_list(
    State(st): State<Arc<ApiState>>,
    Path(kind): Path<String>,
    Query(params): Params,
) -> Response {
    if let Err(e) = block(&st, &params, |r| r.config_index(&kind)).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    match reg.config_list_json(&kind) {
        Ok(body) => json_ok(Some(reg.config_index(&kind)), body),
        Err(e) => text_error(&e),
    }
}

/// 200 `true` / `false` or the error, after checking `?dc=`.
fn bool_or_error(
    st: &ApiState,
    params: &HashMap<String, String>,
    op: impl FnOnce(&mut RegistryState) -> Result<bool, ApiError>,
) -> Response {
    if let Err(e) = check_dc(st, params) {
        return text_error(&e);
    }
    let result = op(&mut lock(&st.registry));
    match result {
        Ok(b) => bool_answer(b),
        Err(e) => text_error(&e),
    }
}

/// 200 with an empty body (the agent endpoints) or the error.
fn empty_or_error(result: Result<(), ApiError>) -> Response {
    match result {
        Ok(()) => json_ok(None, Vec::new()),
        Err(e) => text_error(&e),
    }
}

async fn agent_services(State(st): State<Arc<ApiState>>) -> Response {
    let result = lock(&st.registry).agent_services_json();
    match result {
        Ok(body) => json_ok(None, body),
        Err(e) => text_error(&e),
    }
}

async fn agent_register(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    let result = lock(&st.registry).agent_register(&body, Instant::now());
    empty_or_error(result)
}

async fn agent_deregister(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let result = lock(&st.registry).agent_deregister(&id);
    empty_or_error(result)
}

async fn agent_check_pass(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let note = params.get("note").cloned().unwrap_or_default();
    let result = lock(&st.registry).agent_check_pass(&id, &note, Instant::now());
    empty_or_error(result)
}

async fn kv_get(
    State(st): State<Arc<ApiState>>,
    Path(key): Path<String>,
    Query(params): Params,
) -> Response {
    let recurse = params.contains_key("recurse");
    if let Err(e) = block(&st, &params, |r| r.kv_index(&key, recurse)).await {
        return text_error(&e);
    }
    let reg = lock(&st.registry);
    let index = reg.kv_index(&key, recurse);
    if let Some(body) = reg.kv_get_json(&key, recurse) {
        json_ok(Some(index), body)
    } else {
        // Consul: 404 with an empty body, and the index.
        let mut resp = StatusCode::NOT_FOUND.into_response();
        let h = resp.headers_mut();
        h.insert(ACL_POLICY, HeaderValue::from_static("allow"));
        h.insert(INDEX, HeaderValue::from(index));
        resp
    }
}

fn parse_u64_param(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| ApiError {
                status: 400,
                message: format!("Invalid {name} value {v:?}"),
            })
        })
        .transpose()
}

async fn kv_put(
    State(st): State<Arc<ApiState>>,
    Path(key): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let opts = match (
        parse_u64_param(&params, "cas"),
        parse_u64_param(&params, "flags"),
    ) {
        (Ok(cas), Ok(flags)) => KvPut {
            cas,
            flags,
            acquire: params.get("acquire").cloned(),
            release: params.get("release").cloned(),
        },
        (Err(e), _) | (_, Err(e)) => return text_error(&e),
    };
    bool_or_error(&st, &params, |r| {
        r.kv_put(&key, &body, &opts, Instant::now())
    })
}

async fn kv_delete(
    State(st): State<Arc<ApiState>>,
    Path(key): Path<String>,
    Query(params): Params,
) -> Response {
    let cas = match parse_u64_param(&params, "cas") {
        Ok(c) => c,
        Err(e) => return text_error(&e),
    };
    let recurse = params.contains_key("recurse");
    bool_or_error(&st, &params, |r| r.kv_delete(&key, recurse, cas))
}

async fn session_create(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    let result = lock(&st.registry).session_create(&body, Instant::now());
    match result {
        Ok(body) => json_ok(None, body),
        Err(e) => text_error(&e),
    }
}

async fn session_renew(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let result = lock(&st.registry).session_renew(&id, Instant::now());
    match result {
        Ok(body) => json_ok(None, body),
        Err(e) => text_error(&e),
    }
}

async fn session_destroy(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let ok = lock(&st.registry).session_destroy(&id, Instant::now());
    bool_answer(ok)
}

/// Ends TTL checks and sessions that were not renewed in time, every `period`.
pub(crate) async fn expiry_loop(registry: Arc<Mutex<RegistryState>>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lock(&registry).expire(Instant::now());
    }
}

async fn config_put(
    State(st): State<Arc<ApiState>>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let cas = match parse_cas(&params) {
        Ok(c) => c,
        Err(e) => return text_error(&e),
    };
    bool_or_error(&st, &params, |r| r.config_put(&body, cas))
}

async fn config_delete(
    State(st): State<Arc<ApiState>>,
    Path((kind, name)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let cas = match parse_cas(&params) {
        Ok(c) => c,
        Err(e) => return text_error(&e),
    };
    if let Err(e) = check_dc(&st, &params) {
        return text_error(&e);
    }
    let result = lock(&st.registry).config_delete(&kind, &name, cas);
    match result {
        Ok(None) => json_ok(None, b"{}".to_vec()),
        Ok(Some(b)) => bool_answer(b),
        Err(e) => text_error(&e),
    }
}

async fn status_leader(State(st): State<Arc<ApiState>>) -> Response {
    match serde_json::to_vec(&st.leader) {
        Ok(body) => json_ok(None, body),
        Err(e) => text_error(&ApiError {
            status: 500,
            message: e.to_string(),
        }),
    }
}
