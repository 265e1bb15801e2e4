//! Defer mode's "explain once, then reset" on the controller's side (the
//! rules are `mx6gate_common::explain`'s): the `[defer]` config table, the
//! DEFER map entry it becomes, and reading a source's record back from
//! EXPLAINED for `check`.
use std::time::Duration;

use anyhow::{bail, Result};
use mx6gate_common::explain::{seen, DeferConfig, Explained, Repeat, Seen, RETRANSMIT_GRACE_NS};
use serde::Deserialize;

/// Default `[defer] explain_window`: a day. It has to outlast the retry
/// interval of every sender that needs the reset — the one a sendmail
/// sender's next queue run comes after (10 minutes to an hour as
/// usually configured; Exim's default retry rule reaches 6 hours between
/// tries only after 16 hours of failures, and it falls back on the banner
/// anyway) — or its retry meets the banner again instead of the reset.
/// Past the window a source gets the banner once more, which keeps the
/// explanation in front of the sender's admin now and then.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Shorter windows end before a sendmail sender's next queue run on
/// common settings, so the retry gets the banner again and the message
/// stays queued: refused.
pub const MIN_WINDOW: Duration = Duration::from_secs(3600);
/// Longer than any queue lifetime (5 days by default in Postfix, Exim and
/// sendmail): nothing more to gain, so a longer value is taken for a typo.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_EXPLAIN_BY: u8 = 64;

/// The `[defer]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferSettings {
    /// How long a source stays explained after its first banner.
    pub explain_window: Duration,
    /// 64: a record covers the source's /64 (a site or a host with a
    /// changing address); 128: the source address alone.
    pub explain_by: u8,
    /// What a repeat from an explained source gets.
    pub repeat: Repeat,
}

impl Default for DeferSettings {
    fn default() -> Self {
        DeferSettings {
            explain_window: DEFAULT_WINDOW,
            explain_by: DEFAULT_EXPLAIN_BY,
            repeat: Repeat::Reset,
        }
    }
}

/// The table as written; values read loosely so that validation names
/// the key and the value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefer {
    explain_window: Option<toml::Value>,
    explain_by: Option<i64>,
    repeat: Option<String>,
}

impl DeferSettings {
    pub fn from_raw(raw: RawDefer) -> Result<DeferSettings> {
        let mut s = DeferSettings::default();
        if let Some(v) = raw.explain_window {
            let hint = "a duration such as \"24h\", \"90m\" or \"2d\"";
            let toml::Value::String(text) = &v else {
                bail!("defer.explain_window: {v} is not a duration: give {hint}");
            };
            let Some(d) = parse_duration(text) else {
                bail!("defer.explain_window: {text:?} is not a duration: give {hint}");
            };
            if d < MIN_WINDOW {
                bail!(
                    "defer.explain_window: {text:?} is shorter than {}: a sendmail sender's next queue run would come after the window and get the banner again instead of the reset",
                    human(MIN_WINDOW)
                );
            }
            if d > MAX_WINDOW {
                bail!(
                    "defer.explain_window: {text:?} is longer than {} (more than any sender keeps a message queued)",
                    human(MAX_WINDOW)
                );
            }
            s.explain_window = d;
        }
        if let Some(by) = raw.explain_by {
            s.explain_by = match by {
                64 => 64,
                128 => 128,
                _ => bail!(
                    "defer.explain_by: {by} is not 64 or 128 (explain once per source /64, or per address)"
                ),
            };
        }
        if let Some(r) = raw.repeat {
            s.repeat = Repeat::parse(&r)
                .ok_or_else(|| anyhow::anyhow!("defer.repeat: {r:?} is not one of reset, defer"))?;
        }
        Ok(s)
    }

    /// The DEFER map entry.
    pub fn kernel(&self) -> DeferConfig {
        DeferConfig {
            window_ns: self.explain_window.as_nanos() as u64,
            grace_ns: RETRANSMIT_GRACE_NS,
            explain_by: u32::from(self.explain_by),
            repeat: self.repeat as u32,
        }
    }
}

/// "24h", "90m", "2d" (also "45min"): a whole number and a unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// A duration the way the config writes it: "24h", "90m", "2d".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 2 * 86400 && s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The programs' clock now: CLOCK_MONOTONIC, which `now_ns` in the
/// eBPF programs reads (at jiffy resolution).
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a new connection from a source gets now, given its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Explanations are off (the DEFER entry is zero).
    Off,
    /// No record, or its window is over: the next connection gets the banner.
    Unexplained { expired_ago: Option<Duration> },
    /// Explained `ago`; the window ends in `left`.
    Explained {
        ago: Duration,
        left: Duration,
        sport: u16,
        escalates: bool,
    },
}

