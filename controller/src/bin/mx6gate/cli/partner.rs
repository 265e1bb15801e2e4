//! `mx6gate partner add|remove|refresh|list`: each verb a few lines over
//! `mx6gate::partners` (the edit transaction, the SPF refresh) and
//! `observe::PartnersView`.
use std::path::Path;

use anyhow::Result;
use mx6gate::{
    observe::PartnersView,
    partners::{self, AddRequest},
    reconcile::SyncReport,
    spf::Decision,
};

use super::{json, loaded_note, Ctx};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Add a partner, or more prefixes or SPF domains to one.
    Add {
        name: String,
        /// IPv6 prefixes (an address alone means /128).
        #[arg(required_unless_present = "spf")]
        prefixes: Vec<String>,
        /// A domain whose SPF record lists (some of) the partner's sending
        /// ranges (repeatable): expanded now, then refreshed by the daemon.
        #[arg(long, value_name = "DOMAIN")]
        spf: Vec<String>,
        #[arg(long)]
        note: Option<String>,
        /// Last day (UTC) the partner is allowed, YYYY-MM-DD.
        #[arg(long)]
        expires: Option<String>,
        /// Accept prefixes shorter than /16. No registry gives one
        /// organisation more than a /16, so a shorter prefix spans many
        /// networks (at /3, the whole IPv6 Internet); remembered for the
        /// partner.
        #[arg(long)]
        allow_short_prefix: bool,
    },
    /// Remove a partner, or some of its prefixes or SPF domains.
    Remove {
        name: String,
        prefixes: Vec<String>,
        /// An SPF domain to stop trusting for the partner (repeatable).
        #[arg(long, value_name = "DOMAIN")]
        spf: Vec<String>,
    },
    /// Expand the partner's SPF domains now; with --accept, enforce the
    /// sets held for confirmation instead.
    Refresh {
        name: String,
        /// Enforce the held sets (shown by `status` and `partner list`).
        #[arg(long)]
        accept: bool,
    },
    /// List partners with their prefixes (and where each comes from) and
    /// hit counts.
    List {
        /// Print the store as JSON (schema "mx6gate.partners/1").
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Path, cmd: Cmd) -> Result<()> {
    let ctx = Ctx::load(config)?;
    match cmd {
        Cmd::List { json } => list(&ctx, json),
        Cmd::Add {
            name,
            prefixes,
            spf,
            note,
            expires,
            allow_short_prefix,
        } => {
            let req = AddRequest {
                name: name.clone(),
                prefixes,
                spf,
                note,
                expires,
                allow_short: allow_short_prefix,
            };
            let added = partners::add(&ctx, &req, &mut healed)?;
            for n in &added.notices {
                println!("note: {n}");
            }
            for (domain, set) in &added.spf {
                println!("spf {domain}: {} IPv6 prefix(es)", set.len());
                for p in set {
                    println!("  {p}");
                }
                if set.is_empty() {
                    println!("note: {domain} publishes no IPv6 range in its SPF record; nothing is allowed for it until it does");
                }
            }
            let p = &added.store.partners[&name];
            println!(
                "{} partner {name}: {} prefix(es), {} spf domain(s); {}",
                if added.existed { "updated" } else { "added" },
                p.prefixes.len(),
                p.spf.len(),
                loaded_note(added.applied.loaded)
            );
            Ok(())
        }
        Cmd::Remove {
            name,
            prefixes,
            spf,
        } => {
            let (store, applied) = partners::remove(&ctx, &name, &prefixes, &spf, &mut healed)?;
            match store.partners.get(&name) {
                Some(p) => println!(
                    "partner {name}: {} prefix(es), {} spf domain(s) left; {}",
                    p.prefixes.len(),
                    p.spf.len(),
                    loaded_note(applied.loaded)
                ),
                None => println!("removed partner {name}; {}", loaded_note(applied.loaded)),
            }
            Ok(())
        }
        Cmd::Refresh { name, accept: true } => {
            let (accepted, loaded) = partners::accept(&ctx, &name)?;
            for (domain, diff) in accepted {
                println!("spf {domain}: held set accepted: {diff}");
            }
            println!("{}", loaded_note(loaded));
            Ok(())
        }
        Cmd::Refresh {
            name,
            accept: false,
        } => {
            let (refreshed, loaded) = partners::refresh(&ctx, &name)?;
            for r in refreshed {
                match &r.decision {
                    Decision::Apply { diff, prefixes, .. } => println!(
                        "spf {}: {} prefix(es) enforced: {diff}",
                        r.domain,
                        prefixes.len()
                    ),
                    Decision::Hold { diff, reason, .. } => println!(
                        "spf {}: HELD ({reason}): would change {diff}; `mx6gate partner refresh {name} --accept` enforces it",
                        r.domain
                    ),
                    Decision::Keep { error } => println!(
                        "spf {}: refresh failed ({error}); the last good set stays enforced",
                        r.domain
                    ),
                }
            }
            println!("{}", loaded_note(loaded));
            Ok(())
        }
    }
}

