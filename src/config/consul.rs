//! Consul connection settings ([`ConsulSettings`]) with the names Consul's own CLI reads:
//! `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`,
//! `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY` (the address,
//! `CONSUL_HTTP_ADDR`, is the `--registry` value). The datacenter is a flag only
//! (`--datacenter`), as in Consul's CLI (`-datacenter`), which has no environment variable
//! for it.
//!
//! [`ConsulEnv`] is the pure part (which variables say what); [`ConsulSettings::load`]
//! reads the files they name once, at start, so a missing token file or certificate is a
//! clear startup error and never a failure later. A later config-file / contexts change
//! fills [`ConsulEnv`] from its own source and calls the same `load`.
//!
//! Secrets (the token, the client key) never show in `Debug` output or in an error text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `wait` of a blocking query (API brief §1.5 uses 30 s in its client loop).
pub const DEFAULT_BLOCKING_WAIT: Duration = Duration::from_secs(30);

/// Consul's largest `wait` (10 minutes).
pub const MAX_BLOCKING_WAIT: Duration = Duration::from_mins(10);

/// A secret text (ACL token): one type for every secret, see [`crate::net::secrets`].
pub use crate::net::Secret;

/// A client certificate chain and its private key, PEM (the key is never shown).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
    /// Where the certificate came from (for messages).
    pub cert_path: PathBuf,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What the environment (or a config file) says, before any file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsulEnv {
    /// `CONSUL_HTTP_TOKEN`.
    pub token: Option<Secret>,
    /// `CONSUL_HTTP_TOKEN_FILE` (wins over `CONSUL_HTTP_TOKEN`, as in Consul's API client).
    pub token_file: Option<PathBuf>,
    /// `CONSUL_CACERT`: the only CA trusted for the agent's certificate.
    pub ca_cert: Option<PathBuf>,
    /// `CONSUL_CLIENT_CERT`.
    pub client_cert: Option<PathBuf>,
    /// `CONSUL_CLIENT_KEY`.
    pub client_key: Option<PathBuf>,
    /// `CONSUL_TLS_SERVER_NAME`: the name the agent's certificate must carry.
    pub tls_server_name: Option<String>,
    /// `CONSUL_HTTP_SSL_VERIFY=false` turns certificate checks off.
    pub ssl_verify: bool,
}

impl ConsulEnv {
    /// Reads the variables through `var` (e.g. `|k| std::env::var(k).ok()`); empty values
    /// count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let ssl_verify = match get("CONSUL_HTTP_SSL_VERIFY").as_deref() {
            None => true,
            Some(v) => parse_bool(v).ok_or_else(|| {
                format!("CONSUL_HTTP_SSL_VERIFY must be true or false, not {v:?}")
            })?,
        };
        Ok(Self {
            // The token is taken as is (no trim of inner text); only surrounding space goes.
            token: get("CONSUL_HTTP_TOKEN").map(Secret::new),
            token_file: get("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from),
            ca_cert: get("CONSUL_CACERT").map(PathBuf::from),
            client_cert: get("CONSUL_CLIENT_CERT").map(PathBuf::from),
            client_key: get("CONSUL_CLIENT_KEY").map(PathBuf::from),
            tls_server_name: get("CONSUL_TLS_SERVER_NAME"),
            ssl_verify,
        })
    }
}

/// `true`/`false` as Go's `strconv.ParseBool` reads them.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Everything a Consul client needs, files already read. `Debug` shows the address
/// without user-info, never the token or the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulSettings {
    /// Base URL, e.g. `https://consul.example:8501`.
    pub address: String,
    /// KV mode (`consul+kv://`): the design's `services/` keys instead of the catalog.
    pub kv_mode: bool,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<Secret>,
    /// PEM of the CA to trust (only this one), from `CONSUL_CACERT`.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (mTLS).
    pub client_identity: Option<ClientIdentity>,
    /// Name to check the agent's certificate against, when it differs from the host.
    pub tls_server_name: Option<String>,
    /// Whether the agent's certificate is checked at all.
    pub verify_tls: bool,
    /// Datacenter to read and write (`?dc=`); `None` = the agent's own.
    pub datacenter: Option<String>,
    /// `wait` of the blocking queries.
    pub blocking_wait: Duration,
}

impl fmt::Debug for ConsulSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulSettings")
            .field("address", &crate::net::strip_userinfo(&self.address))
            .field("kv_mode", &self.kv_mode)
            .field("token", &self.token)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_identity", &self.client_identity)
            .field("tls_server_name", &self.tls_server_name)
            .field("verify_tls", &self.verify_tls)
            .field("datacenter", &self.datacenter)
            .field("blocking_wait", &self.blocking_wait)
            .finish()
    }
}

