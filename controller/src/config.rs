//! The daemon's TOML config (`/etc/mx6gate/mx6gate.toml`), validated whole
//! (invariant 5): any bad key or value is refused with one message that
//! names the file, the key and the value, and nothing else is looked at.
//!
//! `mx6gate.example.toml` beside this crate documents every key.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Result};
use mx6gate_common::{Mode, MAX_PORTS};
use serde::{Deserialize, Serialize};

pub use crate::{
    explain::DeferSettings,
    metrics::config::MetricsConfig,
    responder::config::{DownPolicy, GreetingMode, ResponderConfig},
};
use crate::{explain::RawDefer, metrics::config::RawMetrics, responder::config::RawResponder};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/mx6gate/mx6gate.toml";
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/mx6gate";
pub const DEFAULT_PARTNERS_DIR: &str = "/etc/mx6gate/partners.d";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mx6gate";
pub const DEFAULT_PORTS: [u16; 1] = [25];
pub const DEFAULT_ALLOW_ENTRIES: u32 = 65536;
pub const DEFAULT_MAX_PARTNERS: u32 = 4096;
/// About 6 MiB of kernel memory (an LRU hash is allocated whole).
pub const DEFAULT_EXPLAINED_ENTRIES: u32 = 65536;
pub const ALLOW_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 16..=16_777_216;
pub const MAX_PARTNERS_RANGE: std::ops::RangeInclusive<u32> = 1..=1_048_576;
/// Below 1024 the LRU's per-CPU free lists evict early; above 16M the
/// map alone needs well over a GiB.
pub const EXPLAINED_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 1024..=16_777_216;

/// How XDP is attached to each interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    /// Native (driver) mode, falling back to generic where the driver has
    /// no XDP support.
    #[default]
    Auto,
    /// Native only: attaching fails where the driver cannot.
    Native,
    /// Generic (skb) mode only: works everywhere, runs after the skb is
    /// allocated, so slower.
    Generic,
}

impl XdpAttach {
    pub const ALL: [XdpAttach; 3] = [XdpAttach::Auto, XdpAttach::Native, XdpAttach::Generic];

    pub const fn as_str(self) -> &'static str {
        match self {
            XdpAttach::Auto => "auto",
            XdpAttach::Native => "native",
            XdpAttach::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<XdpAttach> {
        XdpAttach::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The `[maps]` table: sizes the BPF maps are created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// max_entries of the ALLOW LPM trie (prefixes of active partners).
    pub allow_entries: u32,
    /// max_entries of PARTNER_HITS (partner ids are below this).
    pub max_partners: u32,
    /// max_entries of EXPLAINED (sources explained within the window).
    pub explained_entries: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            allow_entries: DEFAULT_ALLOW_ENTRIES,
            max_partners: DEFAULT_MAX_PARTNERS,
            explained_entries: DEFAULT_EXPLAINED_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interfaces to attach XDP to. May be empty here; `run --iface` then
    /// names them.
    pub interfaces: Vec<String>,
    /// Protected TCP destination ports, 1..=MAX_PORTS of them.
    pub ports: Vec<u16>,
    pub mode: Mode,
    pub xdp_mode: XdpAttach,
    /// bpffs directory for pinned programs, links and maps (absolute).
    pub pin_path: PathBuf,
    /// Partner store directory (absolute after loading).
    pub partners_dir: PathBuf,
    /// Runtime state directory (absolute after loading).
    pub state_dir: PathBuf,
    pub maps: MapSizes,
    /// The `[responder]` table (defer mode's reply and bounds).
    pub responder: ResponderConfig,
    /// The `[defer]` table (explain once, then reset).
    pub defer: DeferSettings,
    /// The `[metrics]` table (the Prometheus endpoint).
    pub metrics: MetricsConfig,
    /// The `[spf]` table (partners by domain: resolvers, refresh bounds).
    pub spf: crate::spf::SpfConfig,
}

impl Default for Config {
    /// The config an empty file gives.
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            ports: DEFAULT_PORTS.to_vec(),
            mode: Mode::Monitor,
            xdp_mode: XdpAttach::Auto,
            pin_path: PathBuf::from(DEFAULT_PIN_PATH),
            partners_dir: PathBuf::from(DEFAULT_PARTNERS_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            maps: MapSizes::default(),
            responder: ResponderConfig::default(),
            defer: DeferSettings::default(),
            metrics: MetricsConfig::default(),
            spf: crate::spf::SpfConfig::default(),
        }
    }
}

/// The file as written. Integers are read wide and strings as strings so
/// that validation, not serde, reports a bad value, naming key and value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Vec<String>>,
    ports: Option<Vec<i64>>,
    mode: Option<String>,
    xdp_mode: Option<String>,
    pin_path: Option<String>,
    partners_dir: Option<String>,
    state_dir: Option<String>,
    maps: Option<RawMaps>,
    responder: Option<RawResponder>,
    defer: Option<RawDefer>,
    metrics: Option<RawMetrics>,
    spf: Option<crate::spf::config::RawSpf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaps {
    allow_entries: Option<i64>,
    max_partners: Option<i64>,
    explained_entries: Option<i64>,
}

fn one_of<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|m| name(*m)).collect::<Vec<_>>().join(", ")
}

