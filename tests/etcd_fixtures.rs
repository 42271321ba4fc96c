//! The etcd wire decoding, the layout → model mapping and the error texts on the real
//! etcd 3.4 captures in `tests/fixtures/etcd/`, compared as whole structs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use spine_dash::model::types::{
    Health, Instance, RegistrySnapshot, ServiceEntry, Split, SplitConfig,
};
use spine_dash::registry::etcd::layout::{candidates_from_kvs, parse_split, snapshot_from_kvs};
use spine_dash::registry::etcd::wire::{
    AuthenticateResponse, DeleteRangeResponse, EventType, Header, KeyValue, LeaseGrantResponse,
    LeaseKeepAliveResponse, PutResponse, RangeResponse, ResponseOp, StatusResponse, StreamLine,
    TxnResponse, WatchResponse, error_from_response,
};
use spine_dash::registry::sdk::{Candidate, choose};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/etcd/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn watch_lines(name: &str) -> Vec<StreamLine<WatchResponse>> {
    String::from_utf8(fixture(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect()
}

fn header(revision: i64) -> Header {
    Header {
        cluster_id: "324952591200643719".into(),
        member_id: "3319814642761637952".into(),
        revision,
        raft_term: 2,
    }
}

fn inst(id: &str, service: &str, version: &str, address: &str, port: u16) -> Instance {
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

fn service(name: &str, instances: Vec<Instance>) -> ServiceEntry {
    ServiceEntry {
        protocol: None,
        name: name.into(),
        instances,
        subsets: Vec::new(),
        split: None,
    }
}

#[test]
fn range_of_the_services_prefix_is_the_whole_snapshot() {
    let range: RangeResponse = json("range_prefix.json");
    assert_eq!(range.header, header(10));
    assert_eq!(range.count, 7);
    assert!(!range.more);
    assert_eq!(
        range.kvs[0],
        KeyValue {
            key: b"/services/gateway/gateway-v1-44f1a".to_vec(),
            value: br#"{"id":"gateway-v1-44f1a","service":"gateway","version":"v1","address":"10.0.0.10","port":8443,"tags":["v1"],"meta":{"version":"v1"}}"#.to_vec(),
            create_revision: 8,
            mod_revision: 8,
            version: 1,
            lease: 0,
        }
    );
    let (snapshot, warnings) = snapshot_from_kvs(&range.kvs);
    assert!(warnings.is_empty());
    let expected = RegistrySnapshot {
        drivers: Vec::new(),
        services: vec![
            service(
                "gateway",
                vec![inst("gateway-v1-44f1a", "gateway", "v1", "10.0.0.10", 8443)],
            ),
            service(
                "identity",
                vec![
                    inst("identity-v1-7f9c4", "identity", "v1", "10.0.1.11", 8080),
                    inst("identity-v2-5d8b2", "identity", "v2", "10.0.1.21", 8080),
                ],
            ),
            service(
                "notification",
                vec![inst(
                    "notification-v1-1b3de",
                    "notification",
                    "v1",
                    "10.0.4.11",
                    8080,
                )],
            ),
            service(
                "payment",
                vec![inst("payment-v1-88e0f", "payment", "v1", "10.0.3.11", 8443)],
            ),
            service(
                "photo",
                vec![inst("photo-v1-c2a71", "photo", "v1", "10.0.2.11", 8080)],
            ),
            service(
                "portal",
                vec![inst("portal-v1-9a0c3", "portal", "v1", "10.0.5.11", 3000)],
            ),
        ],
    };
    assert_eq!(snapshot, expected);
}

#[test]
fn final_state_with_split_draining_instance_and_new_version() {
    let services: RangeResponse = json("range_prefix_final.json");
    let splits: RangeResponse = json("range_splits_final.json");
    let kvs: Vec<KeyValue> = services.kvs.into_iter().chain(splits.kvs).collect();
    let (snapshot, _) = snapshot_from_kvs(&kvs);
    let identity = snapshot
        .services
        .iter()
        .find(|s| s.name == "identity")
        .unwrap();
    let mut draining = inst("identity-v1-7f9c4", "identity", "v1", "10.0.1.11", 8080);
    draining.health = Health::Warning;
    draining.check_output = "draining (meta.draining = true): no new traffic".into();
    assert_eq!(
        *identity,
        ServiceEntry {
            protocol: None,
            name: "identity".into(),
            instances: vec![
                draining,
                inst("identity-v2-5d8b2", "identity", "v2", "10.0.1.21", 8080),
                inst("identity-v2-9c1e7", "identity", "v2", "10.0.1.22", 8080),
            ],
            subsets: vec!["v1".into(), "v2".into()],
            split: Some(SplitConfig {
                split: Split::from_pairs([("v1", 7000), ("v2", 3000)]),
                modify_index: 19,
            }),
        }
    );
    let names: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["gateway", "identity", "payment", "photo", "portal"]);

    // lookup's view: the draining v1 takes no traffic, the split sends v1's share to v2.
    let (candidates, split) = candidates_from_kvs("identity", &kvs);
    assert_eq!(
        candidates,
        vec![
            Candidate {
                version: "v1".into(),
                url: "http://10.0.1.11:8080".into(),
                healthy: false
            },
            Candidate {
                version: "v2".into(),
                url: "http://10.0.1.21:8080".into(),
                healthy: true
            },
            Candidate {
                version: "v2".into(),
                url: "http://10.0.1.22:8080".into(),
                healthy: true
            },
        ]
    );
    for roll in [0.0, 0.5, 0.99] {
        let url = choose("identity", &candidates, split.as_ref(), roll, roll).unwrap();
        assert!(url.starts_with("http://10.0.1.2"), "{url}");
    }
}

#[test]
fn missing_key_is_an_empty_range() {
    let range: RangeResponse = json("range_missing.json");
    assert_eq!(
        range,
        RangeResponse {
            header: header(10),
            kvs: Vec::new(),
            count: 0,
            more: false
        }
    );
}

#[test]
fn cas_success_and_conflict() {
    let ok: TxnResponse = json("txn_cas_success.json");
    assert!(ok.succeeded);
    assert_eq!(
        ok.responses,
        vec![ResponseOp {
            response_put: Some(PutResponse {
                header: Header {
                    revision: 11,
                    ..Header::default()
                },
                prev_kv: Some(KeyValue {
                    key: b"/mesh/splits/identity".to_vec(),
                    value: br#"{"service":"identity","splits":[{"subset":"v1","weight":90},{"subset":"v2","weight":10}]}"#.to_vec(),
                    create_revision: 9,
                    mod_revision: 10,
                    version: 2,
                    lease: 0,
                }),
            }),
            ..ResponseOp::default()
        }]
    );
    // A failed compare has no `succeeded`; the failure branch carries the current value.
    let conflict: TxnResponse = json("txn_cas_conflict.json");
    assert!(!conflict.succeeded);
    let current = conflict.responses[0].response_range.as_ref().unwrap();
    assert_eq!(current.kvs[0].mod_revision, 11);
    assert_eq!(
        parse_split(&current.kvs[0].value),
        Ok(Split::from_pairs([("v1", 8000), ("v2", 2000)]))
    );
    let exists: TxnResponse = json("txn_create_if_absent_exists.json");
    assert!(!exists.succeeded);
    assert_eq!(
        exists.responses[0].response_range.as_ref().unwrap().kvs[0].key,
        b"/mesh/splits/photo"
    );
}

#[test]
fn deleterange_counts() {
    let d: DeleteRangeResponse = json("deleterange.json");
    assert_eq!(d.header, header(15));
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs.len(), 1);
}

#[test]
fn watch_stream_events() {
    let lines = watch_lines("watch_stream.jsonl");
    let first = lines[0].result.as_ref().unwrap();
    assert_eq!(
        *first,
        WatchResponse {
            header: header(10),
            created: true,
            ..WatchResponse::default()
        }
    );
    let put = lines[1].result.as_ref().unwrap();
    assert_eq!(put.header.revision, 14);
    assert_eq!(put.events.len(), 1);
    assert_eq!(put.events[0].kind, EventType::Put);
    assert_eq!(put.events[0].kv.key, b"/services/photo/photo-v2-e81f0");
    assert_eq!(put.events[0].kv.lease, 2_324_035_658_197_469_470);
    let del = lines[2].result.as_ref().unwrap();
    assert_eq!(del.events[0].kind, EventType::Delete);
    assert_eq!(
        del.events[0].kv,
        KeyValue {
            key: b"/services/notification/notification-v1-1b3de".to_vec(),
            mod_revision: 15,
            ..KeyValue::default()
        }
    );
    assert!(del.events[0].prev_kv.is_some());

    let multi = watch_lines("watch_txn_multi_event.jsonl");
    assert_eq!(multi[1].result.as_ref().unwrap().events.len(), 2);
}

#[test]
fn watch_compaction_progress_and_auth_cancel() {
    let compacted = watch_lines("watch_compacted.jsonl");
    assert_eq!(
        *compacted[1].result.as_ref().unwrap(),
        WatchResponse {
            header: Header {
                revision: 0,
                ..header(0)
            },
            canceled: true,
            compact_revision: 12,
            ..WatchResponse::default()
        }
    );
    let progress = watch_lines("watch_progress_notify.jsonl");
    let p = progress[1].result.as_ref().unwrap();
    assert!(!p.created && !p.canceled && p.events.is_empty());
    assert_eq!(p.header.revision, 1);
    let auth = watch_lines("watch_auth_missing_token.jsonl");
    let a = auth[0].result.as_ref().unwrap();
    assert_eq!(a.watch_id, -1);
    assert!(a.created && a.canceled);
    assert_eq!(
        a.cancel_reason,
        "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
    );
}

#[test]
fn leases_auth_and_status() {
    let grant: LeaseGrantResponse = json("lease_grant.json");
    assert_eq!(
        grant,
        LeaseGrantResponse {
            header: header(13),
            id: 2_324_035_658_197_469_470,
            ttl: 15,
            error: String::new(),
        }
    );
    let alive: StreamLine<LeaseKeepAliveResponse> = json("lease_keepalive.json");
    assert_eq!(alive.result.unwrap().ttl, 15);
    // An unknown or expired lease: still 200, but no TTL.
    let gone: StreamLine<LeaseKeepAliveResponse> = json("lease_keepalive_unknown.json");
    assert_eq!(
        gone.result.unwrap(),
        LeaseKeepAliveResponse {
            header: header(14),
            id: 12345,
            ttl: 0
        }
    );
    let auth: AuthenticateResponse = json("auth_authenticate.json");
    assert_eq!(auth.token.expose(), "FfsePnYeOPXrVNzm.42");
    assert!(!format!("{auth:?}").contains("FfsePnYeOPXrVNzm"));
    let status: StatusResponse = json("maintenance_status.json");
    assert_eq!(
        status,
        StatusResponse {
            header: header(18),
            version: "3.4.23".into(),
            leader: 3_319_814_642_761_637_952,
        }
    );
}

#[test]
fn error_texts_and_hints() {
    let cases = [
        (
            400,
            "auth_authenticate_bad_password.json",
            "HTTP 400: etcdserver: authentication failed, invalid user ID or password — check the user and password (ETCDCTL_USER=user:password, ETCDCTL_PASSWORD or --password-file)",
        ),
        (
            400,
            "auth_error_no_token.json",
            "HTTP 400: etcdserver: user name is empty — auth is enabled on this etcd: set ETCDCTL_USER (user:password, or user plus ETCDCTL_PASSWORD / --password-file)",
        ),
        (
            401,
            "auth_error_invalid_token.json",
            "HTTP 401: etcdserver: invalid auth token — the token expired or the member restarted: authenticate again",
        ),
        (
            403,
            "auth_error_permission_denied_put.json",
            "HTTP 403: etcdserver: permission denied — the user's role needs READ on /services/ and /mesh/splits/ (READWRITE to move weights or register)",
        ),
        (
            404,
            "lease_revoke_not_found.json",
            "HTTP 404: etcdserver: requested lease not found — the lease expired: register again",
        ),
        (
            400,
            "error_compacted_revision.json",
            "HTTP 400: etcdserver: mvcc: required revision has been compacted — the revision was compacted: read everything again",
        ),
        (
            404,
            "error_unknown_path.txt",
            "HTTP 404: Not Found — not an etcd v3 JSON gateway at this address (etcd 3.4+ serves /v3/…)",
        ),
    ];
    for (status, file, text) in cases {
        assert_eq!(
            error_from_response(status, &fixture(file)).to_string(),
            text,
            "{file}"
        );
    }
}
