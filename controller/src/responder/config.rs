//! The `[responder]` table of the config: what the responder says and the
//! bounds it keeps (invariant 8). Validated whole, like the rest of the
//! config: every error names the key (`responder.KEY`) and the value.
use std::{
    net::{SocketAddr, SocketAddrV6},
    time::Duration,
};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::smtp::{check_template, MAX_REPLY_LINE};

pub const DEFAULT_LISTEN: &str = "[::1]:10421";
pub const DEFAULT_CODE: u16 = 421;
pub const DEFAULT_ENHANCED_CODE: &str = "4.7.0";
pub const DEFAULT_TEXT: &str =
    "%H: IPv6 SMTP from %A is not accepted here yet; please retry over IPv4";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_MAX_PER_SOURCE: u32 = 16;
pub const DEFAULT_MAX_COMMANDS: u32 = 20;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_SESSION_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 60;
/// One thread, on the daemon's runtime. bench/RESPONDER.md (2 vCPU, shared
/// with the load clients) measured `threads = 2` at 1.15× the greetings/s
/// of one thread from 100 clients up (2× at 10, where one thread stalls
/// when the scheduler takes it away), but at up to 1.27× the CPU per
/// connection and with a larger RSS: one thread already answers over 10k
/// connections/s, far above what a mail gateway defers, and on a small
/// machine shared with the MTA the responder should not be the one taking
/// the CPUs. More threads are for a gateway under a deferral flood with
/// cores to spare.
pub const DEFAULT_THREADS: u16 = 1;

pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;
pub const MAX_PER_SOURCE_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;
pub const MAX_COMMANDS_RANGE: std::ops::RangeInclusive<i64> = 1..=1000;
pub const IDLE_TIMEOUT_RANGE: std::ops::RangeInclusive<i64> = 1..=3600;
pub const SESSION_TIMEOUT_RANGE: std::ops::RangeInclusive<i64> = 1..=3600;
pub const TARPIT_MS_RANGE: std::ops::RangeInclusive<i64> = 0..=10_000;
pub const REPORT_INTERVAL_RANGE: std::ops::RangeInclusive<i64> = 1..=86_400;
pub const THREADS_RANGE: std::ops::RangeInclusive<i64> = 1..=64;
/// Longest host name accepted for `hostname` (RFC 1035 name, as text).
pub const MAX_HOSTNAME: usize = 255;

/// What the responder does after the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GreetingMode {
    /// Send the greeting, stop writing, discard a little input for a short
    /// while so the client reads the reply rather than a reset, close.
    #[default]
    Close,
    /// Keep the session and answer commands (with the same 4xx for
    /// anything that leads to a transaction), up to `max_commands`.
    Converse,
}

impl GreetingMode {
    pub const ALL: [GreetingMode; 2] = [GreetingMode::Close, GreetingMode::Converse];

    pub const fn as_str(self) -> &'static str {
        match self {
            GreetingMode::Close => "close",
            GreetingMode::Converse => "converse",
        }
    }

    pub fn parse(s: &str) -> Option<GreetingMode> {
        GreetingMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// What the kernel side does with a connection it would hand to the
/// responder when no responder socket is registered (invariant 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownPolicy {
    /// Let the connection reach the real MTA (fail open: today's behaviour).
    #[default]
    Pass,
    /// Refuse the connection (the client sees a reset and tries its next
    /// address at once).
    Refuse,
}

impl DownPolicy {
    pub const ALL: [DownPolicy; 2] = [DownPolicy::Pass, DownPolicy::Refuse];

    pub const fn as_str(self) -> &'static str {
        match self {
            DownPolicy::Pass => "pass",
            DownPolicy::Refuse => "refuse",
        }
    }

    pub fn parse(s: &str) -> Option<DownPolicy> {
        DownPolicy::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// What a sender meets while the responder is down, in the words
    /// `status` and `doctor` both use.
    pub const fn consequence(self) -> &'static str {
        match self {
            DownPolicy::Pass => {
                "deferred senders reach the MTA instead (down_policy = pass): the gate fails open"
            }
            DownPolicy::Refuse => {
                "deferred senders are refused (down_policy = refuse) and retry later or elsewhere"
            }
        }
    }
}

