//! The Consul parsers and the status → error mapping on the fixtures in
//! `tests/fixtures/consul/`, compared as whole structs.

// Test helpers outside #[test] fns may unwrap too (clippy.toml allows it only inside).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use spine_dash::model::types::{Health, Instance, Split, SplitConfig};
use spine_dash::registry::RegistryError;
use spine_dash::registry::consul::kv::{
    KvPair, decode_service_url, instances_from_kv, kv_split_body, parse_kv_list, parse_kv_split,
    splits_from_kv,
};
use spine_dash::registry::consul::{
    CheckRow, apply_metrics_fallback, error_from_response, health_from_checks,
    parse_catalog_services, parse_checks, parse_connect_metrics, parse_health_service,
    parse_health_service_nodes, parse_resolver_list, parse_resolver_subsets, parse_splitter,
    parse_splitter_list, splitter_request_body,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/consul/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A raw HTTP/1.1 response fixture: (status code, body).
fn raw_response(name: &str) -> (u16, Vec<u8>) {
    let raw = fixture(name);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{name}: no CRLF CRLF"));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let status_line = head.lines().next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[allow(clippy::too_many_arguments)]
fn instance(
    id: &str,
    service: &str,
    version: &str,
    address: &str,
    port: u16,
    health: Health,
    check_output: &str,
    metrics_url: Option<&str>,
) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        address: address.into(),
        port,
        health,
        check_output: check_output.into(),
        metrics_url: metrics_url.map(Into::into),
    }
}

// ---- catalog ------------------------------------------------------------------------

#[test]
fn catalog_drops_sidecars_and_consul() {
    let names = parse_catalog_services(&fixture("catalog_services.json")).unwrap();
    assert_eq!(
        names,
        [
            "gateway",
            "identity",
            "notification",
            "payment",
            "photo",
            "portal"
        ]
    );
    // Same answer from the server-side filtered list and from the raw minified response.
    assert_eq!(
        parse_catalog_services(&fixture("catalog_services_filtered_no_proxies.json")).unwrap(),
        names
    );
    let (status, body) = raw_response("catalog_services_response.txt");
    assert_eq!(status, 200);
    assert_eq!(parse_catalog_services(&body).unwrap(), names);
}

#[test]
fn catalog_rejects_a_wrong_shape() {
    let err = parse_catalog_services(b"[\"identity\"]").unwrap_err();
    assert!(
        matches!(err, RegistryError::Decode(ref m) if m.starts_with("catalog/services:")),
        "{err:?}"
    );
}

// ---- health -------------------------------------------------------------------------

