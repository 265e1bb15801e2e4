//! The `[metrics]` table: where the Prometheus endpoint listens.
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use serde::Deserialize;

/// Loopback only by default: the endpoint has no authentication, and
/// nothing but the local Prometheus (or an exporter proxy) should read it.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
    9421, // "421", the reply the gate is about
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; None disables it.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(DEFAULT_LISTEN),
        }
    }
}

/// The table as written. `listen` is read as any TOML value so that
/// validation, not serde, says what is wrong with it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    listen: Option<toml::Value>,
}

impl MetricsConfig {
    pub fn from_raw(raw: RawMetrics) -> Result<MetricsConfig> {
        let listen = match raw.listen {
            None => Some(DEFAULT_LISTEN),
            Some(v) => parse_listen(&v)?,
        };
        Ok(MetricsConfig { listen })
    }
}

/// `"ADDR:PORT"`, or `false` / `""` for no endpoint.
fn parse_listen(v: &toml::Value) -> Result<Option<SocketAddr>> {
    let hint = format!(
        "give an address and port such as \"{DEFAULT_LISTEN}\" or \"[::1]:9421\", \
         or false to disable the metrics endpoint"
    );
    match v {
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::String(s) if s.is_empty() => Ok(None),
        toml::Value::String(s) => {
            let Ok(addr) = s.parse::<SocketAddr>() else {
                bail!("metrics.listen: {s:?} is not an address and port: {hint}");
            };
            if addr.port() == 0 {
                bail!(
                    "metrics.listen: {s:?} has port 0 (a random port nobody could scrape): {hint}"
                );
            }
            Ok(Some(addr))
        }
        other => bail!("metrics.listen: {other} is not an address: {hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricsConfig> {
        let raw: RawMetrics = toml::from_str(text)?;
        MetricsConfig::from_raw(raw)
    }

    #[test]
    fn default_is_loopback() {
        let c = parse("").unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9421".parse().unwrap()));
        assert!(c.listen.unwrap().ip().is_loopback());
        assert_eq!(c, MetricsConfig::default());
    }

    #[test]
    fn addresses_and_disabling() {
        assert_eq!(
            parse("listen = \"[::1]:9100\"").unwrap().listen,
            Some("[::1]:9100".parse().unwrap())
        );
        assert_eq!(
            parse("listen = \"203.0.113.7:9421\"").unwrap().listen,
            Some("203.0.113.7:9421".parse().unwrap())
        );
        assert_eq!(parse("listen = false").unwrap().listen, None);
        assert_eq!(parse("listen = \"\"").unwrap().listen, None);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        for (text, needle) in [
            (
                "listen = \"localhost:9421\"",
                "\"localhost:9421\" is not an address",
            ),
            ("listen = \"127.0.0.1\"", "\"127.0.0.1\" is not an address"),
            ("listen = \"127.0.0.1:0\"", "port 0"),
            ("listen = \"127.0.0.1:70000\"", "\"127.0.0.1:70000\" is not"),
            ("listen = true", "true is not an address"),
            ("listen = 9421", "9421 is not an address"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.starts_with("metrics.listen: "), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(parse("port = 1").is_err(), "unknown keys are refused");
    }
}
