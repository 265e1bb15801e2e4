//! `mx6gate top --suggest`: the busiest non-partner prefixes turned into
//! `mx6gate partner add` lines for the operator to confirm — a name from
//! the PTR (or the prefix), `--spf DOMAIN` where the PTR parent's SPF
//! record covers the source, a note saying where it came from. The
//! binary prints them; nothing here runs a command.
use std::{collections::HashMap, net::Ipv6Addr};

use ipnet::Ipv6Net;
use serde::Serialize;

use super::{TopReport, TopRow};
use crate::{
    spf::{suggest::Covered, SpfConfig},
    store::{today_utc, Store},
};

/// Rows checked for an SPF domain that covers their source, and the
/// time all of it may take: `top` stays quick.
const SPF_ROWS: usize = 10;
const SPF_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug, Serialize)]
pub struct Suggestion {
    pub name: String,
    pub prefix: String,
    /// The domain to add with `--spf` instead of the prefix: its SPF
    /// record covers the source (checked by expanding it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
    pub note: String,
    /// The command, ready to run once the operator has confirmed it.
    pub command: String,
}

/// Rows that a partner's prefix now covers (added since the reports).
pub fn mark_partners(rows: &mut [TopRow], store: &Store) {
    let active = store.active_prefixes(today_utc());
    for r in rows {
        let Ok(net) = r.prefix.parse::<Ipv6Net>() else {
            continue;
        };
        if let Some((_, name)) = active.iter().find(|(p, _)| p.contains(&net)) {
            r.now_partner = Some(name.clone());
        } else if let Some((_, name)) = active.iter().find(|(p, _)| net.contains(p)) {
            r.now_partner = Some(format!("{name} (part)"));
        }
    }
}

/// A report time (Unix seconds), as the table and the notes show it.
pub fn when(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// A window in minutes as `--window` takes it: "10m", "2h".
pub fn window_str(minutes: u32) -> String {
    if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// For the rows `suggest` would list (at most SPF_ROWS): the PTR-parent
/// domain whose SPF covers the row's last source, by prefix. DNS through
/// the `[spf]` resolvers; what does not answer within SPF_BUDGET is
/// simply not suggested as `--spf`.
pub fn spf_checks(spf: &SpfConfig, r: &TopReport) -> HashMap<String, Covered> {
    let mut out = HashMap::new();
    let Ok(dns) = spf.resolver() else {
        return out;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return out;
    };
    let rows: Vec<(String, Ipv6Addr)> = r
        .rows
        .iter()
        .filter(|row| row.now_partner.is_none())
        .filter_map(|row| Some((row.prefix.clone(), row.last_source.parse().ok()?)))
        .take(SPF_ROWS)
        .collect();
    rt.block_on(async {
        let _ = tokio::time::timeout(SPF_BUDGET, async {
            for (prefix, addr) in rows {
                let walk = std::time::Duration::from_secs(5);
                if let Some(c) = crate::spf::suggest::spf_covering(&dns, addr, walk).await {
                    out.insert(prefix, c);
                }
            }
        })
        .await;
    });
    out
}

/// One suggestion per row not covered by a partner yet: `--spf DOMAIN`
/// where `covered` found a domain whose SPF covers the source, else the
/// prefix.
pub fn suggest(
    r: &TopReport,
    config: Option<&str>,
    covered: &HashMap<String, Covered>,
) -> Vec<Suggestion> {
    let day = when(r.now)[..10].to_string();
    r.rows
        .iter()
        .filter(|row| {
            row.now_partner
                .as_deref()
                .is_none_or(|p| p.ends_with("(part)"))
        })
        .filter_map(|row| {
            let net: Ipv6Net = row.prefix.parse().ok()?;
            let name = row
                .ptr
                .as_deref()
                .and_then(name_from_ptr)
                .unwrap_or_else(|| name_from_prefix(&net));
            let spf = covered.get(&row.prefix);
            let name = match spf {
                Some(c) => name_from_ptr(&c.domain).unwrap_or(name),
                None => name,
            };
            let mut note = format!(
                "suggested by mx6gate top on {day}: {} attempts in {}",
                row.count,
                window_str(r.window_minutes)
            );
            if let Some(p) = spf.map(|c| &c.ptr).or(row.ptr.as_ref()) {
                note.push_str(&format!(", PTR {p}"));
            }
            if let Some(c) = spf {
                note.push_str(&format!(
                    ", SPF of {} covers {} ({:?} in {})",
                    c.domain, row.last_source, c.prefix.term, c.prefix.domain
                ));
            }
            let mut command = String::from("mx6gate");
            if let Some(c) = config {
                command.push_str(&format!(" --config {}", shell_quote(c)));
            }
            let what = match spf {
                Some(c) => format!("--spf {}", shell_quote(&c.domain)),
                None => net.to_string(),
            };
            command.push_str(&format!(
                " partner add {} {what} --note {}",
                shell_quote(&name),
                shell_quote(&note)
            ));
            Some(Suggestion {
                name,
                spf: spf.map(|c| c.domain.clone()),
                prefix: net.to_string(),
                note,
                command,
            })
        })
        .collect()
}

/// "mx1.mail.example.net" → "example.net" (the last two labels, three
/// under a two-letter country code with a short second level such as
/// co.uk); None if nothing usable is left.
pub fn name_from_ptr(ptr: &str) -> Option<String> {
    let clean: String = ptr
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let labels: Vec<&str> = clean.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 {
        return None;
    }
    let n = labels.len();
    let take = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        3
    } else {
        2
    };
    let name: String = labels[n - take..].join(".");
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let name: String = name.chars().take(crate::store::MAX_NAME_LEN).collect();
    crate::store::validate_name(&name).ok().map(|()| name)
}

/// "2001:db8:2::/48" → "net-2001-db8-2-48": the prefix's hextets.
pub fn name_from_prefix(net: &Ipv6Net) -> String {
    let seg = net.network().segments();
    let n = usize::from(net.prefix_len()).div_ceil(16).max(1);
    let hex: Vec<String> = seg[..n].iter().map(|s| format!("{s:x}")).collect();
    format!("net-{}-{}", hex.join("-"), net.prefix_len())
}

/// Quote for a POSIX shell unless the word is plainly safe.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The PTR name of `addr` through the system resolver (getnameinfo with
/// NI_NAMEREQD: no name, no answer).
pub fn reverse_dns(addr: Ipv6Addr) -> Option<String> {
    let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    raw.sin6_addr.s6_addr = addr.octets();
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: getnameinfo reads the sockaddr we own and writes at most
    // host.len() bytes (NUL-terminated) into host.
    let rc = unsafe {
        libc::getnameinfo(
            &raw as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // Only a printable host name goes into a note or a table.
    name.chars()
        .all(|c| c.is_ascii_graphic())
        .then_some(name)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            name_from_ptr("mx1.mail.example.net.").as_deref(),
            Some("example.net")
        );
        assert_eq!(
            name_from_ptr("smtp.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(name_from_ptr("localhost"), None);
        assert_eq!(
            name_from_prefix(&"2001:db8:2::/48".parse().unwrap()),
            "net-2001-db8-2-48"
        );
        assert_eq!(
            name_from_prefix(&"2001:db8:4:5::/64".parse().unwrap()),
            "net-2001-db8-4-5-64"
        );
        for n in ["net-2001-db8-2-48", "example.net"] {
            crate::store::validate_name(n).unwrap();
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("example.net"), "example.net");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
