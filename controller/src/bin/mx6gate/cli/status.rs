//! `mx6gate status [--json]`: renders the library's one view of the gate
//! ([`GateView`]) as text, or as `mx6gate.status/1`.
use std::path::Path;

use anyhow::Result;
use mx6gate::observe::GateView;

use super::{json, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the gate's state as JSON (schema "mx6gate.status/1").
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: &Path, args: Args) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let view = GateView::observe(&ctx)?;
    if args.json {
        return json::print(json::STATUS, &view);
    }
    print!("{}", text(&view));
    Ok(())
}

/// The text `mx6gate status` prints (tests and operators grep its lines).
fn text(v: &GateView) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    macro_rules! line {
        ($($t:tt)*) => { writeln!(o, $($t)*).expect("writing to a String") };
    }
    line!("config:      {}", v.config.display());
    for w in &v.warnings {
        line!("WARNING:     {w}");
    }
    if v.loaded {
        line!("gate:        loaded, pinned at {}", v.pin_path.display());
    } else {
        line!(
            "gate:        not loaded (nothing pinned at {})",
            v.pin_path.display()
        );
    }
    match (v.daemon_pid, v.loaded) {
        (Some(pid), _) => line!("daemon:      running (pid {pid})"),
        (None, true) => {
            line!("daemon:      not running (the pinned gate keeps enforcing without it)")
        }
        (None, false) => line!("daemon:      not running"),
    }
    if let Some(owner) = &v.foreign_owner {
        line!(
            "WARNING:     the gate is owned by another mx6gate daemon{} (another config or state dir): its store, not {}, decides the allowlist",
            owner.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            v.store.partners_dir.display()
        );
    }
    match (&v.mode.effective, &v.mode.error) {
        (Some(mode), _) => line!(
            "mode:        {mode}{}",
            if v.mode.overridden {
                format!(
                    " (set by `mx6gate mode`; the config file says {})",
                    v.mode.config
                )
            } else {
                String::new()
            }
        ),
        (None, e) => line!("mode:        UNREADABLE: {}", e.as_deref().unwrap_or("")),
    }
    let ports: Vec<String> = v.ports.iter().map(u16::to_string).collect();
    line!("ports:       {}", ports.join(", "));
    line!(
        "defer:       explain once per /{} for {}, then {} (explain_by, explain_window, repeat)",
        v.defer.explain_by,
        mx6gate::explain::human(std::time::Duration::from_secs(
            v.defer.explain_window_seconds
        )),
        match v.defer.repeat {
            "defer" => "the banner again (repeat = \"defer\")",
            _ => "reset (connection refused)",
        }
    );
    let r = &v.responder;
    if r.up {
        line!(
            "responder:   up in the daemon, listening on {} ({} {} …, greeting {})",
            r.listen,
            r.code,
            r.enhanced_code,
            r.greeting
        );
    } else {
        let down = mx6gate::config::DownPolicy::parse(r.down_policy)
            .expect("a policy the view took from the config")
            .consequence();
        line!("responder:   DOWN (no daemon): {down}");
    }
    match (v.daemon_pid, v.metrics) {
        (Some(_), Some(addr)) => line!("metrics:     http://{addr}/metrics"),
        (Some(_), None) => line!("metrics:     disabled ([metrics] listen = false)"),
        (None, _) => {}
    }

    if v.interfaces.is_empty() {
        line!("interfaces:  none attached");
    }
    for i in v.interfaces.iter().filter(|i| i.attachment.attached) {
        let how = &i.attachment.xdp_mode;
        let ids = match (&i.link, &i.link_error) {
            (Some(l), _) => format!("link {} prog {}", l.link, l.prog),
            (None, e) => format!("link unreadable: {}", e.as_deref().unwrap_or("")),
        };
        let warn = if how == "generic" {
            "  (generic XDP: slower, runs after the skb is built)"
        } else {
            ""
        };
        line!(
            "interface:   {:<12} xdp {how:<8} {ids}{warn}",
            i.attachment.interface
        );
    }
    match &v.sk_lookup.link {
        Some(l) => line!("sk_lookup:   attached (link {} prog {})", l.link, l.prog),
        None => line!("sk_lookup:   not attached"),
    }
    for i in v.interfaces.iter().filter(|i| !i.attachment.attached) {
        line!(
            "interface:   {:<12} configured but NOT attached",
            i.attachment.interface
        );
    }
    if let Some(w) = &v.stranding_warning {
        line!("WARNING:     {w}");
    }

    let s = &v.store;
    for r in &s.refused {
        line!("store:       REFUSED: {r}");
    }
    if !s.refused.is_empty() {
        line!(
            "             the gate keeps its last good allowlist; fix the store and the daemon applies it within a second (no daemon: `mx6gate sync`)"
        );
    }
    for sk in &s.skipped {
        line!("store:       {sk}");
    }
    write!(
        o,
        "allowlist:   {} partner(s), {} prefix(es){}",
        s.partners_active,
        s.prefixes,
        if s.refused.is_empty() {
            ""
        } else {
            " in the readable files"
        }
    )
    .expect("writing to a String");
    if s.partners_expired > 0 {
        write!(
            o,
            " ({} expired partner(s) not allowed)",
            s.partners_expired
        )
        .expect("writing to a String");
    }
    line!();
    if let Some(e) = &v.spf.error {
        line!("spf:         STATE UNREADABLE: {e}");
    }
    for d in &v.spf.domains {
        let refreshed = d.refreshed.map_or_else(
            || "never expanded".to_string(),
            |t| format!("refreshed {}", t.format("%Y-%m-%d %H:%M:%SZ")),
        );
        line!(
            "spf:         {} (partner {}): {} prefix(es) enforced, {refreshed}",
            d.domain,
            d.partner,
            d.prefixes
        );
        for l in super::partner::spf_state_lines(&d.partner, d) {
            line!("             {l}");
        }
    }
    let Some(m) = &v.maps else {
        return o;
    };
    let advice = if m.vacant {
        format!(
            "  the store holds no file: kept as a vanished store, not read as \"no partners\" (to mean none: `touch {}/none.toml`)",
            s.partners_dir.display()
        )
    } else if m.mismatch {
        format!(
            "  MISMATCH with the store ({} missing, {} not in the store): `mx6gate sync` brings them in step",
            m.missing, m.extra
        )
    } else {
        String::new()
    };
    line!(
        "allowlist maps: {} prefixes, capacity {} ({:.1}% full){advice}",
        m.prefixes,
        m.capacity,
        100.0 * m.prefixes as f64 / m.capacity.max(1) as f64,
    );
    if let Some(p) = &m.pending_sizes {
        line!(
            "map sizes:   PENDING: the config asks for allow_entries {}, max_partners {}; the loaded maps keep {}, {} until `mx6gate detach` and a restart",
            p.allow_entries,
            p.max_partners,
            m.capacity,
            m.partner_capacity
        );
    }
    line!("XDP (SYN packets, since load):");
    for (c, n) in &m.counters.xdp.0 {
        line!("  {c:<24} {n}");
    }
    line!("sk_lookup (connections, since load):");
    for (c, n) in &m.counters.sk_lookup.0 {
        line!("  {c:<24} {n}");
    }
    match &m.explained {
        Some(x) => line!(
            "explained sources: {} within the window now ({} in the map, capacity {}); recorded since load: {}",
            x.live,
            x.entries,
            x.capacity,
            x.recorded
        ),
        None => line!(
            "explained sources: not tracked: the gate was pinned by an older mx6gate (the daemon's next start upgrades it)"
        ),
    }
    line!("non-partner SYN reports to the daemon (`mx6gate top`), since load:");
    for (c, n) in &m.counters.report.0 {
        line!("  {c:<24} {n}");
    }
    o
}