/// The `[responder]` table, validated. Durations are held as [`Duration`]s
/// (the file gives seconds, and milliseconds for the tarpit) so that tests
/// can use shorter ones than the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderConfig {
    /// `listen`: the responder's own listening address (IPv6 only).
    pub listen: SocketAddrV6,
    /// `code`: the 4xx reply code of the greeting and of denied commands.
    pub code: u16,
    /// `enhanced_code`: RFC 3463 status code, `4.x.y`.
    pub enhanced_code: String,
    /// `text`: reply text; `%A` peer address, `%H` host name, `%%` a `%`.
    pub text: String,
    /// `hostname`: the name the responder gives itself (default: the
    /// system's host name).
    pub hostname: String,
    /// `greeting`: close after the greeting, or converse.
    pub greeting: GreetingMode,
    /// `max_connections`: concurrent connections in total.
    pub max_connections: u32,
    /// `max_per_source`: concurrent connections per source /64.
    pub max_per_source: u32,
    /// `max_commands`: commands answered per session (converse only).
    pub max_commands: u32,
    /// `idle_timeout_secs`: longest wait for a complete command line (and
    /// for the client to take our replies).
    pub idle_timeout: Duration,
    /// `session_timeout_secs`: longest a session lasts.
    pub session_timeout: Duration,
    /// `tarpit_ms`: delay per greeting byte; zero is off.
    pub tarpit: Duration,
    /// `report_interval_secs`: period of the aggregated per-source log.
    pub report_interval: Duration,
    /// `down_policy`: kernel-side fallback when the responder is down.
    pub down_policy: DownPolicy,
    /// `threads`: 1 serves on the daemon's own runtime; more gives the
    /// responder a multi-thread runtime of its own with that many workers
    /// (one listening socket still: the SOCKMAP holds exactly one).
    pub threads: u16,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            listen: default_listen(),
            code: DEFAULT_CODE,
            enhanced_code: DEFAULT_ENHANCED_CODE.to_string(),
            text: DEFAULT_TEXT.to_string(),
            hostname: system_hostname(),
            greeting: GreetingMode::Close,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            max_commands: DEFAULT_MAX_COMMANDS,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            session_timeout: Duration::from_secs(DEFAULT_SESSION_TIMEOUT_SECS),
            tarpit: Duration::ZERO,
            report_interval: Duration::from_secs(DEFAULT_REPORT_INTERVAL_SECS),
            down_policy: DownPolicy::Pass,
            threads: DEFAULT_THREADS,
        }
    }
}

fn default_listen() -> SocketAddrV6 {
    match DEFAULT_LISTEN.parse() {
        Ok(a) => a,
        Err(_) => unreachable!("DEFAULT_LISTEN is a valid IPv6 socket address"),
    }
}

/// The system's host name (gethostname(2)), or `localhost` if it cannot be
/// read or would not be a valid `hostname` value.
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of buf.len() bytes; one byte
    // is kept back so the result is always NUL-terminated.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(h) if check_hostname(h).is_ok() => h.to_string(),
        _ => "localhost".to_string(),
    }
}

/// A host name as it may appear in a reply: 1..=255 octets of letters,
/// digits, `-`, `.` and `_`.
pub fn check_hostname(h: &str) -> std::result::Result<(), &'static str> {
    if h.is_empty() {
        return Err("is empty");
    }
    if h.len() > MAX_HOSTNAME {
        return Err("is longer than 255 octets");
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("may only hold letters, digits, '-', '.' and '_'");
    }
    Ok(())
}

