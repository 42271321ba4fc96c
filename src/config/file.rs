//! The TOML config file with named **contexts** (prod, staging, …): where it lives
//! ([`default_config_path`], or `--config PATH`), what it may hold ([`ContextSpec`]), and
//! its parsing into checked [`Context`]s ([`ConfigFile::parse`]).
//!
//! Unknown keys are an error naming the key, the line and the file: a typo is never
//! silently ignored. Registry and metrics values are parsed as `--registry` and `--metrics`
//! parse them, so a bad URL stops the start with a line naming the context and the file.
//! Secrets never live in this file, only the paths of the files that hold them
//! (`token_file`, `password_file`, `key_file`); a `token` or `password` key is refused.
//! The files a context names are read later, only for the context in use
//! ([`super::resolve::check_context_files`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{MetricsSource, RegistryChoice, parse_metrics, parse_registry};

/// File name inside the platform config dir.
pub const CONFIG_FILE_NAME: &str = "config.toml";

/// The default config file: `config.toml` in the platform config dir
/// (`~/.config/spine-dash/` on Linux, `~/Library/Application Support/spine-dash/` on
/// macOS, `%APPDATA%\spine-dash\config\` on Windows); `None` without a home directory.
#[must_use]
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "spine-dash")
        .map(|dirs| dirs.config_dir().join(CONFIG_FILE_NAME))
}

/// The user's home directory, for `~/` in paths.
#[must_use]
pub fn home_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf())
}

/// One context as written in the file. Every key is optional; paths may be absolute,
/// `~/…`, or relative to the config file's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// As `--registry`: `demo`, `consul://host:8500`, `consul+https://…`, `consul+kv://…`,
    /// `etcd://h1:2379,h2:2379`, `etcd+https://…`.
    pub registry: Option<String>,
    /// As `--metrics`: `sidecars` or `prometheus://host:9090[?window=1m&interval=5s]`.
    pub metrics: Option<String>,
    /// Consul datacenter (as `--datacenter`).
    pub datacenter: Option<String>,
    /// Consul: file holding the ACL token (as `CONSUL_HTTP_TOKEN_FILE`).
    pub token_file: Option<PathBuf>,
    /// CA certificate file, PEM (`CONSUL_CACERT` / `ETCDCTL_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate file for mTLS, PEM (`CONSUL_CLIENT_CERT` / `ETCDCTL_CERT`).
    pub cert_file: Option<PathBuf>,
    /// Client key file for mTLS, PEM (`CONSUL_CLIENT_KEY` / `ETCDCTL_KEY`).
    pub key_file: Option<PathBuf>,
    /// Consul: the name the agent's certificate carries (`CONSUL_TLS_SERVER_NAME`).
    pub tls_server_name: Option<String>,
    /// etcd: the user name only (the password is in `password_file`).
    pub etcd_user: Option<String>,
    /// etcd: file whose first line is the user's password (as `--password-file`).
    pub password_file: Option<PathBuf>,
    /// Never write to the registry (as `--read-only`).
    pub read_only: Option<bool>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default_context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, ContextSpec>,
}

/// One checked context: its values as written, with paths made absolute and the registry
/// and metrics values parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Its name (`[contexts.NAME]`).
    pub name: String,
    /// The values, paths absolute.
    pub spec: ContextSpec,
    /// `registry`, parsed.
    pub registry: Option<RegistryChoice>,
    /// `metrics`, parsed.
    pub metrics: Option<MetricsSource>,
}

/// A parsed and checked config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `default_context`, known to name one of `contexts`.
    pub default_context: Option<String>,
    /// The contexts by name.
    pub contexts: BTreeMap<String, Context>,
}

/// Why the config file cannot be used; each is one line for the startup message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read (or, given with `--config`, does not exist).
    #[error("config file: cannot read it: {reason} ({})", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Not TOML, a wrong type, or an unknown key.
    #[error("config file {}, line {line}{}: {message}", path.display(), table.as_ref().map(|t| format!(" in [{t}]")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The `[table]` the line is in, if any.
        table: Option<String>,
        /// What is wrong (the key is named).
        message: String,
    },
    /// A value of a context that cannot be used.
    #[error("config file {}, context '{context}': {key}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The context.
        context: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `default_context` names no context.
    #[error("config file {}: default_context '{name}' is not one of its contexts ({})", path.display(), known_list(known))]
    UnknownDefault {
        /// The file.
        path: PathBuf,
        /// The name given.
        name: String,
        /// The contexts the file has.
        known: Vec<String>,
    },
    /// A context name that is not a simple word.
    #[error("config file {}: context name {name:?} may only use letters, digits, '-', '_' and '.'", path.display())]
    BadName {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
}

