//! How to reach an etcd cluster, named as etcdctl names it: endpoints
//! (`ETCDCTL_ENDPOINTS`), CA / client certificate / key files (`ETCDCTL_CACERT`,
//! `ETCDCTL_CERT`, `ETCDCTL_KEY`) and a user (`ETCDCTL_USER` = `user:password`, or `user`
//! with the password from `ETCDCTL_PASSWORD`, a password file or a prompt). The password
//! is a [`Secret`]: never in `Debug`, logs or error texts.
//!
//! [`EtcdSettings`] is plain data so the command line, the environment or a config file
//! (contexts) can fill it; [`EtcdSettings::load_tls`] reads the files, with one-line errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wire::Secret;

/// Default time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = crate::net::limits::REGISTRY_CONNECT_TIMEOUT;
/// Default time allowed for one unary request, body included (and for a watch's first line).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = crate::net::limits::ETCD_REQUEST_TIMEOUT;

/// A user and their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password (redacted in `Debug`).
    pub password: Secret,
}

/// Everything needed to talk to one etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Base URLs of the members to try, in order (`http://127.0.0.1:2379`, `https://…`).
    pub endpoints: Vec<String>,
    /// PEM file of the CA(s) that signed the servers' certificates (`ETCDCTL_CACERT`);
    /// `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate for mTLS (`ETCDCTL_CERT`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (`ETCDCTL_KEY`).
    pub key_file: Option<PathBuf>,
    /// User and password when etcd auth is on (`ETCDCTL_USER`…).
    pub credentials: Option<Credentials>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one unary request.
    pub request_timeout: Duration,
}

impl EtcdSettings {
    /// Settings for these endpoints, no TLS files, no user, default timeouts.
    #[must_use]
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            credentials: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Reads the CA, certificate and key files. Errors are one line naming the file and
    /// the setting (never the key's content).
    pub fn load_tls(&self) -> Result<TlsMaterial, String> {
        let ca = match &self.ca_file {
            Some(path) => {
                let pem = read_file(path, "CA certificate (ETCDCTL_CACERT)")?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    format!(
                        "the CA certificate (ETCDCTL_CACERT) is not PEM: {} ({})",
                        crate::net::innermost_message(&e),
                        path.display()
                    )
                })?;
                if certs.is_empty() {
                    return Err(format!(
                        "no certificate in the CA file (ETCDCTL_CACERT) ({})",
                        path.display()
                    ));
                }
                certs
            }
            None => Vec::new(),
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "a client certificate (ETCDCTL_CERT) needs its key (ETCDCTL_KEY)".to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "a client key (ETCDCTL_KEY) needs its certificate (ETCDCTL_CERT)".to_owned(),
                );
            }
            (Some(cert), Some(key)) => {
                let mut pem = read_file(cert, "client certificate (ETCDCTL_CERT)")?;
                pem.push(b'\n');
                pem.extend(read_file(key, "client key (ETCDCTL_KEY)")?);
                Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                    format!(
                        "the client certificate / key are not usable PEM: {} ({}, {})",
                        crate::net::innermost_message(&e),
                        cert.display(),
                        key.display()
                    )
                })?)
            }
        };
        Ok(TlsMaterial { ca, identity })
    }
}

/// The TLS files, read and parsed.
#[derive(Default)]
pub struct TlsMaterial {
    /// CA certificates to trust instead of the system's roots (empty = system roots).
    pub ca: Vec<reqwest::Certificate>,
    /// Client certificate and key.
    pub identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.len())
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<client certificate>"),
            )
            .finish()
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what}: {e} ({})", path.display()))
}

/// Parses an endpoint list: `h1:2379,h2:2379` or `http://h1:2379,https://h2:2379`.
/// Entries without a scheme get `default_scheme` (`http` or `https`). Each must be a host
/// and port, without path, query or user-info.
pub fn parse_endpoints(list: &str, default_scheme: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in list.split(',') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let full = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("{default_scheme}://{raw}")
        };
        // Messages show the entry without user-info.
        let shown = crate::net::strip_userinfo(&full).into_owned();
        let entry = if raw.contains("://") {
            shown.as_str()
        } else {
            shown
                .strip_prefix(&format!("{default_scheme}://"))
                .unwrap_or(&shown)
        };
        let url = reqwest::Url::parse(&full)
            .map_err(|e| format!("not an etcd endpoint: {entry:?} ({e}); e.g. 127.0.0.1:2379"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "etcd endpoint {entry:?}: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("etcd endpoint {entry:?} has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "etcd endpoint {:?}: put the user in ETCDCTL_USER, not in the address",
                url.host_str().unwrap_or_default()
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "etcd endpoint {entry:?}: give only host:port (no path or query)"
            ));
        }
        let shown = url.as_str().trim_end_matches('/').to_owned();
        if !out.contains(&shown) {
            out.push(shown);
        }
    }
    if out.is_empty() {
        return Err("no etcd endpoint given; e.g. etcd://127.0.0.1:2379".to_owned());
    }
    Ok(out)
}

