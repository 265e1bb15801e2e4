//! The partner store: the single source of truth that the ALLOW map mirrors.
//!
//! Layout: `partners_dir/*.toml`. Hidden files (starting with `.`) and names
//! not ending in `.toml` are ignored, so temp files left by a crash never
//! count; so is anything that is not a regular file (a FIFO, a socket, a
//! directory named `x.toml`), with a warning: it is never opened in a way
//! that could block. Each file holds zero or more partners:
//!
//! ```toml
//! [[partner]]
//! name = "example-isp"
//! prefixes = ["2001:db8:1000::/36", "2001:db8:2::25/128"]
//! note = "their outbound MTAs, ticket #123"   # optional
//! expires = "2027-03-31"                       # optional: allowed through that day (UTC)
//! allow_short_prefixes = true                  # optional: see SHORTEST_PREFIX
//! ```
//!
//! The CLI writes one file per partner it creates (`<name>.toml`);
//! configuration management may drop files with several partners. The
//! store is validated whole: one bad item anywhere refuses the store, with
//! a message naming the file, the partner and the item ([`StoreRefused`]);
//! whoever applies it then keeps the last good allowlist. A missing
//! directory is refused too (not read as "no partners"), so a vanished
//! volume or a half-done directory swap never empties the allowlist.
//!
//! Loading is linear in the number of prefixes: duplicates are found
//! through hash sets and one ordered index, never by scanning lists.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::ErrorKind,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Result};
use chrono::NaiveDate;
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, Regular};

/// Longest partner name (also keeps `<name>.toml` a sane file name).
pub const MAX_NAME_LEN: usize = 64;

/// Shortest prefix length accepted without an explicit flag (the CLI's
/// `--allow-short-prefix`, a file's `allow_short_prefixes = true`).
///
/// Why /16: no registry gives one organisation more. ARIN's policy caps an
/// initial allocation at a /16 and its statistics show exactly one
/// allocation that large, every other one /20 or longer (ARIN-prop-335,
/// 2024); RIPE NCC, APNIC and the others allocate from /12 blocks IANA gave
/// them. A partner prefix shorter than /16 therefore covers address space
/// of several organisations (at /12, a whole registry's block; at /3, the
/// whole global unicast Internet): almost always a typo (`/12` for `/42`)
/// or a misunderstanding, and it lets everyone in it past the gate.
pub const SHORTEST_PREFIX: u8 = 16;

/// Largest store file read (a million prefixes are about 35 MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Address ranges no mail server sends from: a partner prefix inside one,
/// or covering one, is a mistake, and no flag allows it.
const NEVER_A_SENDER: [(&str, &str); 10] = [
    ("::/128", "the unspecified address"),
    ("::1/128", "the loopback address"),
    (
        "::/96",
        "IPv4-compatible addresses (deprecated, RFC 4291); IPv4 is never gated",
    ),
    (
        "64:ff9b::/96",
        "the NAT64 prefix (RFC 6052): its sources are IPv4 hosts behind a translator, and IPv4 is never gated",
    ),
    (
        "64:ff9b:1::/48",
        "the local-use NAT64 prefix (RFC 8215): its sources are IPv4 hosts behind a translator, and IPv4 is never gated",
    ),
    ("100::/64", "the discard-only prefix (RFC 6666)"),
    (
        "fe80::/10",
        "link-local addresses: they never cross a router, so no remote MTA sends from one",
    ),
    (
        "fec0::/10",
        "site-local addresses (deprecated, RFC 3879)",
    ),
    ("ff00::/8", "multicast addresses: never a TCP source"),
    (
        "::ffff:0:0/96",
        "IPv4-mapped addresses; IPv4 is never gated",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub name: String,
    /// Normalized (no host bits), unique across the store, in file order.
    pub prefixes: Vec<Ipv6Net>,
    pub note: Option<String>,
    /// Last day (UTC) the partner is allowed; None = no expiry.
    pub expires: Option<NaiveDate>,
    /// Prefixes shorter than [`SHORTEST_PREFIX`] were allowed explicitly.
    pub allow_short: bool,
    /// The file that defines this partner.
    pub file: PathBuf,
}

impl Partner {
    /// Allowed on `today` (UTC): no expiry, or `today` is on or before it.
    pub fn is_active(&self, today: NaiveDate) -> bool {
        self.expires.is_none_or(|d| today <= d)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    pub dir: PathBuf,
    pub partners: BTreeMap<String, Partner>,
    /// Store files read (zero: the directory holds no partner file at all).
    pub files: usize,
    /// Entries skipped with a reason (not regular files), for warnings.
    pub skipped: Vec<String>,
    /// Files of partners removed since load, so `save` can rewrite or
    /// delete them.
    removed: BTreeMap<String, PathBuf>,
}

/// What kind of refusal: a missing directory is told apart, since some
/// callers (the first `partner add`, a start in monitor mode) may treat it
/// as a new, empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// `partners_dir` does not exist.
    Missing,
    /// It exists but is not a readable directory.
    Unreadable,
    /// A file in it is bad (syntax, an invalid item, a conflict).
    BadFile,
    /// It holds no partner file while the allowlist holds prefixes
    /// (`reconcile::refuse_vacant`).
    Vacant,
}

/// Why the store was not read whole. The message names the directory or
/// the file, the partner and the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreRefused {
    pub kind: RefusedKind,
    /// The file at fault (None for the directory itself).
    pub file: Option<PathBuf>,
    pub message: String,
}

impl StoreRefused {
    /// The refusal inside `e`, if it is one.
    pub fn of(e: &anyhow::Error) -> Option<&StoreRefused> {
        e.downcast_ref::<StoreRefused>()
    }

    fn bad_file(file: &Path, message: String) -> StoreRefused {
        StoreRefused {
            kind: RefusedKind::BadFile,
            file: Some(file.to_path_buf()),
            message,
        }
    }
}

/// Today's date in UTC, the calendar `expires` is read in.
pub fn today_utc() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

// ---------------------------------------------------------------- parsing

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    partner: Vec<RawPartner>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    name: String,
    prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// A string "YYYY-MM-DD" or a bare TOML local date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    allow_short_prefixes: bool,
}

/// Check a partner name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            name.len() <= MAX_NAME_LEN
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }
        _ => false,
    };
    if !ok {
        bail!(
            "{name:?} is not a valid partner name (1 to {MAX_NAME_LEN} of letters, digits, '.', '_', '-', starting with a letter or digit)"
        );
    }
    Ok(())
}

/// Parse `YYYY-MM-DD` strictly (four-digit year, two-digit month and day).
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let date = if shape {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
    } else {
        None
    };
    date.ok_or_else(|| anyhow!("expires: {s:?} is not a date of the form YYYY-MM-DD"))
}

fn expires_from_toml(v: &toml::Value) -> Result<NaiveDate> {
    match v {
        toml::Value::String(s) => parse_date(s),
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            parse_date(&dt.to_string())
        }
        other => bail!("expires: {other} is not a date of the form YYYY-MM-DD"),
    }
}

/// A parsed prefix, and whether the input had host bits set.
struct ParsedPrefix {
    net: Ipv6Net,
    had_host_bits: bool,
}

const IPV4_NEVER: &str = "IPv4 is never gated, only IPv6 sources are";

/// How a short prefix is allowed, for the message that refuses one.
#[derive(Clone, Copy)]
enum ShortFlag {
    Cli,
    File,
}

/// What a parsed prefix is checked against.
#[derive(Clone, Copy)]
enum Rules {
    /// Syntax, IPv4 and ::/0 only: for naming a prefix the store may hold
    /// from before a rule existed (to remove it).
    Syntax,
    /// Everything: for a prefix that goes into the allowlist.
    Allow { allow_short: bool, flag: ShortFlag },
}

