//! The design's SDK subcommands — `register`, `lookup`, `deregister` — written once over
//! [`ServiceSdk`], so each backend plugs in with one match arm in `main.rs`.

use std::future::Future;
use std::time::Duration;

use crate::registry::RegistryError;
use crate::registry::sdk::{LookupError, Registered, Registration, ServiceSdk};

/// Parses a TTL: `15s`, `1m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_ttl(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {value:?} (e.g. 15s, 1m)"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {value:?} (use ms, s, m or h)"
            ));
        }
    };
    if d < Duration::from_secs(1) {
        return Err(format!("TTL {value:?} is below 1 s"));
    }
    Ok(d)
}

/// How often a registration with `ttl` is kept alive: a third of it (at least every 500 ms).
#[must_use]
pub fn keepalive_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(500))
}

/// `register <name> <url> [--version v] [--ttl 15s]`. Without a TTL: registers and
/// returns. With one: keeps the registration alive (every `ttl / 3`; a refused renewal
/// registers again) until `shutdown` completes, then deregisters. `say` receives the
/// lines for the operator.
pub async fn register<S: ServiceSdk>(
    sdk: &S,
    registration: &Registration,
    shutdown: impl Future<Output = ()>,
    mut say: impl FnMut(&str),
) -> Result<Registered, RegistryError> {
    let mut registered = sdk.register(registration).await?;
    let Some(ttl) = registration.ttl else {
        say(&format!(
            "registered {} as {} ({})",
            registration.url, registered.instance_id, registration.service
        ));
        return Ok(registered);
    };
    say(&format!(
        "registered {} as {} ({}) with a {} s lease; keeping it alive — Ctrl-C deregisters",
        registration.url,
        registered.instance_id,
        registration.service,
        ttl.as_secs()
    ));
    let mut tick = tokio::time::interval(keepalive_interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                if let Err(e) = sdk.keep_alive(&registered).await {
                    tracing::warn!("keep-alive failed ({e}); registering again");
                    match sdk.register(registration).await {
                        Ok(again) => {
                            say(&format!("registered again as {}", again.instance_id));
                            registered = again;
                        }
                        Err(e) => tracing::warn!("registering again failed ({e}); retrying"),
                    }
                }
            }
        }
    }
    sdk.deregister(&registered).await?;
    say(&format!("deregistered {}", registered.instance_id));
    Ok(registered)
}

/// `lookup <name>`: one URL, weighted by the split, healthy instances only.
pub async fn lookup<S: ServiceSdk>(sdk: &S, service: &str) -> Result<String, LookupError> {
    sdk.lookup(service).await
}

/// `deregister <name>`: removes every registration of the service; how many.
pub async fn deregister<S: ServiceSdk>(sdk: &S, service: &str) -> Result<usize, RegistryError> {
    sdk.deregister_service(service).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_ttl("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_ttl("500ms").is_err());
        assert!(parse_ttl("s").is_err());
        assert!(parse_ttl("5 parsecs").is_err());
        assert_eq!(
            keepalive_interval(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}
