//! `mx6gate top`: the busiest non-partner source prefixes, from the
//! running daemon's aggregate of the kernel's reports. In monitor mode
//! this is the list to read before enforcing ("who would I turn away?");
//! `--suggest` turns it into `mx6gate partner add` lines for the operator
//! to confirm, `--resolve` adds reverse DNS (the system resolver, only
//! when asked).
use std::{net::Ipv6Addr, path::Path};

use anyhow::{anyhow, bail, Result};
use ipnet::Ipv6Net;
use mx6gate::{
    control::{self, Answer, Query},
    report::{TopQuery, TopReport, TopRow},
    store::{today_utc, Store},
};
use serde::Serialize;

use super::{json, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How far back to look: minutes or hours, e.g. 10m, 90m, 2h (at
    /// most 24h). Beyond the last hour counts are kept per hour, so
    /// longer windows round up to whole hours.
    #[arg(long, default_value = "10m")]
    pub window: String,
    /// Aggregate sources by /48 or /64.
    #[arg(long, default_value_t = 48, value_parser = parse_by)]
    pub by: u8,
    /// Show at most this many prefixes.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print `mx6gate partner add` lines (commented out, to confirm) for
    /// the prefixes listed with at least --min-count reports.
    #[arg(long)]
    pub suggest: bool,
    /// Look up the PTR name of each prefix's most recent source (system
    /// resolver; one query per row).
    #[arg(long)]
    pub resolve: bool,
    /// Only prefixes with at least this many reports in the window.
    #[arg(long, default_value_t = 1)]
    pub min_count: u64,
    /// Print the answer as JSON (schema "mx6gate.top/1").
    #[arg(long)]
    pub json: bool,
}

fn parse_by(s: &str) -> Result<u8, String> {
    match s {
        "48" => Ok(48),
        "64" => Ok(64),
        _ => Err(format!("{s:?}: the daemon aggregates by 48 or 64")),
    }
}

/// "10m", "2h", "24h" → minutes.
pub fn parse_window(s: &str) -> Result<u32> {
    let bad = || anyhow!("--window {s:?}: expected minutes or hours such as 10m, 90m or 2h");
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u32 = num.parse().map_err(|_| bad())?;
    let minutes = match unit {
        "m" | "min" => n,
        "h" => n.checked_mul(60).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if minutes == 0 || minutes > mx6gate::report::aggregate::RETAIN_MINUTES {
        bail!("--window {s:?}: must be 1m to 24h (what the daemon keeps)");
    }
    Ok(minutes)
}

#[derive(Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    report: &'a TopReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    suggestions: Option<Vec<Suggestion>>,
}

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

pub fn run(config: &Path, args: Args) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let query = TopQuery {
        by: args.by,
        window_minutes: parse_window(&args.window)?,
        limit: args.limit,
    };
    query.validate()?;
    let mut report = match control::ask(&ctx.state, Query::Top(query))? {
        Answer::Top(r) => r,
        Answer::Error { message } => bail!("the daemon refused the request: {message}"),
    };
    report.rows.retain(|r| r.count >= args.min_count);
    // Diagnosis: a refused store still marks what its readable files hold.
    let (store, refused) = Store::load_lenient(&ctx.cfg.partners_dir);
    for r in &refused {
        eprintln!(
            "note: the partner store is refused ({r}); partners are marked from the readable files"
        );
    }
    mark_partners(&mut report.rows, &store);
    if args.resolve {
        for r in &mut report.rows {
            r.ptr = r.last_source.parse().ok().and_then(reverse_dns);
        }
    }
    let suggestions = args.suggest.then(|| {
        let config_arg = (ctx.config_path != Path::new(mx6gate::config::DEFAULT_CONFIG_PATH))
            .then(|| ctx.config_path.display().to_string());
        let covered = spf_checks(&ctx, &report);
        suggest(&report, config_arg.as_deref(), &covered)
    });
    if args.json {
        return json::print(
            json::TOP,
            &JsonOut {
                report: &report,
                suggestions,
            },
        );
    }
    print_table(&report, args.resolve);
    if let Some(s) = suggestions {
        print_suggestions(&s);
    }
    Ok(())
}

/// Rows that a partner's prefix now covers (added since the reports).
fn mark_partners(rows: &mut [TopRow], store: &Store) {
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

fn when(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| secs.to_string())
}

