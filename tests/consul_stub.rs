//! `ConsulClient` against stub Consul agents on 127.0.0.1 serving the fixture bodies:
//! snapshot assembly, CAS writes (exact request captured), error statuses, timeouts,
//! refused connections, bounded concurrency and the body size limit.

// Test helpers outside #[test] fns may unwrap too (clippy.toml allows it only inside).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use spine_dash::model::types::{
    Health, Instance, RegistrySnapshot, ServiceEntry, Split, SplitConfig,
};
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::{Registry, RegistryError, WriteOutcome};

const TOKEN: &str = "SECRET-TOKEN-123";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/consul/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

/// Serves `app` on a free loopback port; returns the base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A request the stub saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: &'static str,
    path: String,
    query: Option<String>,
    token: Option<String>,
    body: String,
}

#[derive(Clone, Default)]
struct Stub {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn record(
        &self,
        method: &'static str,
        path: String,
        query: Option<String>,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        self.seen.lock().unwrap().push(Seen {
            method,
            path,
            query,
            token: headers
                .get("x-consul-token")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The fixture mesh: catalog, health per service, identity/photo resolvers, identity
/// splitter, identity sidecars, service-defaults (identity http, payment GRPC, photo
/// without a protocol), no proxy-defaults and no driver markers; every request is
/// recorded. `put_answer` is the PUT /v1/config answer.
fn mesh(stub: &Stub, put_answer: (StatusCode, &'static str)) -> Router {
    async fn catalog(State(stub): State<Stub>, headers: HeaderMap) -> Response {
        stub.record("GET", "/v1/catalog/services".into(), None, &headers, b"");
        json(fixture("catalog_services.json"))
    }
    async fn health(
        State(stub): State<Stub>,
        Path(name): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        stub.record(
            "GET",
            format!("/v1/health/service/{name}"),
            None,
            &headers,
            b"",
        );
        match name.as_str() {
            "gateway" | "identity" | "notification" | "payment" | "photo" | "portal" => {
                json(fixture(&format!("health_service_{name}.json")))
            }
            _ => json(b"[]".to_vec()),
        }
    }
    async fn connect(
        State(stub): State<Stub>,
        Path(name): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        stub.record(
            "GET",
            format!("/v1/health/connect/{name}"),
            None,
            &headers,
            b"",
        );
        match name.as_str() {
            "identity" => json(fixture("crafted_health_connect_metrics.json")),
            _ => json(b"[]".to_vec()),
        }
    }
    async fn config(
        State(stub): State<Stub>,
        Path((kind, name)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> Response {
        stub.record(
            "GET",
            format!("/v1/config/{kind}/{name}"),
            None,
            &headers,
            b"",
        );
        match (kind.as_str(), name.as_str()) {
            ("service-resolver", "identity") => {
                json(fixture("config_service_resolver_identity.json"))
            }
            ("service-resolver", "photo") => {
                json(fixture("config_service_resolver_identity_tags.json"))
            }
            ("service-splitter", "identity") => {
                json(fixture("config_service_splitter_identity.json"))
            }
            _ => text(
                StatusCode::NOT_FOUND,
                &format!("Config entry not found for {kind:?} / {name:?}"),
            ),
        }
    }
    async fn config_list(
        State(stub): State<Stub>,
        Path(kind): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        stub.record("GET", format!("/v1/config/{kind}"), None, &headers, b"");
        match kind.as_str() {
            "service-defaults" => json(fixture("crafted_config_list_service_defaults.json")),
            _ => json(b"[]".to_vec()),
        }
    }
    async fn kv(
        State(stub): State<Stub>,
        Path(key): Path<String>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> Response {
        stub.record("GET", format!("/v1/kv/{key}"), query, &headers, b"");
        (StatusCode::NOT_FOUND, [("X-Consul-Index", "1150")], "").into_response()
    }
    let answer = move |State(stub): State<Stub>,
                       RawQuery(query): RawQuery,
                       headers: HeaderMap,
                       body: Bytes| async move {
        stub.record("PUT", "/v1/config".into(), query, &headers, &body);
        let (status, text_body) = put_answer;
        if status == StatusCode::OK {
            json(text_body.as_bytes().to_vec())
        } else {
            text(status, text_body)
        }
    };
    Router::new()
        .route("/v1/catalog/services", get(catalog))
        .route("/v1/health/service/{name}", get(health))
        .route("/v1/health/connect/{name}", get(connect))
        .route("/v1/config/{kind}/{name}", get(config))
        .route("/v1/config/{kind}", get(config_list))
        .route("/v1/kv/{*key}", get(kv))
        .route("/v1/config", put(answer))
        .with_state(stub.clone())
}

fn instance(id: &str, service: &str, version: &str, address: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        address: address.into(),
        port,
        health: Health::Passing,
        check_output: String::new(),
        metrics_url: None,
    }
}

fn service(
    name: &str,
    instances: Vec<Instance>,
    subsets: &[&str],
    split: Option<SplitConfig>,
) -> ServiceEntry {
    ServiceEntry {
        protocol: None,
        name: name.into(),
        instances,
        subsets: subsets.iter().map(|s| (*s).to_owned()).collect(),
        split,
    }
}

/// [`expected_mesh_services`] with the protocols of the fixture's service-defaults and no
/// proxy-defaults: identity `http`, payment `grpc` (lowercased), the rest `tcp`.
fn expected_mesh() -> RegistrySnapshot {
    let mut mesh = expected_mesh_services();
    for s in &mut mesh.services {
        s.protocol = Some(
            match s.name.as_str() {
                "identity" => "http",
                "payment" => "grpc",
                _ => "tcp",
            }
            .into(),
        );
    }
    mesh
}

fn expected_mesh_services() -> RegistrySnapshot {
    let mut v1a = instance("identity-v1-a", "identity", "v1", "10.0.1.11", 8080);
    v1a.metrics_url = Some("http://10.0.1.11:9102/metrics".into());
    let mut v1b = instance("identity-v1-b", "identity", "v1", "10.0.1.12", 8080);
    v1b.metrics_url = Some("http://10.0.1.12:19001/stats/prometheus".into());
    let mut v2b = instance("identity-v2-b", "identity", "v2", "10.0.1.12", 8081);
    v2b.health = Health::Critical;
    v2b.check_output = r#"HTTP GET http://10.0.1.12:8081/health: 503 Service Unavailable Output: {"status":"down","reason":"token signing key not loaded"}"#.into();
    let mut photo2 = instance("photo-2", "photo", "v1", "10.0.2.12", 8080);
    photo2.health = Health::Warning;
    photo2.check_output = r#"HTTP GET http://10.0.2.12:8080/health: 429 Too Many Requests Output: {"status":"overloaded","queue":512}"#.into();
    RegistrySnapshot {
        drivers: Vec::new(),
        services: vec![
            service(
                "gateway",
                vec![instance("gateway-1", "gateway", "v1", "10.0.0.10", 8443)],
                &[],
                None,
            ),
            service(
                "identity",
                vec![
                    v1a,
                    v1b,
                    instance("identity-v2-a", "identity", "v2", "10.0.1.13", 8080),
                    v2b,
                ],
                &["v1", "v2"],
                Some(SplitConfig {
                    split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                    modify_index: 1190,
                }),
            ),
            service(
                "notification",
                vec![instance(
                    "notification-1",
                    "notification",
                    "v1",
                    "10.0.4.11",
                    8080,
                )],
                &[],
                None,
            ),
            service(
                "payment",
                vec![
                    instance("payment-1", "payment", "v1", "10.0.3.11", 8080),
                    instance("payment-2", "payment", "v1", "10.0.3.12", 8080),
                    instance("payment-3", "payment", "v1", "10.0.3.13", 8080),
                ],
                &[],
                None,
            ),
            service(
                "photo",
                vec![
                    instance("photo-1", "photo", "v1", "10.0.2.11", 8080),
                    photo2,
                ],
                &["v1", "v2"],
                None,
            ),
            service(
                "portal",
                vec![instance("portal-1", "portal", "v1", "10.0.5.11", 3000)],
                &[],
                None,
            ),
        ],
    }
}

#[tokio::test]
async fn snapshot_builds_the_mesh() {
    let stub = Stub::default();
    let base = serve(mesh(&stub, (StatusCode::OK, "true"))).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_token(Some(TOKEN.into()));
    assert_eq!(client.snapshot().await.unwrap(), expected_mesh());

    let seen = stub.seen();
    // 1 catalog + 6 × (health, resolver, splitter) + a connect lookup per service whose
    // instances lack metrics_url (all 6 here) + service-defaults, proxy-defaults and the
    // driver markers once each; never the sidecars or `consul`.
    assert_eq!(seen.len(), 1 + 6 * 3 + 6 + 3, "{seen:#?}");
    for once in [
        "/v1/config/service-defaults",
        "/v1/config/proxy-defaults/global",
        "/v1/kv/spine-dash/drivers/",
    ] {
        assert_eq!(seen.iter().filter(|s| s.path == once).count(), 1, "{once}");
    }
    assert!(seen.iter().all(|s| s.token.as_deref() == Some(TOKEN)));
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("sidecar") || s.path.ends_with("/consul"))
    );
}

#[tokio::test]
async fn cas_write_sends_the_exact_entry() {
    let stub = Stub::default();
    let base = serve(mesh(&stub, (StatusCode::OK, "true"))).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_token(Some(TOKEN.into()));
    let split = Split::from_pairs([("v1", 7000), ("v2", 3000)]);
    assert_eq!(
        client.write_split("identity", &split, 1190).await,
        Ok(WriteOutcome::Applied)
    );
    let seen = stub.seen();
    // Read first (read-modify-write), then the CAS write of the whole entry.
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (seen[0].method, seen[0].path.as_str()),
        ("GET", "/v1/config/service-splitter/identity")
    );
    let put = Seen {
        body: String::new(),
        ..seen[1].clone()
    };
    assert_eq!(
        put,
        Seen {
            method: "PUT",
            path: "/v1/config".into(),
            query: Some("cas=1190".into()),
            token: Some(TOKEN.into()),
            body: String::new(),
        }
    );
    assert_json(
        &seen[1].body,
        r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":70,"ServiceSubset":"v1"},{"Weight":30,"ServiceSubset":"v2"}]}"#,
    );
}

/// Compares two JSON texts as values (key order does not matter, every field does).
fn assert_json(actual: &str, expected: &str) {
    let a: serde_json::Value = serde_json::from_str(actual).unwrap();
    let e: serde_json::Value = serde_json::from_str(expected).unwrap();
    assert_eq!(a, e, "actual: {actual}");
}

#[tokio::test]
async fn splitter_write_keeps_every_field_it_does_not_own() {
    let stub = Stub::default();
    let app = Router::new()
        .route(
            "/v1/config/service-splitter/{name}",
            get(|| async { json(fixture("crafted_splitter_headers_meta.json")) }),
        )
        .merge(mesh(&stub, (StatusCode::OK, "true")));
    let base = serve(app).await;
    let client = ConsulClient::new(&base).unwrap();
    // v1 and v2 change weight, the cross-service split to "payment" goes, v3 is new.
    let split = Split::from_pairs([("v1", 5000), ("v2", 2500), ("v3", 2500)]);
    assert_eq!(
        client.write_split("identity", &split, 2210).await,
        Ok(WriteOutcome::Applied)
    );
    let put = stub.seen().into_iter().find(|s| s.method == "PUT").unwrap();
    assert_json(
        &put.body,
        &String::from_utf8(fixture("crafted_splitter_headers_meta_put.json")).unwrap(),
    );
    // A stale index is a conflict without a write; theirs is the entry the read found
    // (the cross-service split kept as "payment/v1").
    let before = stub.seen().len();
    assert_eq!(
        client.write_split("identity", &split, 2000).await,
        Ok(WriteOutcome::Conflict {
            theirs: Some(SplitConfig {
                split: Split::from_pairs([("v1", 6000), ("v2", 3000), ("payment/v1", 1000)]),
                modify_index: 2210,
            })
        })
    );
    assert!(stub.seen()[before..].iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn cas_false_is_a_conflict() {
    let stub = Stub::default();
    let base = serve(mesh(&stub, (StatusCode::OK, "false"))).await;
    let client = ConsulClient::new(&base).unwrap();
    let split = Split::from_pairs([("v1", 6667), ("v2", 3333)]);
    // The read saw 1190, but a colleague wrote before our PUT: `false`, then one more GET
    // brings theirs (this stub still serves the fixture's 80/20 at 1190).
    assert_eq!(
        client.write_split("identity", &split, 1190).await,
        Ok(WriteOutcome::Conflict {
            theirs: Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1190,
            })
        })
    );
    let seen = stub.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[1].token, None);
    assert_eq!(
        (seen[2].method, seen[2].path.as_str()),
        ("GET", "/v1/config/service-splitter/identity")
    );
    assert_json(
        &seen[1].body,
        r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":66.67,"ServiceSubset":"v1"},{"Weight":33.33,"ServiceSubset":"v2"}]}"#,
    );
}

#[tokio::test]
async fn create_if_absent_uses_cas_zero() {
    let stub = Stub::default();
    let base = serve(mesh(&stub, (StatusCode::OK, "true"))).await;
    let client = ConsulClient::new(&base).unwrap();
    let split = Split::from_pairs([("v1", 10_000), ("v2", 0)]);
    assert_eq!(
        client.write_split("photo", &split, 0).await,
        Ok(WriteOutcome::Applied)
    );
    let seen = stub.seen();
    assert_eq!(
        seen[0].path, "/v1/config/service-splitter/photo",
        "404: none yet"
    );
    assert_eq!(seen[1].query.as_deref(), Some("cas=0"));
    assert_eq!(
        seen[1].body,
        r#"{"Kind":"service-splitter","Name":"photo","Splits":[{"Weight":100,"ServiceSubset":"v1"},{"Weight":0,"ServiceSubset":"v2"}]}"#
    );
}

#[tokio::test]
async fn invalid_split_is_refused_locally() {
    let stub = Stub::default();
    let base = serve(mesh(&stub, (StatusCode::OK, "true"))).await;
    let client = ConsulClient::new(&base).unwrap();
    let split = Split::from_pairs([("v1", 8000), ("v2", 1999)]);
    assert_eq!(
        client.write_split("identity", &split, 1190).await,
        Err(RegistryError::Invalid(
            "split for \"identity\" not sent: the sum of all split weights must be 100, not 99.99"
                .into()
        ))
    );
    assert_eq!(
        client
            .write_split("identity", &Split::default(), 1190)
            .await,
        Err(RegistryError::Invalid(
            "split for \"identity\" not sent: no splits configured".into()
        ))
    );
    assert_eq!(stub.seen(), []);
}

#[tokio::test]
async fn weights_500_passes_consul_text_through() {
    let stub = Stub::default();
    let body = "the sum of all split weights must be 100, not 90.000000";
    let base = serve(mesh(&stub, (StatusCode::INTERNAL_SERVER_ERROR, body))).await;
    let client = ConsulClient::new(&base).unwrap();
    // A valid split locally; the stub plays a server that disagrees.
    let err = client
        .write_split(
            "identity",
            &Split::from_pairs([("v1", 5000), ("v2", 5000)]),
            1190,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::Http {
            status: 500,
            body: body.into(),
            hint: Some(
                "the weights must add up to exactly 100 (100.00 %; 99.99 and 100.01 both fail)"
                    .into()
            )
        }
    );
    assert!(
        err.to_string().contains("sum of all split weights"),
        "{err}"
    );
}

#[tokio::test]
async fn permission_denied_403_has_a_hint() {
    let stub = Stub::default();
    let body = "Permission denied: token with AccessorID 'e6a7c2d4-5b1f-4a3e-9c8d-2f7b6a1e0d94' lacks permission 'service:write' on \"identity\"";
    let base = serve(mesh(&stub, (StatusCode::FORBIDDEN, body))).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_token(Some(TOKEN.into()));
    let err = client
        .write_split(
            "identity",
            &Split::from_pairs([("v1", 5000), ("v2", 5000)]),
            1190,
        )
        .await
        .unwrap_err();
    let RegistryError::Http {
        status: 403,
        body: shown,
        hint: Some(hint),
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(shown, body);
    assert!(hint.contains("'service:write' on \"identity\""), "{hint}");
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn acl_not_found_on_read_fails_the_snapshot() {
    let app = Router::new().route(
        "/v1/catalog/services",
        get(|| async { text(StatusCode::FORBIDDEN, "ACL not found") }),
    );
    let base = serve(app).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_token(Some(TOKEN.into()));
    let err = client.snapshot().await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Http {
            status: 403,
            body: "ACL not found".into(),
            hint: Some(
                "the ACL token is unknown to Consul: check the configured token (CONSUL_HTTP_TOKEN)".into()
            ),
        }
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = ConsulClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_token(Some(TOKEN.into()))
        .with_timeouts(Duration::from_secs(2), Duration::from_millis(300))
        .unwrap();
    let err = client.snapshot().await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Transport {
            message: "no complete answer within 300 ms".into(),
            url: format!("http://{addr}/v1/catalog/services"),
        }
    );
    assert_eq!(
        err.to_string(),
        format!("no complete answer within 300 ms (http://{addr}/v1/catalog/services)")
    );
}

#[tokio::test]
async fn connection_refused_never_shows_the_token() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // dropped: nothing listens on `port` now
    let client = ConsulClient::new(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .with_token(Some(TOKEN.into()));
    let err = client.snapshot().await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Transport {
            message: "connection refused".into(),
            url: format!("http://127.0.0.1:{port}/v1/catalog/services"),
        }
    );
    let err = client
        .write_split("identity", &Split::from_pairs([("v1", 10_000)]), 7)
        .await
        .unwrap_err();
    // The write reads the stored entry first (read-modify-write): that read is refused.
    assert_eq!(
        err.to_string(),
        format!("connection refused (http://127.0.0.1:{port}/v1/config/service-splitter/identity)")
    );
    for shown in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

#[tokio::test]
async fn snapshot_keeps_at_most_8_requests_in_flight() {
    #[derive(Clone, Default)]
    struct Gauge {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
        total: Arc<AtomicUsize>,
    }
    async fn slow(State(g): State<Gauge>) -> Response {
        let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(n, Ordering::SeqCst);
        g.total.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        g.now.fetch_sub(1, Ordering::SeqCst);
        text(StatusCode::NOT_FOUND, "Config entry not found")
    }
    async fn empty_health(State(g): State<Gauge>) -> Response {
        let _ = slow(State(g)).await;
        json(b"[]".to_vec())
    }
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i:02}")).collect();
    let catalog = serde_json::to_vec(
        &names
            .iter()
            .map(|n| (n.clone(), Vec::<String>::new()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    let gauge = Gauge::default();
    let app = Router::new()
        .route(
            "/v1/catalog/services",
            get(move || async move { json(catalog) }),
        )
        .route("/v1/health/service/{name}", get(empty_health))
        .route("/v1/config/{kind}/{name}", get(slow))
        .with_state(gauge.clone());
    let base = serve(app).await;
    let snapshot = ConsulClient::new(&base).unwrap().snapshot().await.unwrap();
    let got: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(got, names);
    assert!(
        snapshot
            .services
            .iter()
            .all(|s| s.instances.is_empty() && s.split.is_none())
    );
    // 20 × (health, resolver, splitter), plus proxy-defaults/global (the other mesh-wide
    // reads have no route here: 404 at once).
    assert_eq!(gauge.total.load(Ordering::SeqCst), 60 + 1);
    let max = gauge.max.load(Ordering::SeqCst);
    assert!((2..=8).contains(&max), "max in flight {max}");
}

#[tokio::test]
async fn a_bad_body_is_a_decode_error() {
    let app = Router::new()
        .route(
            "/v1/catalog/services",
            get(|| async { json(br#"{"identity":["v1"]}"#.to_vec()) }),
        )
        .route(
            "/v1/health/service/{name}",
            get(|| async { json(b"<html>oops</html>".to_vec()) }),
        );
    let base = serve(app).await;
    let err = ConsulClient::new(&base)
        .unwrap()
        .snapshot()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Decode(m) if m.starts_with("health/service: expected value")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_endless_body_is_cut_off() {
    // A chunked answer that never ends: the client must stop at its limit, not buffer on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("400\r\n{}\r\n", " ".repeat(0x400));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let client = ConsulClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_max_body_bytes(64 * 1024);
    let err = client.snapshot().await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Decode(format!(
            "answer larger than 64 KiB, cut off (http://{addr}/v1/catalog/services)"
        ))
    );
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_reading() {
    let app = Router::new().route(
        "/v1/catalog/services",
        get(|| async { json(vec![b' '; 5000]) }),
    );
    let base = serve(app).await;
    let err = ConsulClient::new(&base)
        .unwrap()
        .with_max_body_bytes(1000)
        .snapshot()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::Decode(format!(
            "answer larger than 1000 bytes, cut off ({base}/v1/catalog/services)"
        ))
    );
}

#[test]
fn bad_addresses_are_invalid() {
    for bad in [
        "consul:8500",
        "ftp://127.0.0.1:8500",
        "http://",
        "not a url",
    ] {
        let err = ConsulClient::new(bad).unwrap_err();
        assert!(
            matches!(&err, RegistryError::Invalid(m) if m.starts_with("invalid Consul address")),
            "{bad}: {err:?}"
        );
    }
}

// ---- every error of API brief §1.9, through a stub server ---------------------------------

/// A raw HTTP/1.1 response fixture: (status code, content type, body).
fn raw_response(name: &str) -> (u16, Option<String>, Vec<u8>) {
    let raw = fixture(name);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .find_map(|t| t.parse().ok().filter(|c| (100..600).contains(c)))
        .unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_owned());
    (status, content_type, raw[split + 4..].to_vec())
}

/// A stub answering every request with the fixture's status, content type and body.
async fn serve_raw(name: &'static str) -> String {
    let answer = move || async move {
        let (status, content_type, body) = raw_response(name);
        let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(ct) = content_type {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        resp
    };
    serve(Router::new().fallback(answer)).await
}

#[tokio::test]
async fn every_error_fixture_reaches_the_caller_with_its_text_and_a_hint() {
    let files = [
        (
            "error_acl_403_acl_not_found.txt",
            403,
            "ACL not found",
            "token is unknown",
        ),
        (
            "error_acl_403_permission_denied.txt",
            403,
            "lacks permission 'service:write' on \"identity\"",
            "service \"identity\" { policy = \"write\" }",
        ),
        (
            "error_config_404_not_found.txt",
            404,
            "Config entry not found",
            "does not exist",
        ),
        (
            "error_config_bad_json_400.txt",
            400,
            "Request decoding failed: unexpected EOF",
            "could not decode",
        ),
        ("error_invalid_index_400.txt", 400, "Invalid index", "index"),
        (
            "error_invalid_wait_400.txt",
            400,
            "Invalid wait time",
            "at most 10m",
        ),
        ("error_kv_404.txt", 404, "", "key does not exist"),
        (
            "error_rate_limited_429.txt",
            429,
            "rate limit exceeded",
            "retry later",
        ),
        (
            "error_rate_limited_write_503.txt",
            503,
            "can only be performed by the leader",
            "retry later",
        ),
        (
            "error_splitter_protocol_tcp_500.txt",
            500,
            "uses a protocol \"tcp\"",
            "L7 protocol",
        ),
        (
            "error_splitter_unknown_subset_500.txt",
            500,
            "does not have a subset named \"v3\"",
            "service-resolver's Subsets",
        ),
        (
            "error_splitter_weights_500.txt",
            500,
            "must be 100, not 90.000000",
            "exactly 100",
        ),
    ];
    // Every error file of the fixture folder is covered.
    let dir = format!("{}/tests/fixtures/consul", env!("CARGO_MANIFEST_DIR"));
    let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("error_"))
        .collect();
    let covered: std::collections::BTreeSet<String> =
        files.iter().map(|f| f.0.to_owned()).collect();
    assert_eq!(on_disk, covered);
    for (file, status, text, hint_part) in files {
        let base = serve_raw(file).await;
        let client = ConsulClient::new(&base)
            .unwrap()
            .with_token(Some(TOKEN.into()));
        // A read (snapshot) and a write (splitter CAS) both carry the error through.
        let read = client.snapshot().await.unwrap_err();
        let write = client
            .write_split("identity", &Split::from_pairs([("v1", 10_000)]), 0)
            .await
            .unwrap_err();
        for err in [read, write] {
            let RegistryError::Http {
                status: got,
                body,
                hint: Some(hint),
            } = &err
            else {
                panic!("{file}: {err:?}")
            };
            assert_eq!(*got, status, "{file}");
            assert!(body.contains(text), "{file}: {body}");
            assert!(hint.contains(hint_part), "{file}: {hint}");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("HTTP {status}: ")), "{shown}");
            assert!(shown.contains(hint.as_str()) && !shown.contains(TOKEN));
        }
    }
}

// ---- blocking queries on bulk endpoints ------------------------------------------------

use std::collections::HashMap;

use spine_dash::registry::{FeedUpdate, FollowContext};
use tokio::sync::{Notify, mpsc, watch};

/// One instance of the synthetic mesh.
#[derive(Clone)]
struct SynthInstance {
    id: String,
    service: String,
    address: String,
    status: &'static str,
    check_create: u64,
}

/// A Consul stand-in with `n` services and per-answer indexes, answering blocking
/// queries; it counts the answers it sends per path.
#[derive(Default)]
struct Synth {
    instances: Vec<SynthInstance>,
    index: u64,
    catalog_index: u64,
    checks_index: u64,
    splitter_index: u64,
    split_v1: u32,
    answered: Vec<String>,
}

#[derive(Clone)]
struct SynthStub {
    state: Arc<Mutex<Synth>>,
    changes: Arc<watch::Sender<u64>>,
}

impl SynthStub {
    fn new(services: usize) -> Self {
        let mut s = Synth {
            index: 10,
            catalog_index: 10,
            checks_index: 10,
            splitter_index: 10,
            split_v1: 80,
            ..Synth::default()
        };
        for i in 0..services {
            s.instances.push(SynthInstance {
                id: format!("svc-{i}-1"),
                service: format!("svc-{i}"),
                address: "10.0.0.1".into(),
                status: "passing",
                check_create: 10,
            });
        }
        Self {
            state: Arc::new(Mutex::new(s)),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Synth)) {
        let mut s = self.state.lock().unwrap();
        s.index += 1;
        f(&mut s);
        let i = s.index;
        drop(s);
        self.changes.send_replace(i);
    }

    fn answered(&self) -> Vec<String> {
        self.state.lock().unwrap().answered.clone()
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/v1/catalog/services", get(synth_catalog))
            .route("/v1/health/state/any", get(synth_checks))
            .route("/v1/config/service-resolver", get(synth_resolvers))
            .route("/v1/config/service-splitter", get(synth_splitters))
            .route("/v1/config/service-defaults", get(synth_defaults))
            .route("/v1/config/proxy-defaults", get(synth_proxy_defaults))
            .route("/v1/kv/spine-dash/drivers/", get(synth_drivers))
            .route("/v1/health/service/{name}", get(synth_health))
            .route("/v1/config/{kind}/{name}", get(synth_config_entry))
            .with_state(self.clone())
    }
}

type Q = axum::extract::Query<HashMap<String, String>>;

/// Holds a blocking query until `index_of` passes `?index=` or `?wait=` runs out, then
/// answers `body_of` with `X-Consul-Index`.
async fn synth_answer(
    stub: &SynthStub,
    q: &HashMap<String, String>,
    path: &str,
    index_of: fn(&Synth) -> u64,
    body_of: fn(&Synth) -> serde_json::Value,
) -> Response {
    if let Some(min) = q.get("index").map(|i| i.parse::<u64>().unwrap()) {
        let wait = q.get("wait").map_or(Duration::from_mins(5), |w| {
            w.strip_suffix("ms").map_or_else(
                || Duration::from_secs(w.trim_end_matches('s').parse().unwrap()),
                |ms| Duration::from_millis(ms.parse().unwrap()),
            )
        });
        let mut rx = stub.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        while index_of(&stub.state.lock().unwrap()) <= min {
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    let mut s = stub.state.lock().unwrap();
    s.answered.push(path.to_owned());
    let body = serde_json::to_vec(&body_of(&s)).unwrap();
    ([("X-Consul-Index", index_of(&s).to_string())], json(body)).into_response()
}

async fn synth_catalog(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(
        &stub,
        &q,
        "catalog",
        |s| s.catalog_index,
        |s| {
            let mut map = serde_json::Map::new();
            map.insert("consul".into(), serde_json::json!([]));
            for i in &s.instances {
                map.insert(i.service.clone(), serde_json::json!(["v1"]));
            }
            serde_json::Value::Object(map)
        },
    )
    .await
}

fn synth_check(i: &SynthInstance) -> serde_json::Value {
    serde_json::json!({"Node": "node-1", "CheckID": format!("service:{}", i.id),
        "Name": "http", "Status": i.status, "Output": format!("HTTP GET: {}", i.status),
        "ServiceID": i.id, "ServiceName": i.service, "CreateIndex": i.check_create})
}

async fn synth_checks(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(
        &stub,
        &q,
        "checks",
        |s| s.checks_index,
        |s| {
            let mut list = vec![
                serde_json::json!({"Node": "node-1", "CheckID": "serfHealth",
            "Status": "passing", "ServiceID": "", "ServiceName": "", "CreateIndex": 1}),
            ];
            list.extend(s.instances.iter().map(synth_check));
            serde_json::Value::Array(list)
        },
    )
    .await
}

async fn synth_resolvers(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(
        &stub,
        &q,
        "resolvers",
        |_| 10,
        |_| {
            serde_json::json!([{"Kind": "service-resolver", "Name": "svc-0",
        "Subsets": {"v1": {}, "v2": {}}, "ModifyIndex": 10}])
        },
    )
    .await
}

async fn synth_splitters(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(
        &stub,
        &q,
        "splitters",
        |s| s.splitter_index,
        |s| {
            serde_json::json!([{"Kind": "service-splitter", "Name": "svc-0", "Splits": [
            {"Weight": s.split_v1, "ServiceSubset": "v1"},
            {"Weight": 100 - s.split_v1, "ServiceSubset": "v2"}],
            "CreateIndex": 10, "ModifyIndex": s.splitter_index}])
        },
    )
    .await
}

/// svc-0 speaks http; nothing else has service-defaults.
async fn synth_defaults(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(
        &stub,
        &q,
        "service-defaults",
        |_| 10,
        |_| serde_json::json!([{"Kind": "service-defaults", "Name": "svc-0", "Protocol": "http", "ModifyIndex": 10}]),
    )
    .await
}

/// The mesh's default is grpc (the list the follower blocks on).
async fn synth_proxy_defaults(
    State(stub): State<SynthStub>,
    axum::extract::Query(q): Q,
) -> Response {
    synth_answer(
        &stub,
        &q,
        "proxy-defaults",
        |_| 10,
        |_| serde_json::json!([{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}, "ModifyIndex": 10}]),
    )
    .await
}

/// No driver markers.
async fn synth_drivers(State(stub): State<SynthStub>, axum::extract::Query(q): Q) -> Response {
    synth_answer(&stub, &q, "drivers", |_| 10, |_| serde_json::json!([])).await
}

async fn synth_health(State(stub): State<SynthStub>, Path(name): Path<String>) -> Response {
    let mut s = stub.state.lock().unwrap();
    s.answered.push(format!("health/service/{name}"));
    let entries: Vec<serde_json::Value> = s
        .instances
        .iter()
        .filter(|i| i.service == name)
        .map(|i| {
            serde_json::json!({"Node": {"Node": "node-1", "Address": "10.0.0.1"},
                "Service": {"ID": i.id, "Service": i.service, "Tags": ["v1"], "Address": i.address,
                    "Port": 8080, "Meta": {"version": "v1",
                        "metrics_url": format!("http://{}:19000/stats/prometheus", i.id)}},
                "Checks": [synth_check(i)]})
        })
        .collect();
    let index = s.index;
    drop(s);
    (
        [("X-Consul-Index", index.to_string())],
        json(serde_json::to_vec(&entries).unwrap()),
    )
        .into_response()
}

/// What a poll reads per service: no entry (404) in this mesh.
async fn synth_config_entry(
    State(stub): State<SynthStub>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    stub.state
        .lock()
        .unwrap()
        .answered
        .push(format!("config/{kind}/{name}"));
    text(
        StatusCode::NOT_FOUND,
        &format!("Config entry not found for {kind:?} / {name:?}"),
    )
}

/// The next snapshot `follow` reports (skipping "nothing new"); panics on an error or
/// after 20 s.
async fn next_snapshot(rx: &mut mpsc::Receiver<FeedUpdate>) -> RegistrySnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let update = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a snapshot within 20 s")
            .expect("follow running");
        match update.result {
            Ok(Some(s)) => return s,
            Ok(None) => {}
            Err(e) => panic!("follow failed: {e}"),
        }
    }
}

/// Snapshots until `done` holds.
async fn snapshot_where(
    rx: &mut mpsc::Receiver<FeedUpdate>,
    done: impl Fn(&RegistrySnapshot) -> bool,
) -> RegistrySnapshot {
    loop {
        let s = next_snapshot(rx).await;
        if done(&s) {
            return s;
        }
    }
}

fn instance_of<'a>(s: &'a RegistrySnapshot, id: &str) -> Option<&'a Instance> {
    s.services
        .iter()
        .flat_map(|e| e.instances.iter())
        .find(|i| i.id == id)
}

/// Answers the stub sent while `change` took effect and the follow loop settled.
async fn requests_for(
    stub: &SynthStub,
    rx: &mut mpsc::Receiver<FeedUpdate>,
    change: impl FnOnce(&mut Synth),
    done: impl Fn(&RegistrySnapshot) -> bool,
) -> Vec<String> {
    let before = stub.answered().len();
    stub.change(change);
    snapshot_where(rx, done).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stub.answered()[before..].to_vec()
}

#[derive(Debug, PartialEq, Eq)]
struct Counts {
    initial: usize,
    polling_snapshot: usize,
    health_change: usize,
    split_change: usize,
    new_instance: usize,
    address_only: usize,
}

async fn measure(services: usize) -> Counts {
    let stub = SynthStub::new(services);
    let base = serve(stub.router()).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_blocking_wait(Duration::from_secs(5));
    // What one poll costs, for comparison.
    client.snapshot().await.unwrap();
    let polling_snapshot = stub.answered().len();
    let (tx, mut rx) = mpsc::channel(64);
    let ctx = FollowContext {
        interval: Duration::from_millis(20),
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let follower = client.clone();
    let task = tokio::spawn(async move { follower.follow(ctx).await });
    let first = next_snapshot(&mut rx).await;
    assert_eq!(first.services.len(), services);
    assert_eq!(first.services[0].split.as_ref().unwrap().modify_index, 10);
    assert_eq!(first.services[0].protocol.as_deref(), Some("http"));
    assert_eq!(first.services[1].protocol.as_deref(), Some("grpc"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let initial = stub.answered().len() - polling_snapshot;

    let health = requests_for(
        &stub,
        &mut rx,
        |s| {
            s.instances[3].status = "critical";
            s.checks_index = s.index;
        },
        |snap| instance_of(snap, "svc-3-1").unwrap().health == Health::Critical,
    )
    .await;
    let split = requests_for(
        &stub,
        &mut rx,
        |s| {
            s.split_v1 = 50;
            s.splitter_index = s.index;
        },
        |snap| {
            snap.services[0]
                .split
                .as_ref()
                .unwrap()
                .split
                .weight_of("v1")
                == Some(5000)
        },
    )
    .await;
    let new_instance = requests_for(
        &stub,
        &mut rx,
        |s| {
            s.instances.push(SynthInstance {
                id: "svc-5-2".into(),
                service: "svc-5".into(),
                address: "10.0.0.2".into(),
                status: "passing",
                check_create: s.index,
            });
            s.catalog_index = s.index;
            s.checks_index = s.index;
        },
        |snap| instance_of(snap, "svc-5-2").is_some(),
    )
    .await;
    let address_only = requests_for(
        &stub,
        &mut rx,
        |s| {
            s.instances[7].address = "10.0.0.7".into();
            s.catalog_index = s.index;
        },
        |snap| instance_of(snap, "svc-7-1").unwrap().address == "10.0.0.7",
    )
    .await;
    task.abort();
    eprintln!(
        "{services} services: health change {health:?}, split change {split:?}, new instance {new_instance:?}, address-only change {} answers",
        address_only.len()
    );
    Counts {
        initial,
        polling_snapshot,
        health_change: health.len(),
        split_change: split.len(),
        new_instance: new_instance.len(),
        address_only: address_only.len(),
    }
}

#[tokio::test]
async fn blocking_follow_requests_per_refresh_do_not_grow_with_services() {
    let small = measure(10).await;
    let large = measure(200).await;
    eprintln!("requests per refresh: 10 services {small:?}; 200 services {large:?}");
    // A health change is one answer of /v1/health/state/any, a split change one answer of
    // the splitter list: nothing per service.
    assert_eq!((small.health_change, large.health_change), (1, 1));
    assert_eq!((small.split_change, large.split_change), (1, 1));
    // A new instance: the catalog, the checks and that one service's instances.
    assert_eq!((small.new_instance, large.new_instance), (3, 3));
    // Start: 7 bulk reads (catalog, checks, resolvers, splitters, service-defaults,
    // proxy-defaults, driver markers) plus one read per service (once).
    assert_eq!(small.initial, 7 + 10);
    assert_eq!(large.initial, 7 + 200);
    // Polling would cost 1 + 3 per service + the 3 mesh-wide reads for every refresh.
    assert_eq!(small.polling_snapshot, 1 + 3 * 10 + 3);
    assert_eq!(large.polling_snapshot, 1 + 3 * 200 + 3);
    // A change no check explains falls back to reading every service, once.
    assert_eq!(small.address_only, 1 + 10);
    assert_eq!(large.address_only, 1 + 200);
}

/// The catalog answers a script (index, body or an error); the other bulk reads answer
/// once and then block until their wait runs out. Records the `index` of each catalog query.
#[tokio::test]
async fn blocking_index_rules_and_backoff_follow_the_fixture_sequence() {
    // blocking_sequence_health_identity.jsonl, played on the catalog query.
    type Step = (u16, Option<u64>, &'static str);
    type SeenQuery = (Option<String>, tokio::time::Instant);
    #[derive(Clone)]
    struct Scripted {
        script: Arc<Mutex<std::collections::VecDeque<Step>>>,
        seen: Arc<Mutex<Vec<SeenQuery>>>,
    }
    async fn catalog(State(st): State<Scripted>, axum::extract::Query(q): Q) -> Response {
        st.seen
            .lock()
            .unwrap()
            .push((q.get("index").cloned(), tokio::time::Instant::now()));
        let next = st.script.lock().unwrap().pop_front();
        let Some((status, index, body)) = next else {
            tokio::time::sleep(Duration::from_mins(1)).await;
            return json(b"{}".to_vec());
        };
        if status != 200 {
            return text(StatusCode::from_u16(status).unwrap(), body);
        }
        (
            [("X-Consul-Index", index.unwrap().to_string())],
            json(body.as_bytes().to_vec()),
        )
            .into_response()
    }
    async fn quiet(axum::extract::Query(q): Q) -> Response {
        if q.contains_key("index") {
            tokio::time::sleep(Duration::from_mins(1)).await;
        }
        ([("X-Consul-Index", "5")], json(b"[]".to_vec())).into_response()
    }
    /// Consul's "none here": 404 with the index (a missing entry or an empty KV prefix).
    async fn quiet_404(axum::extract::Query(q): Q) -> Response {
        if q.contains_key("index") {
            tokio::time::sleep(Duration::from_mins(1)).await;
        }
        (StatusCode::NOT_FOUND, [("X-Consul-Index", "5")], "").into_response()
    }
    async fn health() -> Response {
        json(br#"[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"identity-1","Service":"identity","Port":1,"Meta":{"metrics_url":"http://x/m"}},"Checks":[]}]"#.to_vec())
    }
    let script: Vec<Step> = vec![
        (200, Some(1187), r#"{"identity":["v1"]}"#),
        (200, Some(1187), r#"{"identity":["v1"]}"#), // wait expired, nothing new
        (200, Some(1196), r#"{"identity":["v1"],"photo":["v1"]}"#),
        (200, Some(1142), r#"{"identity":["v1"],"photo":["v1"]}"#), // backwards: reset to 0
        (200, Some(1142), r#"{"identity":["v1"],"photo":["v1"]}"#),
        (500, None, "No cluster leader"),
        (
            200,
            Some(1200),
            r#"{"identity":["v1"],"payment":["v1"],"photo":["v1"]}"#,
        ),
    ];
    let st = Scripted {
        script: Arc::new(Mutex::new(script.into())),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/catalog/services", get(catalog))
        .route("/v1/health/state/any", get(quiet))
        .route("/v1/config/service-resolver", get(quiet))
        .route("/v1/config/service-splitter", get(quiet))
        .route("/v1/config/service-defaults", get(quiet))
        .route("/v1/config/proxy-defaults/global", get(quiet_404))
        .route("/v1/kv/spine-dash/drivers/", get(quiet_404))
        .route("/v1/health/service/{name}", get(health))
        .with_state(st.clone());
    let base = serve(app).await;
    let client = ConsulClient::new(&base)
        .unwrap()
        .with_blocking_wait(Duration::from_secs(30));
    let (tx, mut rx) = mpsc::channel(64);
    let interval = Duration::from_millis(200);
    let ctx = FollowContext {
        interval,
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let task = tokio::spawn(async move { client.follow(ctx).await });
    let mut results = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while results.iter().filter(|r| *r == "snapshot").count() < 3 {
        let update = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("updates within 20 s")
            .unwrap();
        // The promise: wait + wait/16 + the request timeout.
        assert_eq!(
            update.next_within,
            Duration::from_secs(30) + Duration::from_secs(30) / 16 + Duration::from_secs(10)
        );
        results.push(match update.result {
            Ok(Some(_)) => "snapshot".to_owned(),
            Ok(None) => "unchanged".to_owned(),
            Err(e) => format!("error: {e}"),
        });
    }
    while st.seen.lock().unwrap().len() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "8 catalog queries");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let seen = st.seen.lock().unwrap().clone();
    let indexes: Vec<Option<&str>> = seen.iter().map(|(i, _)| i.as_deref()).collect();
    assert_eq!(
        indexes[..8],
        [
            None,         // first read: index 0 does not block
            Some("1187"), // block on the answer's index
            Some("1187"), // nothing new: same index again
            Some("1196"),
            None,         // went backwards: reset to 0, one read without blocking
            Some("1142"), // then block on the new index
            Some("1142"), // the error keeps the index
            Some("1200"),
        ]
    );
    // The retry after "No cluster leader" waited the backoff (base = the interval, jitter
    // takes at most half off); the measured pause is reported.
    let pause = seen[6].1 - seen[5].1;
    eprintln!("retry after the 500 came {pause:?} later");
    assert!(pause >= interval / 2, "{pause:?}");
    assert_eq!(results[0], "snapshot");
    assert!(results.contains(&"unchanged".to_owned()), "{results:?}");
    let error = results.iter().find(|r| r.starts_with("error")).unwrap();
    assert!(
        error.contains("HTTP 500: No cluster leader") && error.contains("leader"),
        "{error}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "snapshot").count(),
        3,
        "a new snapshot for 1187, 1196 and 1200 only: {results:?}"
    );
}

// ---- TLS and mTLS ---------------------------------------------------------------------------

mod tls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use spine_dash::config::consul::{ConsulEnv, ConsulSettings};
    use tokio_rustls::rustls;

    pub struct Pki {
        pub ca_pem: String,
        pub ca_der: Vec<u8>,
        pub server_pem: String,
        pub server_key_der: Vec<u8>,
        pub server_der: Vec<u8>,
        pub client_pem: String,
        pub client_key_pem: String,
    }

    /// A CA with a server certificate for `server.dc1.consul` and a client certificate.
    pub fn pki() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Consul Agent CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["server.dc1.consul".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client.dc1.consul".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            server_pem: server.pem(),
            server_key_der: server_key.serialize_der(),
            server_der: server.der().to_vec(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// An HTTPS "agent" on 127.0.0.1 that requires a client certificate from `pki`'s CA
    /// and answers every request `{}` with an index.
    pub async fn agent(pki: &Pki) -> u16 {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(pki.server_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    // The catalog is empty; the mesh-wide reads (config entries, the
                    // driver markers) find nothing: 404.
                    let resp = if head.starts_with(b"GET /v1/catalog/services") {
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    } else {
                        "HTTP/1.1 404 Not Found\r\nX-Consul-Index: 7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    };
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    /// Settings as `spine-dash` builds them from `CONSUL_*` variables naming files.
    pub fn settings(port: u16, vars: &[(&str, &str)]) -> ConsulSettings {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = ConsulEnv::from_vars(|k| map.get(k).cloned()).unwrap();
        ConsulSettings::load(&format!("https://127.0.0.1:{port}"), false, None, &env).unwrap()
    }

    pub fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn mtls_with_ca_client_cert_and_server_name() {
    let pki = tls::pki();
    let other = tls::pki();
    let port = tls::agent(&pki).await;
    let dir = std::env::temp_dir().join(format!("spine-dash-consul-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = tls::write(&dir, "ca.pem", &pki.ca_pem);
    let wrong_ca = tls::write(&dir, "other-ca.pem", &other.ca_pem);
    let cert = tls::write(&dir, "client.pem", &pki.client_pem);
    let key = tls::write(&dir, "client-key.pem", &pki.client_key_pem);
    let _ = &pki.server_pem;
    let good = [
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
        ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ("CONSUL_HTTP_TOKEN", TOKEN),
    ];
    let client = ConsulClient::from_settings(&tls::settings(port, &good)).unwrap();
    assert_eq!(client.base_url(), format!("https://127.0.0.1:{port}"));
    assert_eq!(client.snapshot().await, Ok(RegistrySnapshot::default()));

    // Without the client certificate the agent refuses the handshake.
    let client = ConsulClient::from_settings(&tls::settings(port, &good[..1]).clone_with(|s| {
        s.tls_server_name = Some("server.dc1.consul".into());
    }))
    .unwrap();
    let err = client.snapshot().await.unwrap_err().to_string();
    assert!(err.contains("CONSUL_CLIENT_CERT"), "{err}");

    // Another CA: the agent's certificate is not trusted.
    let mut wrong = good;
    wrong[0] = ("CONSUL_CACERT", wrong_ca.as_str());
    let client = ConsulClient::from_settings(&tls::settings(port, &wrong)).unwrap();
    let err = client.snapshot().await.unwrap_err().to_string();
    assert!(
        err.contains("not signed by the CA in CONSUL_CACERT"),
        "{err}"
    );

    // No server name: the certificate names server.dc1.consul, not 127.0.0.1.
    let client = ConsulClient::from_settings(&tls::settings(port, &good[..3])).unwrap();
    let err = client.snapshot().await.unwrap_err().to_string();
    assert!(err.contains("CONSUL_TLS_SERVER_NAME"), "{err}");
    for shown in [err, format!("{client:?}")] {
        assert!(
            !shown.contains(TOKEN) && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

trait CloneWith {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self;
}

impl CloneWith for spine_dash::config::consul::ConsulSettings {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self {
        let mut c = self.clone();
        f(&mut c);
        c
    }
}

// ---- KV mode ---------------------------------------------------------------------------------

#[tokio::test]
async fn kv_mode_follows_both_prefixes_and_writes_with_cas() {
    use spine_dash::registry::consul::kv::ConsulKvClient;
    /// `(query, body)` of one PUT.
    type KvPutSeen = (Option<String>, String);
    #[derive(Clone, Default)]
    struct Kv {
        split_written: Arc<Notify>,
        queries: Arc<Mutex<Vec<String>>>,
        puts: Arc<Mutex<Vec<KvPutSeen>>>,
    }
    async fn kv_get(
        State(kv): State<Kv>,
        Path(key): Path<String>,
        RawQuery(q): RawQuery,
    ) -> Response {
        let q = q.unwrap_or_default();
        kv.queries.lock().unwrap().push(format!("{key}?{q}"));
        let blocking = q.contains("index=");
        match key.as_str() {
            "services/" => {
                if blocking {
                    tokio::time::sleep(Duration::from_mins(1)).await;
                }
                let (_, _, body) = raw_response("kv_services_recurse_response.txt");
                ([("X-Consul-Index", "1105")], json(body)).into_response()
            }
            "mesh/splits/" if !blocking => {
                // No split yet: 404 with an empty body and the index.
                (StatusCode::NOT_FOUND, [("X-Consul-Index", "1150")], "").into_response()
            }
            "mesh/splits/" | "mesh/splits/identity" => {
                if blocking {
                    kv.split_written.notified().await;
                }
                (
                    [("X-Consul-Index", "1191")],
                    json(fixture("kv_mesh_splits_identity.json")),
                )
                    .into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    async fn kv_put(State(kv): State<Kv>, RawQuery(q): RawQuery, body: String) -> Response {
        kv.puts.lock().unwrap().push((q, body));
        let (_, _, answer) = raw_response("kv_put_cas_false.txt");
        json(answer)
    }
    let kv = Kv::default();
    let app = Router::new()
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put))
        .with_state(kv.clone());
    let base = serve(app).await;
    let client = ConsulKvClient::new(ConsulClient::new(&base).unwrap());
    let (tx, mut rx) = mpsc::channel(16);
    let ctx = FollowContext {
        interval: Duration::from_millis(20),
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let follower = client.clone();
    let task = tokio::spawn(async move { follower.follow(ctx).await });
    let first = next_snapshot(&mut rx).await;
    assert_eq!(first.services.len(), 6);
    let identity = first
        .services
        .iter()
        .find(|s| s.name == "identity")
        .unwrap();
    assert_eq!(identity.instances[0].address, "10.0.1.11");
    assert_eq!(identity.split, None);
    // The split key appears: the blocked query answers, the follower reports it.
    kv.split_written.notify_one();
    let second = snapshot_where(&mut rx, |s| s.services.iter().any(|e| e.split.is_some())).await;
    let split = second
        .services
        .iter()
        .find_map(|s| s.split.clone())
        .unwrap();
    assert_eq!(
        split,
        SplitConfig {
            split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
            modify_index: 1191,
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let queries = kv.queries.lock().unwrap().clone();
    assert!(
        queries.contains(&"services/?recurse".to_owned()),
        "{queries:?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.starts_with("services/?recurse&index=1105&wait=")),
        "blocks on the prefix's index: {queries:?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.starts_with("mesh/splits/?recurse&index=1150&wait=")),
        "a 404 prefix blocks on its index too: {queries:?}"
    );
    // CAS write: `false` (kv_put_cas_false.txt) is a conflict, with the key read back.
    assert_eq!(
        client
            .write_split(
                "identity",
                &Split::from_pairs([("v1", 5000), ("v2", 5000)]),
                1191
            )
            .await,
        Ok(WriteOutcome::Conflict {
            theirs: Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1191,
            })
        })
    );
    // A stale index: the read shows theirs, nothing is written.
    assert_eq!(
        client
            .write_split(
                "identity",
                &Split::from_pairs([("v1", 5000), ("v2", 5000)]),
                1100
            )
            .await,
        Ok(WriteOutcome::Conflict {
            theirs: Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1191,
            })
        })
    );
    // A CAS on a key that is gone (photo has none): a conflict with nothing stored.
    assert_eq!(
        client
            .write_split("photo", &Split::from_pairs([("v1", 10_000)]), 1191)
            .await,
        Ok(WriteOutcome::Conflict { theirs: None })
    );
    let puts = kv.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].0.as_deref(), Some("cas=1191"));
    assert_json(
        &puts[0].1,
        r#"{"service":"identity","splits":[{"subset":"v1","weight":50},{"subset":"v2","weight":50}]}"#,
    );
}

// ---- protocols, theirs, driver markers --------------------------------------------------

/// Protocol per service of a snapshot, by name.
fn protocols(s: &RegistrySnapshot) -> Vec<(String, Option<String>)> {
    s.services
        .iter()
        .map(|e| (e.name.clone(), e.protocol.clone()))
        .collect()
}

fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    pairs
        .iter()
        .map(|(n, p)| ((*n).to_owned(), p.map(str::to_owned)))
        .collect()
}

#[test]
fn protocol_parsers_read_the_fixtures() {
    use spine_dash::registry::consul::{
        effective_protocol, parse_proxy_defaults_protocol, parse_service_defaults_list,
        parse_service_defaults_protocol,
    };
    assert_eq!(
        parse_service_defaults_protocol(&fixture("config_service_defaults_identity.json")),
        Ok(Some("http".into()))
    );
    assert_eq!(
        parse_service_defaults_protocol(&fixture(
            "config_put_service_defaults_identity_request.json"
        )),
        Ok(Some("http".into()))
    );
    let list =
        parse_service_defaults_list(&fixture("crafted_config_list_service_defaults.json")).unwrap();
    assert_eq!(
        list.into_iter().collect::<Vec<_>>(),
        [
            ("identity".to_owned(), "http".to_owned()),
            ("payment".to_owned(), "grpc".to_owned()),
            ("photo".to_owned(), String::new()),
        ]
    );
    assert_eq!(
        parse_proxy_defaults_protocol(&fixture("crafted_proxy_defaults_global.json")),
        Ok(Some("http2".into()))
    );
    assert_eq!(
        parse_proxy_defaults_protocol(br#"{"Kind":"proxy-defaults","Name":"global"}"#),
        Ok(None)
    );
    let defaults =
        parse_service_defaults_list(&fixture("crafted_config_list_service_defaults.json")).unwrap();
    assert_eq!(
        effective_protocol("identity", &defaults, Some("grpc")),
        "http"
    );
    assert_eq!(
        effective_protocol("photo", &defaults, Some("http2")),
        "http2"
    );
    assert_eq!(effective_protocol("photo", &defaults, None), "tcp");
    assert_eq!(effective_protocol("portal", &defaults, None), "tcp");
}

#[tokio::test]
async fn snapshot_protocol_comes_from_service_defaults_then_proxy_defaults_then_tcp() {
    // With proxy-defaults global (Config.protocol http2): services without their own
    // protocol inherit it.
    let stub = Stub::default();
    let app = Router::new()
        .route(
            "/v1/config/proxy-defaults/global",
            get(|| async { json(fixture("crafted_proxy_defaults_global.json")) }),
        )
        .merge(mesh(&stub, (StatusCode::OK, "true")));
    let client = ConsulClient::new(&serve(app).await).unwrap();
    let snap = client.snapshot().await.unwrap();
    assert_eq!(
        protocols(&snap),
        owned(&[
            ("gateway", Some("http2")),
            ("identity", Some("http")),
            ("notification", Some("http2")),
            ("payment", Some("grpc")),
            ("photo", Some("http2")),
            ("portal", Some("http2")),
        ])
    );
    // Without it (404): tcp, Consul's default.
    let stub = Stub::default();
    let client = ConsulClient::new(&serve(mesh(&stub, (StatusCode::OK, "true"))).await).unwrap();
    let snap = client.snapshot().await.unwrap();
    assert_eq!(
        protocols(&snap),
        owned(&[
            ("gateway", Some("tcp")),
            ("identity", Some("http")),
            ("notification", Some("tcp")),
            ("payment", Some("grpc")),
            ("photo", Some("tcp")),
            ("portal", Some("tcp")),
        ])
    );
    // The same through the blocking follow.
    let (tx, mut rx) = mpsc::channel(16);
    let ctx = FollowContext {
        interval: Duration::from_millis(50),
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let app = Router::new()
        .route(
            "/v1/health/state/any",
            get(|| async { json(b"[]".to_vec()) }),
        )
        .merge(mesh(&stub, (StatusCode::OK, "true")));
    let follower = ConsulClient::new(&serve(app).await).unwrap();
    let task = tokio::spawn(async move { follower.follow(ctx).await });
    let from_follow = next_snapshot(&mut rx).await;
    task.abort();
    assert_eq!(protocols(&from_follow), protocols(&snap));
    // An agent that answers the service-defaults list with 404 (no config entries):
    // unknown, not tcp.
    let stub = Stub::default();
    let app = Router::new()
        .route(
            "/v1/config/service-defaults",
            get(|| async { (StatusCode::NOT_FOUND, "404 page not found").into_response() }),
        )
        .merge(mesh(&stub, (StatusCode::OK, "true")));
    let client = ConsulClient::new(&serve(app).await).unwrap();
    let snap = client.snapshot().await.unwrap();
    assert!(
        snap.services.iter().all(|s| s.protocol.is_none()),
        "{snap:?}"
    );
}

#[tokio::test]
async fn a_cas_on_a_deleted_splitter_is_a_conflict_with_nothing_stored() {
    let stub = Stub::default();
    let client = ConsulClient::new(&serve(mesh(&stub, (StatusCode::OK, "true"))).await).unwrap();
    // photo has no splitter (404): a write against index 1190 finds nothing to match.
    assert_eq!(
        client
            .write_split("photo", &Split::from_pairs([("v1", 10_000)]), 1190)
            .await,
        Ok(WriteOutcome::Conflict { theirs: None })
    );
    assert!(
        stub.seen().iter().all(|s| s.method == "GET"),
        "nothing written"
    );
}

#[tokio::test]
async fn snapshot_shows_driver_markers_and_keeps_an_unreadable_one() {
    use spine_dash::model::types::DriverMarker;
    let stub = Stub::default();
    let app = Router::new()
        .route(
            "/v1/kv/spine-dash/drivers/",
            get(|| async {
                (
                    [("X-Consul-Index", "1305")],
                    json(fixture("crafted_kv_drivers_recurse.json")),
                )
            }),
        )
        .merge(mesh(&stub, (StatusCode::OK, "true")));
    let client = ConsulClient::new(&serve(app).await).unwrap();
    let snap = client.snapshot().await.unwrap();
    assert_eq!(
        snap.drivers,
        vec![
            DriverMarker {
                service: "identity".into(),
                user: "ana".into(),
                host: "ws-ana".into(),
                pid: 4242,
                since: "2026-11-28T10:00:00Z".into(),
                what: "plan 95/5 → 80/20 → 50/50 → 0/100".into(),
            },
            DriverMarker {
                service: "photo".into(),
                user: "?".into(),
                ..DriverMarker::default()
            },
        ]
    );
}

/// A Consul stand-in for sessions and one KV lock, recording every request.
#[derive(Clone, Default)]
struct LockStub {
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: Arc<Mutex<Vec<String>>>,
    /// (session, value) of the held key.
    held: Arc<Mutex<Option<(String, String)>>>,
}

fn lock_router(stub: &LockStub) -> Router {
    async fn create(State(st): State<LockStub>, headers: HeaderMap, body: Bytes) -> Response {
        let id = format!(
            "0000000{}-aaaa-bbbb-cccc-dddddddddddd",
            st.sessions.lock().unwrap().len() + 1
        );
        st.sessions.lock().unwrap().push(id.clone());
        record(
            &st,
            "PUT",
            "/v1/session/create".into(),
            None,
            &headers,
            &body,
        );
        json(format!(r#"{{"ID":"{id}"}}"#).into_bytes())
    }
    async fn renew(
        State(st): State<LockStub>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        record(
            &st,
            "PUT",
            format!("/v1/session/renew/{id}"),
            None,
            &headers,
            b"",
        );
        if st.sessions.lock().unwrap().contains(&id) {
            json(format!(r#"[{{"ID":"{id}","TTL":"15s","Behavior":"delete"}}]"#).into_bytes())
        } else {
            text(
                StatusCode::NOT_FOUND,
                &format!("Session id '{id}' not found"),
            )
        }
    }
    async fn destroy(
        State(st): State<LockStub>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        record(
            &st,
            "PUT",
            format!("/v1/session/destroy/{id}"),
            None,
            &headers,
            b"",
        );
        st.sessions.lock().unwrap().retain(|s| *s != id);
        let mut held = st.held.lock().unwrap();
        if held.as_ref().is_some_and(|(s, _)| *s == id) {
            *held = None; // Behavior delete
        }
        json(b"true".to_vec())
    }
    async fn kv_put(
        State(st): State<LockStub>,
        Path(key): Path<String>,
        axum::extract::Query(q): Q,
        RawQuery(raw): RawQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        record(&st, "PUT", format!("/v1/kv/{key}"), raw, &headers, &body);
        let session = q.get("acquire").cloned().unwrap_or_default();
        let mut held = st.held.lock().unwrap();
        let ok = match &*held {
            Some((holder, _)) => *holder == session,
            None => true,
        };
        if ok {
            *held = Some((session, String::from_utf8_lossy(&body).into_owned()));
        }
        json(ok.to_string().into_bytes())
    }
    async fn kv_get(
        State(st): State<LockStub>,
        Path(key): Path<String>,
        RawQuery(raw): RawQuery,
        headers: HeaderMap,
    ) -> Response {
        record(&st, "GET", format!("/v1/kv/{key}"), raw, &headers, b"");
        let held = st.held.lock().unwrap().clone();
        match held {
            Some((session, value)) => {
                use base64::Engine as _;
                let value = base64::engine::general_purpose::STANDARD.encode(value);
                json(format!(r#"[{{"LockIndex":1,"Key":"{key}","Flags":0,"Value":"{value}","Session":"{session}","CreateIndex":1301,"ModifyIndex":1301}}]"#).into_bytes())
            }
            None => (StatusCode::NOT_FOUND, [("X-Consul-Index", "1301")], "").into_response(),
        }
    }
    fn record(
        st: &LockStub,
        method: &'static str,
        path: String,
        query: Option<String>,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        st.seen.lock().unwrap().push(Seen {
            method,
            path,
            query,
            token: headers
                .get("x-consul-token")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
    Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/renew/{id}", put(renew))
        .route("/v1/session/destroy/{id}", put(destroy))
        .route("/v1/kv/{*key}", put(kv_put).get(kv_get))
        .with_state(stub.clone())
}

#[tokio::test]
async fn driver_markers_speak_consuls_session_and_lock_wire() {
    use spine_dash::model::types::DriverMarker;
    use spine_dash::registry::{DriverClaim, DriverLease};
    let stub = LockStub::default();
    let base = serve(lock_router(&stub)).await;
    let ours = ConsulClient::new(&base)
        .unwrap()
        .with_token(Some(TOKEN.into()));
    let colleague = ConsulClient::new(&base).unwrap();
    let marker = |user: &str| DriverMarker {
        service: "identity".into(),
        user: user.into(),
        host: format!("ws-{user}"),
        pid: 7,
        since: "2026-11-28T10:00:00Z".into(),
        what: "plan 95/5 → 0/100".into(),
    };

    // Claim: a session (TTL, delete, no lock-delay), then acquire with the marker.
    let claim = ours
        .claim_driver(&marker("ana"), Duration::from_secs(15))
        .await
        .unwrap();
    let lease = DriverLease {
        service: "identity".into(),
        key: "spine-dash/drivers/identity".into(),
        lease: "00000001-aaaa-bbbb-cccc-dddddddddddd".into(),
        renew_every: Duration::from_secs(5),
    };
    assert_eq!(claim, DriverClaim::Claimed(lease.clone()));
    let seen = stub.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (
            seen[0].method,
            seen[0].path.as_str(),
            seen[0].query.as_deref()
        ),
        ("PUT", "/v1/session/create", None)
    );
    assert_json(
        &seen[0].body,
        r#"{"Name":"spine-dash driver identity","TTL":"15s","Behavior":"delete","LockDelay":"0s"}"#,
    );
    assert_eq!(
        (
            seen[1].method,
            seen[1].path.as_str(),
            seen[1].query.as_deref()
        ),
        (
            "PUT",
            "/v1/kv/spine-dash/drivers/identity",
            Some("acquire=00000001-aaaa-bbbb-cccc-dddddddddddd")
        )
    );
    assert_eq!(
        serde_json::from_str::<DriverMarker>(&seen[1].body).unwrap(),
        marker("ana")
    );
    assert!(seen.iter().all(|s| s.token.as_deref() == Some(TOKEN)));

    // A second claimant: refused, reads the holder's marker, destroys its own session.
    // Consul takes no TTL under 10 s: 2 s becomes 10 s.
    let before = stub.seen.lock().unwrap().len();
    assert_eq!(
        colleague
            .claim_driver(&marker("bob"), Duration::from_secs(2))
            .await
            .unwrap(),
        DriverClaim::HeldBy(marker("ana"))
    );
    let seen = stub.seen.lock().unwrap()[before..].to_vec();
    let calls: Vec<(&str, &str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.method, s.path.as_str(), s.query.as_deref()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT", "/v1/session/create", None),
            (
                "PUT",
                "/v1/kv/spine-dash/drivers/identity",
                Some("acquire=00000002-aaaa-bbbb-cccc-dddddddddddd")
            ),
            ("GET", "/v1/kv/spine-dash/drivers/identity", None),
            (
                "PUT",
                "/v1/session/destroy/00000002-aaaa-bbbb-cccc-dddddddddddd",
                None
            ),
        ]
    );
    assert_json(
        &seen[0].body,
        r#"{"Name":"spine-dash driver identity","TTL":"10s","Behavior":"delete","LockDelay":"0s"}"#,
    );
    assert!(seen.iter().all(|s| s.token.is_none()));

    // Renew while alive; release destroys the session; then renew says gone (404).
    assert_eq!(ours.renew_driver(&lease).await, Ok(true));
    ours.release_driver(&lease).await.unwrap();
    assert_eq!(ours.renew_driver(&lease).await, Ok(false));
    let seen = stub.seen.lock().unwrap().clone();
    let tail: Vec<(&str, &str)> = seen[seen.len() - 3..]
        .iter()
        .map(|s| (s.method, s.path.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            (
                "PUT",
                "/v1/session/renew/00000001-aaaa-bbbb-cccc-dddddddddddd"
            ),
            (
                "PUT",
                "/v1/session/destroy/00000001-aaaa-bbbb-cccc-dddddddddddd"
            ),
            (
                "PUT",
                "/v1/session/renew/00000001-aaaa-bbbb-cccc-dddddddddddd"
            ),
        ]
    );
    // Free again: the colleague's claim goes through.
    assert!(matches!(
        colleague
            .claim_driver(&marker("bob"), Duration::from_secs(15))
            .await,
        Ok(DriverClaim::Claimed(_))
    ));
    // A bad service name never reaches the wire.
    let mut bad = marker("ana");
    bad.service = "a/b".into();
    assert!(matches!(
        ours.claim_driver(&bad, Duration::from_secs(15)).await,
        Err(RegistryError::Invalid(_))
    ));
}