/// Why `net` can never be a mail sender's source: it lies in, or covers,
/// a range of [`NEVER_A_SENDER`] (loopback, link-local, multicast, NAT64,
/// …). The one list, for prefixes given by hand and those SPF brings in.
pub fn never_a_sender(net: &Ipv6Net) -> Option<String> {
    for (range, why) in NEVER_A_SENDER {
        let r: Ipv6Net = range.parse().expect("a valid constant");
        if r.contains(net) {
            return Some(format!("is inside {r}, {why}"));
        }
        if net.contains(&r) {
            return Some(format!(
                "covers {r}, {why}; allow the global unicast part you mean"
            ));
        }
    }
    None
}

/// Parse an IPv6 prefix (`addr/len`, or a bare address meaning /128).
/// Refuses IPv4 (also IPv4-mapped IPv6), ::/0 and bad syntax, and with
/// [`Rules::Allow`] ranges no mail server sends from and prefixes shorter
/// than [`SHORTEST_PREFIX`] unless allowed; reports host bits to the
/// caller, which refuses or normalizes them.
fn parse_prefix(input: &str, rules: Rules) -> Result<ParsedPrefix> {
    let s = input.trim();
    let (addr_s, len_s) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: Ipv6Addr = match addr_s.parse() {
        Ok(a) => a,
        Err(_) => {
            if addr_s.parse::<Ipv4Addr>().is_ok() {
                bail!("{input:?} is an IPv4 prefix; {IPV4_NEVER}");
            }
            bail!("{input:?} is not an IPv6 prefix (expected ADDRESS/LENGTH, e.g. 2001:db8::/32)");
        }
    };
    if addr.to_ipv4_mapped().is_some() {
        bail!("{input:?} is an IPv4-mapped address; {IPV4_NEVER}");
    }
    let len = match len_s {
        None => 128,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= 128 && !l.is_empty() && l.bytes().all(|c| c.is_ascii_digit()) => n,
            _ => bail!("{input:?}: prefix length {l:?} is not a number from 1 to 128"),
        },
    };
    if len == 0 {
        bail!(
            "{input:?} would allow every IPv6 source; remove the gate instead (`mx6gate detach`)"
        );
    }
    let net = Ipv6Net::new(addr, len).expect("length checked above");
    let trunc = net.trunc();
    let Rules::Allow { allow_short, flag } = rules else {
        return Ok(ParsedPrefix {
            net: trunc,
            had_host_bits: trunc != net,
        });
    };
    if let Some(why) = never_a_sender(&trunc) {
        bail!("{input:?} {why}: no mail server sends from there");
    }
    if len < SHORTEST_PREFIX && !allow_short {
        let how = match flag {
            ShortFlag::Cli => "--allow-short-prefix",
            ShortFlag::File => "`allow_short_prefixes = true` for the partner",
        };
        let slash32s = 1u64 << (32 - u32::from(len.min(32)));
        bail!(
            "{input:?} is shorter than /{SHORTEST_PREFIX}: it spans {slash32s} /32s, more address space than any registry gives one organisation (/16 at most), so it lets many networks past the gate; if you mean it, add {how}"
        );
    }
    Ok(ParsedPrefix {
        net: trunc,
        had_host_bits: trunc != net,
    })
}

/// Parse a prefix given on the command line: host bits are cleared, with a
/// notice. `allow_short`: the operator gave `--allow-short-prefix`.
pub fn parse_cli_prefix(input: &str, allow_short: bool) -> Result<(Ipv6Net, Option<String>)> {
    let p = parse_prefix(
        input,
        Rules::Allow {
            allow_short,
            flag: ShortFlag::Cli,
        },
    )?;
    let notice = p
        .had_host_bits
        .then(|| format!("{} has host bits set; stored as {}", input.trim(), p.net));
    Ok((p.net, notice))
}

/// Parse a prefix to remove: syntax and IPv4 only (host bits cleared), so
/// a prefix the store holds from before a rule existed can be named.
fn parse_any_prefix(input: &str) -> Result<Ipv6Net> {
    Ok(parse_prefix(input, Rules::Syntax)?.net)
}

/// Parse a prefix read from a store file: host bits are an error, since
/// the file would not say what the gate does.
fn parse_file_prefix(input: &str, allow_short: bool) -> Result<Ipv6Net> {
    let p = parse_prefix(
        input,
        Rules::Allow {
            allow_short,
            flag: ShortFlag::File,
        },
    )?;
    if p.had_host_bits {
        bail!(
            "{input:?} has host bits set; write it as {} (or the /128 of the address if only that host is meant)",
            p.net
        );
    }
    Ok(p.net)
}

fn is_store_file(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".toml") && name.len() > ".toml".len()
}

fn file_label(p: &Path) -> String {
    p.display().to_string()
}

/// The store files in `dir`, in name order, and the entries skipped.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreRefused> {
    let refuse = |kind, message| StoreRefused {
        kind,
        file: None,
        message,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(refuse(
                RefusedKind::Missing,
                format!(
                    "{}: the partner directory does not exist (a vanished volume, a directory swap midway?); create it, even empty, to mean \"no partners\"",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(refuse(
                RefusedKind::Unreadable,
                format!("{}: cannot read partner directory: {e}", dir.display()),
            ))
        }
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| {
            refuse(
                RefusedKind::Unreadable,
                format!("{}: cannot read partner directory: {e}", dir.display()),
            )
        })?;
        if entry.file_name().to_str().is_some_and(is_store_file) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// One file's partners, validated alone (names, prefixes, dates).
fn parse_file(file: &Path, text: &str) -> Result<Vec<Partner>, StoreRefused> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        StoreRefused::bad_file(
            file,
            format!("{}: {}", file_label(file), e.to_string().trim_end()),
        )
    })?;
    raw.partner
        .into_iter()
        .map(|rp| {
            partner_from_raw(rp, file)
                .map_err(|e| StoreRefused::bad_file(file, format!("{}: {e:#}", file_label(file))))
        })
        .collect()
}

