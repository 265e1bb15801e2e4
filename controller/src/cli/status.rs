//! `mx6gate status`
use std::path::Path;

use anyhow::Result;
use aya::programs::links::{FdLink, PinnedLink};

use super::Ctx;
use crate::{
    gate::{AttachRecord, PinLayout},
    maps::GateMaps,
    store::{today_utc, Store},
    sync,
};

pub fn run(config: &Path) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let cfg = &ctx.cfg;
    let layout = PinLayout::new(&cfg.pin_path);
    let mode = sync::effective_mode(cfg, &ctx.state)?;
    let overridden = ctx.state.mode_override()?.is_some_and(|m| m != cfg.mode);
    println!("config:      {}", ctx.config_path.display());
    let daemon = match ctx.state.running_daemon() {
        Some(pid) => format!("running (pid {pid})"),
        None => "not running (the pinned gate keeps working without it)".into(),
    };
    let maps = GateMaps::open_if_loaded(&cfg.pin_path)?;
    match &maps {
        Some(_) => println!("gate:        loaded, pinned at {}", cfg.pin_path.display()),
        None => println!(
            "gate:        not loaded (nothing pinned at {})",
            cfg.pin_path.display()
        ),
    }
    println!("daemon:      {daemon}");
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
    let ports: Vec<String> = cfg.ports.iter().map(u16::to_string).collect();
    println!("ports:       {}", ports.join(", "));
    let down = match cfg.responder.down_policy {
        crate::config::DownPolicy::Pass => {
            "defer-mode connections pass to the MTA (down_policy = pass)"
        }
        crate::config::DownPolicy::Refuse => {
            "defer-mode connections are refused (down_policy = refuse)"
        }
    };
    let d = &cfg.defer;
    println!(
        "defer:       explain once per /{} for {}, then {} (explain_by, explain_window, repeat)",
        d.explain_by,
        crate::explain::human(d.explain_window),
        match d.repeat {
            mx6gate_common::explain::Repeat::Reset => "reset (connection refused)",
            mx6gate_common::explain::Repeat::Defer => "the banner again (repeat = \"defer\")",
        }
    );
    match ctx.state.running_daemon() {
        Some(_) => println!(
            "responder:   up in the daemon, listening on {} ({} {} …, greeting {})",
            cfg.responder.listen,
            cfg.responder.code,
            cfg.responder.enhanced_code,
            cfg.responder.greeting.as_str()
        ),
        None => println!("responder:   DOWN (no daemon): {down}"),
    }
    match (ctx.state.running_daemon(), cfg.metrics.listen) {
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
    if let Ok(addrs) = crate::iface::ipv4_addresses() {
        if let Some(w) =
            crate::iface::stranding_warning(&crate::iface::without_ipv4(&protected, &addrs))
        {
            println!("WARNING:     {w}");
        }
    }

    let store = Store::load(&cfg.partners_dir)?;
    let today = today_utc();
    let active = store
        .partners
        .values()
        .filter(|p| p.is_active(today))
        .count();
    let expired = store.partners.len() - active;
    let prefixes = store.active_prefixes(today).len();
    print!("allowlist:   {active} partner(s), {prefixes} prefix(es)",);
    if expired > 0 {
        print!(" ({expired} expired partner(s) not allowed)");
    }
    println!();
    if let Some(maps) = &maps {
        let in_map = crate::allowlist::entries(maps)?.len();
        println!(
            "allowlist maps: {in_map} prefixes, capacity {} ({:.1}% full){}",
            maps.allow_capacity,
            100.0 * in_map as f64 / maps.allow_capacity.max(1) as f64,
            if in_map != prefixes {
                "  MISMATCH with the store: run `mx6gate run` or SIGHUP the daemon"
            } else {
                ""
            }
        );
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
                let (all, live) = x.count(&maps.read_defer()?, crate::explain::monotonic_now_ns())?;
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