/// Parse `listen`: an IPv6 socket address.
pub fn parse_listen(s: &str) -> Result<SocketAddrV6> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a socket address such as \"{DEFAULT_LISTEN}\""))?;
    match addr {
        SocketAddr::V4(_) => bail!(
            "{s:?} is an IPv4 address: an IPv4 (AF_INET) socket cannot be given IPv6 \
             connections by the sk_lookup program (EAFNOSUPPORT); use an IPv6 address \
             such as \"{DEFAULT_LISTEN}\""
        ),
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => bail!(
            "{s:?} is an IPv4-mapped address: the responder listens on an IPv6-only \
             socket; use an IPv6 address such as \"{DEFAULT_LISTEN}\""
        ),
        SocketAddr::V6(a) => Ok(a),
    }
}

/// The table as written; integers wide and words as strings, so that
/// validation, not serde, reports a bad value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponder {
    listen: Option<String>,
    code: Option<i64>,
    enhanced_code: Option<String>,
    text: Option<String>,
    hostname: Option<String>,
    greeting: Option<String>,
    max_connections: Option<i64>,
    max_per_source: Option<i64>,
    max_commands: Option<i64>,
    idle_timeout_secs: Option<i64>,
    session_timeout_secs: Option<i64>,
    tarpit_ms: Option<i64>,
    report_interval_secs: Option<i64>,
    down_policy: Option<String>,
    threads: Option<i64>,
}

fn ranged(
    key: &str,
    value: Option<i64>,
    default: u64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<u64> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(&v) => Ok(v as u64),
        Some(v) => bail!(
            "responder.{key}: {v} is out of range ({}..={})",
            range.start(),
            range.end()
        ),
    }
}

fn words<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|m| name(*m)).collect::<Vec<_>>().join(", ")
}

