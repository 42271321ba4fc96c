//! The demo registry's HTTP face: the Consul HTTP API subset the dashboard uses, with
//! Consul's status codes, bodies and headers (`X-Consul-Index` on reads, JSON bodies,
//! `text/plain` errors). Blocking queries are accepted and answered at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use super::filter::Filter;
use super::lock;
use super::state::{ApiError, RegistryState, is_catalog_selector, is_health_selector};

/// Shared state of the registry server.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// The registry.
    pub registry: Arc<Mutex<RegistryState>>,
    /// What `/v1/status/leader` answers (`127.0.0.1:PORT`).
    pub leader: String,
}

type Params = Query<HashMap<String, String>>;

/// The registry's routes.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/connect/{name}", get(health_connect))
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

async fn catalog_services(State(st): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let filter = match parse_filter(&params, is_catalog_selector) {
        Ok(f) => f,
        Err(e) => return text_error(&e),
    };
    let reg = lock(&st.registry);
    let map = reg.catalog_services(filter.as_ref());
    match serde_json::to_vec(&map) {
        Ok(body) => json_ok(Some(reg.index()), body),
        Err(e) => text_error(&ApiError {
            status: 500,
            message: e.to_string(),
        }),
    }
}

fn health_answer(st: &ApiState, name: &str, params: &HashMap<String, String>) -> Response {
    let filter = match parse_filter(params, is_health_selector) {
        Ok(f) => f,
        Err(e) => return text_error(&e),
    };
    let reg = lock(&st.registry);
    match reg.health_service_json(name, flag(params, "passing"), filter.as_ref()) {
        Ok(body) => {
            let mut resp = json_ok(Some(reg.index()), body);
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
    health_answer(&st, &name, &params)
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
}

async fn config_get(
    State(st): State<Arc<ApiState>>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    let reg = lock(&st.registry);
    match reg.config_get_json(&kind, &name) {
        Ok(body) => json_ok(Some(reg.index()), body),
        Err(e) => text_error(&e),
    }
}

async fn config_list(State(st): State<Arc<ApiState>>, Path(kind): Path<String>) -> Response {
    let reg = lock(&st.registry);
    match reg.config_list_json(&kind) {
        Ok(body) => json_ok(Some(reg.index()), body),
        Err(e) => text_error(&e),
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
    let result = lock(&st.registry).config_put(&body, cas);
    match result {
        Ok(b) => bool_answer(b),
        Err(e) => text_error(&e),
    }
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
