//! The `[spf]` table: which resolvers the SPF walks ask, and the bounds of
//! the refresh schedule.
//!
//! ```toml
//! [spf]
//! resolvers = ["[2001:db8::53]:53"]   # default: the system's (/etc/resolv.conf)
//! refresh_floor = "5m"                # never refresh sooner (default 5m)
//! refresh_ceiling = "6h"              # never later, whatever the TTL (default 6h)
//! ```
use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::{
    dns::{DnsFailure, HickoryDns},
    refresh::Bounds,
};

/// Longest ceiling accepted: a removal published by a partner must reach
/// the gate within a day.
const MAX_CEILING: Duration = Duration::from_secs(86400);
/// How long one DNS question may take before it counts as unanswered.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpfConfig {
    /// Empty: the system resolver configuration.
    pub resolvers: Vec<SocketAddr>,
    pub bounds: Bounds,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpf {
    resolvers: Option<Vec<String>>,
    refresh_floor: Option<toml::Value>,
    refresh_ceiling: Option<toml::Value>,
}

/// "30s", "5m", "6h", "1d": a whole number and a unit.
fn duration(key: &str, v: &toml::Value) -> Result<Duration> {
    let hint = "a duration such as \"30s\", \"5m\" or \"6h\"";
    let toml::Value::String(text) = v else {
        bail!("spf.{key}: {v} is not a duration: give {hint}");
    };
    let t = text.trim();
    let secs = t
        .strip_suffix('s')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .map(Duration::from_secs);
    match secs.or_else(|| crate::explain::parse_duration(t)) {
        Some(d) => Ok(d),
        None => bail!("spf.{key}: {text:?} is not a duration: give {hint}"),
    }
}

impl SpfConfig {
    pub fn from_raw(raw: RawSpf) -> Result<SpfConfig> {
        let mut c = SpfConfig::default();
        for r in raw.resolvers.unwrap_or_default() {
            let addr: SocketAddr = r.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "spf.resolvers: {r:?} is not an address with a port (e.g. \"[2001:db8::53]:53\" or \"192.0.2.53:53\")"
                )
            })?;
            if c.resolvers.contains(&addr) {
                bail!("spf.resolvers: {addr} is listed twice");
            }
            c.resolvers.push(addr);
        }
        if let Some(v) = &raw.refresh_floor {
            c.bounds.floor = duration("refresh_floor", v)?;
            if c.bounds.floor.is_zero() {
                bail!(
                    "spf.refresh_floor: must be at least 1s (0 would re-query DNS without pause)"
                );
            }
        }
        if let Some(v) = &raw.refresh_ceiling {
            c.bounds.ceiling = duration("refresh_ceiling", v)?;
            if c.bounds.ceiling > MAX_CEILING {
                bail!("spf.refresh_ceiling: longer than 1d: a partner's removed range would stay allowed for days");
            }
        }
        if c.bounds.ceiling < c.bounds.floor {
            bail!(
                "spf.refresh_ceiling ({}s) is shorter than spf.refresh_floor ({}s)",
                c.bounds.ceiling.as_secs(),
                c.bounds.floor.as_secs()
            );
        }
        Ok(c)
    }

    /// The resolver the walks use: the configured servers, or the system's.
    pub fn resolver(&self) -> Result<HickoryDns, DnsFailure> {
        if self.resolvers.is_empty() {
            HickoryDns::from_system_conf()
        } else {
            Ok(HickoryDns::with_nameservers(&self.resolvers, QUERY_TIMEOUT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SpfConfig> {
        SpfConfig::from_raw(toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap(), SpfConfig::default());
        let c = parse(
            "resolvers = [\"[2001:db8::53]:53\"]\nrefresh_floor = \"2s\"\nrefresh_ceiling = \"1h\"",
        )
        .unwrap();
        assert_eq!(c.resolvers, ["[2001:db8::53]:53".parse().unwrap()]);
        assert_eq!(c.bounds.floor, Duration::from_secs(2));
        assert_eq!(c.bounds.ceiling, Duration::from_secs(3600));
    }

    #[test]
    fn bad_values_are_named() {
        for (text, want) in [
            (
                "resolvers = [\"2001:db8::53\"]",
                "spf.resolvers: \"2001:db8::53\"",
            ),
            ("refresh_floor = \"soon\"", "spf.refresh_floor: \"soon\""),
            ("refresh_floor = \"0s\"", "spf.refresh_floor: must be"),
            ("refresh_ceiling = \"2d\"", "spf.refresh_ceiling: longer"),
            (
                "refresh_floor = \"2h\"\nrefresh_ceiling = \"1h\"",
                "shorter than spf.refresh_floor",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
