//! Where the command line, the environment and the config file meet: [`resolve`] takes
//! the flags, the environment (as a lookup) and the parsed file, and gives the settings to
//! use with where each came from. Pure: it reads no file and no variable itself.
//!
//! Precedence: **flag > environment > config file** (the chosen context) > default. E.g.
//! `--registry` beats `CONSUL_HTTP_ADDR` (and `ETCDCTL_ENDPOINTS`), which beat the
//! context's `registry`; `CONSUL_HTTP_TOKEN_FILE` (or `CONSUL_HTTP_TOKEN`) beats the
//! context's `token_file`. Three rules on top:
//! - A context's connection settings (token, TLS files and server name, etcd user and
//!   password file, datacenter) go only to **its own registry**: when the registry comes
//!   from a flag or the environment and differs from the context's, they are not used
//!   (a note says so), so a prod token is never sent to another agent.
//! - A client certificate and its key are a pair: both come from the highest level that
//!   sets either.
//! - `read_only = true` in a context cannot be undone by a flag (there is no
//!   `--writable`); `--read-only` adds it.
//!
//! [`check_context_files`] then reads the files the chosen context names (and only those),
//! so a missing token file is one line naming the context, the key and the file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::consul::{ConsulEnv, Secret as ConsulSecret};
use super::file::{ConfigFile, Context, known_list};
use super::{ConfigError, MetricsSource, RegistryChoice, parse_metrics, parse_registry};
use crate::registry::etcd::settings::{EtcdSettings, PasswordSources, parse_endpoints};
use crate::registry::etcd::wire::Secret as EtcdSecret;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag (its name, e.g. `--registry`).
    Flag(&'static str),
    /// An environment variable (its name).
    Env(&'static str),
    /// The named context of the config file.
    Context(String),
    /// `default_context` of the config file (only for the context choice itself).
    DefaultContext,
    /// Nothing said anything: the built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(name) | Self::Env(name) => f.write_str(name),
            Self::Context(name) => write!(f, "context '{name}'"),
            Self::DefaultContext => f.write_str("default_context of the config file"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub origin: Origin,
}

impl<T> Sourced<T> {
    fn new(value: T, origin: Origin) -> Self {
        Self { value, origin }
    }
}

/// What the command line said, nothing from the environment folded in. `Debug` shows
/// the addresses without user-info and never the etcd user's password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--context`.
    pub context: Option<String>,
    /// `--registry`.
    pub registry: Option<String>,
    /// `--metrics`.
    pub metrics: Option<String>,
    /// `--datacenter`.
    pub datacenter: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--etcd-cacert`.
    pub etcd_cacert: Option<PathBuf>,
    /// `--etcd-cert`.
    pub etcd_cert: Option<PathBuf>,
    /// `--etcd-key`.
    pub etcd_key: Option<PathBuf>,
    /// `--etcd-user` (`user` or `user:password`, hence a secret).
    pub etcd_user: Option<EtcdSecret>,
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |u: &Option<String>| {
            u.as_deref()
                .map(|u| crate::net::strip_userinfo(u).into_owned())
        };
        f.debug_struct("Flags")
            .field("context", &self.context)
            .field("registry", &shown(&self.registry))
            .field("metrics", &shown(&self.metrics))
            .field("datacenter", &self.datacenter)
            .field("read_only", &self.read_only)
            .field("etcd_cacert", &self.etcd_cacert)
            .field("etcd_cert", &self.etcd_cert)
            .field("etcd_key", &self.etcd_key)
            .field("etcd_user", &self.etcd_user)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The settings to use, each with its origin. Connection settings are filled only for the
/// kind of registry chosen (Consul's for Consul, etcd's for etcd, none for the demo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The context in use, and what chose it.
    pub context: Option<Sourced<String>>,
    /// The config file the context came from.
    pub config_path: Option<PathBuf>,
    /// The registry.
    pub registry: Sourced<RegistryChoice>,
    /// The metrics source.
    pub metrics: Sourced<MetricsSource>,
    /// Read-only mode.
    pub read_only: Sourced<bool>,
    /// Consul datacenter.
    pub datacenter: Option<Sourced<String>>,
    /// Consul: the token itself (`CONSUL_HTTP_TOKEN`; never from a file's text here).
    pub token: Option<Sourced<ConsulSecret>>,
    /// Consul: the token file (wins over `token`).
    pub token_file: Option<Sourced<PathBuf>>,
    /// CA certificate file.
    pub ca_file: Option<Sourced<PathBuf>>,
    /// Client certificate file.
    pub cert_file: Option<Sourced<PathBuf>>,
    /// Client key file.
    pub key_file: Option<Sourced<PathBuf>>,
    /// Consul: the name the agent's certificate carries.
    pub tls_server_name: Option<Sourced<String>>,
    /// Consul: `CONSUL_HTTP_SSL_VERIFY` (default true).
    pub ssl_verify: bool,
    /// etcd: `user` or `user:password`.
    pub etcd_user: Option<Sourced<EtcdSecret>>,
    /// etcd: password file.
    pub password_file: Option<Sourced<PathBuf>>,
    /// etcd: `ETCDCTL_PASSWORD`.
    pub password_env: Option<EtcdSecret>,
    /// Things the operator should know (an environment variable overriding the context, a
    /// context's credentials left unused); for the log.
    pub notes: Vec<String>,
}

impl Resolved {
    /// The Consul settings as [`ConsulEnv`] (for [`super::consul::ConsulSettings::load`]).
    #[must_use]
    pub fn consul_env(&self) -> ConsulEnv {
        ConsulEnv {
            token: self.token.as_ref().map(|s| s.value.clone()),
            token_file: value(self.token_file.as_ref()),
            ca_cert: value(self.ca_file.as_ref()),
            client_cert: value(self.cert_file.as_ref()),
            client_key: value(self.key_file.as_ref()),
            tls_server_name: value(self.tls_server_name.as_ref()),
            ssl_verify: self.ssl_verify,
        }
    }

    /// Where the etcd password comes from (`prompt`: whether a terminal may be asked).
    #[must_use]
    pub fn password_sources(&self, prompt: bool) -> PasswordSources {
        PasswordSources {
            file: value(self.password_file.as_ref()),
            env: self.password_env.clone(),
            prompt,
        }
    }

    /// etcd settings for `endpoints` with the TLS files (credentials still to resolve).
    #[must_use]
    pub fn etcd_settings(&self, endpoints: Vec<String>) -> EtcdSettings {
        let mut s = EtcdSettings::new(endpoints);
        s.ca_file = value(self.ca_file.as_ref());
        s.cert_file = value(self.cert_file.as_ref());
        s.key_file = value(self.key_file.as_ref());
        s
    }

    /// The context's name, if one is in use.
    #[must_use]
    pub fn context_name(&self) -> Option<&str> {
        self.context.as_ref().map(|c| c.value.as_str())
    }

    /// One line saying where the settings came from (no values, so no secrets).
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.context {
            parts.push(format!("context {} ({})", c.value, c.origin));
        }
        parts.push(format!(
            "registry {} ({})",
            self.registry.value.kind().as_str(),
            self.registry.origin
        ));
        let metrics = if self.metrics.value.prometheus().is_some() {
            "prometheus"
        } else {
            "sidecars"
        };
        parts.push(format!("metrics {metrics} ({})", self.metrics.origin));
        for (name, origin) in [
            ("datacenter", self.datacenter.as_ref().map(|s| &s.origin)),
            ("token", self.token.as_ref().map(|s| &s.origin)),
            ("token file", self.token_file.as_ref().map(|s| &s.origin)),
            ("CA file", self.ca_file.as_ref().map(|s| &s.origin)),
            (
                "client certificate",
                self.cert_file.as_ref().map(|s| &s.origin),
            ),
            ("etcd user", self.etcd_user.as_ref().map(|s| &s.origin)),
            (
                "password file",
                self.password_file.as_ref().map(|s| &s.origin),
            ),
        ] {
            if let Some(origin) = origin {
                parts.push(format!("{name} ({origin})"));
            }
        }
        if self.read_only.value {
            parts.push(format!("read-only ({})", self.read_only.origin));
        }
        parts.join(", ")
    }
}

/// `v`, as coming from context `c`.
fn tag<T>(c: Option<&Context>, v: Option<T>) -> Option<Sourced<T>> {
    c.zip(v)
        .map(|(c, v)| Sourced::new(v, Origin::Context(c.name.clone())))
}

fn value<T: Clone>(s: Option<&Sourced<T>>) -> Option<T> {
    s.map(|s| s.value.clone())
}

/// Picks the first level that has a value, and notes when an environment variable
/// overrode a value of the context.
struct Picker<'a> {
    context: Option<&'a str>,
    notes: Vec<String>,
}

impl Picker<'_> {
    fn pick<T>(&mut self, key: &str, levels: Vec<Option<Sourced<T>>>) -> Option<Sourced<T>> {
        let context_had = levels
            .iter()
            .flatten()
            .any(|s| matches!(s.origin, Origin::Context(_)));
        let winner = levels.into_iter().flatten().next();
        if let (Some(w), Some(name), true) = (&winner, self.context, context_had)
            && let Origin::Env(var) = w.origin
        {
            self.notes
                .push(format!("{var} overrides the {key} of context '{name}'"));
        }
        winner
    }
}

/// Merges the flags, the environment (`env`: a variable's value; empty counts as unset)
/// and the config file (`file`, if there is one) into the settings to use.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Result<Resolved, String> {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let chosen = flags
        .context
        .as_ref()
        .map(|n| Sourced::new(n.trim().to_owned(), Origin::Flag("--context")))
        .or_else(|| {
            get("SPINE_DASH_CONTEXT").map(|n| Sourced::new(n, Origin::Env("SPINE_DASH_CONTEXT")))
        })
        .or_else(|| {
            file.and_then(|f| f.default_context.clone())
                .map(|n| Sourced::new(n, Origin::DefaultContext))
        });
    let ctx: Option<&Context> = match (&chosen, file) {
        (None, _) => None,
        (Some(c), None) => {
            return Err(format!(
                "{}: context '{}' asked for, but there is no config file",
                c.origin, c.value
            ));
        }
        (Some(c), Some(f)) => Some(f.contexts.get(&c.value).ok_or_else(|| {
            format!(
                "unknown context '{}' (from {}); {} ({})",
                c.value,
                c.origin,
                known_list(&f.names()),
                f.path.display()
            )
        })?),
    };
    let mut picker = Picker {
        context: ctx.map(|c| c.name.as_str()),
        notes: Vec::new(),
    };

    let registry_flag = match &flags.registry {
        Some(v) => Some(Sourced::new(
            parse_registry(v).map_err(|e| format!("--registry: {e}"))?,
            Origin::Flag("--registry"),
        )),
        None => None,
    };
    let registry_env = match (get("CONSUL_HTTP_ADDR"), get("ETCDCTL_ENDPOINTS")) {
        (Some(v), _) => Some(Sourced::new(
            parse_registry(&v).map_err(|e| format!("CONSUL_HTTP_ADDR: {e}"))?,
            Origin::Env("CONSUL_HTTP_ADDR"),
        )),
        (None, Some(v)) => Some(Sourced::new(
            parse_endpoints(&v, "http")
                .map(RegistryChoice::Etcd)
                .map_err(|e| format!("ETCDCTL_ENDPOINTS: {e}"))?,
            Origin::Env("ETCDCTL_ENDPOINTS"),
        )),
        (None, None) => None,
    };
    let registry = picker
        .pick(
            "registry",
            vec![
                registry_flag,
                registry_env,
                tag(ctx, ctx.and_then(|c| c.registry.clone())),
            ],
        )
        .unwrap_or_else(|| Sourced::new(RegistryChoice::Demo, Origin::Default));

    let metrics_flag = match &flags.metrics {
        Some(v) => Some(Sourced::new(
            parse_metrics(v).map_err(|e| e.to_string())?,
            Origin::Flag("--metrics"),
        )),
        None => None,
    };
    let metrics_env = match get("SPINE_DASH_METRICS") {
        Some(v) => Some(Sourced::new(
            parse_metrics(&v).map_err(|e| match e {
                ConfigError::Metrics { reason, value } => {
                    format!("SPINE_DASH_METRICS: {reason}: {value}")
                }
            })?,
            Origin::Env("SPINE_DASH_METRICS"),
        )),
        None => None,
    };
    let metrics = picker
        .pick(
            "metrics",
            vec![
                metrics_flag,
                metrics_env,
                tag(ctx, ctx.and_then(|c| c.metrics.clone())),
            ],
        )
        .unwrap_or_else(|| Sourced::new(MetricsSource::Sidecars, Origin::Default));

    let read_only = if flags.read_only {
        Sourced::new(true, Origin::Flag("--read-only"))
    } else {
        tag(ctx, ctx.and_then(|c| c.spec.read_only))
            .unwrap_or_else(|| Sourced::new(false, Origin::Default))
    };

    // A context's connection settings go only to its own registry.
    let own = ctx.filter(|c| c.registry.as_ref().is_none_or(|r| *r == registry.value));
    if let (Some(c), None) = (ctx, own) {
        let unused = connection_keys(c);
        if !unused.is_empty() {
            picker.notes.push(format!(
                "context '{}': {} not used: the registry comes from {}, not from the context \
                 (a context's credentials go only to its own registry)",
                c.name,
                unused.join(", "),
                registry.origin
            ));
        }
    }
    let spec = own.map(|c| c.spec.clone()).unwrap_or_default();

    let mut out = Resolved {
        context: chosen,
        config_path: file.map(|f| f.path.clone()),
        datacenter: None,
        token: None,
        token_file: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        tls_server_name: None,
        ssl_verify: true,
        etcd_user: None,
        password_file: None,
        password_env: None,
        notes: Vec::new(),
        registry,
        metrics,
        read_only,
    };
    let path_env = |k: &'static str| get(k).map(|v| Sourced::new(PathBuf::from(v), Origin::Env(k)));
    let path_flag = |v: &Option<PathBuf>, name: &'static str| {
        v.clone().map(|p| Sourced::new(p, Origin::Flag(name)))
    };
    match &out.registry.value {
        RegistryChoice::Demo => {}
        RegistryChoice::Consul(_) | RegistryChoice::ConsulKv(_) => {
            let consul = ConsulEnv::from_vars(|k| env(k))?;
            out.ssl_verify = consul.ssl_verify;
            out.datacenter = picker.pick(
                "datacenter",
                vec![
                    flags
                        .datacenter
                        .clone()
                        .map(|d| Sourced::new(d, Origin::Flag("--datacenter"))),
                    tag(own, spec.datacenter.clone()),
                ],
            );
            out.token = consul
                .token
                .map(|t| Sourced::new(t, Origin::Env("CONSUL_HTTP_TOKEN")));
            let env_token_file = path_env("CONSUL_HTTP_TOKEN_FILE");
            // The token itself, from the environment, beats the context's file too.
            let ctx_token_file = if out.token.is_some() && env_token_file.is_none() {
                if own.is_some() && spec.token_file.is_some() {
                    picker.notes.push(format!(
                        "CONSUL_HTTP_TOKEN overrides the token_file of context '{}'",
                        own.map(|c| c.name.as_str()).unwrap_or_default()
                    ));
                }
                None
            } else {
                tag(own, spec.token_file.clone())
            };
            out.token_file = picker.pick("token_file", vec![env_token_file, ctx_token_file]);
            out.ca_file = picker.pick(
                "ca_file",
                vec![path_env("CONSUL_CACERT"), tag(own, spec.ca_file.clone())],
            );
            (out.cert_file, out.key_file) = pick_pair(
                &mut picker,
                vec![
                    (
                        path_env("CONSUL_CLIENT_CERT"),
                        path_env("CONSUL_CLIENT_KEY"),
                    ),
                    (
                        tag(own, spec.cert_file.clone()),
                        tag(own, spec.key_file.clone()),
                    ),
                ],
            );
            out.tls_server_name = picker.pick(
                "tls_server_name",
                vec![
                    get("CONSUL_TLS_SERVER_NAME")
                        .map(|v| Sourced::new(v, Origin::Env("CONSUL_TLS_SERVER_NAME"))),
                    tag(own, spec.tls_server_name.clone()),
                ],
            );
        }
        RegistryChoice::Etcd(_) => {
            out.ca_file = picker.pick(
                "ca_file",
                vec![
                    path_flag(&flags.etcd_cacert, "--etcd-cacert"),
                    path_env("ETCDCTL_CACERT"),
                    tag(own, spec.ca_file.clone()),
                ],
            );
            (out.cert_file, out.key_file) = pick_pair(
                &mut picker,
                vec![
                    (
                        path_flag(&flags.etcd_cert, "--etcd-cert"),
                        path_flag(&flags.etcd_key, "--etcd-key"),
                    ),
                    (path_env("ETCDCTL_CERT"), path_env("ETCDCTL_KEY")),
                    (
                        tag(own, spec.cert_file.clone()),
                        tag(own, spec.key_file.clone()),
                    ),
                ],
            );
            out.etcd_user = picker.pick(
                "etcd_user",
                vec![
                    flags
                        .etcd_user
                        .clone()
                        .map(|u| Sourced::new(u, Origin::Flag("--etcd-user"))),
                    get("ETCDCTL_USER")
                        .map(|u| Sourced::new(EtcdSecret::new(u), Origin::Env("ETCDCTL_USER"))),
                    tag(own, spec.etcd_user.clone().map(EtcdSecret::new)),
                ],
            );
            // As `resolve_credentials` reads them: a password file beats ETCDCTL_PASSWORD,
            // but only a flag's file beats the environment.
            out.password_env = env("ETCDCTL_PASSWORD")
                .filter(|p| !p.is_empty())
                .map(EtcdSecret::new);
            let ctx_file = if out.password_env.is_some() {
                if own.is_some() && spec.password_file.is_some() {
                    picker.notes.push(format!(
                        "ETCDCTL_PASSWORD overrides the password_file of context '{}'",
                        own.map(|c| c.name.as_str()).unwrap_or_default()
                    ));
                }
                None
            } else {
                tag(own, spec.password_file.clone())
            };
            out.password_file = picker.pick(
                "password_file",
                vec![path_flag(&flags.password_file, "--password-file"), ctx_file],
            );
        }
    }
    out.notes = picker.notes;
    Ok(out)
}

/// A client certificate file and its key file.
type PathPair = (Option<Sourced<PathBuf>>, Option<Sourced<PathBuf>>);

/// A certificate and its key come from the same level: the first that sets either.
fn pick_pair(picker: &mut Picker<'_>, levels: Vec<PathPair>) -> PathPair {
    let context_had = levels.iter().any(|(c, k)| {
        [c, k].iter().any(|s| {
            s.as_ref()
                .is_some_and(|s| matches!(s.origin, Origin::Context(_)))
        })
    });
    let Some((cert, key)) = levels.into_iter().find(|(c, k)| c.is_some() || k.is_some()) else {
        return (None, None);
    };
    let origin = cert.as_ref().or(key.as_ref()).map(|s| s.origin.clone());
    if let (Some(Origin::Env(var)), Some(name), true) = (origin, picker.context, context_had) {
        picker.notes.push(format!(
            "{var} overrides the cert_file and key_file of context '{name}'"
        ));
    }
    (cert, key)
}

/// The connection keys a context sets (for the "not used" note).
fn connection_keys(c: &Context) -> Vec<&'static str> {
    let s = &c.spec;
    [
        ("datacenter", s.datacenter.is_some()),
        ("token_file", s.token_file.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("cert_file", s.cert_file.is_some()),
        ("key_file", s.key_file.is_some()),
        ("tls_server_name", s.tls_server_name.is_some()),
        ("etcd_user", s.etcd_user.is_some()),
        ("password_file", s.password_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

/// Reads the files the chosen context named (token, CA, certificate, key, password), so a
/// missing or unusable one stops the start with one line naming the context, the key and
/// the file. Files from flags or the environment are left to the loaders, whose messages
/// name the variable. Never shows a file's content.
pub fn check_context_files(resolved: &Resolved) -> Result<(), String> {
    let checks: [(&str, Option<&Sourced<PathBuf>>, FileKind); 5] = [
        ("token_file", resolved.token_file.as_ref(), FileKind::Secret),
        (
            "ca_file",
            resolved.ca_file.as_ref(),
            FileKind::Pem("CERTIFICATE"),
        ),
        (
            "cert_file",
            resolved.cert_file.as_ref(),
            FileKind::Pem("CERTIFICATE"),
        ),
        (
            "key_file",
            resolved.key_file.as_ref(),
            FileKind::Pem("PRIVATE KEY"),
        ),
        (
            "password_file",
            resolved.password_file.as_ref(),
            FileKind::Secret,
        ),
    ];
    for (key, sourced, kind) in checks {
        let Some(Sourced {
            value: path,
            origin: Origin::Context(name),
        }) = sourced
        else {
            continue;
        };
        check_file(path, kind).map_err(|why| {
            let config = resolved
                .config_path
                .as_ref()
                .map(|p| format!(" (config file {})", p.display()))
                .unwrap_or_default();
            format!("context '{name}'{config}: {key}: {why}")
        })?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum FileKind {
    /// A token or password: non-empty text.
    Secret,
    /// A PEM file with a block whose label ends with this.
    Pem(&'static str),
}

fn check_file(path: &Path, kind: FileKind) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    match kind {
        FileKind::Secret if text.trim().is_empty() => {
            Err(format!("the file is empty: {}", path.display()))
        }
        FileKind::Secret => Ok(()),
        FileKind::Pem(label) => {
            let found = text.lines().any(|l| {
                l.trim()
                    .strip_prefix("-----BEGIN ")
                    .and_then(|rest| rest.strip_suffix("-----"))
                    .is_some_and(|k| k.ends_with(label))
            });
            if found {
                Ok(())
            } else {
                Err(format!("no PEM \"{label}\" block in {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = r#"
default_context = "prod"

[contexts.prod]
registry = "consul+https://consul.prod:8501"
metrics = "prometheus://prom.prod:9090"
datacenter = "eu1"
token_file = "/secrets/prod.token"
ca_file = "/secrets/ca.pem"
cert_file = "/secrets/client.pem"
key_file = "/secrets/client-key.pem"
tls_server_name = "server.eu1.consul"
read_only = true

[contexts.etcd]
registry = "etcd+https://e1:2379,e2:2379"
ca_file = "/secrets/etcd-ca.pem"
etcd_user = "dash"
password_file = "/secrets/etcd.pw"

[contexts.demo-ctx]
registry = "demo"

[contexts.metrics-only]
metrics = "prometheus://p:9090"
token_file = "/secrets/t"
"#;

    fn file() -> ConfigFile {
        ConfigFile::parse(FILE, Path::new("/cfg/config.toml"), None).unwrap()
    }

    fn run(flags: &Flags, env: &[(&str, &str)], with_file: bool) -> Result<Resolved, String> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let f = file();
        resolve(flags, &|k| map.get(k).cloned(), with_file.then_some(&f))
    }

    fn ctx(name: &str) -> Origin {
        Origin::Context(name.into())
    }

    fn path_of(s: Option<&Sourced<PathBuf>>) -> Option<(String, Origin)> {
        s.map(|s| (s.value.display().to_string(), s.origin.clone()))
    }

    /// One row: what was given, which registry and where it came from.
    struct RegistryCase {
        context: Option<&'static str>,
        flag: Option<&'static str>,
        env: &'static [(&'static str, &'static str)],
        want: RegistryChoice,
        origin: Origin,
    }

    #[test]
    fn registry_precedence_table() {
        let consul = |u: &str| RegistryChoice::Consul(u.into());
        let cases = [
            RegistryCase {
                context: None,
                flag: None,
                env: &[],
                want: consul("https://consul.prod:8501"),
                origin: ctx("prod"), // default_context
            },
            RegistryCase {
                context: Some("demo-ctx"),
                flag: None,
                env: &[],
                want: RegistryChoice::Demo,
                origin: ctx("demo-ctx"),
            },
            RegistryCase {
                context: Some("prod"),
                flag: None,
                env: &[("CONSUL_HTTP_ADDR", "10.0.0.9:8500")],
                want: consul("http://10.0.0.9:8500"),
                origin: Origin::Env("CONSUL_HTTP_ADDR"),
            },
            RegistryCase {
                context: Some("prod"),
                flag: Some("consul://flag:8500"),
                env: &[("CONSUL_HTTP_ADDR", "10.0.0.9:8500")],
                want: consul("http://flag:8500"),
                origin: Origin::Flag("--registry"),
            },
            RegistryCase {
                context: Some("demo-ctx"),
                flag: None,
                env: &[("ETCDCTL_ENDPOINTS", "e9:2379")],
                want: RegistryChoice::Etcd(vec!["http://e9:2379".into()]),
                origin: Origin::Env("ETCDCTL_ENDPOINTS"),
            },
            RegistryCase {
                context: Some("prod"),
                flag: None,
                env: &[("CONSUL_HTTP_ADDR", "c:1"), ("ETCDCTL_ENDPOINTS", "e:2")],
                want: consul("http://c:1"),
                origin: Origin::Env("CONSUL_HTTP_ADDR"),
            },
            RegistryCase {
                context: Some("metrics-only"),
                flag: None,
                env: &[("CONSUL_HTTP_ADDR", " ")],
                want: RegistryChoice::Demo,
                origin: Origin::Default,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let flags = Flags {
                context: c.context.map(str::to_owned),
                registry: c.flag.map(str::to_owned),
                ..Flags::default()
            };
            let r = run(&flags, c.env, true).unwrap();
            assert_eq!(r.registry.value, c.want, "case {i}");
            assert_eq!(r.registry.origin, c.origin, "case {i}");
        }
        // No file, nothing given: the demo, as before contexts existed.
        let r = run(&Flags::default(), &[], false).unwrap();
        assert_eq!(
            r.registry,
            Sourced::new(RegistryChoice::Demo, Origin::Default)
        );
        assert_eq!(r.context, None);
    }

    #[test]
    fn context_choice_precedence() {
        let with = |flag: Option<&str>, env: &[(&str, &str)]| {
            let flags = Flags {
                context: flag.map(str::to_owned),
                ..Flags::default()
            };
            run(&flags, env, true).unwrap().context.unwrap()
        };
        assert_eq!(
            with(None, &[]),
            Sourced::new("prod".into(), Origin::DefaultContext)
        );
        assert_eq!(
            with(None, &[("SPINE_DASH_CONTEXT", "etcd")]),
            Sourced::new("etcd".into(), Origin::Env("SPINE_DASH_CONTEXT"))
        );
        assert_eq!(
            with(Some("demo-ctx"), &[("SPINE_DASH_CONTEXT", "etcd")]),
            Sourced::new("demo-ctx".into(), Origin::Flag("--context"))
        );
    }

    #[test]
    fn unknown_context_lists_the_known_ones() {
        let flags = Flags {
            context: Some("staging".into()),
            ..Flags::default()
        };
        let e = run(&flags, &[], true).unwrap_err();
        assert_eq!(
            e,
            "unknown context 'staging' (from --context); known: demo-ctx, etcd, metrics-only, prod (/cfg/config.toml)"
        );
        let e = run(&Flags::default(), &[("SPINE_DASH_CONTEXT", "x")], true).unwrap_err();
        assert!(e.contains("(from SPINE_DASH_CONTEXT)"), "{e}");
        let e = run(&flags, &[], false).unwrap_err();
        assert_eq!(
            e,
            "--context: context 'staging' asked for, but there is no config file"
        );
    }

    /// One row: the Consul settings with some environment.
    struct ConsulCase {
        env: &'static [(&'static str, &'static str)],
        token_file: Option<(&'static str, Origin)>,
        token_from_env: bool,
        ca: Option<(&'static str, Origin)>,
        cert: Option<(&'static str, Origin)>,
        key: Option<(&'static str, Origin)>,
        server_name: Option<(&'static str, Origin)>,
    }

    #[test]
    fn consul_settings_precedence_table() {
        let p = ctx("prod");
        let e = Origin::Env;
        let cases = [
            ConsulCase {
                env: &[],
                token_file: Some(("/secrets/prod.token", p.clone())),
                token_from_env: false,
                ca: Some(("/secrets/ca.pem", p.clone())),
                cert: Some(("/secrets/client.pem", p.clone())),
                key: Some(("/secrets/client-key.pem", p.clone())),
                server_name: Some(("server.eu1.consul", p.clone())),
            },
            ConsulCase {
                env: &[
                    ("CONSUL_HTTP_TOKEN_FILE", "/env/token"),
                    ("CONSUL_CACERT", "/env/ca.pem"),
                    ("CONSUL_TLS_SERVER_NAME", "other.consul"),
                ],
                token_file: Some(("/env/token", e("CONSUL_HTTP_TOKEN_FILE"))),
                token_from_env: false,
                ca: Some(("/env/ca.pem", e("CONSUL_CACERT"))),
                cert: Some(("/secrets/client.pem", p.clone())),
                key: Some(("/secrets/client-key.pem", p.clone())),
                server_name: Some(("other.consul", e("CONSUL_TLS_SERVER_NAME"))),
            },
            // The token itself in the environment beats the context's token file.
            ConsulCase {
                env: &[("CONSUL_HTTP_TOKEN", "env-token")],
                token_file: None,
                token_from_env: true,
                ca: Some(("/secrets/ca.pem", p.clone())),
                cert: Some(("/secrets/client.pem", p.clone())),
                key: Some(("/secrets/client-key.pem", p.clone())),
                server_name: Some(("server.eu1.consul", p.clone())),
            },
            // A certificate and its key are a pair: the environment's half-pair wins whole.
            ConsulCase {
                env: &[("CONSUL_CLIENT_CERT", "/env/c.pem")],
                token_file: Some(("/secrets/prod.token", p.clone())),
                token_from_env: false,
                ca: Some(("/secrets/ca.pem", p.clone())),
                cert: Some(("/env/c.pem", e("CONSUL_CLIENT_CERT"))),
                key: None,
                server_name: Some(("server.eu1.consul", p.clone())),
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let r = run(&Flags::default(), c.env, true).unwrap();
            let own =
                |v: &Option<(&str, Origin)>| v.as_ref().map(|(s, o)| ((*s).to_owned(), o.clone()));
            assert_eq!(
                path_of(r.token_file.as_ref()),
                own(&c.token_file),
                "case {i}"
            );
            assert_eq!(r.token.is_some(), c.token_from_env, "case {i}");
            assert_eq!(path_of(r.ca_file.as_ref()), own(&c.ca), "case {i}");
            assert_eq!(path_of(r.cert_file.as_ref()), own(&c.cert), "case {i}");
            assert_eq!(path_of(r.key_file.as_ref()), own(&c.key), "case {i}");
            assert_eq!(
                r.tls_server_name
                    .as_ref()
                    .map(|s| (s.value.clone(), s.origin.clone())),
                own(&c.server_name),
                "case {i}"
            );
        }
    }

    #[test]
    fn environment_overrides_are_noted() {
        let r = run(
            &Flags::default(),
            &[
                ("CONSUL_HTTP_TOKEN_FILE", "/env/t"),
                ("SPINE_DASH_METRICS", "sidecars"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            r.metrics,
            Sourced::new(MetricsSource::Sidecars, Origin::Env("SPINE_DASH_METRICS"))
        );
        assert!(
            r.notes
                .contains(&"SPINE_DASH_METRICS overrides the metrics of context 'prod'".to_owned()),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes.contains(
                &"CONSUL_HTTP_TOKEN_FILE overrides the token_file of context 'prod'".to_owned()
            ),
            "{:?}",
            r.notes
        );
        // A flag is explicit: no note.
        let flags = Flags {
            metrics: Some("sidecars".into()),
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(r.metrics.origin, Origin::Flag("--metrics"));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn context_credentials_go_only_to_its_own_registry() {
        // The prod context's token must not go to the agent CONSUL_HTTP_ADDR names.
        let r = run(
            &Flags::default(),
            &[("CONSUL_HTTP_ADDR", "10.9.9.9:8500")],
            true,
        )
        .unwrap();
        assert_eq!(r.token_file, None);
        assert_eq!(r.ca_file, None);
        assert_eq!(r.datacenter, None);
        // Metrics and read-only are not credentials: they stay.
        assert_eq!(r.metrics.origin, ctx("prod"));
        assert_eq!(r.read_only, Sourced::new(true, ctx("prod")));
        assert!(
            r.notes.iter().any(|n| n.starts_with(
                "context 'prod': datacenter, token_file, ca_file, cert_file, key_file, tls_server_name not used: the registry comes from CONSUL_HTTP_ADDR"
            )),
            "{:?}",
            r.notes
        );
        // The same registry by flag: the context's settings apply.
        let flags = Flags {
            registry: Some("consul+https://consul.prod:8501/".into()),
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(r.token_file.map(|s| s.origin), Some(ctx("prod")));
        // A context without a registry lends its settings to whatever registry is used.
        let flags = Flags {
            context: Some("metrics-only".into()),
            registry: Some("consul://h:8500".into()),
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(
            path_of(r.token_file.as_ref()),
            Some(("/secrets/t".into(), ctx("metrics-only")))
        );
    }

    #[test]
    fn etcd_settings_precedence() {
        let flags = Flags {
            context: Some("etcd".into()),
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(
            r.registry.value,
            RegistryChoice::Etcd(vec!["https://e1:2379".into(), "https://e2:2379".into()])
        );
        assert_eq!(r.etcd_user.as_ref().map(|u| u.value.expose()), Some("dash"));
        assert_eq!(
            path_of(r.password_file.as_ref()),
            Some(("/secrets/etcd.pw".into(), ctx("etcd")))
        );
        assert_eq!(r.token_file, None, "Consul keys are not read for etcd");
        let s = r.etcd_settings(vec!["https://e1:2379".into()]);
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new("/secrets/etcd-ca.pem"))
        );
        // Environment beats the context; the password from ETCDCTL_PASSWORD beats the
        // context's password file.
        let r = run(
            &flags,
            &[
                ("ETCDCTL_USER", "root"),
                ("ETCDCTL_PASSWORD", "pw-from-env"),
                ("ETCDCTL_CACERT", "/env/ca"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            r.etcd_user.as_ref().map(|u| u.origin.clone()),
            Some(Origin::Env("ETCDCTL_USER"))
        );
        assert_eq!(r.password_file, None);
        assert_eq!(
            r.password_sources(false).env.map(|p| p.expose().to_owned()),
            Some("pw-from-env".into())
        );
        assert_eq!(
            path_of(r.ca_file.as_ref()),
            Some(("/env/ca".into(), Origin::Env("ETCDCTL_CACERT")))
        );
        // Flags beat both.
        let flags = Flags {
            context: Some("etcd".into()),
            etcd_cacert: Some("/flag/ca".into()),
            etcd_user: Some(EtcdSecret::new("flagger:pw")),
            password_file: Some("/flag/pw".into()),
            ..Flags::default()
        };
        let r = run(
            &flags,
            &[("ETCDCTL_USER", "root"), ("ETCDCTL_PASSWORD", "x")],
            true,
        )
        .unwrap();
        assert_eq!(
            r.ca_file.map(|s| s.origin),
            Some(Origin::Flag("--etcd-cacert"))
        );
        assert_eq!(
            r.etcd_user.map(|s| s.origin),
            Some(Origin::Flag("--etcd-user"))
        );
        assert_eq!(
            r.password_file.map(|s| s.origin),
            Some(Origin::Flag("--password-file"))
        );
    }

    #[test]
    fn read_only_and_datacenter() {
        let r = run(&Flags::default(), &[], true).unwrap();
        assert_eq!(r.read_only, Sourced::new(true, ctx("prod")));
        assert_eq!(r.datacenter, Some(Sourced::new("eu1".into(), ctx("prod"))));
        let flags = Flags {
            context: Some("demo-ctx".into()),
            read_only: true,
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(r.read_only, Sourced::new(true, Origin::Flag("--read-only")));
        let flags = Flags {
            datacenter: Some("us2".into()),
            ..Flags::default()
        };
        let r = run(&flags, &[], true).unwrap();
        assert_eq!(
            r.datacenter,
            Some(Sourced::new("us2".into(), Origin::Flag("--datacenter")))
        );
        let r = run(&Flags::default(), &[], false).unwrap();
        assert_eq!(r.read_only, Sourced::new(false, Origin::Default));
    }

    #[test]
    fn bad_values_name_their_source() {
        let flags = Flags {
            registry: Some("ftp://x".into()),
            ..Flags::default()
        };
        assert!(
            run(&flags, &[], true)
                .unwrap_err()
                .starts_with("--registry: unknown registry scheme")
        );
        let e = run(&Flags::default(), &[("CONSUL_HTTP_ADDR", "ftp://x")], true).unwrap_err();
        assert!(e.starts_with("CONSUL_HTTP_ADDR: "), "{e}");
        let e = run(
            &Flags::default(),
            &[("SPINE_DASH_METRICS", "ftp://x")],
            true,
        )
        .unwrap_err();
        assert!(e.starts_with("SPINE_DASH_METRICS: unknown scheme"), "{e}");
        let e = run(
            &Flags::default(),
            &[("CONSUL_HTTP_SSL_VERIFY", "maybe")],
            true,
        )
        .unwrap_err();
        assert!(e.contains("CONSUL_HTTP_SSL_VERIFY"), "{e}");
    }

    #[test]
    fn no_secret_in_debug_or_describe() {
        let flags = Flags {
            context: Some("etcd".into()),
            etcd_user: Some(EtcdSecret::new("u:flag-secret")),
            ..Flags::default()
        };
        let r = run(&flags, &[("ETCDCTL_PASSWORD", "env-secret")], true).unwrap();
        let shown = format!("{r:?} {flags:?} {}", r.describe());
        assert!(
            !shown.contains("flag-secret") && !shown.contains("env-secret"),
            "{shown}"
        );
        let r = run(
            &Flags::default(),
            &[("CONSUL_HTTP_TOKEN", "tok-secret")],
            true,
        )
        .unwrap();
        let shown = format!("{r:?} {}", r.describe());
        assert!(!shown.contains("tok-secret"), "{shown}");
        assert!(
            r.describe().contains("token (CONSUL_HTTP_TOKEN)"),
            "{}",
            r.describe()
        );
    }

    #[test]
    fn context_files_are_checked_with_a_clear_line() {
        let dir = std::env::temp_dir().join(format!("spine-dash-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "  \n").unwrap();
        let text = format!(
            "[contexts.prod]\nregistry = \"consul://h:8500\"\ntoken_file = \"{}\"\n[contexts.gone]\nregistry = \"consul://h:8500\"\ntoken_file = \"missing.token\"\n[contexts.tls]\nregistry = \"consul+https://h:8501\"\nca_file = \"{}\"\n",
            token.display(),
            token.display()
        );
        let cfg = dir.join("config.toml");
        let f = ConfigFile::parse(&text, &cfg, None).unwrap();
        let check = |name: &str, env: &[(&str, &str)]| {
            let flags = Flags {
                context: Some(name.into()),
                ..Flags::default()
            };
            let map: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            check_context_files(&resolve(&flags, &|k| map.get(k).cloned(), Some(&f)).unwrap())
        };
        let e = check("gone", &[]).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "context 'gone' (config file {}): token_file: cannot read {}",
                cfg.display(),
                dir.join("missing.token").display()
            )),
            "{e}"
        );
        let e = check("prod", &[]).unwrap_err();
        assert!(e.contains("token_file: the file is empty"), "{e}");
        let e = check("tls", &[]).unwrap_err();
        assert!(e.contains("ca_file: no PEM \"CERTIFICATE\" block"), "{e}");
        // From the environment, the loader checks it (its message names the variable).
        assert_eq!(check("gone", &[("CONSUL_HTTP_TOKEN_FILE", "/x")]), Ok(()));
        std::fs::write(&token, "s3cret\n").unwrap();
        assert_eq!(check("prod", &[]), Ok(()));
    }
}