impl Store {
    /// An empty store for `dir`.
    pub fn empty(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            ..Store::default()
        }
    }

    /// Load and validate every store file in `dir`, whole: the first bad
    /// item refuses the store ([`StoreRefused`] inside the error). Files
    /// are read in name order, so the first error reported is always the
    /// same one. A missing directory is refused too
    /// ([`RefusedKind::Missing`]); [`Store::load_or_new`] takes it as new.
    pub fn load(dir: &Path) -> Result<Store> {
        let (store, mut refused) = Self::read(dir, true);
        match refused.pop() {
            Some(r) => Err(r.into()),
            None => Ok(store),
        }
    }

    /// [`Store::load`], but a missing directory is a new, empty store (for
    /// edits, which create it).
    pub fn load_or_new(dir: &Path) -> Result<Store> {
        match Self::load(dir) {
            Err(e) if StoreRefused::of(&e).is_some_and(|r| r.kind == RefusedKind::Missing) => {
                Ok(Store::empty(dir))
            }
            other => other,
        }
    }

    /// For diagnosis (`status`, `partner list`, `check`): every file that
    /// reads cleanly, and a refusal for each one that does not (a file in
    /// conflict with an earlier one is refused whole). The store is then
    /// not what the gate enforces; callers say so.
    pub fn load_lenient(dir: &Path) -> (Store, Vec<StoreRefused>) {
        Self::read(dir, false)
    }

    fn read(dir: &Path, stop_at_first: bool) -> (Store, Vec<StoreRefused>) {
        let mut store = Store::empty(dir);
        let mut refused = Vec::new();
        let files = match list_dir(dir) {
            Ok(f) => f,
            Err(r) => return (store, vec![r]),
        };
        // prefix -> owning partner, to catch a prefix listed twice.
        let mut owners: HashMap<Ipv6Net, String> = HashMap::new();
        for file in files {
            let text = match fsutil::read_regular(&file, MAX_FILE_BYTES) {
                Ok(Regular::Text(t)) => t,
                Ok(Regular::NotRegular(kind)) => {
                    store.skipped.push(format!(
                        "{}: {kind}, not a regular file: skipped",
                        file_label(&file)
                    ));
                    continue;
                }
                Err(e) => {
                    refused.push(StoreRefused::bad_file(&file, format!("{e:#}")));
                    if stop_at_first {
                        break;
                    }
                    continue;
                }
            };
            match store.add_file(&file, &text, &mut owners) {
                Ok(()) => store.files += 1,
                Err(r) => {
                    refused.push(r);
                    if stop_at_first {
                        break;
                    }
                }
            }
        }
        (store, refused)
    }

    /// Add one file's partners, checked against those already loaded; on
    /// error nothing of the file is added.
    fn add_file(
        &mut self,
        file: &Path,
        text: &str,
        owners: &mut HashMap<Ipv6Net, String>,
    ) -> Result<(), StoreRefused> {
        let partners = parse_file(file, text)?;
        let mut names: HashSet<&str> = HashSet::new();
        let mut claimed: HashMap<Ipv6Net, &str> = HashMap::new();
        for p in &partners {
            if let Some(other) = self.partners.get(&p.name) {
                return Err(StoreRefused::bad_file(
                    file,
                    format!(
                        "partner {:?} is defined in both {} and {}",
                        p.name,
                        file_label(&other.file),
                        file_label(file)
                    ),
                ));
            }
            if !names.insert(&p.name) {
                return Err(StoreRefused::bad_file(
                    file,
                    format!(
                        "{}: partner {:?} is defined twice",
                        file_label(file),
                        p.name
                    ),
                ));
            }
            for net in &p.prefixes {
                let owner = owners
                    .get(net)
                    .map(|o| (o.as_str(), &self.partners[o].file))
                    .or_else(|| claimed.get(net).map(|o| (*o, &p.file)));
                if let Some((owner, owner_file)) = owner {
                    return Err(StoreRefused::bad_file(
                        file,
                        format!(
                            "{}: partner {:?}: prefix {net} is already allowed for partner {owner:?} ({})",
                            file_label(file),
                            p.name,
                            file_label(owner_file)
                        ),
                    ));
                }
                claimed.insert(*net, &p.name);
            }
        }
        for (net, name) in claimed {
            owners.insert(net, name.to_string());
        }
        for p in partners {
            self.partners.insert(p.name.clone(), p);
        }
        Ok(())
    }

    /// Add a new partner, or more prefixes to an existing one (its note and
    /// expiry are replaced when given; an empty note clears it).
    /// `allow_short` (`--allow-short-prefix`) lets prefixes shorter than
    /// [`SHORTEST_PREFIX`] in, and is remembered for the partner. In memory
    /// only: validated whole, and on error nothing changes. Returns notices
    /// for the operator (normalized prefixes, prefixes already present…).
    pub fn add(
        &mut self,
        name: &str,
        prefixes: &[String],
        note: Option<String>,
        expires: Option<String>,
        allow_short: bool,
    ) -> Result<Vec<String>> {
        validate_name(name)?;
        let mut notices = Vec::new();
        let expires = match expires {
            None => None,
            Some(s) => {
                let d = parse_date(s.trim())?;
                let today = today_utc();
                if d < today {
                    bail!("expires: {d} is in the past (today is {today} UTC)");
                }
                Some(d)
            }
        };
        let existing = self.partners.get(name);
        if prefixes.is_empty() && (existing.is_none() || (note.is_none() && expires.is_none())) {
            bail!("partner {name:?}: give at least one prefix");
        }
        let allow_short = allow_short || existing.is_some_and(|p| p.allow_short);
        // Built once: looking each prefix up in every partner's list would
        // make adding n prefixes to a big store quadratic.
        let owners = self.owners();
        let mut new_nets: Vec<Ipv6Net> = Vec::new();
        let mut seen: HashSet<Ipv6Net> = HashSet::new();
        for input in prefixes {
            let (net, notice) = parse_cli_prefix(input, allow_short)
                .map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            notices.extend(notice);
            if let Some(owner) = owners.get(&net) {
                if owner.name != name {
                    bail!(
                        "prefix {net} is already allowed for partner {:?} ({}); remove it there first",
                        owner.name,
                        file_label(&owner.file)
                    );
                }
                notices.push(format!("{net} is already in partner {name:?}; unchanged"));
                continue;
            }
            if !seen.insert(net) {
                notices.push(format!("{net} is given more than once; stored once"));
                continue;
            }
            new_nets.push(net);
        }
        let short_added = new_nets.iter().any(|n| n.prefix_len() < SHORTEST_PREFIX);
        drop(owners);

        // Everything is valid: apply.
        let note = note.map(|n| n.trim().to_string());
        match self.partners.get_mut(name) {
            Some(p) => {
                p.prefixes.extend(new_nets);
                p.allow_short |= short_added;
                if let Some(n) = note {
                    p.note = (!n.is_empty()).then_some(n);
                }
                if expires.is_some() {
                    p.expires = expires;
                }
                if !p.is_active(today_utc()) {
                    notices.push(format!(
                        "partner {name:?} expired on {}; its prefixes stay out of the allowlist until --expires gives a later date",
                        p.expires.expect("inactive means expires is set")
                    ));
                }
                let own_file = self.dir.join(format!("{name}.toml"));
                if p.file != own_file {
                    notices.push(format!(
                        "partner {name:?} is defined in {}; that file is rewritten (comments in it are not kept)",
                        file_label(&p.file)
                    ));
                }
            }
            None => {
                let file = self
                    .removed
                    .remove(name)
                    .unwrap_or_else(|| self.dir.join(format!("{name}.toml")));
                self.partners.insert(
                    name.to_string(),
                    Partner {
                        name: name.to_string(),
                        prefixes: new_nets,
                        note: note.filter(|n| !n.is_empty()),
                        expires,
                        allow_short: short_added,
                        file,
                    },
                );
            }
        }
        Ok(notices)
    }

    /// Remove prefixes from a partner, or the whole partner when `prefixes`
    /// is empty; removing its last prefix removes the partner. In memory
    /// only: validated whole, and on error nothing changes.
    pub fn remove(&mut self, name: &str, prefixes: &[String]) -> Result<()> {
        let Some(p) = self.partners.get(name) else {
            bail!("no partner named {name:?} (see `mx6gate partner list`)");
        };
        let held: HashSet<&Ipv6Net> = p.prefixes.iter().collect();
        let mut drop: HashSet<Ipv6Net> = HashSet::new();
        for input in prefixes {
            let net = parse_any_prefix(input).map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            if !held.contains(&net) {
                let elsewhere = self
                    .owner_of(&net)
                    .map(|o| format!(" (it belongs to partner {:?})", o.name))
                    .unwrap_or_default();
                bail!("partner {name:?} has no prefix {net}{elsewhere}");
            }
            drop.insert(net);
        }
        let p = self.partners.get_mut(name).expect("checked above");
        p.prefixes.retain(|n| !drop.contains(n));
        if prefixes.is_empty() || p.prefixes.is_empty() {
            let p = self.partners.remove(name).expect("checked above");
            self.removed.insert(p.name, p.file);
        }
        Ok(())
    }

    /// The file that holds (or, if removed since load, held) partner
    /// `name`; for a name never seen, the file `add` would create.
    pub fn file_of(&self, name: &str) -> PathBuf {
        match (self.partners.get(name), self.removed.get(name)) {
            (Some(p), _) => p.file.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => self.dir.join(format!("{name}.toml")),
        }
    }

    /// Atomically rewrite the file holding partner `changed` (all partners
    /// of that file, by name); if no partner is left in it, delete it.
    pub fn save(&self, changed: &str) -> Result<()> {
        let file = match (self.partners.get(changed), self.removed.get(changed)) {
            (Some(p), _) => &p.file,
            (None, Some(f)) => f,
            (None, None) => bail!("no partner named {changed:?} to save"),
        };
        let raw = RawFile {
            partner: self
                .partners
                .values()
                .filter(|p| &p.file == file)
                .map(|p| RawPartner {
                    name: p.name.clone(),
                    prefixes: p.prefixes.iter().map(|n| n.to_string()).collect(),
                    note: p.note.clone(),
                    expires: p.expires.map(|d| toml::Value::String(d.to_string())),
                    allow_short_prefixes: p.allow_short,
                })
                .collect(),
        };
        if raw.partner.is_empty() {
            fsutil::remove_durable(file)?;
            return Ok(());
        }
        let body = toml::to_string(&raw)
            .map_err(|e| anyhow!("{}: cannot serialize partners: {e}", file_label(file)))?;
        let text = format!(
            "# Partner store file, written by `mx6gate partner add/remove`.\n# Comments here are not kept when mx6gate rewrites this file.\n\n{body}"
        );
        // What we write must read back as what we hold.
        let check: RawFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: internal error, output does not parse: {e}",
                file_label(file)
            )
        })?;
        if check.partner.len() != raw.partner.len() {
            bail!(
                "{}: internal error, output does not read back",
                file_label(file)
            );
        }
        fsutil::write_atomic(file, text.as_bytes())
    }

    /// Every prefix of every partner active on `today`, with the partner's
    /// name, sorted.
    pub fn active_prefixes(&self, today: NaiveDate) -> Vec<(Ipv6Net, String)> {
        let mut v: Vec<(Ipv6Net, String)> = self
            .partners
            .values()
            .filter(|p| p.is_active(today))
            .flat_map(|p| p.prefixes.iter().map(|n| (*n, p.name.clone())))
            .collect();
        v.sort_unstable();
        v
    }

    /// The partner and prefix that `addr` falls in, by longest prefix,
    /// over all partners (active or not: the caller reports expiry).
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<(&Partner, Ipv6Net)> {
        self.partners
            .values()
            .flat_map(|p| p.prefixes.iter().map(move |n| (p, *n)))
            .filter(|(_, n)| n.contains(&addr))
            .max_by_key(|(_, n)| n.prefix_len())
    }

    /// Number of prefixes in the store (active or not).
    pub fn prefix_count(&self) -> usize {
        self.partners.values().map(|p| p.prefixes.len()).sum()
    }

    /// Every prefix with the partner holding it.
    fn owners(&self) -> HashMap<Ipv6Net, &Partner> {
        self.partners
            .values()
            .flat_map(|p| p.prefixes.iter().map(move |n| (*n, p)))
            .collect()
    }

    /// The partner holding exactly `net`, if any.
    fn owner_of(&self, net: &Ipv6Net) -> Option<&Partner> {
        self.partners.values().find(|p| p.prefixes.contains(net))
    }
}

