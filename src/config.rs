//! Where to connect: the `--registry` value (or `CONSUL_HTTP_ADDR`, or etcdctl's
//! `ETCDCTL_ENDPOINTS`) turned into a registry kind and base URL(s). Pure parsing, no I/O.

use crate::model::types::RegistryKind;
use crate::registry::etcd::parse_endpoints;

/// The registry the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChoice {
    /// Start and use the embedded demo spine.
    Demo,
    /// A Consul agent at this base URL (`http://host:port` or `https://…`).
    Consul(String),
    /// An etcd cluster: base URLs of its members (`http://h1:2379`, …), tried in order.
    Etcd(Vec<String>),
}

impl RegistryChoice {
    /// The kind shown in the header.
    #[must_use]
    pub fn kind(&self) -> RegistryKind {
        match self {
            Self::Demo => RegistryKind::Demo,
            Self::Consul(_) => RegistryKind::Consul,
            Self::Etcd(_) => RegistryKind::Etcd,
        }
    }
}

/// The registry from the `--registry` value (flag or `CONSUL_HTTP_ADDR`) if given, else
/// etcdctl's `ETCDCTL_ENDPOINTS` (`h1:2379,https://h2:2379`) if set, else the demo.
pub fn choose_registry(
    value: Option<&str>,
    etcdctl_endpoints: Option<&str>,
) -> Result<RegistryChoice, String> {
    match (value, etcdctl_endpoints.map(str::trim)) {
        (Some(v), _) => parse_registry(v),
        (None, Some(e)) if !e.is_empty() => parse_endpoints(e, "http")
            .map(RegistryChoice::Etcd)
            .map_err(|err| format!("ETCDCTL_ENDPOINTS: {err}")),
        _ => Ok(RegistryChoice::Demo),
    }
}

/// Parses `demo`, `consul://host:port`, `consul+https://host:port`, `http(s)://host:port`,
/// a bare `host:port` (as `CONSUL_HTTP_ADDR` often is), `etcd://h1:2379,h2:2379` or
/// `etcd+https://h1:2379,…`.
pub fn parse_registry(value: &str) -> Result<RegistryChoice, String> {
    let v = value.trim();
    if v.is_empty() || v == "demo" {
        return Ok(RegistryChoice::Demo);
    }
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_owned(), v),
    };
    let http_scheme = match scheme.as_str() {
        "consul" | "http" => "http",
        "consul+https" | "https" => "https",
        "etcd" | "etcd+https" => {
            let default_scheme = if scheme == "etcd" { "http" } else { "https" };
            return parse_endpoints(rest.trim_end_matches('/'), default_scheme)
                .map(RegistryChoice::Etcd)
                .map_err(|e| format!("{e} (in {v})"));
        }
        other => {
            return Err(format!(
                "unknown registry scheme '{other}' in {v}: use consul://host:port, consul+https://host:port, etcd://host:2379,… or demo"
            ));
        }
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("not a host:port in registry address: {v}"));
    }
    Ok(RegistryChoice::Consul(format!("{http_scheme}://{host}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn registry_from_flag_or_etcdctl_endpoints() {
        assert_eq!(choose_registry(None, None), Ok(RegistryChoice::Demo));
        assert_eq!(choose_registry(None, Some(" ")), Ok(RegistryChoice::Demo));
        assert_eq!(
            choose_registry(None, Some("127.0.0.1:2379,https://b:2379")),
            Ok(RegistryChoice::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "https://b:2379".into()
            ]))
        );
        assert_eq!(
            choose_registry(Some("demo"), Some("a:1")),
            Ok(RegistryChoice::Demo)
        );
        assert!(
            choose_registry(None, Some("ftp://x"))
                .unwrap_err()
                .starts_with("ETCDCTL_ENDPOINTS:")
        );
    }
}
