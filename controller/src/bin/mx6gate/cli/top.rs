//! `mx6gate top`: the busiest non-partner source prefixes, from the
//! running daemon's aggregate of the kernel's reports. In monitor mode
//! this is the list to read before enforcing ("who would I turn away?");
//! `--suggest` turns it into `mx6gate partner add` lines for the operator
//! to confirm, `--resolve` adds reverse DNS (the system resolver, only
//! when asked).
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use mx6gate::{
    control::{self, Answer, Query},
    report::{
        suggest::{mark_partners, reverse_dns, spf_checks, suggest, when, window_str, Suggestion},
        TopQuery, TopReport,
    },
    store::Store,
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
        let covered = spf_checks(&ctx.cfg.spf, &report);
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

#[cfg(test)]
mod tests {
    use mx6gate::report::{Stats, TopRow};

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
}