fn partner_from_raw(rp: RawPartner, file: &Path) -> Result<Partner> {
    validate_name(&rp.name)?;
    let name = rp.name;
    let ctx = |e: anyhow::Error| anyhow!("partner {name:?}: {e}");
    if rp.prefixes.is_empty() {
        return Err(ctx(anyhow!("has no prefixes (give at least one)")));
    }
    let mut prefixes: Vec<Ipv6Net> = Vec::with_capacity(rp.prefixes.len());
    let mut seen: HashSet<Ipv6Net> = HashSet::with_capacity(rp.prefixes.len());
    for s in &rp.prefixes {
        let net = parse_file_prefix(s, rp.allow_short_prefixes).map_err(ctx)?;
        if !seen.insert(net) {
            return Err(ctx(anyhow!("prefix {net} is listed twice")));
        }
        prefixes.push(net);
    }
    let expires = rp
        .expires
        .as_ref()
        .map(expires_from_toml)
        .transpose()
        .map_err(ctx)?;
    Ok(Partner {
        prefixes,
        note: rp.note,
        expires,
        allow_short: rp.allow_short_prefixes,
        file: file.to_path_buf(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Days;
    use std::collections::BTreeMap as Map;
    use std::fs;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn net(x: &str) -> Ipv6Net {
        x.parse().unwrap()
    }

    fn day(x: &str) -> NaiveDate {
        parse_date(x).unwrap()
    }

    /// Every file in `dir` with its bytes: "nothing on disk changed" is
    /// `snapshot` before == `snapshot` after.
    fn snapshot(dir: &Path) -> Map<String, Vec<u8>> {
        match fs::read_dir(dir) {
            Err(_) => Map::new(),
            Ok(rd) => rd
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    /// Load must fail; returns the message after checking that nothing on
    /// disk changed.
    fn load_err(dir: &Path) -> String {
        let before = snapshot(dir);
        let e = format!("{:#}", Store::load(dir).unwrap_err());
        assert_eq!(snapshot(dir), before);
        e
    }

    fn one(dir: &Path, text: &str) -> String {
        write(dir, "p.toml", text);
        load_err(dir)
    }

    const GOOD: &str = r#"
[[partner]]
name = "example-isp"
prefixes = ["2001:db8:1000::/36", "2001:db8:2::25/128"]
note = "their outbound MTAs, ticket #123"
expires = "2027-03-31"

[[partner]]
name = "other"
prefixes = ["2001:db8:3::1"]
"#;

    #[test]
    fn missing_dir_is_refused_and_new_only_for_edits() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("nope");
        let e = Store::load(&dir).unwrap_err();
        let r = StoreRefused::of(&e).expect("a refusal");
        assert_eq!(r.kind, RefusedKind::Missing);
        assert!(r.message.contains(&dir.display().to_string()), "{r}");
        assert!(r.message.contains("does not exist"), "{r}");
        let st = Store::load_or_new(&dir).unwrap();
        assert!(st.partners.is_empty());
        assert_eq!((st.prefix_count(), st.files), (0, 0));
        assert!(!dir.exists());
        // A file where the directory should be: refused, not "no partners".
        fs::write(&dir, "x").unwrap();
        let e = Store::load(&dir).unwrap_err();
        assert_eq!(StoreRefused::of(&e).unwrap().kind, RefusedKind::Unreadable);
        assert!(Store::load_or_new(&dir).is_err());
    }

    #[test]
    fn files_are_counted_and_an_empty_file_is_a_store() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Store::load(t.path()).unwrap().files, 0);
        write(t.path(), "none.toml", "");
        let st = Store::load(t.path()).unwrap();
        assert_eq!((st.files, st.partners.len()), (1, 0));
    }

    #[test]
    fn a_fifo_or_directory_named_toml_is_skipped_never_opened() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
        );
        let fifo = t.path().join("x.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        fs::create_dir(t.path().join("d.toml")).unwrap();
        // No writer on the FIFO: a blocking open would hang here.
        let st = Store::load(t.path()).unwrap();
        assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(st.files, 1);
        assert_eq!(st.skipped.len(), 2, "{:?}", st.skipped);
        assert!(st
            .skipped
            .iter()
            .any(|s| s.contains("x.toml") && s.contains("a FIFO")));
        assert!(st
            .skipped
            .iter()
            .any(|s| s.contains("d.toml") && s.contains("a directory")));
    }

    #[test]
    fn lenient_load_keeps_the_good_files_and_names_the_bad() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8:1::/48\"]\n",
        );
        write(t.path(), "b.toml", "[[partner]\n");
        // Conflicts with a.toml: refused whole, a.toml kept.
        write(
            t.path(),
            "c.toml",
            "[[partner]]\nname = \"c\"\nprefixes = [\"2001:db8:3::/48\"]\n[[partner]]\nname = \"c2\"\nprefixes = [\"2001:db8:1::/48\"]\n",
        );
        let (st, refused) = Store::load_lenient(t.path());
        assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(
            refused[0].file.as_deref(),
            Some(t.path().join("b.toml").as_path())
        );
        assert_eq!(
            refused[1].file.as_deref(),
            Some(t.path().join("c.toml").as_path())
        );
        assert!(
            refused[1]
                .message
                .contains("already allowed for partner \"a\""),
            "{}",
            refused[1]
        );
        // The strict load stops at the first.
        let e = load_err(t.path());
        assert!(e.contains("b.toml"), "{e}");
    }

    #[test]
    fn prefixes_no_mail_server_sends_from_are_refused_by_name() {
        for (p, why) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::1/128", "loopback"),
            ("::/1", "covers ::/128"),
            ("8000::/1", "covers fe80::/10"),
            ("fe80::/10", "link-local"),
            ("fe80::1:2:3:4", "link-local"),
            ("febf::/16", "link-local"),
            ("ff00::/8", "multicast"),
            ("ff02::1", "multicast"),
            ("fec0::/10", "site-local"),
            ("64:ff9b::/96", "NAT64"),
            ("64:ff9b::c633:6402", "NAT64"),
            ("64:ff9b:1::/48", "NAT64"),
            ("100::/64", "discard-only"),
            ("::c633:6402", "IPv4-compatible"),
            ("::fffe:0:0/95", "IPv4-mapped"),
        ] {
            for allow_short in [false, true] {
                let e = format!("{:#}", parse_cli_prefix(p, allow_short).unwrap_err());
                assert!(
                    e.contains(&format!("{p:?}"))
                        && e.contains(why)
                        && e.contains("no mail server sends from there"),
                    "{p} (allow_short {allow_short}) => {e}"
                );
            }
        }
        // Next to them, what is fine.
        for ok in [
            "2001:db8::/32",
            "fd00:1::/48",
            "2002:c633:6402::/48",
            "64:ff9c::/32",
            "2001::/32",
        ] {
            parse_cli_prefix(ok, false).unwrap();
        }
    }

    #[test]
    fn short_prefixes_need_the_flag_and_the_message_says_why() {
        for p in ["2000::/3", "2000::/15", "2400::/12"] {
            let e = format!("{:#}", parse_cli_prefix(p, false).unwrap_err());
            assert!(
                e.contains(&format!("{p:?}"))
                    && e.contains("shorter than /16")
                    && e.contains("any registry gives one organisation")
                    && e.contains("--allow-short-prefix"),
                "{p} => {e}"
            );
            assert_eq!(parse_cli_prefix(p, true).unwrap().0, net(p));
        }
        assert_eq!(
            parse_cli_prefix("2001::/16", false).unwrap().0,
            net("2001::/16")
        );
        // In a file: refused unless the partner says so, with the key named.
        let t = tempfile::tempdir().unwrap();
        let e = one(
            t.path(),
            "[[partner]]\nname = \"big\"\nprefixes = [\"2400::/12\"]\n",
        );
        assert!(
            e.contains("\"big\"") && e.contains("allow_short_prefixes = true"),
            "{e}"
        );
        write(
            t.path(),
            "p.toml",
            "[[partner]]\nname = \"big\"\nprefixes = [\"2400::/12\"]\nallow_short_prefixes = true\n",
        );
        assert!(Store::load(t.path()).unwrap().partners["big"].allow_short);
    }

    #[test]
    fn the_flag_is_remembered_in_the_partner_file() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        let e = format!(
            "{:#}",
            st.add("big", &s(&["2400::/12"]), None, None, false)
                .unwrap_err()
        );
        assert!(e.contains("--allow-short-prefix"), "{e}");
        st.add("big", &s(&["2400::/12"]), None, None, true).unwrap();
        st.save("big").unwrap();
        let text = fs::read_to_string(t.path().join("big.toml")).unwrap();
        assert!(text.contains("allow_short_prefixes = true"), "{text}");
        let mut back = Store::load(t.path()).unwrap();
        assert_eq!(back.partners, st.partners);
        // Once allowed for a partner, more short ones need no flag again.
        back.add("big", &s(&["2a00::/12"]), None, None, false)
            .unwrap();
        // A file without any short prefix does not carry the key.
        back.add("small", &s(&["2001:db8::/32"]), None, None, false)
            .unwrap();
        back.save("small").unwrap();
        assert!(!fs::read_to_string(t.path().join("small.toml"))
            .unwrap()
            .contains("allow_short"));
    }

    #[test]
    fn a_prefix_refused_by_the_new_rules_can_still_be_removed() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        // As a store written before the rules might hold it.
        st.partners.insert(
            "old".into(),
            Partner {
                name: "old".into(),
                prefixes: vec![net("fe80::/10"), net("2001:db8::/32")],
                note: None,
                expires: None,
                allow_short: false,
                file: t.path().join("old.toml"),
            },
        );
        st.remove("old", &s(&["fe80::/10"])).unwrap();
        assert_eq!(st.partners["old"].prefixes, vec![net("2001:db8::/32")]);
    }

    #[test]
    fn one_big_partner_loads_adds_and_removes() {
        // (How fast, against the same prefixes spread over many partners:
        // `cargo xtask bench`, part "store".)
        let t = tempfile::tempdir().unwrap();
        let n = 50_000u32;
        let mut text = String::from("[[partner]]\nname = \"big\"\nprefixes = [\n");
        for i in 0..n {
            text.push_str(&format!(
                "\"2001:db8:{:x}:{:x}::/64\",\n",
                i >> 16,
                i & 0xffff
            ));
        }
        text.push_str("]\n");
        write(t.path(), "big.toml", &text);
        let mut st = Store::load(t.path()).unwrap();
        assert_eq!(st.prefix_count(), n as usize);
        let more: Vec<String> = (0..5_000u32)
            .map(|i| format!("2001:db9:{i:x}::/48"))
            .collect();
        let notices = st.add("big", &more[..2], None, None, false).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        let notices = st.add("big", &more, None, None, false).unwrap();
        assert_eq!(notices.len(), 2, "the two already there: {notices:?}");
        assert_eq!(st.prefix_count(), n as usize + more.len());
        st.remove("big", &more).unwrap();
        assert_eq!(st.prefix_count(), n as usize);
        let e = format!("{:#}", st.remove("big", &more[..1]).unwrap_err());
        assert!(e.contains("has no prefix 2001:db9::/48"), "{e}");
    }

    #[test]
    fn loads_example_file() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cm.toml", GOOD);
        let st = Store::load(t.path()).unwrap();
        assert_eq!(st.partners.len(), 2);
        let p = &st.partners["example-isp"];
        assert_eq!(
            p.prefixes,
            vec![net("2001:db8:1000::/36"), net("2001:db8:2::25/128")]
        );
        assert_eq!(p.note.as_deref(), Some("their outbound MTAs, ticket #123"));
        assert_eq!(p.expires, Some(day("2027-03-31")));
        assert_eq!(p.file, t.path().join("cm.toml"));
        // A bare address means /128.
        assert_eq!(
            st.partners["other"].prefixes,
            vec![net("2001:db8:3::1/128")]
        );
        assert_eq!(st.prefix_count(), 3);
    }

    #[test]
    fn ignores_hidden_temp_and_other_files() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
        );
        // A crash mid-write leaves such files; they never count, even broken.
        write(t.path(), ".a.toml.tmp.1234.0", "garbage [[[");
        write(t.path(), ".x.tmp", "garbage [[[");
        write(t.path(), ".hidden.toml", "garbage [[[");
        write(t.path(), "README", "garbage [[[");
        write(t.path(), "b.toml.bak", "garbage [[[");
        write(t.path(), "b.toml~", "garbage [[[");
        let st = Store::load(t.path()).unwrap();
        assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn empty_file_and_bare_date_are_fine() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "empty.toml", "# nothing yet\n");
        write(
            t.path(),
            "d.toml",
            "[[partner]]\nname = \"d\"\nprefixes = [\"2001:db8::/48\"]\nexpires = 2030-01-02\n",
        );
        let st = Store::load(t.path()).unwrap();
        assert_eq!(st.partners["d"].expires, Some(day("2030-01-02")));
    }

    #[test]
    fn file_errors_name_file_partner_and_item() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let f = d.join("p.toml").display().to_string();
        let cases: &[(&str, &[&str])] = &[
            // IPv4 is never gated.
            ("[[partner]]\nname = \"v4\"\nprefixes = [\"192.0.2.0/24\"]", &["\"v4\"", "\"192.0.2.0/24\"", "IPv4 is never gated"]),
            ("[[partner]]\nname = \"v4\"\nprefixes = [\"198.51.100.7\"]", &["\"v4\"", "\"198.51.100.7\"", "IPv4"]),
            ("[[partner]]\nname = \"v4\"\nprefixes = [\"::ffff:198.51.100.7\"]", &["\"::ffff:198.51.100.7\"", "IPv4"]),
            // Host bits: refused in files, naming the normalized form.
            ("[[partner]]\nname = \"hb\"\nprefixes = [\"2001:db8::1/32\"]", &["\"hb\"", "\"2001:db8::1/32\"", "host bits", "2001:db8::/32"]),
            // ::/0.
            ("[[partner]]\nname = \"all\"\nprefixes = [\"::/0\"]", &["\"all\"", "\"::/0\"", "every IPv6 source", "remove the gate"]),
            // Garbage prefixes.
            ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/129\"]", &["\"g\"", "\"2001:db8::/129\"", "prefix length"]),
            ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/\"]", &["\"2001:db8::/\"", "prefix length"]),
            ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/+32\"]", &["\"2001:db8::/+32\""]),
            ("[[partner]]\nname = \"g\"\nprefixes = [\"mx.example.com\"]", &["\"mx.example.com\"", "not an IPv6 prefix"]),
            // Same prefix twice in one partner.
            ("[[partner]]\nname = \"dup\"\nprefixes = [\"2001:db8::/32\", \"2001:db8::/32\"]", &["\"dup\"", "2001:db8::/32", "twice"]),
            // No prefixes.
            ("[[partner]]\nname = \"none\"\nprefixes = []", &["\"none\"", "no prefixes"]),
            // Bad names.
            ("[[partner]]\nname = \"-x\"\nprefixes = [\"2001:db8::/32\"]", &["\"-x\"", "not a valid partner name"]),
            ("[[partner]]\nname = \"a/b\"\nprefixes = [\"2001:db8::/32\"]", &["\"a/b\"", "not a valid partner name"]),
            ("[[partner]]\nname = \"\"\nprefixes = [\"2001:db8::/32\"]", &["\"\"", "not a valid partner name"]),
            // Bad dates.
            ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"31.03.2027\"", &["\"e\"", "expires", "\"31.03.2027\"", "YYYY-MM-DD"]),
            ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"2027-02-30\"", &["\"e\"", "\"2027-02-30\""]),
            ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"2027-3-5\"", &["\"2027-3-5\""]),
            ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = 20270331", &["expires", "20270331"]),
            ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = 2027-03-31T10:00:00", &["expires", "2027-03-31T10:00:00"]),
            // Unknown key, missing key, syntax: toml's own message, with position.
            ("[[partner]]\nname = \"u\"\nprefix = [\"2001:db8::/32\"]", &["`prefix`", "line 3"]),
            ("[[partner]]\nname = \"m\"", &["prefixes", "line 1"]),
            ("[[partner]\nname = \"s\"", &["line 1"]),
            ("[partner]\nname = \"s\"", &["line 1"]),
        ];
        for (text, wants) in cases {
            let e = one(d, text);
            assert!(e.starts_with(&format!("{f}: ")), "{text}\n=> {e}");
            for w in *wants {
                assert!(e.contains(w), "{text}\n=> {e}\nmissing {w}");
            }
        }
    }

    #[test]
    fn a_bad_file_refuses_the_whole_store() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
        );
        write(
            t.path(),
            "z.toml",
            "[[partner]]\nname = \"z\"\nprefixes = [\"10.0.0.0/8\"]\n",
        );
        let e = load_err(t.path());
        assert!(e.contains("z.toml") && e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn same_name_in_two_files_names_both() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:1::/48\"]\n",
        );
        write(
            t.path(),
            "b.toml",
            "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:2::/48\"]\n",
        );
        let e = load_err(t.path());
        assert!(e.contains("\"acme\""), "{e}");
        assert!(
            e.contains(&t.path().join("a.toml").display().to_string()),
            "{e}"
        );
        assert!(
            e.contains(&t.path().join("b.toml").display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn same_name_twice_in_one_file() {
        let t = tempfile::tempdir().unwrap();
        let e = one(
            t.path(),
            "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:1::/48\"]\n[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:2::/48\"]\n",
        );
        assert!(e.contains("\"acme\"") && e.contains("p.toml"), "{e}");
    }

    #[test]
    fn same_prefix_in_two_partners_names_prefix_and_both() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a.toml",
            "[[partner]]\nname = \"alpha\"\nprefixes = [\"2001:db8:1::/48\"]\n",
        );
        // Same network, written differently.
        write(
            t.path(),
            "b.toml",
            "[[partner]]\nname = \"beta\"\nprefixes = [\"2001:0db8:0001:0::/48\"]\n",
        );
        let e = load_err(t.path());
        assert!(e.contains("2001:db8:1::/48"), "{e}");
        assert!(e.contains("\"alpha\"") && e.contains("\"beta\""), "{e}");
        assert!(e.contains("a.toml") && e.contains("b.toml"), "{e}");
    }

    #[test]
    fn overlapping_prefixes_are_fine_and_longest_match_wins() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "x.toml",
            r#"
