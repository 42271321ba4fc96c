//! Where to connect: the `--registry` value (or `CONSUL_HTTP_ADDR`) turned into a registry
//! kind and base URL. Pure parsing, no I/O.

use crate::model::types::RegistryKind;

/// The registry the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChoice {
    /// Start and use the embedded demo spine.
    Demo,
    /// A Consul agent at this base URL (`http://host:port` or `https://…`).
    Consul(String),
}

impl RegistryChoice {
    /// The kind shown in the header.
    #[must_use]
    pub fn kind(&self) -> RegistryKind {
        match self {
            Self::Demo => RegistryKind::Demo,
            Self::Consul(_) => RegistryKind::Consul,
        }
    }
}

/// Parses `demo`, `consul://host:port`, `consul+https://host:port`, `http(s)://host:port`
/// or a bare `host:port` (as `CONSUL_HTTP_ADDR` often is).
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
            return Err(format!(
                "etcd registries are not supported yet (coming with the registries work): {v}"
            ));
        }
        other => {
            return Err(format!(
                "unknown registry scheme '{other}' in {v}: use consul://host:port, consul+https://host:port or demo"
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
        assert!(
            parse_registry("etcd://h:2379")
                .unwrap_err()
                .contains("etcd")
        );
        assert!(parse_registry("http://h:1/v1/x").is_err());
    }
}
