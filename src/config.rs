//! Where to connect: the `--registry` value (or `CONSUL_HTTP_ADDR`, or etcdctl's
//! `ETCDCTL_ENDPOINTS`) turned into a registry kind and base URL(s), and the `--metrics`
//! value into a metrics source. Pure parsing, no I/O here; [`consul`] gathers the Consul
//! settings (token, TLS files, datacenter) from the environment and reads the files they name;
//! [`file`] is the TOML config file with named contexts, and [`resolve`] merges flags,
//! environment and the chosen context (flag > environment > config file).

use std::time::Duration;

use crate::metrics::prometheus::{PrometheusSource, format_duration, parse_duration};
use crate::model::types::RegistryKind;
use crate::registry::etcd::parse_endpoints;

pub mod consul;
pub mod file;
pub mod resolve;

/// The registry the operator asked for. `Debug` shows URLs without user-info.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryChoice {
    /// Start and use the embedded demo spine.
    Demo,
    /// A Consul agent at this base URL (`http://host:port` or `https://…`).
    Consul(String),
    /// An etcd cluster: base URLs of its members (`http://h1:2379`, …), tried in order.
    Etcd(Vec<String>),
    /// A Consul agent used in KV mode (no Connect): the design's SDK layout under
    /// `services/` and splits under `mesh/splits/` (`consul+kv://host:port`).
    ConsulKv(String),
}

impl std::fmt::Debug for RegistryChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |u: &str| crate::net::strip_userinfo(u).into_owned();
        match self {
            Self::Demo => f.write_str("Demo"),
            Self::Consul(u) => f.debug_tuple("Consul").field(&shown(u)).finish(),
            Self::Etcd(list) => f
                .debug_tuple("Etcd")
                .field(&list.iter().map(|u| shown(u)).collect::<Vec<_>>())
                .finish(),
            Self::ConsulKv(u) => f.debug_tuple("ConsulKv").field(&shown(u)).finish(),
        }
    }
}

impl RegistryChoice {
    /// The kind shown in the header.
    #[must_use]
    pub fn kind(&self) -> RegistryKind {
        match self {
            Self::Demo => RegistryKind::Demo,
            Self::Consul(_) | Self::ConsulKv(_) => RegistryKind::Consul,
            Self::Etcd(_) => RegistryKind::Etcd,
        }
    }
}

/// Parses `demo`, `consul://host:port`, `consul+https://host:port`, `consul+kv://host:port`,
/// `consul+kv+https://host:port`, `http(s)://host:port`, a bare `host:port` (as
/// `CONSUL_HTTP_ADDR` often is), `etcd://h1:2379,h2:2379` or `etcd+https://h1:2379,…`.
pub fn parse_registry(value: &str) -> Result<RegistryChoice, String> {
    let value = value.trim();
    if value.is_empty() || value == "demo" {
        return Ok(RegistryChoice::Demo);
    }
    // Messages show the value without user-info.
    let v = crate::net::strip_userinfo(value);
    let v = v.as_ref();
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_owned(), value),
    };
    let (http_scheme, kv) = match scheme.as_str() {
        "consul" | "http" => ("http", false),
        "consul+https" | "https" => ("https", false),
        "consul+kv" => ("http", true),
        "consul+kv+https" => ("https", true),
        "etcd" | "etcd+https" => {
            let default_scheme = if scheme == "etcd" { "http" } else { "https" };
            return parse_endpoints(rest.trim_end_matches('/'), default_scheme)
                .map(RegistryChoice::Etcd)
                .map_err(|e| format!("{e} (in {v})"));
        }
        other => {
            return Err(format!(
                "unknown registry scheme '{other}' in {v}: use consul://host:port, consul+https://host:port, \
                 consul+kv://host:port (KV mode), etcd://host:2379,… or demo"
            ));
        }
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("not a host:port in registry address: {v}"));
    }
    let url = format!("{http_scheme}://{host}");
    Ok(if kv {
        RegistryChoice::ConsulKv(url)
    } else {
        RegistryChoice::Consul(url)
    })
}

