//! Where to connect: the `--registry` value (or `CONSUL_HTTP_ADDR`) turned into a registry
//! kind and base URL. Pure parsing, no I/O here; [`consul`] gathers the Consul settings
//! (token, TLS files, datacenter) from the environment and reads the files they name.

use crate::model::types::RegistryKind;

pub mod consul;

/// The registry the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChoice {
    /// Start and use the embedded demo spine.
    Demo,
    /// A Consul agent at this base URL (`http://host:port` or `https://…`).
    Consul(String),
    /// A Consul agent used in KV mode (no Connect): the design's SDK layout under
    /// `services/` and splits under `mesh/splits/` (`consul+kv://host:port`).
    ConsulKv(String),
}

impl RegistryChoice {
    /// The kind shown in the header.
    #[must_use]
    pub fn kind(&self) -> RegistryKind {
        match self {
            Self::Demo => RegistryKind::Demo,
            Self::Consul(_) | Self::ConsulKv(_) => RegistryKind::Consul,
        }
    }
}

/// Parses `demo`, `consul://host:port`, `consul+https://host:port`, `consul+kv://host:port`,
/// `consul+kv+https://host:port`, `http(s)://host:port` or a bare `host:port` (as
/// `CONSUL_HTTP_ADDR` often is).
pub fn parse_registry(value: &str) -> Result<RegistryChoice, String> {
    let v = value.trim();
    if v.is_empty() || v == "demo" {
        return Ok(RegistryChoice::Demo);
    }
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_owned(), v),
    };
    let (http_scheme, kv) = match scheme.as_str() {
        "consul" | "http" => ("http", false),
        "consul+https" | "https" => ("https", false),
        "consul+kv" => ("http", true),
        "consul+kv+https" => ("https", true),
        "etcd" | "etcd+https" => {
            return Err(format!(
                "etcd registries are not supported yet (coming with the registries work): {v}"
            ));
        }
        other => {
            return Err(format!(
                "unknown registry scheme '{other}' in {v}: use consul://host:port, consul+https://host:port, \
                 consul+kv://host:port (KV mode) or demo"
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
        assert!(
            parse_registry("etcd://h:2379")
                .unwrap_err()
                .contains("etcd")
        );
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
