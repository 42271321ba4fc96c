//! The demo registry's KV store with sessions, as Consul's `/v1/kv` and `/v1/session`
//! answer them: base64 values, `ModifyIndex` compare-and-set (`?cas=`), locks
//! (`?acquire=<session>`: `false` while another session holds the key; `?release=` only
//! by the holder), sessions with a TTL whose `Behavior=delete` removes the keys they hold
//! when they end (the design's SDK, KV form: a registration that dies with its owner; the
//! driver markers of `spine-dash`), and Consul's lock-delay (`LockDelay`, default 15 s, at
//! most 60 s): a key its ended session held cannot be acquired again for that long. A
//! prefix's index never goes backwards: deletes leave tombstones, as in Consul. Time is
//! passed in.

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
/// Consul's default and largest lock-delay.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
const MAX_LOCK_DELAY: Duration = Duration::from_mins(1);

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
    lock_delay: Duration,
    deadline: Option<Instant>,
    create_index: u64,
}

/// Keys, sessions and tombstones.
#[derive(Debug, Default)]
pub(crate) struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    sessions: BTreeMap<String, Session>,
    tombstones: BTreeMap<String, u64>,
    /// Keys whose session ended, with the end of their lock-delay.
    lock_delays: BTreeMap<String, Instant>,
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
    /// A Go duration (`"0s"`, `"15s"`) or nanoseconds, as Consul reads it.
    #[serde(default)]
    lock_delay: Option<Value>,
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

    /// `PUT /v1/kv/<key>` at `now`: `Ok(true)` written, `Ok(false)` refused (CAS, a lock
    /// held by another session, a running lock-delay, or a release by a non-holder).
    pub(crate) fn kv_put(
        &mut self,
        key: &str,
        value: &[u8],
        opts: &KvPut,
        now: Instant,
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
            if self
                .kv
                .lock_delays
                .get(key)
                .is_some_and(|until| now < *until)
            {
                return Ok(false);
            }
        }
        // Consul releases only a key that this very session holds.
        if let Some(session) = &opts.release
            && existing.and_then(|e| e.session.as_ref()) != Some(session)
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
        let lock_delay = match &req.lock_delay {
            None | Some(Value::Null) => DEFAULT_LOCK_DELAY,
            Some(Value::String(text)) => parse_go_duration(text)
                .ok_or_else(|| ApiError::decoding(format!("invalid LockDelay {text:?}")))?,
            // Consul reads a number below 1000 as seconds, else as nanoseconds.
            Some(Value::Number(n)) => match n.as_u64().unwrap_or(0) {
                small @ 0..1000 => Duration::from_secs(small),
                nanos => Duration::from_nanos(nanos),
            },
            Some(other) => {
                return Err(ApiError::decoding(format!("invalid LockDelay {other}")));
            }
        };
        if lock_delay > MAX_LOCK_DELAY {
            return Err(ApiError {
                status: 400,
                message: format!("LockDelay must be less than or equal to 60s, got {lock_delay:?}"),
            });
        }
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
                lock_delay,
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
            "ID": id, "Name": s.name, "Node": NODE_NAME,
            "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
            "Behavior": if s.delete { "delete" } else { "release" },
            "TTL": s.ttl.map(|t| format!("{}s", t.as_secs())).unwrap_or_default(),
            "NodeChecks": ["serfHealth"], "ServiceChecks": null,
            "CreateIndex": s.create_index, "ModifyIndex": s.create_index,
        }]);
        serde_json::to_vec(&json).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `PUT /v1/session/destroy/<id>` at `now`: ends the session (its keys are released
    /// or deleted; an unknown id is fine, as in Consul).
    pub(crate) fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        self.end_session(id, now);
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
            self.end_session(&id, now);
        }
        self.kv.lock_delays.retain(|_, until| now < *until);
    }

    fn end_session(&mut self, id: &str, now: Instant) {
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
            if !session.lock_delay.is_zero() {
                self.kv
                    .lock_delays
                    .insert(k.clone(), now + session.lock_delay);
            }
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
        assert_eq!(
            st.kv_put("services/identity", b"6869", &opts, Instant::now()),
            Ok(true)
        );
        let list: Value =
            serde_json::from_slice(&st.kv_get_json("services/", true).unwrap()).unwrap();
        assert_eq!(list[0]["Value"], "Njg2OQ==");
        let modify = list[0]["ModifyIndex"].as_u64().unwrap();
        assert_eq!(st.kv_index("services/", true), modify);
        let cas = KvPut {
            cas: Some(modify + 1),
            ..KvPut::default()
        };
        assert_eq!(
            st.kv_put("services/identity", b"x", &cas, Instant::now()),
            Ok(false)
        );
        let create = KvPut {
            cas: Some(0),
            ..KvPut::default()
        };
        assert_eq!(
            st.kv_put("services/identity", b"x", &create, Instant::now()),
            Ok(false)
        );
        assert_eq!(
            st.kv_put("services/photo", b"x", &create, Instant::now()),
            Ok(true)
        );
        let before = st.kv_index("services/", true);
        assert_eq!(st.kv_delete("services/photo", false, None), Ok(true));
        assert!(
            st.kv_index("services/", true) > before,
            "a delete moves the prefix forward"
        );
        assert_eq!(
            st.kv_put("/services/x", b"x", &opts, Instant::now())
                .unwrap_err()
                .status,
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
        assert_eq!(
            st.kv_put("services/photo", b"x", &acquire, Instant::now()),
            Ok(true)
        );
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

    fn session(st: &mut RegistryState, body: &str, now: Instant) -> String {
        let body = st.session_create(body.as_bytes(), now).unwrap();
        serde_json::from_slice::<Value>(&body).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn lock_with(session: &str) -> KvPut {
        KvPut {
            acquire: Some(session.to_owned()),
            ..KvPut::default()
        }
    }

    #[test]
    fn locks_are_exclusive_and_released_only_by_their_holder() {
        let mut st = empty();
        let t0 = Instant::now();
        let ours = session(
            &mut st,
            r#"{"TTL":"10s","Behavior":"delete","LockDelay":"0s"}"#,
            t0,
        );
        let theirs = session(
            &mut st,
            r#"{"TTL":"10s","Behavior":"delete","LockDelay":"0s"}"#,
            t0,
        );
        let key = "spine-dash/drivers/identity";
        assert_eq!(st.kv_put(key, b"a", &lock_with(&ours), t0), Ok(true));
        assert_eq!(
            st.kv_put(key, b"b", &lock_with(&ours), t0),
            Ok(true),
            "the holder may acquire again"
        );
        assert_eq!(st.kv_put(key, b"c", &lock_with(&theirs), t0), Ok(false));
        let release = |s: &str| KvPut {
            release: Some(s.to_owned()),
            ..KvPut::default()
        };
        assert_eq!(st.kv_put(key, b"d", &release(&theirs), t0), Ok(false));
        assert_eq!(
            st.kv_put("spine-dash/drivers/none", b"d", &release(&ours), t0),
            Ok(false),
            "nothing to release"
        );
        let list: Value = serde_json::from_slice(&st.kv_get_json(key, false).unwrap()).unwrap();
        assert_eq!(list[0]["Session"], ours.as_str());
        assert_eq!(list[0]["Value"], "Yg==", "b");
        // Destroying the holder's session deletes the key (Behavior delete); with no
        // lock-delay the other session acquires at once.
        st.session_destroy(&ours, t0);
        assert!(st.kv_get_json(key, false).is_none());
        assert_eq!(st.kv_put(key, b"e", &lock_with(&theirs), t0), Ok(true));
    }

    #[test]
    fn lock_delay_holds_a_key_after_its_session_ends() {
        let mut st = empty();
        let t0 = Instant::now();
        // No LockDelay: Consul's default 15 s.
        let first = session(&mut st, r#"{"TTL":"10s","Behavior":"delete"}"#, t0);
        let next = session(&mut st, r#"{"TTL":"10s","LockDelay":"0s"}"#, t0);
        let key = "services/photo";
        assert_eq!(st.kv_put(key, b"x", &lock_with(&first), t0), Ok(true));
        st.session_destroy(&first, t0);
        let t1 = t0 + Duration::from_secs(5);
        st.session_renew(&next, t1).unwrap();
        assert_eq!(
            st.kv_put(key, b"y", &lock_with(&next), t1),
            Ok(false),
            "lock-delay"
        );
        let t2 = t0 + Duration::from_secs(16);
        st.session_renew(&next, t2).unwrap();
        assert_eq!(st.kv_put(key, b"y", &lock_with(&next), t2), Ok(true));
        // Numbers below 1000 are seconds, as Consul reads them; more than 60 s is refused.
        let e = st
            .session_create(br#"{"LockDelay":"61s"}"#, t0)
            .unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
        let body = st
            .session_create(br#"{"LockDelay":30,"TTL":"10s"}"#, t0)
            .unwrap();
        let id = serde_json::from_slice::<Value>(&body).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_owned();
        let info: Value = serde_json::from_slice(&st.session_renew(&id, t0).unwrap()).unwrap();
        assert_eq!(info[0]["LockDelay"], 30_000_000_000_u64);
    }
}
