//! The partner store: readable, in step with the maps, expiries ahead.
use super::*;
pub(super) fn partners(ctx: &Ctx, maps: Option<&GateMaps>, out: &mut Vec<Finding>) {
    for w in ctx.cfg.warnings() {
        out.push(Finding::new("ports", Severity::Warn, w));
    }
    let store = match Store::load(&ctx.cfg.partners_dir) {
        Ok(s) => s,
        Err(e)
            if StoreRefused::of(&e).is_some_and(|r| r.kind == RefusedKind::Missing)
                && maps.is_none_or(|m| crate::allowlist::is_empty(m).unwrap_or(false)) =>
        {
            out.push(
                Finding::new("partners", Severity::Warn, format!("{e:#}"))
                    .detail("Harmless in monitor mode; `mx6gate run` in an enforcing mode refuses to start without it, since it would turn every partner away.")
                    .fix(format!("`mkdir -p {}`, then add partners", ctx.cfg.partners_dir.display())),
            );
            return;
        }
        Err(e) => {
            out.push(
                Finding::new("partners", Severity::Fail, format!("the partner store is refused: {e:#}"))
                    .detail("The daemon keeps the last good allowlist, but no change to the store takes effect.")
                    .fix("fix what is named above (`mx6gate status` and `mx6gate partner list` show it too)"),
            );
            return;
        }
    };
    for s in &store.skipped {
        out.push(Finding::new("partners", Severity::Warn, s.clone()));
    }
    let today = today_utc();
    let mut soon = Vec::new();
    let mut expired = Vec::new();
    for (name, p) in &store.partners {
        if let Some(d) = p.expires {
            let days = (d - today).num_days();
            if days < 0 {
                expired.push(format!("{name} ({d})"));
            } else if days <= EXPIRY_WARN_DAYS {
                soon.push(format!("{name} on {d}"));
            }
        }
    }
    // What the policy allows: manual prefixes ∪ the enforced SPF sets.
    let spf = match crate::spf::SpfState::load(&ctx.state.path) {
        Ok(s) => s,
        Err(e) => {
            out.push(
                Finding::new("spf", Severity::Fail, format!("the SPF state is unreadable: {e:#}"))
                    .detail("The gate keeps the allowlist it has; no sync applies until the file reads again.")
                    .fix("restore the file from a backup, or remove it and run `mx6gate partner refresh NAME` for each partner with --spf domains"),
            );
            return;
        }
    };
    spf_findings(&store, &spf, out);
    let active = crate::policy::allowed(&store, &spf, today).len();
    out.push(Finding::new(
        "partners",
        Severity::Ok,
        format!(
            "{} partner(s), {active} active prefix(es)",
            store.partners.len()
        ),
    ));
    if !soon.is_empty() {
        out.push(
            Finding::new(
                "expiry",
                Severity::Warn,
                format!(
                    "expiring within {EXPIRY_WARN_DAYS} days: {}",
                    soon.join(", ")
                ),
            )
            .detail("After that day their IPv6 mail is turned away like anyone else's.")
            .fix("extend them if still wanted: `mx6gate partner add NAME --expires YYYY-MM-DD`"),
        );
    }
    if !expired.is_empty() {
        out.push(
            Finding::new("expired", Severity::Info, format!("expired, no longer allowed: {}", expired.join(", ")))
                .detail("Their prefixes stay in the store but out of the allowlist; remove them or extend them."),
        );
    }
    if let Some(maps) = maps {
        match crate::allowlist::entries(maps) {
            Ok(e) if store.files == 0 && !e.is_empty() => out.push(
                Finding::new(
                    "partners",
                    Severity::Fail,
                    format!(
                        "{} holds no partner file, but the gate allows {} prefix(es)",
                        ctx.cfg.partners_dir.display(),
                        e.len()
                    ),
                )
                .detail("Taken as a vanished store (an unmounted volume, a directory swap midway): the daemon keeps the allowlist.")
                .fix(format!(
                    "restore the files; to mean no partners, leave an empty file: `touch {}/none.toml`",
                    ctx.cfg.partners_dir.display()
                )),
            ),
            Ok(e) if e.len() == active => {}
            Ok(e) => out.push(
                Finding::new(
                    "allowlist",
                    Severity::Warn,
                    format!("the gate holds {} prefix(es), the store {active}", e.len()),
                )
                .detail("The running allowlist does not follow the store: a command was interrupted, the daemon is down or its sync failed.")
                .fix("`mx6gate sync` brings them in step; then check the daemon's log"),
            ),
            Err(e) => out.push(Finding::new("allowlist", Severity::Warn, format!("could not read the allowlist: {e:#}"))),
        }
    }
}

/// Held sets, failing refreshes, and partners whose SPF gives no IPv6.
fn spf_findings(store: &Store, spf: &crate::spf::SpfState, out: &mut Vec<Finding>) {
    for p in store.partners.values() {
        let mut ipv6 = !p.prefixes.is_empty();
        for d in &p.spf {
            let ds = spf.domain.get(d);
            if let Some(h) = ds.and_then(|s| s.held.as_ref()) {
                out.push(
                    Finding::new(
                        "spf",
                        Severity::Warn,
                        format!("partner {}: a new SPF set of {d} is held since {} ({})", p.name, h.since.format("%Y-%m-%d %H:%M:%SZ"), h.reason),
                    )
                    .detail("The last good set stays enforced; `mx6gate status` shows what accepting would change.")
                    .fix(format!("check it against what the sender publishes, then `mx6gate partner refresh {} --accept`", p.name)),
                );
            }
            if let Some(f) = ds.and_then(|s| s.failing.as_ref()) {
                out.push(
                    Finding::new(
                        "spf",
                        Severity::Warn,
                        format!("partner {}: SPF refresh of {d} failing since {} ({} in a row): {}", p.name, f.since.format("%Y-%m-%d %H:%M:%SZ"), f.count, f.error),
                    )
                    .detail("The last good set stays enforced while refreshes fail.")
                    .fix("check the [spf] resolvers and the domain's DNS; `mx6gate partner refresh NAME` retries now"),
                );
            }
            ipv6 |= !spf.enforced(d).is_empty();
        }
        if !p.spf.is_empty() && !ipv6 {
            out.push(
                Finding::new(
                    "spf",
                    Severity::Warn,
                    format!(
                        "partner {}: its SPF domains ({}) give no IPv6 prefix",
                        p.name,
                        p.spf.join(", ")
                    ),
                )
                .detail("Its IPv6 mail is turned away like a stranger's (it retries over IPv4).")
                .fix("ask the sender for its IPv6 ranges and add them as prefixes"),
            );
        }
    }
}