[[partner]]
name = "big"
prefixes = ["2001:db8::/32"]
[[partner]]
name = "mid"
prefixes = ["2001:db8:1::/48"]
expires = "2000-01-01"
[[partner]]
name = "host"
prefixes = ["2001:db8:1::25"]
"#,
        );
        let st = Store::load(t.path()).unwrap();
        let look = |a: &str| {
            st.lookup(a.parse().unwrap())
                .map(|(p, n)| (p.name.clone(), n))
        };
        assert_eq!(
            look("2001:db8:1::25"),
            Some(("host".into(), net("2001:db8:1::25/128")))
        );
        // Expired partners still match: the caller reports expiry.
        assert_eq!(
            look("2001:db8:1::26"),
            Some(("mid".into(), net("2001:db8:1::/48")))
        );
        assert_eq!(
            look("2001:db8:2::1"),
            Some(("big".into(), net("2001:db8::/32")))
        );
        assert_eq!(look("2001:db9::1"), None);
        assert_eq!(look("::ffff:198.51.100.1"), None);
    }

    #[test]
    fn expiry_boundaries() {
        let p = Partner {
            name: "p".into(),
            prefixes: vec![net("2001:db8::/32")],
            note: None,
            expires: Some(day("2027-03-31")),
            allow_short: false,
            file: PathBuf::from("/x/p.toml"),
        };
        assert!(p.is_active(day("2027-03-30")));
        assert!(
            p.is_active(day("2027-03-31")),
            "allowed through its last day"
        );
        assert!(!p.is_active(day("2027-04-01")));
        let forever = Partner {
            expires: None,
            ..p.clone()
        };
        assert!(forever.is_active(day("9999-12-31")));

        let mut st = Store::empty(Path::new("/x"));
        st.partners.insert("p".into(), p);
        st.partners.insert(
            "q".into(),
            Partner {
                name: "q".into(),
                prefixes: vec![net("2001:db8:ffff::/48"), net("2001:db8:1::/48")],
                note: None,
                expires: None,
                allow_short: false,
                file: PathBuf::from("/x/q.toml"),
            },
        );
        let names = |d: &str| st.active_prefixes(day(d));
        assert_eq!(
            names("2027-03-31"),
            vec![
                (net("2001:db8::/32"), "p".to_string()),
                (net("2001:db8:1::/48"), "q".to_string()),
                (net("2001:db8:ffff::/48"), "q".to_string()),
            ]
        );
        assert_eq!(
            names("2027-04-01"),
            vec![
                (net("2001:db8:1::/48"), "q".to_string()),
                (net("2001:db8:ffff::/48"), "q".to_string())
            ]
        );
        assert_eq!(st.prefix_count(), 3);
    }

    #[test]
    fn add_new_partner_and_save_writes_its_own_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("partners.d");
        let mut st = Store::load_or_new(&dir).unwrap();
        let notices = st
            .add(
                "acme",
                &s(&["2001:db8:1::/48", "2001:db8:2::25"]),
                Some("ticket #1".into()),
                None,
                false,
            )
            .unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        st.save("acme").unwrap();
        assert_eq!(snapshot(&dir).keys().collect::<Vec<_>>(), vec!["acme.toml"]);
        let back = Store::load(&dir).unwrap();
        assert_eq!(back.partners, st.partners);
        assert_eq!(
            back.partners["acme"].prefixes,
            vec![net("2001:db8:1::/48"), net("2001:db8:2::25/128")]
        );
        assert_eq!(back.partners["acme"].file, dir.join("acme.toml"));
        let text = fs::read_to_string(dir.join("acme.toml")).unwrap();
        assert!(
            text.contains("[[partner]]") && text.contains("name = \"acme\""),
            "{text}"
        );
    }

    #[test]
    fn add_normalizes_host_bits_with_notice() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        let n = st
            .add("acme", &s(&["2001:db8::1/32"]), None, None, false)
            .unwrap();
        assert_eq!(
            n,
            vec!["2001:db8::1/32 has host bits set; stored as 2001:db8::/32".to_string()]
        );
        assert_eq!(st.partners["acme"].prefixes, vec![net("2001:db8::/32")]);
    }

    #[test]
    fn add_more_prefixes_and_replace_metadata() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        let future = today_utc().checked_add_days(Days::new(30)).unwrap();
        st.add(
            "acme",
            &s(&["2001:db8:1::/48"]),
            Some("first".into()),
            Some(future.to_string()),
            false,
        )
        .unwrap();
        // No note / expires given: kept.
        st.add("acme", &s(&["2001:db8:2::/48"]), None, None, false)
            .unwrap();
        let p = &st.partners["acme"];
        assert_eq!(
            p.prefixes,
            vec![net("2001:db8:1::/48"), net("2001:db8:2::/48")]
        );
        assert_eq!(p.note.as_deref(), Some("first"));
        assert_eq!(p.expires, Some(future));
        // Given: replaced; an empty note clears it; metadata-only update ok.
        st.add(
            "acme",
            &[],
            Some("".into()),
            Some(today_utc().to_string()),
            false,
        )
        .unwrap();
        let p = &st.partners["acme"];
        assert_eq!(p.note, None);
        assert_eq!(p.expires, Some(today_utc()), "today is not in the past");
        // Re-adding a prefix the partner has is a notice, not an error.
        let n = st
            .add(
                "acme",
                &s(&["2001:db8:1::/48", "2001:db8:3::/48", "2001:db8:3::/48"]),
                None,
                None,
                false,
            )
            .unwrap();
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].contains("already in partner \"acme\""), "{n:?}");
        assert!(n[1].contains("more than once"), "{n:?}");
        assert_eq!(st.partners["acme"].prefixes.len(), 3);
    }

    /// `add` must fail; checks nothing changed in memory or on disk.
    fn add_err(
        st: &mut Store,
        name: &str,
        prefixes: &[&str],
        note: Option<&str>,
        expires: Option<&str>,
    ) -> String {
        let before_mem = st.clone();
        let before_disk = snapshot(&st.dir);
        let e = st
            .add(
                name,
                &s(prefixes),
                note.map(String::from),
                expires.map(String::from),
                false,
            )
            .unwrap_err();
        assert_eq!(*st, before_mem);
        assert_eq!(snapshot(&st.dir), before_disk);
        format!("{e:#}")
    }

    #[test]
    fn add_errors_name_the_item_and_change_nothing() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "beta.toml",
            "[[partner]]\nname = \"beta\"\nprefixes = [\"2001:db8:b::/48\"]\n",
        );
        let mut st = Store::load(t.path()).unwrap();
        st.add("alpha", &s(&["2001:db8:a::/48"]), None, None, false)
            .unwrap();
        st.save("alpha").unwrap();

        let e = add_err(
            &mut st,
            "alpha",
            &["2001:db8:c::/48", "192.0.2.0/24"],
            None,
            None,
        );
        assert!(
            e.contains("\"192.0.2.0/24\"") && e.contains("IPv4 is never gated"),
            "{e}"
        );
        let e = add_err(&mut st, "alpha", &["2001:db8:c::/48", "::/0"], None, None);
        assert!(
            e.contains("\"::/0\"") && e.contains("every IPv6 source"),
            "{e}"
        );
        let e = add_err(
            &mut st,
            "alpha",
            &["2001:db8:c::/48", "2001:db8:b::/48"],
            None,
            None,
        );
        assert!(
            e.contains("2001:db8:b::/48") && e.contains("\"beta\""),
            "{e}"
        );
        // Host bits normalize onto another partner's prefix: still refused.
        let e = add_err(&mut st, "gamma", &["2001:db8:b::1/48"], None, None);
        assert!(
            e.contains("2001:db8:b::/48") && e.contains("\"beta\""),
            "{e}"
        );
        let e = add_err(&mut st, "bad name", &["2001:db8:c::/48"], None, None);
        assert!(
            e.contains("\"bad name\"") && e.contains("partner name"),
            "{e}"
        );
        let long = "x".repeat(65);
        let e = add_err(&mut st, &long, &["2001:db8:c::/48"], None, None);
        assert!(e.contains(&long), "{e}");
        let e = add_err(&mut st, "gamma", &[], None, None);
        assert!(
            e.contains("\"gamma\"") && e.contains("at least one prefix"),
            "{e}"
        );
        let e = add_err(&mut st, "alpha", &[], None, None);
        assert!(
            e.contains("\"alpha\"") && e.contains("at least one prefix"),
            "{e}"
        );
        let e = add_err(
            &mut st,
            "gamma",
            &["2001:db8:c::/48"],
            None,
            Some("2027/03/31"),
        );
        assert!(
            e.contains("\"2027/03/31\"") && e.contains("YYYY-MM-DD"),
            "{e}"
        );
        let yesterday = today_utc().pred_opt().unwrap().to_string();
        let e = add_err(
            &mut st,
            "gamma",
            &["2001:db8:c::/48"],
            None,
            Some(&yesterday),
        );
        assert!(e.contains(&yesterday) && e.contains("in the past"), "{e}");
        let e = add_err(&mut st, "alpha", &["nonsense"], None, None);
        assert!(e.contains("\"nonsense\"") && e.contains("\"alpha\""), "{e}");
        // 64 characters is the limit, inclusive.
        assert!(st
            .add(&"y".repeat(64), &s(&["2001:db8:d::/48"]), None, None, false)
            .is_ok());
    }

    fn remove_err(st: &mut Store, name: &str, prefixes: &[&str]) -> String {
        let before_mem = st.clone();
        let before_disk = snapshot(&st.dir);
        let e = st.remove(name, &s(prefixes)).unwrap_err();
        assert_eq!(*st, before_mem);
        assert_eq!(snapshot(&st.dir), before_disk);
        format!("{e:#}")
    }

    #[test]
    fn remove_errors_name_the_item_and_change_nothing() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        st.add(
            "alpha",
            &s(&["2001:db8:a::/48", "2001:db8:aa::/48"]),
            None,
            None,
            false,
        )
        .unwrap();
        st.add("beta", &s(&["2001:db8:b::/48"]), None, None, false)
            .unwrap();
        st.save("alpha").unwrap();
        st.save("beta").unwrap();

        let e = remove_err(&mut st, "nobody", &[]);
        assert!(e.contains("\"nobody\""), "{e}");
        let e = remove_err(&mut st, "alpha", &["2001:db8:a::/48", "2001:db8:c::/48"]);
        assert!(
            e.contains("2001:db8:c::/48") && e.contains("\"alpha\""),
            "{e}"
        );
        let e = remove_err(&mut st, "alpha", &["2001:db8:b::/48"]);
        assert!(
            e.contains("2001:db8:b::/48") && e.contains("belongs to partner \"beta\""),
            "{e}"
        );
        let e = remove_err(&mut st, "alpha", &["198.51.100.0/24"]);
        assert!(e.contains("198.51.100.0/24") && e.contains("IPv4"), "{e}");
    }

    #[test]
    fn remove_prefixes_then_last_prefix_deletes_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let mut st = Store::load(dir).unwrap();
        st.add(
            "alpha",
            &s(&["2001:db8:a::/48", "2001:db8:aa::/48"]),
            None,
            None,
            false,
        )
        .unwrap();
        st.save("alpha").unwrap();
        st.remove("alpha", &s(&["2001:db8:a::1/48"])).unwrap(); // normalized to match
        st.save("alpha").unwrap();
        assert_eq!(
            Store::load(dir).unwrap().partners["alpha"].prefixes,
            vec![net("2001:db8:aa::/48")]
        );
        st.remove("alpha", &s(&["2001:db8:aa::/48"])).unwrap();
        assert!(!st.partners.contains_key("alpha"));
        st.save("alpha").unwrap();
        assert!(snapshot(dir).is_empty());
        assert!(Store::load(dir).unwrap().partners.is_empty());
        // Saving it again is harmless.
        st.save("alpha").unwrap();
        assert!(st.save("never-existed").is_err());
        assert_eq!(st.file_of("alpha"), dir.join("alpha.toml"));
        assert_eq!(st.file_of("never-existed"), dir.join("never-existed.toml"));
    }

    #[test]
    fn remove_whole_partner_from_shared_file_keeps_the_others() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        write(dir, "cm.toml", GOOD);
        let mut st = Store::load(dir).unwrap();
        st.remove("other", &[]).unwrap();
        assert_eq!(st.file_of("other"), dir.join("cm.toml"));
        st.save("other").unwrap();
        let back = Store::load(dir).unwrap();
        assert_eq!(
            back.partners.keys().collect::<Vec<_>>(),
            vec!["example-isp"]
        );
        assert_eq!(back.partners["example-isp"], st.partners["example-isp"]);
        assert_eq!(snapshot(dir).keys().collect::<Vec<_>>(), vec!["cm.toml"]);
        // Last partner of the shared file gone: the file goes too.
        st.remove("example-isp", &[]).unwrap();
        st.save("example-isp").unwrap();
        assert!(snapshot(dir).is_empty());
    }

    #[test]
    fn add_to_partner_in_shared_file_rewrites_that_file_in_stable_order() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        write(dir, "cm.toml", GOOD);
        let mut st = Store::load(dir).unwrap();
        let n = st
            .add("other", &s(&["2001:db8:4::/48"]), None, None, false)
            .unwrap();
        assert!(n.iter().any(|m| m.contains("cm.toml")), "{n:?}");
        st.save("other").unwrap();
        let first = fs::read(dir.join("cm.toml")).unwrap();
        // No file of its own was created.
        assert_eq!(snapshot(dir).keys().collect::<Vec<_>>(), vec!["cm.toml"]);
        let back = Store::load(dir).unwrap();
        assert_eq!(back.partners, st.partners);
        // Saving again from a fresh load writes the same bytes.
        back.save("example-isp").unwrap();
        assert_eq!(fs::read(dir.join("cm.toml")).unwrap(), first);
    }

    #[test]
    fn remove_then_readd_in_one_session_reuses_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        write(dir, "cm.toml", GOOD);
        let mut st = Store::load(dir).unwrap();
        st.remove("other", &[]).unwrap();
        st.add("other", &s(&["2001:db8:9::/48"]), None, None, false)
            .unwrap();
        assert_eq!(st.partners["other"].file, dir.join("cm.toml"));
        st.save("other").unwrap();
        assert_eq!(Store::load(dir).unwrap().partners, st.partners);
    }

    #[test]
    fn moving_a_prefix_between_partners() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::load(t.path()).unwrap();
        st.add(
            "a",
            &s(&["2001:db8:1::/48", "2001:db8:2::/48"]),
            None,
            None,
            false,
        )
        .unwrap();
        assert!(st
            .add("b", &s(&["2001:db8:2::/48"]), None, None, false)
            .is_err());
        st.remove("a", &s(&["2001:db8:2::/48"])).unwrap();
        st.add("b", &s(&["2001:db8:2::/48"]), None, None, false)
            .unwrap();
        st.save("a").unwrap();
        st.save("b").unwrap();
        assert_eq!(Store::load(t.path()).unwrap().partners, st.partners);
    }

    #[test]
    fn save_is_atomic_and_leftover_temp_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let mut st = Store::load(dir).unwrap();
        st.add(
            "acme",
            &s(&["2001:db8::/32"]),
            Some("note with \"quotes\"\nand a newline".into()),
            None,
            false,
        )
        .unwrap();
        st.save("acme").unwrap();
        // A crash between temp write and rename leaves a hidden temp file.
        write(
            dir,
            ".acme.toml.tmp.999.0",
            "[[partner]]\nname = \"acme\"\nprefixes = [\"10.0.0.0/8\"]\n",
        );
        write(dir, ".x.tmp", "not toml at all [[[");
        let back = Store::load(dir).unwrap();
        assert_eq!(back.partners, st.partners);
        // Only the target and the leftovers exist; save left no temp file.
        let names: Vec<String> = snapshot(dir).into_keys().collect();
        assert_eq!(names, vec![".acme.toml.tmp.999.0", ".x.tmp", "acme.toml"]);
    }

    #[test]
    fn prefixes_from_cli_accept_bare_addresses_and_spacing() {
        let (n, notice) = parse_cli_prefix(" 2001:db8::25 ", false).unwrap();
        assert_eq!(n, net("2001:db8::25/128"));
        assert!(notice.is_none());
        let (n, notice) = parse_cli_prefix("2001:DB8::/32", false).unwrap();
        assert_eq!(n, net("2001:db8::/32"));
        assert!(notice.is_none());
        assert!(parse_cli_prefix("2001:db8::/-1", false).is_err());
        assert!(parse_cli_prefix("", false).is_err());
    }

    #[test]
    fn names() {
        for ok in ["a", "A9", "example-isp", "x.y_z-1", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".a",
            "_a",
            "-a",
            "a b",
            "a/b",
            "ä",
            "a\n",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