/// `known: a, b, c`, or `it has none`: the contexts a file has, for messages.
#[must_use]
pub fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "it has none".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    }
}

impl fmt::Display for Context {
    /// `name  registry  metrics` as written (no secrets: the file holds none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.name,
            self.spec.registry.as_deref().unwrap_or("-"),
            self.spec.metrics.as_deref().unwrap_or("-")
        )
    }
}

impl ConfigFile {
    /// Reads and parses `path`. A missing file is `Ok(None)` unless `required` (the path
    /// was given with `--config`): then it is an error, like any other read failure.
    pub fn load(path: &Path, required: bool) -> Result<Option<Self>, ConfigFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(e) => {
                return Err(ConfigFileError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(&text, path, home_dir().as_deref()).map(Some)
    }

    /// Parses the text of the file at `path` (relative paths inside are taken from its
    /// folder; `~/` from `home`). Pure: reads no file.
    pub fn parse(text: &str, path: &Path, home: Option<&Path>) -> Result<Self, ConfigFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| syntax_error(text, path, &e))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut contexts = BTreeMap::new();
        for (name, spec) in raw.contexts {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ConfigFileError::BadName {
                    path: path.to_path_buf(),
                    name,
                });
            }
            let context = check_context(&name, spec, base, home).map_err(|(key, message)| {
                ConfigFileError::Invalid {
                    path: path.to_path_buf(),
                    context: name.clone(),
                    key,
                    message,
                }
            })?;
            contexts.insert(name, context);
        }
        if let Some(name) = &raw.default_context
            && !contexts.contains_key(name)
        {
            return Err(ConfigFileError::UnknownDefault {
                path: path.to_path_buf(),
                name: name.clone(),
                known: contexts.keys().cloned().collect(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            default_context: raw.default_context,
            contexts,
        })
    }

    /// The names of the contexts, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.contexts.keys().cloned().collect()
    }
}

/// Checks one context's values; the error is `(key, what is wrong)`.
fn check_context(
    name: &str,
    mut spec: ContextSpec,
    base: &Path,
    home: Option<&Path>,
) -> Result<Context, (&'static str, String)> {
    let registry = match spec.registry.as_deref() {
        Some(v) => {
            let authority = v.split_once("://").map_or(v, |(_, rest)| rest);
            if authority.contains('@') {
                return Err((
                    "registry",
                    "credentials in the address are not supported: put the token's path in \
                     token_file, or etcd_user and password_file"
                        .into(),
                ));
            }
            Some(parse_registry(v).map_err(|e| ("registry", e))?)
        }
        None => None,
    };
    let metrics = match spec.metrics.as_deref() {
        Some(v) => Some(parse_metrics(v).map_err(|e| {
            let text = e.to_string();
            let text = text.strip_prefix("--metrics: ").unwrap_or(&text).to_owned();
            ("metrics", text)
        })?),
        None => None,
    };
    if let Some(user) = &spec.etcd_user {
        if user.contains(':') {
            return Err((
                "etcd_user",
                "give the user name only: the password goes in a file named by password_file \
                 (secrets are never in this file)"
                    .into(),
            ));
        }
        if user.trim().is_empty() {
            return Err(("etcd_user", "empty user name".into()));
        }
    }
    for (key, value) in [
        ("datacenter", &spec.datacenter),
        ("tls_server_name", &spec.tls_server_name),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err((key, "empty value (leave the key out instead)".into()));
        }
    }
    for (key, slot) in [
        ("token_file", &mut spec.token_file),
        ("ca_file", &mut spec.ca_file),
        ("cert_file", &mut spec.cert_file),
        ("key_file", &mut spec.key_file),
        ("password_file", &mut spec.password_file),
    ] {
        if let Some(p) = slot.take() {
            *slot = Some(absolute(&p, base, home).map_err(|e| (key, e))?);
        }
    }
    match (&spec.cert_file, &spec.key_file) {
        (Some(_), None) => return Err(("cert_file", "mTLS needs key_file as well".into())),
        (None, Some(_)) => return Err(("key_file", "mTLS needs cert_file as well".into())),
        _ => {}
    }
    if spec.password_file.is_some() && spec.etcd_user.is_none() {
        return Err((
            "password_file",
            "needs etcd_user (whose password it holds)".into(),
        ));
    }
    // Keys of the other registry kind would be silently unused: say so.
    let consul_only = [
        ("token_file", spec.token_file.is_some()),
        ("datacenter", spec.datacenter.is_some()),
        ("tls_server_name", spec.tls_server_name.is_some()),
    ];
    let etcd_only = [("etcd_user", spec.etcd_user.is_some())];
    let (unused, kind): (&[(&'static str, bool)], &str) = match &registry {
        Some(RegistryChoice::Etcd(_)) => (&consul_only, "etcd"),
        Some(RegistryChoice::Consul(_) | RegistryChoice::ConsulKv(_)) => (&etcd_only, "Consul"),
        _ => (&[], ""),
    };
    if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
        return Err((
            key,
            format!("not used with this context's registry ({kind})"),
        ));
    }
    Ok(Context {
        name: name.to_owned(),
        spec,
        registry,
        metrics,
    })
}

