//! The demo registry's KV store with sessions, as Consul's `/v1/kv` and `/v1/session`
//! answer them: base64 values, `ModifyIndex` compare-and-set (`?cas=`), locks
//! (`?acquire=<session>`), sessions with a TTL whose `Behavior=delete` removes the keys
//! they hold when they end (the design's SDK, KV form: a registration that dies with its
//! owner). A prefix's index never goes backwards: deletes leave tombstones, as in Consul.
//! Time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, NODE_NAME, RegistryState, parse_go_duration};

/// Largest value Consul accepts (512 KiB).
const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Session TTL bounds, as Consul enforces them.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
const MAX_SESSION_TTL: Duration = Duration::from_hours(24);

#[derive(Debug, Clone)]
struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    session: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    name: String,
    ttl: Option<Duration>,
    delete: bool,
    deadline: Option<Instant>,
    create_index: u64,
}

/// Keys, sessions and tombstones.
#[derive(Debug, Default)]
pub(crate) struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    sessions: BTreeMap<String, Session>,
    tombstones: BTreeMap<String, u64>,
    index: u64,
    session_seq: u64,
}

/// Options of a `PUT /v1/kv/<key>`.
#[derive(Debug, Clone, Default)]
pub(crate) struct KvPut {
    /// `?cas=`.
    pub cas: Option<u64>,
    /// `?acquire=<session>`.
    pub acquire: Option<String>,
    /// `?release=<session>`.
    pub release: Option<String>,
    /// `?flags=`.
    pub flags: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct SessionJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "TTL")]
    ttl: Option<String>,
    #[serde(default)]
    behavior: Option<String>,
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.starts_with('/') {
        return Err(ApiError {
            status: 400,
            message: "Missing key name".into(),
        });
    }
    Ok(())
}

impl RegistryState {
    /// Index of `GET /v1/kv/<key>[?recurse]`: the largest `ModifyIndex` (or tombstone)
    /// under the key; the store's index when there is none.
    pub(crate) fn kv_index(&self, key: &str, recurse: bool) -> u64 {
        let kv = &self.kv;
        let under = |k: &String| {
            if recurse {
                k.starts_with(key)
            } else {
                k == key
            }
        };
        let live = kv
            .entries
            .iter()
            .filter(|(k, _)| under(k))
            .map(|(_, e)| e.modify_index);
        let dead = kv
            .tombstones
            .iter()
            .filter(|(k, _)| under(k))
            .map(|(_, i)| *i);
        live.chain(dead).max().unwrap_or(kv.index).max(1)
    }

    /// `GET /v1/kv/<key>[?recurse]`: the JSON list, `None` when nothing matches (404).
    pub(crate) fn kv_get_json(&self, key: &str, recurse: bool) -> Option<Vec<u8>> {
        let list: Vec<Value> = self
            .kv
            .entries
            .iter()
            .filter(|(k, _)| {
                if recurse {
                    k.starts_with(key)
                } else {
                    *k == key
                }
            })
            .map(|(k, e)| {
                let mut v = json!({
                    "LockIndex": e.lock_index, "Key": k, "Flags": e.flags,
                    "Value": base64::engine::general_purpose::STANDARD.encode(&e.value),
                    "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
                });
                if let Some(s) = &e.session {
                    v["Session"] = Value::from(s.as_str());
                }
                v
            })
            .collect();
        if list.is_empty() {
            None
        } else {
            serde_json::to_vec(&list).ok()
        }
    }