/// A configuration value that cannot be used; the text is the startup message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `--metrics` value (or `SPINE_DASH_METRICS`) that is neither `sidecars` nor a
    /// Prometheus URL. `value` never holds credentials.
    #[error("--metrics: {reason}: {value}")]
    Metrics {
        /// What is wrong, and what would be right.
        reason: String,
        /// The value as given (credentials removed).
        value: String,
    },
}

/// Where lane metrics come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MetricsSource {
    /// Scrape every sidecar's `Meta.metrics_url` (the default).
    #[default]
    Sidecars,
    /// Query a Prometheus server that scrapes the sidecars.
    Prometheus(PrometheusSource),
}

impl MetricsSource {
    /// The Prometheus server, if that is the source.
    #[must_use]
    pub fn prometheus(&self) -> Option<&PrometheusSource> {
        match self {
            Self::Sidecars => None,
            Self::Prometheus(p) => Some(p),
        }
    }
}

/// Shortest rate window and refresh interval accepted.
const MIN_PROMETHEUS_DURATION: Duration = Duration::from_secs(1);

/// Parses `sidecars` (or empty: the default), or a Prometheus server:
/// `prometheus://host:9090`, `prometheus+https://host`, with an optional path prefix
/// (`prometheus://host:9090/prom`) and options `?window=1m&interval=5s` (rate window, default
/// 1m: at least two of Prometheus's scrape intervals; refresh interval, default 5s). Plain
/// `http://` and `https://` URLs are taken as Prometheus too. Credentials in the URL are
/// refused (they would reach logs and the screen).
pub fn parse_metrics(value: &str) -> Result<MetricsSource, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("sidecars") {
        return Ok(MetricsSource::Sidecars);
    }
    let fail = |reason: String, shown: &str| ConfigError::Metrics {
        reason,
        value: shown.to_owned(),
    };
    let Some((scheme, rest)) = v.split_once("://") else {
        return Err(fail(
            "use sidecars, prometheus://host:9090 or prometheus+https://host:9090".into(),
            v,
        ));
    };
    let http_scheme = match scheme.to_ascii_lowercase().as_str() {
        "prometheus" | "http" => "http",
        "prometheus+https" | "https" => "https",
        other => {
            return Err(fail(
                format!(
                    "unknown scheme '{other}': use sidecars, prometheus://host:9090 or prometheus+https://host:9090"
                ),
                v,
            ));
        }
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        let shown = format!("{scheme}://…@{}", &rest[at + 1..]);
        return Err(fail(
            "credentials in the URL are not supported (they would show in logs and on screen)"
                .into(),
            &shown,
        ));
    }
    let url = reqwest::Url::parse(&format!("{http_scheme}://{rest}"))
        .map_err(|e| fail(format!("not a URL ({e})"), v))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(fail("no host".into(), v));
    };
    if url.fragment().is_some() {
        return Err(fail("a URL fragment (#…) means nothing here".into(), v));
    }
    let mut source = PrometheusSource::new(String::new());
    for (key, val) in url.query_pairs() {
        let slot = match key.as_ref() {
            "window" => &mut source.window,
            "interval" => &mut source.interval,
            other => {
                return Err(fail(
                    format!("unknown option '{other}': the options are window and interval"),
                    v,
                ));
            }
        };
        match parse_duration(&val) {
            Some(d) if d >= MIN_PROMETHEUS_DURATION => *slot = d,
            _ => {
                return Err(fail(
                    format!(
                        "{key}={val} is not a duration of at least {} like 30s, 1m or 1m30s",
                        format_duration(MIN_PROMETHEUS_DURATION)
                    ),
                    v,
                ));
            }
        }
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    source.base_url = format!("{http_scheme}://{host}{port}{path}");
    Ok(MetricsSource::Prometheus(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prom(base: &str, window_secs: u64, interval_secs: u64) -> MetricsSource {
        MetricsSource::Prometheus(PrometheusSource {
            base_url: base.into(),
            window: Duration::from_secs(window_secs),
            interval: Duration::from_secs(interval_secs),
        })
    }

    #[test]
    fn metrics_values() {
        assert_eq!(parse_metrics("sidecars"), Ok(MetricsSource::Sidecars));
        assert_eq!(parse_metrics(""), Ok(MetricsSource::Sidecars));
        assert_eq!(
            parse_metrics("prometheus://127.0.0.1:9090"),
            Ok(prom("http://127.0.0.1:9090", 60, 5))
        );
        assert_eq!(
            parse_metrics("prometheus+https://prom.example/"),
            Ok(prom("https://prom.example", 60, 5))
        );
        assert_eq!(
            parse_metrics("prometheus://p:9090/prom/?window=30s&interval=2s"),
            Ok(prom("http://p:9090/prom", 30, 2))
        );
        assert_eq!(
            parse_metrics("http://[::1]:9090?window=1m30s"),
            Ok(prom("http://[::1]:9090", 90, 5))
        );
        assert_eq!(
            parse_metrics("PROMETHEUS://P:9090").map(|m| m.prometheus().cloned()),
            Ok(Some(PrometheusSource::new("http://p:9090")))
        );
    }

    #[test]
    fn bad_metrics_values_say_why() {
        let err = |v: &str| parse_metrics(v).unwrap_err().to_string();
        assert_eq!(
            err("ftp://x"),
            "--metrics: unknown scheme 'ftp': use sidecars, prometheus://host:9090 or prometheus+https://host:9090: ftp://x"
        );
        assert!(err("prometheus").contains("use sidecars, prometheus://host:9090"));
        assert!(
            err("prometheus://").contains("no host") || err("prometheus://").contains("not a URL")
        );
        assert!(err("prometheus://p:99999").contains("not a URL"));
        assert_eq!(
            err("prometheus://p:9090?window=5x"),
            "--metrics: window=5x is not a duration of at least 1s like 30s, 1m or 1m30s: prometheus://p:9090?window=5x"
        );
        assert!(err("prometheus://p:9090?interval=0s").contains("interval=0s"));
        assert!(err("prometheus://p:9090?step=1").contains("unknown option 'step'"));
        assert!(err("prometheus://p:9090#x").contains("fragment"));
        let creds = err("prometheus+https://admin:s3cret@p:9090/x");
        assert!(
            !creds.contains("s3cret") && !creds.contains("admin"),
            "{creds}"
        );
        assert!(creds.ends_with("prometheus+https://…@p:9090/x"), "{creds}");
    }

    #[test]
    fn registry_values() {
        assert_eq!(parse_registry("demo"), Ok(RegistryChoice::Demo));
        assert_eq!(parse_registry(""), Ok(RegistryChoice::Demo));
        assert_eq!(
            parse_registry("consul://127.0.0.1:8500"),
            Ok(RegistryChoice::Consul("http://127.0.0.1:8500".into()))
        );
        assert_eq!(
            parse_registry("consul+https://c.example:8501/"),
            Ok(RegistryChoice::Consul("https://c.example:8501".into()))
        );
        assert_eq!(
            parse_registry("127.0.0.1:8500"),
            Ok(RegistryChoice::Consul("http://127.0.0.1:8500".into()))
        );
        assert!(parse_registry("ftp://x").is_err());
        assert_eq!(
            parse_registry("etcd://h1:2379,h2:2379"),
            Ok(RegistryChoice::Etcd(vec![
                "http://h1:2379".into(),
                "http://h2:2379".into()
            ]))
        );
        assert_eq!(
            parse_registry("etcd+https://h1:2379/"),
            Ok(RegistryChoice::Etcd(vec!["https://h1:2379".into()]))
        );
        assert_eq!(
            parse_registry("etcd+https://h1:2379").unwrap().kind(),
            RegistryKind::Etcd
        );
        assert!(
            parse_registry("etcd://")
                .unwrap_err()
                .contains("no etcd endpoint")
        );
        assert!(parse_registry("etcd://h:port").is_err());
        assert!(parse_registry("etcd://h:1/v3").is_err());
        assert!(parse_registry("http://h:1/v1/x").is_err());
        assert_eq!(
            parse_registry("consul+kv://127.0.0.1:8500"),
            Ok(RegistryChoice::ConsulKv("http://127.0.0.1:8500".into()))
        );
        assert_eq!(
            parse_registry("CONSUL+KV+HTTPS://c:8501"),
            Ok(RegistryChoice::ConsulKv("https://c:8501".into()))
        );
    }
}