/// Say so when the maps had to be brought in step before the edit (said
/// at once: it stands even if the edit is then refused).
fn healed(r: &SyncReport) {
    println!(
        "note: the allowlist did not match the store (an earlier command interrupted?); brought in step first: {}",
        describe(r)
    );
}

/// "+2 added, 1 changed, 3 removed (40 in all)".
pub fn describe(r: &SyncReport) -> String {
    format!(
        "{} added, {} changed, {} removed ({} in all)",
        r.added, r.changed, r.removed, r.total
    )
}

fn list(ctx: &Ctx, as_json: bool) -> Result<()> {
    // Diagnosis keeps working with a bad file: what reads cleanly is
    // listed, each refused file is named with its reason.
    let v = PartnersView::observe(ctx)?;
    if as_json {
        return json::print(json::PARTNERS, &v);
    }
    for r in &v.refused {
        println!("REFUSED: {r}");
    }
    if !v.refused.is_empty() {
        println!(
            "(the store is refused as a whole: the gate keeps its last good allowlist; below, what the readable files hold)"
        );
    }
    for s in &v.skipped {
        println!("skipped: {s}");
    }
    if v.partners.is_empty() {
        println!("no partners in {}", v.partners_dir.display());
        return Ok(());
    }
    println!(
        "{:<24} {:>10}  {:<12} {:<44} NOTE",
        "PARTNER", "HITS", "EXPIRES", "PREFIXES"
    );
    for p in &v.partners {
        let hits = match (p.hits, p.hits_unreadable) {
            (Some(h), _) => h.to_string(),
            (None, true) => "?".into(),
            (None, false) => "-".into(),
        };
        let expires = match p.expires {
            Some(d) if !p.active => format!("{d} EXPIRED"),
            Some(d) => d.to_string(),
            None => "never".into(),
        };
        let prefixes: Vec<String> = p
            .prefixes
            .iter()
            .filter(|n| n.origin == "manual")
            .map(|n| n.prefix.to_string())
            .collect();
        println!(
            "{:<24} {:>10}  {:<12} {:<44} {}",
            p.name,
            hits,
            expires,
            prefixes.join(","),
            p.note.as_deref().unwrap_or("")
        );
        for d in &p.spf {
            print_spf_domain(&p.name, d);
            let origin = format!("spf:{}", d.domain);
            for n in p.prefixes.iter().filter(|n| n.origin == origin) {
                let via = n
                    .via
                    .as_deref()
                    .map(|v| format!(", AAAA of {v}"))
                    .unwrap_or_default();
                println!(
                    "    {:<42} {} in {}{via}",
                    n.prefix.to_string(),
                    n.term.as_deref().unwrap_or("?"),
                    n.record.as_deref().unwrap_or("?")
                );
            }
        }
    }
    if !v.gate_loaded {
        println!("(no gate loaded: hit counts appear once `mx6gate run` has loaded it)");
    }
    Ok(())
}

/// One SPF domain's line: enforced count, last refresh, held, failing.
pub fn print_spf_domain(partner: &str, d: &mx6gate::observe::SpfDomainView) {
    let refreshed = d.refreshed.map_or_else(
        || "never expanded".to_string(),
        |t| format!("refreshed {}", t.format("%Y-%m-%d %H:%M:%SZ")),
    );
    println!(
        "  spf:{} — {} prefix(es) enforced, {refreshed}{}",
        d.domain,
        d.prefixes,
        if d.ipv6 {
            ""
        } else {
            "; NO IPv6 in its SPF record"
        }
    );
    for line in spf_state_lines(partner, d) {
        println!("    {line}");
    }
}

/// A domain's refresh trouble, one line each (no indent): failing since
/// when, and a held candidate with what accepting it would change.
/// `partner list` and `status` both print them.
pub fn spf_state_lines(partner: &str, d: &mx6gate::observe::SpfDomainView) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = &d.failing {
        out.push(format!(
            "REFRESH FAILING since {} ({} in a row): {}; the last good set stays enforced",
            f.since.format("%Y-%m-%d %H:%M:%SZ"),
            f.count,
            f.error
        ));
    }
    if let Some(h) = &d.held {
        let change: Vec<String> = h
            .added
            .iter()
            .map(|n| format!("+{n}"))
            .chain(h.removed.iter().map(|n| format!("-{n}")))
            .collect();
        out.push(format!(
            "HELD since {} ({}): accepting would change {}; `mx6gate partner refresh {partner} --accept`",
            h.since.format("%Y-%m-%d %H:%M:%SZ"),
            h.reason,
            if change.is_empty() { "nothing".to_string() } else { change.join(" ") }
        ));
    }
    out
}