    /// `PUT /v1/kv/<key>`: `Ok(true)` written, `Ok(false)` refused (CAS or lock).
    pub(crate) fn kv_put(
        &mut self,
        key: &str,
        value: &[u8],
        opts: &KvPut,
    ) -> Result<bool, ApiError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError {
                status: 413,
                message: format!("Value exceeds {MAX_VALUE_BYTES} byte limit"),
            });
        }
        let existing = self.kv.entries.get(key);
        let cas_ok = match opts.cas {
            None => true,
            Some(0) => existing.is_none(),
            Some(n) => existing.is_some_and(|e| e.modify_index == n),
        };
        if !cas_ok {
            return Ok(false);
        }
        if let Some(session) = &opts.acquire {
            if !self.kv.sessions.contains_key(session) {
                return Err(ApiError {
                    status: 500,
                    message: format!("invalid session {session:?}"),
                });
            }
            if existing
                .and_then(|e| e.session.as_ref())
                .is_some_and(|held| held != session)
            {
                return Ok(false);
            }
        }
        if let Some(session) = &opts.release
            && existing
                .and_then(|e| e.session.as_ref())
                .is_some_and(|held| held != session)
        {
            return Ok(false);
        }
        self.index += 1;
        let index = self.index;
        let previous = self.kv.entries.get(key).cloned();
        let mut entry = previous.clone().unwrap_or(KvEntry {
            value: Vec::new(),
            flags: 0,
            create_index: index,
            modify_index: index,
            lock_index: 0,
            session: None,
        });
        entry.value = value.to_vec();
        entry.modify_index = index;
        if let Some(flags) = opts.flags {
            entry.flags = flags;
        }
        if let Some(session) = &opts.acquire
            && entry.session.as_ref() != Some(session)
        {
            entry.session = Some(session.clone());
            entry.lock_index += 1;
        }
        if opts.release.is_some() {
            entry.session = None;
        }
        self.kv.entries.insert(key.to_owned(), entry);
        self.kv.tombstones.remove(key);
        self.kv.index = index;
        self.announce();
        Ok(true)
    }

    /// `DELETE /v1/kv/<key>[?recurse][&cas=N]`.
    pub(crate) fn kv_delete(
        &mut self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> Result<bool, ApiError> {
        if !recurse {
            check_key(key)?;
        }
        if let Some(n) = cas
            && self.kv.entries.get(key).map(|e| e.modify_index) != Some(n)
        {
            return Ok(false);
        }
        let doomed: Vec<String> = self
            .kv
            .entries
            .keys()
            .filter(|k| {
                if recurse {
                    k.starts_with(key)
                } else {
                    *k == key
                }
            })
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Ok(true);
        }
        self.index += 1;
        for k in doomed {
            self.kv.entries.remove(&k);
            self.kv.tombstones.insert(k, self.index);
        }
        self.kv.index = self.index;
        self.announce();
        Ok(true)
    }

    /// `PUT /v1/session/create`: `{"ID": …}`.
    pub(crate) fn session_create(
        &mut self,
        body: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, ApiError> {
        let req: SessionJson = if body.iter().all(u8::is_ascii_whitespace) {
            SessionJson::default()
        } else {
            serde_json::from_slice(body).map_err(ApiError::decoding)?
        };
        let ttl = match req.ttl.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => {
                let ttl = parse_go_duration(text)
                    .ok_or_else(|| ApiError::decoding(format!("invalid TTL {text:?}")))?;
                if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
                    return Err(ApiError {
                        status: 400,
                        message: format!(
                            "Invalid Session TTL '{text}', must be between [10s=24h0m0s]"
                        ),
                    });
                }
                Some(ttl)
            }
        };
        let delete = match req.behavior.as_deref() {
            None | Some("" | "release") => false,
            Some("delete") => true,
            Some(other) => {
                return Err(ApiError::decoding(format!(
                    "Invalid Behavior setting '{other}'"
                )));
            }
        };
        self.index += 1;
        self.kv.session_seq += 1;
        let id = session_id(self.kv.session_seq, self.index);
        self.kv.sessions.insert(
            id.clone(),
            Session {
                name: req.name.unwrap_or_default(),
                ttl,
                delete,
                deadline: ttl.map(|t| now + t),
                create_index: self.index,
            },
        );
        serde_json::to_vec(&json!({ "ID": id })).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `PUT /v1/session/renew/<id>`: the session as a one-element list, 404 when unknown.
    pub(crate) fn session_renew(&mut self, id: &str, now: Instant) -> Result<Vec<u8>, ApiError> {
        let Some(s) = self.kv.sessions.get_mut(id) else {
            return Err(ApiError {
                status: 404,
                message: format!("Session id '{id}' not found"),
            });
        };
        s.deadline = s.ttl.map(|t| now + t);
        let json = json!([{
            "ID": id, "Name": s.name, "Node": NODE_NAME, "LockDelay": 15_000_000_000_u64,
            "Behavior": if s.delete { "delete" } else { "release" },
            "TTL": s.ttl.map(|t| format!("{}s", t.as_secs())).unwrap_or_default(),
            "NodeChecks": ["serfHealth"], "ServiceChecks": null,
            "CreateIndex": s.create_index, "ModifyIndex": s.create_index,
        }]);
        serde_json::to_vec(&json).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `PUT /v1/session/destroy/<id>`: ends the session (its keys are released or deleted).
    pub(crate) fn session_destroy(&mut self, id: &str) -> bool {
        self.end_session(id);
        true
    }

    /// Sessions past their TTL end.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .kv
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_session(&id);
        }
    }

    fn end_session(&mut self, id: &str) {
        let Some(session) = self.kv.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = self
            .kv
            .entries
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        if held.is_empty() {
            return;
        }
        self.index += 1;
        for k in held {
            if session.delete {
                self.kv.entries.remove(&k);
                self.kv.tombstones.insert(k, self.index);
            } else if let Some(e) = self.kv.entries.get_mut(&k) {
                e.session = None;
                e.modify_index = self.index;
            }
        }
        self.kv.index = self.index;
        self.announce();
    }
}