#[test]
fn health_identity_whole_struct() {
    let got = parse_health_service(&fixture("health_service_identity.json")).unwrap();
    let want = vec![
        instance(
            "identity-v1-a",
            "identity",
            "v1",
            "10.0.1.11",
            8080,
            Health::Passing,
            "",
            None,
        ),
        instance(
            "identity-v1-b",
            "identity",
            "v1",
            "10.0.1.12",
            8080,
            Health::Passing,
            "",
            None,
        ),
        instance(
            "identity-v2-a",
            "identity",
            "v2",
            "10.0.1.13",
            8080,
            Health::Passing,
            "",
            None,
        ),
        instance(
            "identity-v2-b",
            "identity",
            "v2",
            "10.0.1.12",
            8081,
            Health::Critical,
            r#"HTTP GET http://10.0.1.12:8081/health: 503 Service Unavailable Output: {"status":"down","reason":"token signing key not loaded"}"#,
            None,
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn health_photo_warning_whole_struct() {
    let got = parse_health_service(&fixture("health_service_photo.json")).unwrap();
    let want = vec![
        instance(
            "photo-1",
            "photo",
            "v1",
            "10.0.2.11",
            8080,
            Health::Passing,
            "",
            None,
        ),
        instance(
            "photo-2",
            "photo",
            "v1",
            "10.0.2.12",
            8080,
            Health::Warning,
            r#"HTTP GET http://10.0.2.12:8080/health: 429 Too Many Requests Output: {"status":"overloaded","queue":512}"#,
            None,
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn health_edge_cases_whole_struct() {
    // Meta null, Tags null, Checks null, empty Meta.version, Service.Address set,
    // a critical node check, a maintenance check without Output; file order c, a, b, d.
    let got = parse_health_service(&fixture("crafted_health_service_edge_cases.json")).unwrap();
    let want = vec![
        instance(
            "edge-a",
            "edge",
            "default",
            "10.0.9.11",
            7000,
            Health::Critical,
            "Agent not live or unreachable\nHTTP GET http://10.0.9.11:7000/health: 429 Too Many Requests Output: busy",
            Some("http://10.0.9.11:19100/stats/prometheus"),
        ),
        instance(
            "edge-b",
            "edge",
            "v2",
            "192.168.77.12",
            7001,
            Health::Passing,
            "",
            None,
        ),
        instance(
            "edge-c",
            "edge",
            "v3-canary",
            "10.0.9.13",
            7000,
            Health::Critical,
            "kernel upgrade",
            None,
        ),
        instance(
            "edge-d",
            "edge",
            "default",
            "10.0.9.14",
            7002,
            Health::Passing,
            "",
            None,
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn health_sorts_by_id_whatever_the_order() {
    let mut entries: Vec<serde_json::Value> =
        serde_json::from_slice(&fixture("health_service_identity.json")).unwrap();
    entries.reverse();
    let reversed = serde_json::to_vec(&entries).unwrap();
    assert_eq!(
        parse_health_service(&reversed).unwrap(),
        parse_health_service(&fixture("health_service_identity.json")).unwrap()
    );
}

#[test]
fn health_other_services() {
    let ids = |name: &str| -> Vec<(String, Health)> {
        parse_health_service(&fixture(name))
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.health))
            .collect()
    };
    assert_eq!(
        ids("health_service_gateway.json"),
        [("gateway-1".into(), Health::Passing)]
    );
    assert_eq!(
        ids("health_service_payment.json"),
        [
            ("payment-1".into(), Health::Passing),
            ("payment-2".into(), Health::Passing),
            ("payment-3".into(), Health::Passing)
        ]
    );
    assert_eq!(parse_health_service(b"[]").unwrap(), []);
    assert_eq!(parse_health_service(b"null").unwrap(), []);
}

#[test]
fn health_rejects_a_wrong_shape() {
    let err = parse_health_service(br#"{"Node":{}}"#).unwrap_err();
    assert!(
        matches!(err, RegistryError::Decode(ref m) if m.starts_with("health/service:")),
        "{err:?}"
    );
    let err = parse_health_service(br#"[{"Service":{"ID":"x","Port":70000}}]"#).unwrap_err();
    assert!(matches!(err, RegistryError::Decode(_)), "{err:?}");
}

#[test]
fn connect_metrics_fallback() {
    // The shared fixture's sidecars carry neither metrics_url nor a Prometheus bind address.
    assert_eq!(
        parse_connect_metrics(&fixture("health_connect_identity.json")).unwrap(),
        BTreeMap::new()
    );
    let urls = parse_connect_metrics(&fixture("crafted_health_connect_metrics.json")).unwrap();
    let want: BTreeMap<String, String> = [
        (
            "identity-v1-a".to_owned(),
            "http://10.0.1.11:9102/metrics".to_owned(),
        ),
        (
            "identity-v1-b".to_owned(),
            "http://10.0.1.12:19001/stats/prometheus".to_owned(),
        ),
    ]
    .into();
    assert_eq!(urls, want);

    let mut instances = parse_health_service(&fixture("health_service_identity.json")).unwrap();
    instances[1].metrics_url = Some("http://kept/stats/prometheus".into());
    apply_metrics_fallback(&mut instances, &urls);
    let got: Vec<Option<&str>> = instances.iter().map(|i| i.metrics_url.as_deref()).collect();
    assert_eq!(
        got,
        [
            Some("http://10.0.1.11:9102/metrics"),
            Some("http://kept/stats/prometheus"),
            None,
            None
        ]
    );
}

// ---- config entries -------------------------------------------------------------------

#[test]
fn resolver_subsets() {
    assert_eq!(
        parse_resolver_subsets(&fixture("config_service_resolver_identity.json")).unwrap(),
        ["v1", "v2"]
    );
    assert_eq!(
        parse_resolver_subsets(&fixture("config_service_resolver_identity_tags.json")).unwrap(),
        ["v1", "v2"]
    );
    assert_eq!(
        parse_resolver_subsets(
            br#"{"Kind":"service-resolver","Name":"x","Subsets":{"z":{},"a":{}}}"#
        )
        .unwrap(),
        ["a", "z"]
    );
    assert_eq!(
        parse_resolver_subsets(br#"{"Kind":"service-resolver","Name":"x","Subsets":null}"#)
            .unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        parse_resolver_subsets(
            br#"{"Kind":"service-resolver","Name":"x","Redirect":{"Service":"y"}}"#
        )
        .unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn splitter_identity_whole_struct() {
    assert_eq!(
        parse_splitter(&fixture("config_service_splitter_identity.json")).unwrap(),
        SplitConfig {
            split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
            modify_index: 1190,
        }
    );
    assert_eq!(
        parse_splitter(&fixture("config_service_splitter_identity_after_cas.json")).unwrap(),
        SplitConfig {
            split: Split::from_pairs([("v1", 7000), ("v2", 3000)]),
            modify_index: 1203,
        }
    );
}

#[test]
fn splitter_fractional_weights_and_defaults() {
    let body = br#"{"Kind":"service-splitter","Name":"a","Splits":[{"Weight":33.33,"ServiceSubset":"v1"},{"Weight":33.33,"ServiceSubset":"v2"},{"Weight":33.34,"ServiceSubset":"v3"}],"ModifyIndex":5}"#;
    assert_eq!(
        parse_splitter(body).unwrap(),
        SplitConfig {
            split: Split::from_pairs([("v1", 3333), ("v2", 3333), ("v3", 3334)]),
            modify_index: 5,
        }
    );
    let err = parse_splitter(br#"{"Kind":"service-splitter","Name":"a","Splits":[]}"#).unwrap_err();
    assert_eq!(
        err,
        RegistryError::Decode("service-splitter: the entry has no ModifyIndex".into())
    );
}

#[test]
fn splitter_cross_service_round_trips() {
    let got = parse_splitter(&fixture("crafted_splitter_cross_service.json")).unwrap();
    assert_eq!(
        got,
        SplitConfig {
            split: Split::from_pairs([
                ("v1", 5000),
                ("", 2500),
                ("identity-legacy/", 2499),
                ("v2", 1),
            ]),
            modify_index: 77,
        }
    );
    // Written back, the entry says the same thing (minus the indexes, which go in ?cas=).
    let written: serde_json::Value =
        serde_json::from_slice(&splitter_request_body("identity", &got.split).unwrap()).unwrap();
    let mut original: serde_json::Value =
        serde_json::from_slice(&fixture("crafted_splitter_cross_service.json")).unwrap();
    let obj = original.as_object_mut().unwrap();
    obj.remove("CreateIndex");
    obj.remove("ModifyIndex");
    // The last split names its own service explicitly; the write leaves that implicit.
    obj["Splits"][3].as_object_mut().unwrap().remove("Service");
    assert_eq!(written, original);
}

#[test]
fn splitter_request_body_matches_the_fixture() {
    let body = splitter_request_body("identity", &Split::from_pairs([("v1", 7000), ("v2", 3000)]))
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":70,"ServiceSubset":"v1"},{"Weight":30,"ServiceSubset":"v2"}]}"#
    );
    let fixture: serde_json::Value = serde_json::from_slice(&fixture(
        "config_put_service_splitter_identity_request.json",
    ))
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        fixture
    );
}

// ---- error responses ------------------------------------------------------------------

fn mapped(name: &str) -> RegistryError {
    let (status, body) = raw_response(name);
    error_from_response(status, &body)
}

fn http(status: u16, body: &str, hint: Option<&str>) -> RegistryError {
    RegistryError::Http {
        status,
        body: body.into(),
        hint: hint.map(Into::into),
    }
}

#[test]
fn error_acl_not_found() {
    assert_eq!(
        mapped("error_acl_403_acl_not_found.txt"),
        http(
            403,
            "ACL not found",
            Some(
                "the ACL token is unknown to Consul: check the configured token (CONSUL_HTTP_TOKEN)"
            )
        )
    );
}

#[test]
fn error_permission_denied_names_the_permission() {
    let err = mapped("error_acl_403_permission_denied.txt");
    assert_eq!(
        err,
        http(
            403,
            "Permission denied: token with AccessorID 'e6a7c2d4-5b1f-4a3e-9c8d-2f7b6a1e0d94' lacks permission 'service:write' on \"identity\"",
            Some(
                "the token lacks permission 'service:write' on \"identity\": its policy needs service \"identity\" { policy = \"write\" }"
            )
        )
    );
    let RegistryError::Http {
        hint: Some(hint), ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        hint.contains("service:write") && hint.contains("identity"),
        "{hint}"
    );
    assert!(
        err.to_string().starts_with("HTTP 403: Permission denied"),
        "{err}"
    );
    // Pre-1.12 agents say only "Permission denied".
    let RegistryError::Http {
        hint: Some(old), ..
    } = error_from_response(403, b"Permission denied")
    else {
        panic!("no hint")
    };
    assert!(old.contains("service:write"), "{old}");
}

#[test]
fn error_rate_limits_say_retry_later() {
    let hint = Some("Consul is rate limiting requests: retry later (or against another server)");
    assert_eq!(
        mapped("error_rate_limited_429.txt"),
        http(
            429,
            "rate limit exceeded, try again later or against a different server",
            hint
        )
    );
    assert_eq!(
        mapped("error_rate_limited_write_503.txt"),
        http(
            503,
            "rate limit exceeded for operation that can only be performed by the leader, try again later",
            hint
        )
    );
}

#[test]
fn error_splitter_validation_texts_pass_through() {
    assert_eq!(
        mapped("error_splitter_weights_500.txt"),
        http(
            500,
            "the sum of all split weights must be 100, not 90.000000",
            Some("the weights must add up to exactly 100 (100.00 %; 99.99 and 100.01 both fail)")
        )
    );
    assert_eq!(
        mapped("error_splitter_unknown_subset_500.txt"),
        http(
            500,
            r#"service "identity" does not have a subset named "v3""#,
            Some("every split subset must be defined in the service-resolver's Subsets")
        )
    );
    assert_eq!(
        mapped("error_splitter_protocol_tcp_500.txt"),
        http(
            500,
            r#"discovery chain "notification" uses a protocol "tcp" that does not permit advanced routing or splitting behavior"#,
            Some(
                "splitting needs an L7 protocol: set Protocol = \"http\" in the service-defaults (or proxy-defaults) entry"
            )
        )
    );
}

#[test]
fn error_statuses_carry_a_hint() {
    assert_eq!(
        mapped("error_config_404_not_found.txt"),
        http(
            404,
            r#"Config entry not found for "service-splitter" / "notification""#,
            Some(
                "the config entry does not exist (for a service-splitter: no split yet, all traffic goes to the resolver's default subset)"
            )
        )
    );
    assert_eq!(
        mapped("error_config_bad_json_400.txt"),
        http(
            400,
            "Request decoding failed: unexpected EOF",
            Some("Consul could not decode the entry sent: check its field names and types")
        )
    );
    assert_eq!(
        mapped("error_invalid_index_400.txt"),
        http(
            400,
            "Invalid index",
            Some(
                "a blocking query's index must be a number from X-Consul-Index: the dashboard starts over from index 0"
            )
        )
    );
    assert_eq!(
        mapped("error_invalid_wait_400.txt"),
        http(
            400,
            "Invalid wait time",
            Some("a blocking query's wait must be a Go duration such as 30s, at most 10m")
        )
    );
    assert_eq!(
        mapped("error_kv_404.txt"),
        http(404, "", Some("the key does not exist"))
    );
    assert_eq!(
        error_from_response(502, b"bad gateway"),
        http(502, "bad gateway", None)
    );
}

#[test]
fn error_long_bodies_are_truncated() {
    let body = "é".repeat(2_000);
    let RegistryError::Http { body: shown, .. } = error_from_response(500, body.as_bytes()) else {
        panic!("not Http")
    };
    assert_eq!(shown.chars().count(), 501);
    assert!(shown.ends_with('…'));
    // Invalid UTF-8 does not panic either.
    assert_eq!(
        error_from_response(502, b"\xff\xfe bad gateway\n"),
        http(502, "\u{fffd}\u{fffd} bad gateway", None)
    );
}

// ---- bulk endpoints (blocking follow) ---------------------------------------------------

#[test]
fn config_lists_whole_structs() {
    let splitters = parse_splitter_list(&fixture("config_list_service_splitter.json")).unwrap();
    assert_eq!(
        splitters,
        BTreeMap::from([(
            "identity".to_owned(),
            SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1190,
            }
        )])
    );
    // The list gives what the single reads give.
    assert_eq!(
        splitters["identity"],
        parse_splitter(&fixture("config_service_splitter_identity.json")).unwrap()
    );
    let resolvers = parse_resolver_list(&fixture("config_list_service_resolver.json")).unwrap();
    assert_eq!(
        resolvers["identity"],
        parse_resolver_subsets(&fixture("config_service_resolver_identity.json")).unwrap()
    );
    assert!(parse_splitter_list(b"[]").unwrap().is_empty());
    assert!(parse_resolver_list(b"null").unwrap().is_empty());
    assert!(parse_splitter_list(b"{}").is_err());
}

#[test]
fn mesh_checks_give_the_same_health_as_the_per_service_read() {
    let checks = parse_checks(&fixture("health_state_critical.json")).unwrap();
    assert!(checks.iter().all(|c| c.health == Health::Critical));
    let row = checks
        .iter()
        .find(|c| c.check_id == "service:identity-v2-b")
        .unwrap();
    assert_eq!(
        row,
        &CheckRow {
            node: "ip-10-0-1-12".into(),
            service_id: "identity-v2-b".into(),
            check_id: "service:identity-v2-b".into(),
            service_name: "identity".into(),
            health: Health::Critical,
            text: "HTTP GET http://10.0.1.12:8081/health: 503 Service Unavailable Output: {\"status\":\"down\",\"reason\":\"token signing key not loaded\"}".into(),
            create_index: 1104,
        }
    );
    // The checks of health_service_identity.json, flattened as /v1/health/state/any lists
    // them, give each instance the health and text the per-service read gives.
    let entries: serde_json::Value =
        serde_json::from_slice(&fixture("health_service_identity.json")).unwrap();
    let mut flat: Vec<serde_json::Value> = Vec::new();
    for e in entries.as_array().unwrap() {
        for c in e["Checks"].as_array().unwrap() {
            if !flat.contains(c) {
                flat.push(c.clone());
            }
        }
    }
    let mesh = parse_checks(&serde_json::to_vec(&flat).unwrap()).unwrap();
    for n in parse_health_service_nodes(&fixture("health_service_identity.json")).unwrap() {
        let (health, text) = health_from_checks(&mesh, &n.node, &n.instance.id).unwrap();
        assert_eq!(
            (health, text),
            (n.instance.health, n.instance.check_output.clone()),
            "{}",
            n.instance.id
        );
    }
    assert_eq!(health_from_checks(&mesh, "nowhere", "x"), None);
}

// ---- KV mode ---------------------------------------------------------------------------

#[test]
fn kv_services_whole_structs() {
    let pairs = parse_kv_list(&fixture("kv_services_recurse.json")).unwrap();
    assert_eq!(pairs.len(), 6);
    assert_eq!(
        pairs[1],
        KvPair {
            key: "services/identity".into(),
            value: b"687474703a2f2f31302e302e312e31313a38303830".to_vec(),
            modify_index: 1101,
            session: None,
        }
    );
    let by_service = instances_from_kv(&pairs).unwrap();
    assert_eq!(
        by_service.keys().collect::<Vec<_>>(),
        [
            "gateway",
            "identity",
            "notification",
            "payment",
            "photo",
            "portal"
        ]
    );
    assert_eq!(
        by_service["identity"],
        [instance(
            "identity",
            "identity",
            "default",
            "10.0.1.11",
            8080,
            Health::Passing,
            "",
            None
        )]
    );
    let urls: Vec<String> = pairs
        .iter()
        .map(|p| decode_service_url(&p.value).unwrap())
        .collect();
    assert_eq!(urls[0], "https://10.0.0.10:8443");
    assert_eq!(
        parse_kv_list(&fixture("kv_services_identity.json")).unwrap()[0],
        pairs[1]
    );
    // 404 on a prefix without keys has an empty body.
    assert_eq!(parse_kv_list(b""), Ok(vec![]));
}

#[test]
fn kv_split_whole_struct_and_write_body() {
    let pairs = parse_kv_list(&fixture("kv_mesh_splits_identity.json")).unwrap();
    let splits = splits_from_kv(&pairs).unwrap();
    assert_eq!(
        splits,
        BTreeMap::from([(
            "identity".to_owned(),
            SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1191,
            }
        )])
    );
    let body = kv_split_body(
        "identity",
        &Split::from_pairs([("v1", 3333), ("v2", 6667)]),
        None,
    )
    .unwrap();
    assert_eq!(
        parse_kv_split(&body).unwrap(),
        Split::from_pairs([("v1", 3333), ("v2", 6667)])
    );
    // Round trip to the fixture's own shape.
    let again = kv_split_body("identity", &splits["identity"].split, None).unwrap();
    let fixture_value: serde_json::Value = serde_json::from_slice(&pairs[0].value).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again).unwrap(),
        fixture_value
    );
}