/// Parse a mode word (`monitor|defer|reset|drop`), with the error the CLI
/// and config both use.
pub fn parse_mode(s: &str) -> Result<Mode> {
    Mode::parse(s)
        .ok_or_else(|| anyhow!("{s:?} is not one of {}", one_of(&Mode::ALL, Mode::as_str)))
}

/// Check a Linux interface name the way the kernel does (dev_valid_name):
/// 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not allowed")
    } else if name.contains('/') || name.contains(':') {
        Some("contains '/' or ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match why {
        Some(why) => bail!("{name:?} is not a valid interface name: it {why}"),
        None => Ok(()),
    }
}

fn resolve_dir(
    key: &str,
    value: Option<String>,
    default: &str,
    base_dir: &Path,
) -> Result<PathBuf> {
    let Some(v) = value else {
        return Ok(PathBuf::from(default));
    };
    if v.is_empty() {
        bail!("{key}: must not be empty");
    }
    let p = PathBuf::from(&v);
    Ok(if p.is_absolute() { p } else { base_dir.join(p) })
}

fn check_range(
    key: &str,
    value: Option<i64>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32> {
    let Some(v) = value else { return Ok(default) };
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => bail!(
            "{key}: {v} is out of range ({}..={})",
            range.start(),
            range.end()
        ),
    }
}

/// Ports mail is delivered or submitted on: SMTP (25), submissions (465),
/// submission (587), and 2525, a common alternative SMTP port.
pub const MAIL_PORTS: [u16; 4] = [25, 465, 587, 2525];

/// Well-known services that are not mail, named in the warning.
fn service_name(port: u16) -> Option<&'static str> {
    Some(match port {
        21 => "ftp",
        22 => "ssh",
        53 => "dns",
        80 => "http",
        110 => "pop3",
        143 => "imap",
        443 => "https",
        993 => "imaps",
        995 => "pop3s",
        3306 => "mysql",
        3389 => "rdp",
        5432 => "postgresql",
        _ => return None,
    })
}