fn window_str(minutes: u32) -> String {
    if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

fn print_table(r: &TopReport, resolve: bool) {
    println!(
        "non-partner IPv6 SYN sources by /{}, last {} (times UTC, now {})",
        r.by,
        window_str(r.window_minutes),
        when(r.now)
    );
    if r.rows.is_empty() {
        println!("  none");
    } else {
        let mut head = format!(
            "{:<28} {:>8} {:>8}  {:<19}  {:<19}  {:<16}",
            "PREFIX", "COUNT", "TOTAL", "FIRST SEEN", "LAST SEEN", "ACTIONS"
        );
        if resolve {
            head.push_str("  PTR (of the last source)");
        }
        println!("{}", head.trim_end());
        for row in &r.rows {
            let mut line = format!(
                "{:<28} {:>8} {:>8}  {:<19}  {:<19}  {:<16}",
                row.prefix,
                row.count,
                row.total,
                when(row.first_seen),
                when(row.last_seen),
                row.actions.join(",")
            );
            if resolve {
                line.push_str(&format!(
                    "  {} ({})",
                    row.ptr.as_deref().unwrap_or("-"),
                    row.last_source
                ));
            }
            if let Some(p) = &row.now_partner {
                line.push_str(&format!("  now partner {p}"));
            }
            println!("{}", line.trim_end());
        }
    }
    let s = &r.stats;
    println!(
        "since the daemon started ({}): {} attempts counted, {} repeats (SYN retransmits, stray segments); kernel since load: {} reports sent, {} suppressed (rate limit or full buffer); {} /48s and {} /64s tracked, {} evicted",
        when(s.since),
        s.events,
        s.repeats,
        s.reports_sent,
        s.reports_suppressed,
        s.tracked_48,
        s.tracked_64,
        s.evicted
    );
}

fn print_suggestions(s: &[Suggestion]) {
    println!();
    if s.is_empty() {
        println!("# no prefixes to suggest (none listed that is not already a partner)");
        return;
    }
    println!("# Suggested partners. Nothing has been added: check each one (reverse DNS,");
    println!("# counts, who they are), uncomment the lines you confirm and run them.");
    for x in s {
        println!("# {}: {}", x.prefix, x.note);
        println!("#{}", x.command);
    }
}

/// Rows checked for an SPF domain that covers their source, and the
/// time all of it may take: `top` stays quick.
const SPF_ROWS: usize = 10;
const SPF_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// For the rows `suggest` would list (at most SPF_ROWS): the PTR-parent
/// domain whose SPF covers the row's last source, by prefix. DNS through
/// the `[spf]` resolvers; what does not answer within SPF_BUDGET is
/// simply not suggested as `--spf`.
fn spf_checks(
    ctx: &Ctx,
    r: &TopReport,
) -> std::collections::HashMap<String, mx6gate::spf::suggest::Covered> {
    let mut out = std::collections::HashMap::new();
    let Ok(dns) = ctx.cfg.spf.resolver() else {
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
                if let Some(c) = mx6gate::spf::suggest::spf_covering(&dns, addr, walk).await {
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
    covered: &std::collections::HashMap<String, mx6gate::spf::suggest::Covered>,
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
    let name: String = name.chars().take(mx6gate::store::MAX_NAME_LEN).collect();
    mx6gate::store::validate_name(&name).ok().map(|()| name)
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
    use mx6gate::report::Stats;

    use super::*;

    /// The documented shape: a change here is a change of mx6gate.top/1.
    #[test]
    fn json_shape_v1() {
        let report = TopReport {
            by: 48,
            window_minutes: 10,
            now: 1_800_000_000,
            rows: vec![TopRow {
                prefix: "2001:db8:2::/48".into(),
                count: 5,
                total: 7,
                first_seen: 1_799_999_000,
                last_seen: 1_799_999_990,
                last_source: "2001:db8:2::25".into(),
                actions: vec!["monitor".into()],
                programs: vec!["sk_lookup".into()],
                ptr: None,
                now_partner: None,
            }],
            stats: Stats {
                since: 1_799_990_000,
                events: 7,
                repeats: 0,
                malformed: 0,
                evicted: 0,
                tracked_48: 1,
                tracked_64: 1,
                reports_sent: 7,
                reports_suppressed: 0,
            },
        };
        let t = json::to_string(
            json::TOP,
            &JsonOut {
                report: &report,
                suggestions: None,
            },
        )
        .unwrap();
        assert_eq!(
            json::tests::keys(&t),
            ["by", "now", "rows", "schema", "stats", "window_minutes"]
        );
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["schema"], "mx6gate.top/1");
        let mut row: Vec<&String> = v["rows"][0].as_object().unwrap().keys().collect();
        row.sort();
        assert_eq!(
            row,
            [
                "actions",
                "count",
                "first_seen",
                "last_seen",
                "last_source",
                "prefix",
                "programs",
                "total"
            ]
        );
        let mut stats: Vec<&String> = v["stats"].as_object().unwrap().keys().collect();
        stats.sort();
        assert_eq!(
            stats,
            [
                "events",
                "evicted",
                "malformed",
                "repeats",
                "reports_sent",
                "reports_suppressed",
                "since",
                "tracked_48",
                "tracked_64"
            ]
        );
    }

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("10m").unwrap(), 10);
        assert_eq!(parse_window("2h").unwrap(), 120);
        assert_eq!(parse_window("24h").unwrap(), 1440);
        for bad in [
            "",
            "10",
            "m",
            "0m",
            "25h",
            "10s",
            "1d",
            "-5m",
            "99999999999h",
        ] {
            let e = parse_window(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

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
            mx6gate::store::validate_name(n).unwrap();
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("example.net"), "example.net");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
