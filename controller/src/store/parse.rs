//! Parsing and validating what a store file or a command line says: names,
//! dates, prefixes (the rules every prefix passes), one file's partners.
use super::*;

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) partner: Vec<RawPartner>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) prefixes: Vec<String>,
    /// Domains whose SPF records give (more of) the partner's prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) spf: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<String>,
    /// A string "YYYY-MM-DD" or a bare TOML local date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) allow_short_prefixes: bool,
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

/// A domain named for its SPF record (`--spf google.com`, `spf = [...]`),
/// normalized (lowercase, no trailing dot).
pub fn parse_spf_domain(input: &str) -> Result<String> {
    crate::spf::domain::normalize_domain(input.trim())
        .map_err(|why| anyhow!("spf domain {input:?} is not a domain name: {why}"))
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

pub(super) fn expires_from_toml(v: &toml::Value) -> Result<NaiveDate> {
    match v {
        toml::Value::String(s) => parse_date(s),
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            parse_date(&dt.to_string())
        }
        other => bail!("expires: {other} is not a date of the form YYYY-MM-DD"),
    }
}

/// A parsed prefix, and whether the input had host bits set.
pub(super) struct ParsedPrefix {
    net: Ipv6Net,
    had_host_bits: bool,
}

pub(super) const IPV4_NEVER: &str = "IPv4 is never gated, only IPv6 sources are";

/// How a short prefix is allowed, for the message that refuses one.
#[derive(Clone, Copy)]
pub(super) enum ShortFlag {
    Cli,
    File,
}

/// What a parsed prefix is checked against.
#[derive(Clone, Copy)]
pub(super) enum Rules {
    /// Syntax, IPv4 and ::/0 only: for naming a prefix the store may hold
    /// from before a rule existed (to remove it).
    Syntax,
    /// Everything: for a prefix that goes into the allowlist.
    Allow { allow_short: bool, flag: ShortFlag },
}

/// Why `net` can never be a mail sender's source: it lies in, or covers,
/// a range of `NEVER_A_SENDER` (loopback, link-local, multicast, NAT64,
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
pub(super) fn parse_prefix(input: &str, rules: Rules) -> Result<ParsedPrefix> {
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
pub(super) fn parse_any_prefix(input: &str) -> Result<Ipv6Net> {
    Ok(parse_prefix(input, Rules::Syntax)?.net)
}

/// Parse a prefix read from a store file: host bits are an error, since
/// the file would not say what the gate does.
pub(super) fn parse_file_prefix(input: &str, allow_short: bool) -> Result<Ipv6Net> {
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

/// One file's partners, validated alone (names, prefixes, dates).
pub(super) fn parse_file(file: &Path, text: &str) -> Result<Vec<Partner>, StoreRefused> {
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

pub(super) fn partner_from_raw(rp: RawPartner, file: &Path) -> Result<Partner> {
    validate_name(&rp.name)?;
    let name = rp.name;
    let ctx = |e: anyhow::Error| anyhow!("partner {name:?}: {e}");
    if rp.prefixes.is_empty() && rp.spf.is_empty() {
        return Err(ctx(anyhow!(
            "has no prefixes and no spf domains (give at least one)"
        )));
    }
    let mut spf: Vec<String> = Vec::with_capacity(rp.spf.len());
    for d in &rp.spf {
        let domain = parse_spf_domain(d).map_err(ctx)?;
        if spf.contains(&domain) {
            return Err(ctx(anyhow!("spf domain {domain} is listed twice")));
        }
        spf.push(domain);
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
        spf,
        note: rp.note,
        expires,
        allow_short: rp.allow_short_prefixes,
        file: file.to_path_buf(),
        name,
    })
}