impl ResponderConfig {
    /// Build from the table as written, then [`validate`](Self::validate).
    pub fn from_raw(raw: RawResponder) -> Result<ResponderConfig> {
        let d = ResponderConfig::default();
        let listen = match raw.listen {
            None => d.listen,
            Some(s) => parse_listen(&s).map_err(|e| anyhow!("responder.listen: {e}"))?,
        };
        let code = match raw.code {
            None => d.code,
            Some(c) => match u16::try_from(c) {
                Ok(c) => c,
                Err(_) => {
                    bail!("responder.code: {c} is not an SMTP reply code (a 4xx such as 421)")
                }
            },
        };
        let greeting = match raw.greeting {
            None => d.greeting,
            Some(g) => GreetingMode::parse(&g).ok_or_else(|| {
                anyhow!(
                    "responder.greeting: {g:?} is not one of {}",
                    words(&GreetingMode::ALL, GreetingMode::as_str)
                )
            })?,
        };
        let down_policy = match raw.down_policy {
            None => d.down_policy,
            Some(p) => DownPolicy::parse(&p).ok_or_else(|| {
                anyhow!(
                    "responder.down_policy: {p:?} is not one of {}",
                    words(&DownPolicy::ALL, DownPolicy::as_str)
                )
            })?,
        };
        let cfg = ResponderConfig {
            listen,
            code,
            enhanced_code: raw.enhanced_code.unwrap_or(d.enhanced_code),
            text: raw.text.unwrap_or(d.text),
            hostname: raw.hostname.unwrap_or(d.hostname),
            greeting,
            max_connections: ranged(
                "max_connections",
                raw.max_connections,
                d.max_connections.into(),
                MAX_CONNECTIONS_RANGE,
            )? as u32,
            max_per_source: ranged(
                "max_per_source",
                raw.max_per_source,
                d.max_per_source.into(),
                MAX_PER_SOURCE_RANGE,
            )? as u32,
            max_commands: ranged(
                "max_commands",
                raw.max_commands,
                d.max_commands.into(),
                MAX_COMMANDS_RANGE,
            )? as u32,
            idle_timeout: Duration::from_secs(ranged(
                "idle_timeout_secs",
                raw.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT_SECS,
                IDLE_TIMEOUT_RANGE,
            )?),
            session_timeout: Duration::from_secs(ranged(
                "session_timeout_secs",
                raw.session_timeout_secs,
                DEFAULT_SESSION_TIMEOUT_SECS,
                SESSION_TIMEOUT_RANGE,
            )?),
            tarpit: Duration::from_millis(ranged("tarpit_ms", raw.tarpit_ms, 0, TARPIT_MS_RANGE)?),
            report_interval: Duration::from_secs(ranged(
                "report_interval_secs",
                raw.report_interval_secs,
                DEFAULT_REPORT_INTERVAL_SECS,
                REPORT_INTERVAL_RANGE,
            )?),
            down_policy,
            threads: ranged(
                "threads",
                raw.threads,
                DEFAULT_THREADS.into(),
                THREADS_RANGE,
            )? as u16,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks that hold between values and on the reply itself. Every
    /// error starts with `responder.KEY: `.
    pub fn validate(&self) -> Result<()> {
        if self.listen.ip().to_ipv4_mapped().is_some() {
            bail!(
                "responder.listen: \"{}\" is an IPv4-mapped address: use an IPv6 address",
                self.listen
            );
        }
        let code = self.code;
        if (500..=599).contains(&code) {
            bail!(
                "responder.code: {code} is a permanent (5xx) failure: a 5xx greeting makes \
                 MTAs such as Exim bounce the message instead of retrying over IPv4; use a \
                 4xx code such as 421"
            );
        }
        if !(400..=499).contains(&code) {
            bail!(
                "responder.code: {code} is not a 4xx code (400..=499): the responder must \
                 fail temporarily so that the sender retries over IPv4"
            );
        }
        if (code / 10) % 10 > 5 {
            bail!(
                "responder.code: {code} is not a valid SMTP reply code (RFC 5321 4.2: the \
                 second digit is 0 to 5)"
            );
        }
        check_enhanced(&self.enhanced_code, code)
            .map_err(|why| anyhow!("responder.enhanced_code: {:?} {why}", self.enhanced_code))?;
        check_hostname(&self.hostname).map_err(|why| {
            anyhow!(
                "responder.hostname: {:?} is not a valid host name: it {why}",
                self.hostname
            )
        })?;
        let max_text = check_template(&self.text, self.hostname.len())
            .map_err(|why| anyhow!("responder.text: {:?} {why}", self.text))?;
        let max_line = 3 + 1 + self.enhanced_code.len() + 1 + max_text + 2;
        if max_line > MAX_REPLY_LINE {
            bail!(
                "responder.text: {:?} makes a reply line of up to {max_line} octets (with \
                 hostname {:?} and the longest peer address), more than the {MAX_REPLY_LINE} \
                 octets RFC 5321 4.5.3.1.5 allows including the code and CRLF",
                self.text,
                self.hostname
            );
        }
        if self.greeting == GreetingMode::Converse && code == 421 {
            bail!(
                "responder.greeting: \"converse\" cannot be used with code 421: a 421 means \
                 the server is closing the channel (RFC 5321 3.8), so the client will not \
                 talk on; use greeting = \"close\", or a code such as 450 or 451 to converse"
            );
        }
        if self.idle_timeout > self.session_timeout {
            bail!(
                "responder.idle_timeout_secs: {} is longer than session_timeout_secs ({}), \
                 so it would never apply",
                self.idle_timeout.as_secs(),
                self.session_timeout.as_secs()
            );
        }
        Ok(())
    }
}

/// RFC 3463: `class "." subject "." detail`, subject and detail 1 to 3
/// digits, the class the first digit of the reply code.
fn check_enhanced(s: &str, code: u16) -> std::result::Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.len() != 3 || !digits(parts[0], 1) || !digits(parts[1], 3) || !digits(parts[2], 3) {
        return Err(format!(
            "is not an RFC 3463 status code of the form {}.x.y (x and y 1 to 3 digits, e.g. \"4.7.0\")",
            code / 100
        ));
    }
    let class = code / 100;
    if parts[0] != class.to_string() {
        return Err(format!(
            "does not match code {code}: its class digit must be {class}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert!(check_enhanced("4.7.0", 421).is_ok());
        assert!(check_enhanced("4.7.25", 450).is_ok());
        assert!(check_enhanced("4.999.999", 451).is_ok());
        for bad in [
            "", "4.7", "4.7.0.1", "4..0", "4.7.", "4.1000.0", "44.7.0", "x.7.0", "4.7.a", " 4.7.0",
        ] {
            assert!(
                check_enhanced(bad, 421).unwrap_err().contains("RFC 3463"),
                "{bad}"
            );
        }
        assert!(check_enhanced("5.7.0", 421)
            .unwrap_err()
            .contains("class digit must be 4"));
        assert!(check_enhanced("2.0.0", 421)
            .unwrap_err()
            .contains("class digit must be 4"));
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("mx.example.test").is_ok());
        assert!(check_hostname("mx_1-a").is_ok());
        assert!(check_hostname("").is_err());
        assert!(check_hostname("mx example").is_err());
        assert!(check_hostname("mx%A").is_err());
        assert!(check_hostname(&"a".repeat(256)).is_err());
        assert!(check_hostname(&"a".repeat(255)).is_ok());
        assert!(check_hostname(&system_hostname()).is_ok());
    }

    #[test]
    fn default_is_valid() {
        let d = ResponderConfig::default();
        d.validate().unwrap();
        assert_eq!(d.listen.to_string(), "[::1]:10421");
        assert_eq!(
            ResponderConfig::from_raw(RawResponder::default()).unwrap(),
            d
        );
    }

    // The `[responder]` table read as part of a whole config file, as the
    // daemon reads it: defaults, every key, and each refusal's message.
    fn parse(text: &str) -> Result<crate::config::Config> {
        crate::config::Config::from_str(text, std::path::Path::new("/etc/mx6gate"), "/etc/x.toml")
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn responder_defaults() {
        let r = parse("").unwrap().responder;
        assert_eq!(r.listen.to_string(), "[::1]:10421");
        assert_eq!(r.code, 421);
        assert_eq!(r.enhanced_code, "4.7.0");
        assert!(r.text.contains("%A") && r.text.contains("%H"), "{}", r.text);
        assert_eq!(r.hostname, crate::responder::config::system_hostname());
        assert_eq!(r.greeting, GreetingMode::Close);
        assert_eq!(
            (r.max_connections, r.max_per_source, r.max_commands),
            (1024, 16, 20)
        );
        assert_eq!(r.idle_timeout, std::time::Duration::from_secs(10));
        assert_eq!(r.session_timeout, std::time::Duration::from_secs(30));
        assert!(r.tarpit.is_zero());
        assert_eq!(r.report_interval, std::time::Duration::from_secs(60));
        assert_eq!(r.down_policy, DownPolicy::Pass);
        assert_eq!(r.threads, 1);
        // An empty table is the same as none.
        assert_eq!(parse("[responder]\n").unwrap().responder, r);
    }

    #[test]
    fn responder_full_table() {
        let r = parse(
            r#"
            [responder]
            listen = "[2001:db8::25]:2626"
            code = 451
            enhanced_code = "4.7.1"
            text = "%H says: %A, 100%% IPv4 please"
            hostname = "mx1.example.test"
            greeting = "converse"
            max_connections = 5000
            max_per_source = 4
            max_commands = 5
            idle_timeout_secs = 3
            session_timeout_secs = 9
            tarpit_ms = 250
            report_interval_secs = 300
            down_policy = "refuse"
            threads = 4
            "#,
        )
        .unwrap()
        .responder;
        assert_eq!(r.listen.to_string(), "[2001:db8::25]:2626");
        assert_eq!((r.code, r.enhanced_code.as_str()), (451, "4.7.1"));
        assert_eq!(r.text, "%H says: %A, 100%% IPv4 please");
        assert_eq!(r.hostname, "mx1.example.test");
        assert_eq!(r.greeting, GreetingMode::Converse);
        assert_eq!(
            (r.max_connections, r.max_per_source, r.max_commands),
            (5000, 4, 5)
        );
        assert_eq!(r.idle_timeout.as_secs(), 3);
        assert_eq!(r.session_timeout.as_secs(), 9);
        assert_eq!(r.tarpit.as_millis(), 250);
        assert_eq!(r.report_interval.as_secs(), 300);
        assert_eq!(r.down_policy, DownPolicy::Refuse);
    }

    fn rerr(table: &str) -> String {
        err(&format!("[responder]\n{table}\n"))
    }

    #[test]
    fn responder_refuses_5xx_with_the_exim_reason() {
        for code in [500, 550, 554, 599] {
            let e = rerr(&format!("code = {code}"));
            assert!(
                e.starts_with(&format!("/etc/x.toml: responder.code: {code} ")),
                "{e}"
            );
            assert!(e.contains("Exim") && e.contains("bounce"), "{e}");
            assert!(e.contains("retrying over IPv4"), "{e}");
        }
        // Other non-4xx codes: refused, naming the value.
        for code in [0, 220, 250, 399, 600, 999, 70000, -1] {
            let e = rerr(&format!("code = {code}"));
            assert!(
                e.starts_with(&format!("/etc/x.toml: responder.code: {code} ")),
                "{e}"
            );
        }
        // The second digit of a reply code is 0 to 5 (RFC 5321 4.2).
        assert!(rerr("code = 460").contains("responder.code: 460 is not a valid SMTP reply code"));
        // 4xx codes are fine (450 with converse or close).
        for code in [400, 421, 450, 451, 452, 454, 459] {
            assert_eq!(
                parse(&format!("[responder]\ncode = {code}\n"))
                    .unwrap()
                    .responder
                    .code,
                code
            );
        }
    }

    #[test]
    fn responder_refuses_ipv4_listen() {
        let e = rerr("listen = \"127.0.0.1:2525\"");
        assert!(
            e.starts_with("/etc/x.toml: responder.listen: \"127.0.0.1:2525\" is an IPv4 address"),
            "{e}"
        );
        assert!(e.contains("EAFNOSUPPORT"), "{e}");
        let e = rerr("listen = \"[::ffff:127.0.0.1]:2525\"");
        assert!(
            e.contains("responder.listen: \"[::ffff:127.0.0.1]:2525\" is an IPv4-mapped"),
            "{e}"
        );
        for bad in ["::1", "[::1]", "localhost:2525", "", "[::1]:70000"] {
            let e = rerr(&format!("listen = {bad:?}"));
            assert!(
                e.contains(&format!(
                    "responder.listen: {bad:?} is not a socket address"
                )),
                "{e}"
            );
        }
        assert!(parse("[responder]\nlisten = \"[::]:2525\"\n").is_ok());
    }

    #[test]
    fn responder_refuses_converse_with_421() {
        let e = rerr("greeting = \"converse\"");
        assert!(
            e.starts_with(
                "/etc/x.toml: responder.greeting: \"converse\" cannot be used with code 421"
            ),
            "{e}"
        );
        assert!(e.contains("RFC 5321 3.8"), "{e}");
        let e = rerr("greeting = \"converse\"\ncode = 421");
        assert!(e.contains("responder.greeting"), "{e}");
        assert!(parse("[responder]\ngreeting = \"converse\"\ncode = 450\n").is_ok());
        assert_eq!(
            rerr("greeting = \"talk\""),
            "/etc/x.toml: responder.greeting: \"talk\" is not one of close, converse"
        );
        assert_eq!(
            rerr("down_policy = \"open\""),
            "/etc/x.toml: responder.down_policy: \"open\" is not one of pass, refuse"
        );
    }

    #[test]
    fn responder_refuses_bad_enhanced_codes() {
        for bad in [
            "4.7", "4.7.0.0", "47.0", "4.x.0", "4.1000.0", "4.7.1000", "", "4.7.0 ",
        ] {
            let e = rerr(&format!("enhanced_code = {bad:?}"));
            assert!(
                e.starts_with(&format!(
                    "/etc/x.toml: responder.enhanced_code: {bad:?} is not an RFC 3463"
                )),
                "{e}"
            );
        }
        for bad in ["5.7.0", "2.0.0"] {
            let e = rerr(&format!("enhanced_code = {bad:?}"));
            assert!(
                e.contains(&format!(
                    "responder.enhanced_code: {bad:?} does not match code 421"
                )),
                "{e}"
            );
        }
        assert!(parse("[responder]\nenhanced_code = \"4.3.2\"\n").is_ok());
    }

    #[test]
    fn responder_refuses_bad_text() {
        let e = rerr("text = \"from %X\"");
        assert!(
            e.starts_with(
                "/etc/x.toml: responder.text: \"from %X\" uses \"%X\", which is not a known escape"
            ),
            "{e}"
        );
        assert!(rerr("text = \"100%\"").contains("ends with a lone %"));
        assert!(rerr("text = \"a\\r\\nb\"").contains("contains CR or LF"));
        assert!(rerr("text = \"a\\nb\"").contains("contains CR or LF"));
        assert!(rerr("text = \"café\"").contains("only printable ASCII"));
        assert!(rerr("text = \"a\\u0000b\"").contains("only printable ASCII"));
        assert!(rerr("text = \"a\\tb\"").contains("only printable ASCII"));
        assert!(rerr("text = \"\"").contains("responder.text: \"\" must not be empty"));
        // Escapes that are fine.
        assert!(parse("[responder]\ntext = \"%% %A %H\"\n").is_ok());
    }

    #[test]
    fn responder_refuses_too_long_text() {
        // 3 + 1 + 5 + 1 + text + 2 <= 512: 500 literal octets fit.
        let ok = "x".repeat(500);
        assert!(parse(&format!("[responder]\ntext = {ok:?}\n")).is_ok());
        let e = rerr(&format!("text = {:?}", "x".repeat(501)));
        assert!(
            e.contains("responder.text: ") && e.contains("513 octets"),
            "{e}"
        );
        assert!(e.contains("RFC 5321 4.5.3.1.5"), "{e}");
        // %A counts as the longest address (45), %H as the host name.
        let t = format!("%A{}", "x".repeat(500 - 45));
        assert!(parse(&format!("[responder]\ntext = {t:?}\n")).is_ok());
        let t = format!("%A{}", "x".repeat(501 - 45));
        assert!(rerr(&format!("text = {t:?}")).contains("513 octets"));
        let t = format!("%H{}", "x".repeat(491));
        let e = rerr(&format!("hostname = \"mx.example.test\"\ntext = {t:?}"));
        assert!(
            e.contains("responder.text: ") && e.contains("518 octets"),
            "{e}"
        );
    }

    #[test]
    fn responder_refuses_bad_hostnames_and_ranges() {
        assert!(rerr("hostname = \"mx example\"")
            .contains("responder.hostname: \"mx example\" is not a valid host name"));
        assert!(rerr("hostname = \"\"")
            .contains("responder.hostname: \"\" is not a valid host name: it is empty"));
        for (key, bad, range) in [
            ("max_connections", "0", "1..=1000000"),
            ("max_per_source", "0", "1..=1000000"),
            ("max_commands", "0", "1..=1000"),
            ("max_commands", "1001", "1..=1000"),
            ("idle_timeout_secs", "0", "1..=3600"),
            ("session_timeout_secs", "-3", "1..=3600"),
            ("tarpit_ms", "-1", "0..=10000"),
            ("tarpit_ms", "10001", "0..=10000"),
            ("report_interval_secs", "0", "1..=86400"),
            ("threads", "0", "1..=64"),
            ("threads", "65", "1..=64"),
        ] {
            assert_eq!(
                rerr(&format!("{key} = {bad}")),
                format!("/etc/x.toml: responder.{key}: {bad} is out of range ({range})")
            );
        }
        let e = rerr("idle_timeout_secs = 60\nsession_timeout_secs = 30");
        assert!(
            e.contains("responder.idle_timeout_secs: 60 is longer than session_timeout_secs (30)"),
            "{e}"
        );
        let e = rerr("max_connections = \"many\"");
        assert!(
            e.starts_with("/etc/x.toml: ") && e.contains("line 2"),
            "{e}"
        );
    }
}
