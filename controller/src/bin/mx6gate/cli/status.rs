//! `mx6gate status`
//!
//! Diagnosis keeps working whatever is broken: a refused partner store, a
//! garbled mode file or a missing pin is reported on its line, and the
//! maps and counters are still shown.
use std::{collections::BTreeSet, path::Path};

use anyhow::Result;
use aya::programs::links::{FdLink, PinnedLink};
use ipnet::Ipv6Net;

use super::Ctx;
use mx6gate::{
    gate::{AttachRecord, PinLayout},
    maps::GateMaps,
    pinlock,
    store::{today_utc, Store},
    reconcile,
};

pub fn run(config: &Path) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let cfg = &ctx.cfg;
    let layout = PinLayout::new(&cfg.pin_path);
    println!("config:      {}", ctx.config_path.display());
    for w in cfg.warnings() {
        println!("WARNING:     {w}");
    }
    let maps = GateMaps::open_if_loaded(&cfg.pin_path)?;
    let running = ctx.state.running_daemon();
    let daemon = match (running, &maps) {
        (Some(pid), _) => format!("running (pid {pid})"),
        (None, Some(_)) => "not running (the pinned gate keeps enforcing without it)".into(),
        (None, None) => "not running".into(),
    };
    match &maps {
        Some(_) => println!("gate:        loaded, pinned at {}", cfg.pin_path.display()),
        None => println!(
            "gate:        not loaded (nothing pinned at {})",
            cfg.pin_path.display()
        ),
    }
    println!("daemon:      {daemon}");
    if let Ok(Some(h)) = pinlock::holder(&cfg.pin_path) {
        if running.is_none() || h.pid.is_some_and(|p| Some(p) != running) {
            println!(
                "WARNING:     the gate is owned by another mx6gate daemon{} (another config or state dir): its store, not {}, decides the allowlist",
                h.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                cfg.partners_dir.display()
            );
        }
    }
    match reconcile::effective_mode(cfg, &ctx.state) {
        Ok(mode) => {
            let overridden = ctx
                .state
                .mode_override()
                .ok()
                .flatten()
                .is_some_and(|m| m != cfg.mode);
            println!(
                "mode:        {}{}",
                mode.as_str(),
                if overridden {
                    format!(
                        " (set by `mx6gate mode`; the config file says {})",
                        cfg.mode.as_str()
                    )
                } else {
                    String::new()
                }
            );
        }
        Err(e) => println!("mode:        UNREADABLE: {e:#}"),
    }
    let ports: Vec<String> = cfg.ports.iter().map(u16::to_string).collect();
    println!("ports:       {}", ports.join(", "));
    let down = match cfg.responder.down_policy {
        mx6gate::config::DownPolicy::Pass => {
            "defer-mode connections pass to the MTA (down_policy = pass)"
        }
        mx6gate::config::DownPolicy::Refuse => {
            "defer-mode connections are refused (down_policy = refuse)"
        }
    };
    let d = &cfg.defer;
    println!(
        "defer:       explain once per /{} for {}, then {} (explain_by, explain_window, repeat)",
        d.explain_by,
        mx6gate::explain::human(d.explain_window),
        match d.repeat {
            mx6gate_common::explain::Repeat::Reset => "reset (connection refused)",
            mx6gate_common::explain::Repeat::Defer => "the banner again (repeat = \"defer\")",
        }
    );
    match running {
        Some(_) => println!(
            "responder:   up in the daemon, listening on {} ({} {} …, greeting {})",
            cfg.responder.listen,
            cfg.responder.code,
            cfg.responder.enhanced_code,
            cfg.responder.greeting.as_str()
        ),
        None => println!("responder:   DOWN (no daemon): {down}"),
    }
    match (running, cfg.metrics.listen) {
        (Some(_), Some(addr)) => println!("metrics:     http://{addr}/metrics"),
        (Some(_), None) => println!("metrics:     disabled ([metrics] listen = false)"),
        (None, _) => {}
    }

    let record = AttachRecord::load(&ctx.state.path);
    let attached = layout.attached_interfaces();
    if attached.is_empty() && cfg.interfaces.is_empty() {
        println!("interfaces:  none attached");
    }
    for iface in &attached {
        let how = record
            .interfaces
            .get(iface)
            .map(|r| r.mode.as_str())
            .unwrap_or("unknown");
        let ids = PinnedLink::from_pin(layout.xdp_link(iface))
            .map(FdLink::from)
            .and_then(|l| l.info())
            .map(|i| format!("link {} prog {}", i.id(), i.program_id()))
            .unwrap_or_else(|e| format!("link unreadable: {e}"));
        let warn = if how == "generic" {
            "  (generic XDP: slower, runs after the skb is built)"
        } else {
            ""
        };
        println!("interface:   {iface:<12} xdp {how:<8} {ids}{warn}");
    }
    let sk = match PinnedLink::from_pin(layout.sk_lookup_link())
        .map(FdLink::from)
        .and_then(|l| l.info())
    {
        Ok(i) => format!("attached (link {} prog {})", i.id(), i.program_id()),
        Err(_) => "not attached".into(),
    };
    println!("sk_lookup:   {sk}");
    for iface in &cfg.interfaces {
        if !attached.contains(iface) {
            println!("interface:   {iface:<12} configured but NOT attached");
        }
    }
    let mut protected = cfg.interfaces.clone();
    protected.extend(
        attached
            .iter()
            .filter(|i| !cfg.interfaces.contains(i))
            .cloned(),
    );
    if let Ok(addrs) = mx6gate::iface::ipv4_addresses() {
        if let Some(w) =
            mx6gate::iface::stranding_warning(&mx6gate::iface::without_ipv4(&protected, &addrs))
        {
            println!("WARNING:     {w}");
        }
    }

    let (store, refused) = Store::load_lenient(&cfg.partners_dir);
    let today = today_utc();
    for r in &refused {
        println!("store:       REFUSED: {r}");
    }
    if !refused.is_empty() {
        println!(
            "             the gate keeps its last good allowlist; fix the store and the daemon applies it within a second (no daemon: `mx6gate sync`)"
        );
    }
    for s in &store.skipped {
        println!("store:       {s}");
    }
    let active = store
        .partners
        .values()
        .filter(|p| p.is_active(today))
        .count();
    let expired = store.partners.len() - active;
    let wanted: BTreeSet<Ipv6Net> = store
        .active_prefixes(today)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    print!(
        "allowlist:   {active} partner(s), {} prefix(es){}",
        wanted.len(),
        if refused.is_empty() {
            ""
        } else {
            " in the readable files"
        }
    );
    if expired > 0 {
        print!(" ({expired} expired partner(s) not allowed)");
    }
    println!();
    if let Some(maps) = &maps {
        let in_map: BTreeSet<Ipv6Net> = mx6gate::allowlist::entries(maps)?.into_keys().collect();
        let vacant = refused.is_empty() && store.files == 0 && !in_map.is_empty();
        let advice = if !refused.is_empty() {
            String::new()
        } else if vacant {
            format!(
                "  the store holds no file: kept as a vanished store, not read as \"no partners\" (to mean none: `touch {}/none.toml`)",
                cfg.partners_dir.display()
            )
        } else if in_map != wanted {
            let missing = wanted.difference(&in_map).count();
            let extra = in_map.difference(&wanted).count();
            format!(
                "  MISMATCH with the store ({missing} missing, {extra} not in the store): `mx6gate sync` brings them in step"
            )
        } else {
            String::new()
        };
        println!(
            "allowlist maps: {} prefixes, capacity {} ({:.1}% full){advice}",
            in_map.len(),
            maps.allow_capacity,
            100.0 * in_map.len() as f64 / maps.allow_capacity.max(1) as f64,
        );
        if maps.allow_capacity != cfg.maps.allow_entries
            || maps.partner_capacity != cfg.maps.max_partners
        {
            println!(
                "map sizes:   PENDING: the config asks for allow_entries {}, max_partners {}; the loaded maps keep {}, {} until `mx6gate detach` and a restart",
                cfg.maps.allow_entries,
                cfg.maps.max_partners,
                maps.allow_capacity,
                maps.partner_capacity
            );
        }
        println!("XDP (SYN packets, since load):");
        for (c, n) in maps.counters()? {
            println!("  {:<24} {n}", c.as_str());
        }
        println!("sk_lookup (connections, since load):");
        for (c, n) in maps.sk_counters()? {
            println!("  {:<24} {n}", c.as_str());
        }
        match &maps.explain {
            Some(x) => {
                let (all, live) = x.count(&maps.read_defer()?, mx6gate::explain::monotonic_now_ns())?;
                println!(
                    "explained sources: {live} within the window now ({all} in the map, capacity {}); recorded since load: {}",
                    x.explained_capacity,
                    maps.counter(mx6gate_common::Counter::Explained)?
                );
            }
            None => println!(
                "explained sources: not tracked: the gate was pinned by an older mx6gate (the daemon's next start upgrades it)"
            ),
        }
        println!("non-partner SYN reports to the daemon (`mx6gate top`), since load:");
        for (c, n) in maps.report_counters()? {
            println!("  {:<24} {n}", c.as_str());
        }
    }
    Ok(())
}
