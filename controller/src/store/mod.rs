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
    /// Domains whose SPF records' IPv6 prefixes are the partner's too
    /// (normalized, in file order); the enforced sets live in the state
    /// dir (`spf::SpfState`), the policy joins them (`reconcile`).
    pub spf: Vec<String>,
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

mod edit;
mod files;
mod parse;
#[cfg(test)]
mod tests;

pub use self::parse::{
    never_a_sender, parse_cli_prefix, parse_date, parse_spf_domain, validate_name,
};
use self::{files::*, parse::*};

impl Store {
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

    /// Every SPF domain any partner names, with that partner's name
    /// (active or not: an expired partner's domains keep their state, for
    /// when it is renewed). A domain belongs to one partner only.
    pub fn spf_owners(&self) -> BTreeMap<String, String> {
        self.partners
            .values()
            .flat_map(|p| p.spf.iter().map(|d| (d.clone(), p.name.clone())))
            .collect()
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