/// Where the password of `ETCDCTL_USER=user` (without `:password`) comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordSources {
    /// `--password-file`: first line of this file.
    pub file: Option<PathBuf>,
    /// `ETCDCTL_PASSWORD`.
    pub env: Option<Secret>,
    /// Ask on the terminal when neither is set.
    pub prompt: bool,
}

/// Resolves `ETCDCTL_USER` (`user:password` or `user`) into credentials; `prompt_fn` asks
/// for a password on the terminal (not echoed). `None` user = no auth.
pub fn resolve_credentials(
    user_spec: Option<&str>,
    sources: &PasswordSources,
    prompt_fn: impl FnOnce(&str) -> std::io::Result<String>,
) -> Result<Option<Credentials>, String> {
    let Some(spec) = user_spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Some((user, password)) = spec.split_once(':') {
        if user.is_empty() {
            return Err("ETCDCTL_USER has an empty user name (expected user:password)".into());
        }
        return Ok(Some(Credentials {
            user: user.to_owned(),
            password: Secret::new(password),
        }));
    }
    let user = spec.to_owned();
    let password = if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file: {e} ({})", path.display()))?;
        let first = text.lines().next().unwrap_or_default().to_owned();
        if first.is_empty() {
            return Err(format!("the password file is empty ({})", path.display()));
        }
        Secret::new(first)
    } else if let Some(env) = sources.env.clone().filter(|p| !p.is_empty()) {
        env
    } else if sources.prompt {
        let typed = prompt_fn(&format!("etcd password for user {user:?}: ")).map_err(|e| {
            format!(
                "no password for etcd user {user:?} and no terminal to ask on ({e}): set ETCDCTL_USER=user:password, ETCDCTL_PASSWORD or --password-file"
            )
        })?;
        Secret::new(typed.trim_end_matches(['\r', '\n']))
    } else {
        return Err(format!(
            "no password for etcd user {user:?}: set ETCDCTL_USER=user:password, ETCDCTL_PASSWORD or --password-file"
        ));
    };
    Ok(Some(Credentials { user, password }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists() {
        assert_eq!(
            parse_endpoints("h1:2379, h2:2379,", "http").unwrap(),
            vec!["http://h1:2379", "http://h2:2379"]
        );
        assert_eq!(
            parse_endpoints("https://a:1,http://b:2", "http").unwrap(),
            vec!["https://a:1", "http://b:2"]
        );
        assert_eq!(
            parse_endpoints("a:1", "https").unwrap(),
            vec!["https://a:1"]
        );
        assert!(parse_endpoints("", "http").is_err());
        assert!(parse_endpoints("ftp://a:1", "http").is_err());
        assert!(parse_endpoints("a:1/v3", "http").is_err());
        let err = parse_endpoints("http://u:secret@a:1", "http").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(parse_endpoints("a:notaport", "http").is_err());
    }

    #[test]
    fn credentials_from_user_spec_file_env_and_prompt() {
        let none = PasswordSources::default();
        let c = resolve_credentials(Some("alice:s3cr:et"), &none, |_| unreachable!())
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.expose(), "s3cr:et");
        assert!(!format!("{c:?}").contains("s3cr"));
        assert_eq!(
            resolve_credentials(None, &none, |_| unreachable!()),
            Ok(None)
        );
        let env = PasswordSources {
            env: Some(Secret::new("from-env")),
            ..PasswordSources::default()
        };
        let c = resolve_credentials(Some("bob"), &env, |_| unreachable!())
            .unwrap()
            .unwrap();
        assert_eq!(c.password.expose(), "from-env");
        let prompt = PasswordSources {
            prompt: true,
            ..PasswordSources::default()
        };
        let c = resolve_credentials(Some("bob"), &prompt, |q| {
            assert!(q.contains("bob"));
            Ok("typed\n".into())
        })
        .unwrap()
        .unwrap();
        assert_eq!(c.password.expose(), "typed");
        let err = resolve_credentials(Some("bob"), &prompt, |_| {
            Err(std::io::Error::other("not a tty"))
        })
        .unwrap_err();
        assert!(err.contains("ETCDCTL_PASSWORD"), "{err}");
        assert!(resolve_credentials(Some("bob"), &none, |_| unreachable!()).is_err());
        let missing = PasswordSources {
            file: Some(PathBuf::from("/nonexistent/pw")),
            ..PasswordSources::default()
        };
        let err = resolve_credentials(Some("bob"), &missing, |_| unreachable!()).unwrap_err();
        assert!(err.starts_with("cannot read the password file"), "{err}");
        assert!(err.ends_with("(/nonexistent/pw)"), "{err}");
    }

    #[test]
    fn tls_files_errors_are_one_line() {
        let mut s = EtcdSettings::new(vec!["https://a:1".into()]);
        s.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = s.load_tls().unwrap_err();
        assert!(
            err.starts_with("cannot read the CA certificate (ETCDCTL_CACERT)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let mut s = EtcdSettings::new(vec!["https://a:1".into()]);
        s.cert_file = Some(PathBuf::from("/x"));
        assert!(s.load_tls().unwrap_err().contains("ETCDCTL_KEY"));
        assert!(EtcdSettings::new(vec![]).load_tls().is_ok());
    }
}