/// `~/x` from home, relative from the config file's folder, absolute as is.
fn absolute(p: &Path, base: &Path, home: Option<&Path>) -> Result<PathBuf, String> {
    if p.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    if let Ok(rest) = p.strip_prefix("~") {
        return home
            .map(|h| h.join(rest))
            .ok_or_else(|| format!("no home directory to expand ~ in {}", p.display()));
    }
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

/// One line from toml's error: the line number, the `[table]` it is in, the message, and a
/// hint when the unknown key looks like a secret.
fn syntax_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigFileError {
    let offset = e.span().map_or(0, |s| s.start.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let table = before.lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && l.ends_with(']'))
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    let mut message = e.message().trim().replace('\n', " ");
    if ["`token`", "`password`", "`secret`", "`key`"]
        .iter()
        .any(|k| message.contains(&format!("unknown field {k}")))
    {
        message.push_str(
            " (secrets are never in this file: name the file that holds them with token_file, \
             password_file or key_file)",
        );
    }
    ConfigFileError::Syntax {
        path: path.to_path_buf(),
        line,
        table,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/spine-dash/config.toml";

    fn parse(text: &str) -> Result<ConfigFile, ConfigFileError> {
        ConfigFile::parse(text, Path::new(PATH), Some(Path::new("/home/op")))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn two_contexts_with_paths_made_absolute() {
        let f = parse(
            r#"
default_context = "prod"

[contexts.prod]
registry = "consul+https://consul.prod:8501"
metrics = "prometheus://prom.prod:9090?window=30s"
datacenter = "eu1"
token_file = "~/.consul/prod.token"
ca_file = "certs/ca.pem"
cert_file = "/abs/client.pem"
key_file = "/abs/client-key.pem"
tls_server_name = "server.eu1.consul"
read_only = true

[contexts.local-etcd]
registry = "etcd://127.0.0.1:2379"
etcd_user = "root"
password_file = "etcd.pw"
"#,
        )
        .unwrap();
        assert_eq!(f.default_context.as_deref(), Some("prod"));
        assert_eq!(f.names(), vec!["local-etcd", "prod"]);
        let prod = &f.contexts["prod"];
        assert_eq!(
            prod.registry,
            Some(RegistryChoice::Consul("https://consul.prod:8501".into()))
        );
        assert!(prod.metrics.as_ref().unwrap().prometheus().is_some());
        assert_eq!(
            prod.spec.token_file.as_deref(),
            Some(Path::new("/home/op/.consul/prod.token"))
        );
        assert_eq!(
            prod.spec.ca_file.as_deref(),
            Some(Path::new("/etc/spine-dash/certs/ca.pem"))
        );
        assert_eq!(prod.spec.read_only, Some(true));
        let etcd = &f.contexts["local-etcd"];
        assert_eq!(
            etcd.spec.password_file.as_deref(),
            Some(Path::new("/etc/spine-dash/etcd.pw"))
        );
        assert_eq!(etcd.spec.etcd_user.as_deref(), Some("root"));
    }

    #[test]
    fn empty_file_is_fine() {
        let f = parse("").unwrap();
        assert!(f.contexts.is_empty() && f.default_context.is_none());
    }

    #[test]
    fn unknown_keys_name_the_key_line_table_and_file() {
        let e = err("[contexts.prod]\nregistry = \"demo\"\nregistyr = \"consul://h:1\"\n");
        assert!(e.starts_with("config file /etc/spine-dash/config.toml, line 3 in [contexts.prod]: unknown field `registyr`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("default_contxt = \"x\"\n");
        assert!(e.contains("line 1: unknown field `default_contxt`"), "{e}");
        let e = err("[context.prod]\nregistry = \"demo\"\n");
        assert!(e.contains("unknown field `context`"), "{e}");
    }

    #[test]
    fn secrets_in_the_file_are_refused_with_a_hint() {
        let e = err("[contexts.prod]\ntoken = \"s3cr3t-token\"\n");
        assert!(e.contains("unknown field `token`"), "{e}");
        assert!(e.contains("token_file"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = err("[contexts.e]\netcd_user = \"root:hunter2\"\n");
        assert!(
            e.starts_with(
                "config file /etc/spine-dash/config.toml, context 'e': etcd_user: give the user name only"
            ),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("[contexts.c]\nregistry = \"consul://admin:pw@h:8500\"\n");
        assert!(e.contains("context 'c': registry: credentials"), "{e}");
    }

    #[test]
    fn bad_values_name_the_context_and_key() {
        let e = err("[contexts.prod]\nregistry = \"ftp://x\"\n");
        assert!(
            e.starts_with("config file /etc/spine-dash/config.toml, context 'prod': registry: unknown registry scheme 'ftp'"),
            "{e}"
        );
        let e = err("[contexts.prod]\nmetrics = \"prometheus://p:9090?window=5x\"\n");
        assert!(e.contains("context 'prod': metrics: window=5x"), "{e}");
        let e = err("[contexts.prod]\nread_only = \"yes\"\n");
        assert!(e.contains("line 2 in [contexts.prod]"), "{e}");
        let e = err("[contexts.prod]\ncert_file = \"c.pem\"\n");
        assert!(e.contains("cert_file: mTLS needs key_file"), "{e}");
        let e = err("[contexts.prod]\ntoken_file = \"\"\n");
        assert!(e.contains("token_file: empty path"), "{e}");
        let e = err("default_context = \"prd\"\n[contexts.prod]\n[contexts.dev]\n");
        assert!(
            e.ends_with("default_context 'prd' is not one of its contexts (known: dev, prod)"),
            "{e}"
        );
        let e = err("[contexts.e]\nregistry = \"etcd://h:2379\"\ntoken_file = \"t\"\n");
        assert!(
            e.contains("context 'e': token_file: not used with this context's registry (etcd)"),
            "{e}"
        );
        let e = err("[contexts.c]\nregistry = \"consul://h:8500\"\netcd_user = \"u\"\n");
        assert!(
            e.contains("etcd_user: not used with this context's registry (Consul)"),
            "{e}"
        );
        let e = err("[contexts.c]\npassword_file = \"p\"\n");
        assert!(e.contains("password_file: needs etcd_user"), "{e}");
        let e = err("[contexts.\"a b\"]\n");
        assert!(e.contains("context name \"a b\""), "{e}");
        assert!(err("[contexts.prod\n").contains("line 1"));
    }

    #[test]
    fn missing_files() {
        let missing = Path::new("/nonexistent/spine-dash/config.toml");
        assert_eq!(ConfigFile::load(missing, false), Ok(None));
        let e = ConfigFile::load(missing, true).unwrap_err().to_string();
        assert!(e.starts_with("config file: cannot read it: "), "{e}");
        assert!(e.ends_with("(/nonexistent/spine-dash/config.toml)"), "{e}");
    }

    #[test]
    fn the_sample_file_parses() {
        let text = include_str!("../../assets/config.example.toml");
        let f = parse(text).unwrap();
        assert_eq!(f.names(), vec!["demo", "etcd", "prod", "staging"]);
        assert_eq!(f.default_context.as_deref(), Some("demo"));
        assert_eq!(f.contexts["demo"].registry, Some(RegistryChoice::Demo));
        assert_eq!(
            f.contexts["staging"].registry,
            Some(RegistryChoice::ConsulKv(
                "http://consul.staging.example:8500".into()
            ))
        );
        assert_eq!(
            f.contexts["prod"].spec.token_file.as_deref(),
            Some(Path::new("/home/op/.config/spine-dash/prod.token"))
        );
    }

    #[test]
    fn default_path_is_in_the_config_dir() {
        if let Some(p) = default_config_path() {
            assert!(p.ends_with("config.toml"));
            assert!(p.to_string_lossy().contains("spine-dash"));
        }
    }
}