impl ConsulSettings {
    /// Plain settings for `address`: no token, no TLS files, the agent's datacenter.
    #[must_use]
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            kv_mode: false,
            token: None,
            ca_pem: None,
            client_identity: None,
            tls_server_name: None,
            verify_tls: true,
            datacenter: None,
            blocking_wait: DEFAULT_BLOCKING_WAIT,
        }
    }

    /// Reads the files `env` names (token file, CA, client certificate and key) and checks
    /// that they go together. Errors name the variable and the file, never a secret.
    pub fn load(
        address: &str,
        kv_mode: bool,
        datacenter: Option<&str>,
        env: &ConsulEnv,
    ) -> Result<Self, String> {
        let token = match &env.token_file {
            Some(path) => {
                let text = read_file("CONSUL_HTTP_TOKEN_FILE", path)?;
                let text = String::from_utf8(text).map_err(|_| {
                    format!(
                        "CONSUL_HTTP_TOKEN_FILE: the token file is not UTF-8 text ({})",
                        path.display()
                    )
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!(
                        "CONSUL_HTTP_TOKEN_FILE: the token file is empty ({})",
                        path.display()
                    ));
                }
                Some(Secret::new(token.to_owned()))
            }
            None => env.token.clone(),
        };
        if let Some(t) = &token
            && t.expose().chars().any(char::is_control)
        {
            return Err("the Consul token contains control characters (check CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE)".into());
        }
        let ca_pem = match &env.ca_cert {
            Some(path) => Some(read_pem("CONSUL_CACERT", path, "CERTIFICATE")?),
            None => None,
        };
        let client_identity = match (&env.client_cert, &env.client_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read_pem("CONSUL_CLIENT_CERT", cert, "CERTIFICATE")?,
                key_pem: read_pem("CONSUL_CLIENT_KEY", key, "PRIVATE KEY")?,
                cert_path: cert.clone(),
            }),
            (Some(_), None) => {
                return Err(
                    "CONSUL_CLIENT_CERT is set but CONSUL_CLIENT_KEY is not: mTLS needs both"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "CONSUL_CLIENT_KEY is set but CONSUL_CLIENT_CERT is not: mTLS needs both"
                        .into(),
                );
            }
            (None, None) => None,
        };
        let datacenter = datacenter.map(str::trim).filter(|d| !d.is_empty());
        if let Some(dc) = datacenter
            && !dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "invalid datacenter {dc:?}: Consul datacenter names use letters, digits, '-' and '_'"
            ));
        }
        Ok(Self {
            address: address.to_owned(),
            kv_mode,
            token,
            ca_pem,
            client_identity,
            tls_server_name: env.tls_server_name.clone(),
            verify_tls: env.ssl_verify,
            datacenter: datacenter.map(str::to_owned),
            blocking_wait: DEFAULT_BLOCKING_WAIT,
        })
    }
}

fn read_file(var: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{var}: cannot read {}: {e}", path.display()))
}

/// Reads a PEM file and checks it holds a block whose label ends with `label`.
fn read_pem(var: &str, path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let bytes = read_file(var, path)?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|kind| kind.ends_with(label))
    });
    if found {
        Ok(bytes)
    } else {
        Err(format!(
            "{var}: no PEM \"{label}\" block in {}",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> ConsulEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConsulEnv::from_vars(|k| map.get(k).cloned()).unwrap()
    }

    fn temp(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spine-dash-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let file = temp("token", "  file-secret \n");
        let e = env(&[
            ("CONSUL_HTTP_TOKEN", "env-secret"),
            ("CONSUL_HTTP_TOKEN_FILE", file.to_str().unwrap()),
        ]);
        let s = ConsulSettings::load("http://h:8500", false, None, &e).unwrap();
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("file-secret"));
        let shown = format!("{s:?} {e:?}");
        assert!(!shown.contains("secret\""), "{shown}");
        assert!(!shown.contains("file-secret") && !shown.contains("env-secret"));
    }

    #[test]
    fn missing_or_empty_token_file_is_a_clear_error() {
        let e = env(&[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/spine-dash/token")]);
        let err = ConsulSettings::load("http://h:8500", false, None, &e).unwrap_err();
        assert!(
            err.starts_with("CONSUL_HTTP_TOKEN_FILE: cannot read /nonexistent/spine-dash/token"),
            "{err}"
        );
        let empty = temp("empty-token", " \n");
        let e = env(&[("CONSUL_HTTP_TOKEN_FILE", empty.to_str().unwrap())]);
        let err = ConsulSettings::load("http://h:8500", false, None, &e).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let e = env(&[("CONSUL_CLIENT_CERT", "/x.pem")]);
        let err = ConsulSettings::load("https://h", false, None, &e).unwrap_err();
        assert!(err.contains("CONSUL_CLIENT_KEY"), "{err}");
        let not_pem = temp("not.pem", "hello");
        let e = env(&[("CONSUL_CACERT", not_pem.to_str().unwrap())]);
        let err = ConsulSettings::load("https://h", false, None, &e).unwrap_err();
        assert!(err.starts_with("CONSUL_CACERT: no PEM"), "{err}");
        let key = temp(
            "k.pem",
            "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----\n",
        );
        let cert = temp(
            "c.pem",
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        );
        let e = env(&[
            ("CONSUL_CLIENT_CERT", cert.to_str().unwrap()),
            ("CONSUL_CLIENT_KEY", key.to_str().unwrap()),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ]);
        let s = ConsulSettings::load("https://h", false, Some("dc2"), &e).unwrap();
        assert!(s.client_identity.is_some());
        assert_eq!(s.tls_server_name.as_deref(), Some("server.dc1.consul"));
        assert_eq!(s.datacenter.as_deref(), Some("dc2"));
        assert!(!format!("{s:?}").contains("TOPSECRET"));
    }

    #[test]
    fn ssl_verify_and_datacenter_validation() {
        assert!(!env(&[("CONSUL_HTTP_SSL_VERIFY", "false")]).ssl_verify);
        assert!(env(&[]).ssl_verify);
        assert!(ConsulEnv::from_vars(|_| Some("maybe".into())).is_err());
        let err = ConsulSettings::load("http://h", false, Some("dc 1&x"), &env(&[])).unwrap_err();
        assert!(err.contains("invalid datacenter"), "{err}");
    }
}