/// A UUID-shaped session id.
fn session_id(seq: u64, index: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    h.write_u64(index);
    let r = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        (r & 0xfff) as u16,
        (seq & 0xfff) as u16,
        index & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> RegistryState {
        RegistryState::new(
            "dc1",
            vec![],
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn put_get_cas_and_prefix_index() {
        let mut st = empty();
        let opts = KvPut::default();
        assert!(st.kv_get_json("services/", true).is_none());
        assert_eq!(st.kv_put("services/identity", b"6869", &opts), Ok(true));
        let list: Value =
            serde_json::from_slice(&st.kv_get_json("services/", true).unwrap()).unwrap();
        assert_eq!(list[0]["Value"], "Njg2OQ==");
        let modify = list[0]["ModifyIndex"].as_u64().unwrap();
        assert_eq!(st.kv_index("services/", true), modify);
        let cas = KvPut {
            cas: Some(modify + 1),
            ..KvPut::default()
        };
        assert_eq!(st.kv_put("services/identity", b"x", &cas), Ok(false));
        let create = KvPut {
            cas: Some(0),
            ..KvPut::default()
        };
        assert_eq!(st.kv_put("services/identity", b"x", &create), Ok(false));
        assert_eq!(st.kv_put("services/photo", b"x", &create), Ok(true));
        let before = st.kv_index("services/", true);
        assert_eq!(st.kv_delete("services/photo", false, None), Ok(true));
        assert!(
            st.kv_index("services/", true) > before,
            "a delete moves the prefix forward"
        );
        assert_eq!(
            st.kv_put("/services/x", b"x", &opts).unwrap_err().status,
            400
        );
    }

    #[test]
    fn a_delete_session_removes_its_keys_when_it_ends() {
        let mut st = empty();
        let t0 = Instant::now();
        let body = st
            .session_create(br#"{"Name":"reg","TTL":"10s","Behavior":"delete"}"#, t0)
            .unwrap();
        let id = serde_json::from_slice::<Value>(&body).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_owned();
        let acquire = KvPut {
            acquire: Some(id.clone()),
            ..KvPut::default()
        };
        assert_eq!(st.kv_put("services/photo", b"x", &acquire), Ok(true));
        st.expire(t0 + Duration::from_secs(5));
        st.session_renew(&id, t0 + Duration::from_secs(5)).unwrap();
        st.expire(t0 + Duration::from_secs(12));
        assert!(st.kv_get_json("services/photo", false).is_some(), "renewed");
        st.expire(t0 + Duration::from_secs(16));
        assert!(
            st.kv_get_json("services/photo", false).is_none(),
            "expired: deleted"
        );
        assert_eq!(st.session_renew(&id, t0).unwrap_err().status, 404);
        let e = st.session_create(br#"{"TTL":"5s"}"#, t0).unwrap_err();
        assert!(e.message.contains("must be between"), "{e:?}");
    }
}