impl Config {
    /// What is valid but probably not meant, one sentence each: `run`
    /// logs these at start, `status` and `doctor` show them.
    pub fn warnings(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| !MAIL_PORTS.contains(p))
            .map(|p| {
                let what = service_name(*p).map_or(String::new(), |n| format!(" ({n})"));
                format!(
                    "ports: {p}{what} is not a mail port ({}): IPv6 clients of that service from outside the partner list are turned away too (an ssh or web server behind the gate loses them)",
                    MAIL_PORTS.map(|p| p.to_string()).join(", ")
                )
            })
            .collect()
    }

    /// Read and validate the config file at `path`. Relative `partners_dir`
    /// and `state_dir` are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config> {
        // Never opened blocking: a FIFO put in its place must not hang
        // the daemon's reload or any command.
        let text = match crate::fsutil::read_regular(path, 1 << 20) {
            Ok(crate::fsutil::Regular::Text(t)) => t,
            Ok(crate::fsutil::Regular::NotRegular(kind)) => {
                bail!(
                    "{}: cannot read: {kind}, not a regular file",
                    path.display()
                )
            }
            Err(e) => return Err(e),
        };
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = match abs.parent() {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("/"),
        };
        Config::from_str(&text, &base, &path.display().to_string())
    }

    /// Parse and validate config text. `base_dir` anchors relative
    /// directories; `origin` (usually the file name) starts every error.
    pub fn from_str(text: &str, base_dir: &Path, origin: &str) -> Result<Config> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", e.to_string().trim_end()))?;
        Config::validate(raw, base_dir).map_err(|e| anyhow!("{origin}: {e}"))
    }

    fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config> {
        let interfaces = raw.interfaces.unwrap_or_default();
        let mut seen = BTreeSet::new();
        for name in &interfaces {
            validate_ifname(name).map_err(|e| anyhow!("interfaces: {e}"))?;
            if !seen.insert(name.as_str()) {
                bail!("interfaces: {name:?} is listed twice");
            }
        }

        let ports = match raw.ports {
            None => DEFAULT_PORTS.to_vec(),
            Some(list) => {
                if list.is_empty() {
                    bail!("ports: must list at least one port (the default is [25])");
                }
                if list.len() > MAX_PORTS {
                    bail!(
                        "ports: {} ports given, at most {MAX_PORTS} are supported",
                        list.len()
                    );
                }
                let mut out = Vec::with_capacity(list.len());
                for p in list {
                    let port = match u16::try_from(p) {
                        Ok(port) if port != 0 => port,
                        _ => bail!("ports: {p} is not a valid TCP port"),
                    };
                    if out.contains(&port) {
                        bail!("ports: {port} is listed twice");
                    }
                    out.push(port);
                }
                out
            }
        };

        let mode = match raw.mode {
            None => Mode::Monitor,
            Some(m) => parse_mode(&m).map_err(|e| anyhow!("mode: {e}"))?,
        };

        let xdp_mode = match raw.xdp_mode {
            None => XdpAttach::Auto,
            Some(m) => XdpAttach::parse(&m).ok_or_else(|| {
                anyhow!(
                    "xdp_mode: {m:?} is not one of {}",
                    one_of(&XdpAttach::ALL, XdpAttach::as_str)
                )
            })?,
        };

        let pin_path = match raw.pin_path {
            None => PathBuf::from(DEFAULT_PIN_PATH),
            Some(p) => {
                let pb = PathBuf::from(&p);
                if !pb.is_absolute() {
                    bail!("pin_path: {p:?} is not an absolute path (a bpffs directory, e.g. {DEFAULT_PIN_PATH})");
                }
                pb
            }
        };
        let partners_dir = resolve_dir(
            "partners_dir",
            raw.partners_dir,
            DEFAULT_PARTNERS_DIR,
            base_dir,
        )?;
        let state_dir = resolve_dir("state_dir", raw.state_dir, DEFAULT_STATE_DIR, base_dir)?;

        let maps = match raw.maps {
            None => MapSizes::default(),
            Some(m) => MapSizes {
                allow_entries: check_range(
                    "maps.allow_entries",
                    m.allow_entries,
                    DEFAULT_ALLOW_ENTRIES,
                    ALLOW_ENTRIES_RANGE,
                )?,
                max_partners: check_range(
                    "maps.max_partners",
                    m.max_partners,
                    DEFAULT_MAX_PARTNERS,
                    MAX_PARTNERS_RANGE,
                )?,
                explained_entries: check_range(
                    "maps.explained_entries",
                    m.explained_entries,
                    DEFAULT_EXPLAINED_ENTRIES,
                    EXPLAINED_ENTRIES_RANGE,
                )?,
            },
        };

        let responder = ResponderConfig::from_raw(raw.responder.unwrap_or_default())?;
        let defer = DeferSettings::from_raw(raw.defer.unwrap_or_default())?;
        let metrics = MetricsConfig::from_raw(raw.metrics.unwrap_or_default())?;
        let spf = crate::spf::SpfConfig::from_raw(raw.spf.unwrap_or_default())?;

        Ok(Config {
            interfaces,
            ports,
            mode,
            xdp_mode,
            pin_path,
            partners_dir,
            state_dir,
            maps,
            responder,
            defer,
            metrics,
            spf,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_str(text, Path::new("/etc/mx6gate"), "/etc/x.toml")
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.interfaces.is_empty());
        assert_eq!(c.ports, vec![25]);
        assert_eq!(c.mode, Mode::Monitor);
        assert_eq!(c.xdp_mode, XdpAttach::Auto);
        assert_eq!(c.pin_path, Path::new("/sys/fs/bpf/mx6gate"));
        assert_eq!(c.partners_dir, Path::new("/etc/mx6gate/partners.d"));
        assert_eq!(c.state_dir, Path::new("/var/lib/mx6gate"));
        assert_eq!(c.maps.allow_entries, 65536);
        assert_eq!(c.maps.max_partners, 4096);
        assert_eq!(c.maps.explained_entries, 65536);
        // Escalation is on by default in defer mode.
        assert!(c.defer.kernel().escalates());
    }

    #[test]
    fn bad_defer_table_names_the_key() {
        assert_eq!(
            err("[defer]\nrepeat = \"sometimes\""),
            "/etc/x.toml: defer.repeat: \"sometimes\" is not one of reset, defer"
        );
        assert!(err("[defer]\nexplain_window = \"0m\"")
            .starts_with("/etc/x.toml: defer.explain_window: \"0m\" is shorter than 1h"));
        assert!(err("[defer]\nexplain_by = 96")
            .starts_with("/etc/x.toml: defer.explain_by: 96 is not 64 or 128"));
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
            interfaces = ["eth0", "ens3.100"]
            ports = [25, 587, 465]
            mode = "defer"
            xdp_mode = "generic"
            pin_path = "/sys/fs/bpf/gate2"
            partners_dir = "partners"
            state_dir = "/srv/state"
            [maps]
            allow_entries = 16
            max_partners = 1048576
            explained_entries = 1024
            [defer]
            explain_window = "2d"
            explain_by = 128
            repeat = "defer"
            "#,
        )
        .unwrap();
        assert_eq!(c.interfaces, vec!["eth0", "ens3.100"]);
        assert_eq!(c.ports, vec![25, 587, 465]);
        assert_eq!(c.mode, Mode::Defer);
        assert_eq!(c.xdp_mode, XdpAttach::Generic);
        assert_eq!(c.pin_path, Path::new("/sys/fs/bpf/gate2"));
        assert_eq!(c.partners_dir, Path::new("/etc/mx6gate/partners"));
        assert_eq!(c.state_dir, Path::new("/srv/state"));
        assert_eq!(
            c.maps,
            MapSizes {
                allow_entries: 16,
                max_partners: 1_048_576,
                explained_entries: 1024,
            }
        );
        assert_eq!(
            c.defer,
            DeferSettings {
                explain_window: std::time::Duration::from_secs(2 * 86400),
                explain_by: 128,
                repeat: mx6gate_common::explain::Repeat::Defer,
            }
        );
    }

    #[test]
    fn every_mode_word() {
        for m in Mode::ALL {
            assert_eq!(parse(&format!("mode = {:?}", m.as_str())).unwrap().mode, m);
        }
        for m in XdpAttach::ALL {
            assert_eq!(
                parse(&format!("xdp_mode = {:?}", m.as_str()))
                    .unwrap()
                    .xdp_mode,
                m
            );
        }
    }

    #[test]
    fn partial_maps_table_keeps_other_default() {
        let c = parse("[maps]\nmax_partners = 10\n").unwrap();
        assert_eq!(
            c.maps,
            MapSizes {
                allow_entries: 65536,
                max_partners: 10,
                explained_entries: 65536,
            }
        );
    }

    #[test]
    fn bad_ports() {
        assert_eq!(
            err("ports = [0]"),
            "/etc/x.toml: ports: 0 is not a valid TCP port"
        );
        assert_eq!(
            err("ports = [25, 65536]"),
            "/etc/x.toml: ports: 65536 is not a valid TCP port"
        );
        assert_eq!(
            err("ports = [-1]"),
            "/etc/x.toml: ports: -1 is not a valid TCP port"
        );
        assert_eq!(
            err("ports = [25, 587, 25]"),
            "/etc/x.toml: ports: 25 is listed twice"
        );
        assert!(err("ports = []").contains("ports: must list at least one port"));
        let nine = (1..=9)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(err(&format!("ports = [{nine}]")).contains("ports: 9 ports given, at most 8"));
        // Exactly MAX_PORTS is fine.
        let eight = (1..=8)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(parse(&format!("ports = [{eight}]")).unwrap().ports.len(), 8);
        // Wrong type: toml's own error, with file and position.
        let e = err("ports = [\"25\"]");
        assert!(
            e.starts_with("/etc/x.toml: ") && e.contains("line 1"),
            "{e}"
        );
        let e = err("ports = 25");
        assert!(
            e.starts_with("/etc/x.toml: ") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn bad_mode() {
        assert_eq!(
            err("mode = \"block\""),
            "/etc/x.toml: mode: \"block\" is not one of monitor, defer, reset, drop"
        );
        // Case matters: the words are the CLI's words.
        assert!(err("mode = \"Drop\"").contains("mode: \"Drop\" is not one of"));
        assert_eq!(
            err("xdp_mode = \"offload\""),
            "/etc/x.toml: xdp_mode: \"offload\" is not one of auto, native, generic"
        );
    }

    #[test]
    fn bad_interfaces() {
        for (bad, why) in [
            ("", "is empty"),
            ("abcdefghijklmnop", "longer than 15"),
            (".", "not allowed"),
            ("..", "not allowed"),
            ("eth/0", "'/'"),
            ("eth0:1", "':'"),
            ("eth 0", "whitespace"),
            ("eth\t0", "whitespace"),
        ] {
            let e = err(&format!("interfaces = [\"eth1\", {bad:?}]"));
            assert!(e.starts_with("/etc/x.toml: interfaces: "), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains(why), "{e}");
        }
        // 15 bytes is the limit, inclusive.
        assert!(parse("interfaces = [\"abcdefghijklmno\"]").is_ok());
        assert_eq!(
            err("interfaces = [\"eth0\", \"eth0\"]"),
            "/etc/x.toml: interfaces: \"eth0\" is listed twice"
        );
    }

    #[test]
    fn bad_paths() {
        assert!(
            err("pin_path = \"mx6gate\"").contains("pin_path: \"mx6gate\" is not an absolute path")
        );
        assert!(err("state_dir = \"\"").contains("state_dir: must not be empty"));
        assert!(err("partners_dir = \"\"").contains("partners_dir: must not be empty"));
    }

    #[test]
    fn bad_map_sizes() {
        assert_eq!(
            err("[maps]\nallow_entries = 15"),
            "/etc/x.toml: maps.allow_entries: 15 is out of range (16..=16777216)"
        );
        assert!(err("[maps]\nallow_entries = 16777217").contains("maps.allow_entries: 16777217"));
        assert!(err("[maps]\nmax_partners = 0").contains("maps.max_partners: 0 is out of range"));
        assert!(err("[maps]\nmax_partners = 1048577").contains("maps.max_partners: 1048577"));
        assert!(err("[maps]\nmax_partners = -5").contains("maps.max_partners: -5"));
        assert_eq!(
            err("[maps]\nexplained_entries = 1023"),
            "/etc/x.toml: maps.explained_entries: 1023 is out of range (1024..=16777216)"
        );
        assert!(err("[maps]\nexplained_entries = 16777217")
            .contains("maps.explained_entries: 16777217 is out of range"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = err("mod = \"drop\"");
        assert!(
            e.starts_with("/etc/x.toml: ") && e.contains("`mod`") && e.contains("line 1"),
            "{e}"
        );
        let e = err("[maps]\nallow = 5");
        assert!(e.contains("`allow`") && e.contains("line 2"), "{e}");
        let e = err("[responder]\ncodes = 451");
        assert!(e.contains("`codes`") && e.contains("line 2"), "{e}");
        let e = err("[defer]\nwindow = \"24h\"");
        assert!(e.contains("`window`") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn syntax_error_names_file_and_position() {
        let e = err("ports = [25\nmode = \"drop\"");
        assert!(e.starts_with("/etc/x.toml: "), "{e}");
        assert!(e.contains("line "), "{e}");
        assert!(e.contains("column "), "{e}");
    }

    #[test]
    fn load_resolves_relative_dirs_against_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("gate.toml");
        fs::write(&p, "partners_dir = \"p.d\"\nstate_dir = \"../state\"\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.partners_dir, t.path().join("p.d"));
        assert_eq!(c.state_dir, t.path().join("../state"));
        assert!(c.partners_dir.is_absolute());
    }

    #[test]
    fn load_errors_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("missing.toml");
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("No such file"), "{e}");

        let p = t.path().join("bad.toml");
        fs::write(&p, "\n\nports = [0]\n").unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert_eq!(
            e,
            format!("{}: ports: 0 is not a valid TCP port", p.display())
        );
        // Loading never writes anything.
        assert_eq!(fs::read_to_string(&p).unwrap(), "\n\nports = [0]\n");

        let p = t.path().join("syntax.toml");
        fs::write(&p, "\n\nmode = drop\n").unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(e.starts_with(&format!("{}: ", p.display())), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("mx6gate.example.toml");
        let c = Config::load(&p).unwrap();
        // The example documents the defaults: loading it gives them back.
        assert_eq!(c.ports, vec![25]);
        assert_eq!(c.mode, Mode::Monitor);
        assert_eq!(c.xdp_mode, XdpAttach::Auto);
        assert_eq!(c.pin_path, Path::new(DEFAULT_PIN_PATH));
        assert_eq!(c.partners_dir, Path::new(DEFAULT_PARTNERS_DIR));
        assert_eq!(c.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(c.maps, MapSizes::default());
        // hostname is left to the system in the example.
        assert_eq!(c.responder, ResponderConfig::default());
        assert_eq!(c.defer, DeferSettings::default());
        assert_eq!(c.metrics, MetricsConfig::default());
    }

    #[test]
    fn metrics_table() {
        assert_eq!(
            parse("").unwrap().metrics.listen,
            Some("127.0.0.1:9421".parse().unwrap())
        );
        assert_eq!(
            parse("[metrics]\nlisten = \"[::1]:9100\"\n")
                .unwrap()
                .metrics
                .listen,
            Some("[::1]:9100".parse().unwrap())
        );
        assert_eq!(
            parse("[metrics]\nlisten = false\n").unwrap().metrics.listen,
            None
        );
        let e = err("[metrics]\nlisten = \"localhost\"\n");
        assert!(
            e.starts_with("/etc/x.toml: metrics.listen: \"localhost\" is not an address"),
            "{e}"
        );
    }
}