pub fn standing(x: &DeferConfig, rec: Option<&Explained>, now_ns: u64) -> Standing {
    if !x.records() {
        return Standing::Off;
    }
    // Port 0 is never a real source port, so this asks about a new attempt.
    match (rec, seen(x, rec, now_ns, 0, 0)) {
        (Some(r), Seen::Repeat) => {
            let ago = now_ns.saturating_sub(r.at_ns);
            Standing::Explained {
                ago: Duration::from_nanos(ago),
                left: Duration::from_nanos(x.window_ns - ago),
                sport: r.sport,
                escalates: x.escalates(),
            }
        }
        (Some(r), _) if r.at_ns <= now_ns => Standing::Unexplained {
            expired_ago: Some(Duration::from_nanos(
                (now_ns - r.at_ns).saturating_sub(x.window_ns),
            )),
        },
        _ => Standing::Unexplained { expired_ago: None },
    }
}

/// "3h 12m" for the operator.
pub fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DeferSettings> {
        let raw: RawDefer = toml::from_str(text).unwrap();
        DeferSettings::from_raw(raw)
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn defaults_and_values() {
        let d = parse("").unwrap();
        assert_eq!(d, DeferSettings::default());
        assert_eq!(d.explain_window, Duration::from_secs(86400));
        assert_eq!((d.explain_by, d.repeat), (64, Repeat::Reset));
        let k = d.kernel();
        assert_eq!(k.window_ns, 86_400_000_000_000);
        assert!(k.escalates());
        let d = parse("explain_window = \"90m\"\nexplain_by = 128\nrepeat = \"defer\"").unwrap();
        assert_eq!(d.explain_window, Duration::from_secs(5400));
        assert_eq!((d.explain_by, d.repeat), (128, Repeat::Defer));
        assert!(d.kernel().records() && !d.kernel().escalates());
        assert_eq!(
            parse("explain_window = \"30d\"").unwrap().explain_window,
            MAX_WINDOW
        );
        assert_eq!(
            parse("explain_window = \"1h\"").unwrap().explain_window,
            MIN_WINDOW
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, want) in [
            (
                "explain_window = \"0h\"",
                "defer.explain_window: \"0h\" is shorter than 1h",
            ),
            (
                "explain_window = \"59m\"",
                "defer.explain_window: \"59m\" is shorter than 1h",
            ),
            (
                "explain_window = \"31d\"",
                "defer.explain_window: \"31d\" is longer than 30d",
            ),
            (
                "explain_window = \"100y\"",
                "defer.explain_window: \"100y\" is not a duration",
            ),
            (
                "explain_window = \"24\"",
                "defer.explain_window: \"24\" is not a duration",
            ),
            (
                "explain_window = \"\"",
                "defer.explain_window: \"\" is not a duration",
            ),
            (
                "explain_window = 86400",
                "defer.explain_window: 86400 is not a duration",
            ),
            (
                "explain_window = \"99999999999999999999h\"",
                "defer.explain_window: \"99999999999999999999h\" is not a duration",
            ),
            ("explain_by = 48", "defer.explain_by: 48 is not 64 or 128"),
            ("explain_by = 0", "defer.explain_by: 0 is not 64 or 128"),
            (
                "repeat = \"drop\"",
                "defer.repeat: \"drop\" is not one of reset, defer",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("45min"), Some(Duration::from_secs(2700)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        for bad in ["", "h", "1.5h", "-1h", "10s", "1w", "h1"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(human(Duration::from_secs(86400)), "24h");
        assert_eq!(human(Duration::from_secs(3 * 86400)), "3d");
        assert_eq!(human(Duration::from_secs(5400)), "90m");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn standings() {
        const S: u64 = 1_000_000_000;
        let x = DeferSettings::default().kernel();
        let now = 100 * 3600 * S;
        let rec = |at_ns| Explained {
            at_ns,
            sport: 4242,
            dport: 25,
            _pad: 0,
        };
        assert_eq!(
            standing(&x, None, now),
            Standing::Unexplained { expired_ago: None }
        );
        assert_eq!(
            standing(&x, Some(&rec(now - 3600 * S)), now),
            Standing::Explained {
                ago: Duration::from_secs(3600),
                left: Duration::from_secs(23 * 3600),
                sport: 4242,
                escalates: true,
            }
        );
        assert_eq!(
            standing(&x, Some(&rec(now - 25 * 3600 * S)), now),
            Standing::Unexplained {
                expired_ago: Some(Duration::from_secs(3600))
            }
        );
        assert_eq!(
            standing(&DeferConfig::default(), Some(&rec(now)), now),
            Standing::Off
        );
    }
}
