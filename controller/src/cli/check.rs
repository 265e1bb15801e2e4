//! `mx6gate check ADDR`: which partner and prefix match, and what the gate
//! would do with an SMTP connection from ADDR right now.
use std::{net::IpAddr, path::Path};

use anyhow::{bail, Result};
use mx6gate_common::Mode;

use super::Ctx;
use crate::{
    config::Config,
    explain::{self, Standing},
    maps::GateMaps,
    store::{today_utc, Store},
    sync,
};

pub fn run(config: &Path, addr: &str) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let ip: IpAddr = match addr.parse() {
        Ok(ip) => ip,
        Err(_) => bail!("{addr:?} is not an IP address"),
    };
    let IpAddr::V6(ip6) = ip else {
        println!("{ip}: IPv4 is never gated; connections pass to the MTA");
        return Ok(());
    };
    let mode = sync::effective_mode(&ctx.cfg, &ctx.state)?;
    let store = Store::load(&ctx.cfg.partners_dir)?;
    let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
    let today = today_utc();
    let matched = store.lookup(ip6);
    let allowed = match matched {
        Some((p, net)) if p.is_active(today) => {
            println!("{ip6}: partner {} via {net}", p.name);
            true
        }
        Some((p, net)) => {
            println!(
                "{ip6}: partner {} via {net}, but it expired on {}: treated as a stranger",
                p.name,
                p.expires.map(|d| d.to_string()).unwrap_or_default()
            );
            false
        }
        None => {
            println!("{ip6}: not in any partner prefix");
            false
        }
    };
    let ports: Vec<String> = ctx.cfg.ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    let verdict = if allowed {
        format!("allowed: connections to port(s) {ports} reach the MTA in every mode")
    } else {
        match mode {
            Mode::Monitor => "mode monitor: passes to the MTA, counted as \"monitored\" (would be turned away once enforcing)".to_string(),
            Mode::Defer => defer_verdict(&ctx.cfg, maps.as_ref(), ip6, &ports)?,
            Mode::Reset => format!("mode reset: SYNs to port(s) {ports} are answered with a TCP RST (connection refused), the sender retries over IPv4"),
            Mode::Drop => format!("mode drop: SYNs to port(s) {ports} are dropped; the sender waits for its TCP timeout, then retries over IPv4"),
        }
    };
    println!("  {verdict}");
    match maps {
        None => println!("  (no gate loaded: nothing is enforced right now)"),
        Some(m) => {
            let in_map = crate::allowlist::lookup(&m, ip6)?.is_some();
            if in_map != allowed {
                println!(
                    "  WARNING: the loaded ALLOW map says {}; it is out of sync with the store",
                    if in_map { "allowed" } else { "not allowed" }
                );
            }
        }
    }
    Ok(())
}

/// Defer mode for a non-partner: the banner, or the reset if its source
/// was explained within the window (what the loaded gate holds for it).
fn defer_verdict(
    cfg: &Config,
    maps: Option<&GateMaps>,
    ip6: std::net::Ipv6Addr,
    ports: &str,
) -> Result<String> {
    let settings = &cfg.defer;
    let window = explain::human(settings.explain_window);
    let banner = format!("connections to port(s) {ports} get the responder's 4xx banner, the sender retries over IPv4");
    let then = match settings.repeat {
        mx6gate_common::explain::Repeat::Reset => format!(
            "further connections from it within {window} get a TCP RST (connection refused), which every sender falls back on"
        ),
        mx6gate_common::explain::Repeat::Defer => {
            format!("further connections within {window} get the banner again (repeat = \"defer\")")
        }
    };
    let (x, rec) = match maps {
        Some(m) if m.explain.is_some() => {
            let x = m.read_defer()?;
            (x, m.explained(&x.key(&ip6.octets()))?)
        }
        // No gate (or one pinned before explain-then-reset, until the
        // daemon's next start): what the config will make of it.
        _ => {
            let x = settings.kernel();
            (x, None)
        }
    };
    let by = if x.explain_by == 128 { 128 } else { 64 };
    let net = ipnet::Ipv6Net::new(ip6, by)
        .map(|n| n.trunc().to_string())
        .unwrap_or_else(|_| ip6.to_string());
    Ok(
        match explain::standing(&x, rec.as_ref(), explain::monotonic_now_ns()) {
            Standing::Off => format!("mode defer: {banner}"),
            Standing::Unexplained { expired_ago } => {
                let before = match expired_ago {
                    Some(d) => format!(
                        " (its last explanation's window ended {} ago)",
                        explain::ago(d)
                    ),
                    None => String::new(),
                };
                format!(
                "mode defer: {net} is not explained{before}: the next connection gets the banner and explains it; {then}"
            )
            }
            Standing::Explained {
                ago,
                left,
                sport,
                escalates,
            } => {
                let now = if escalates {
                    "new connections get a TCP RST (connection refused) and the sender retries over IPv4 at once".to_string()
                } else {
                    "new connections get the banner again (repeat = \"defer\")".to_string()
                };
                format!(
                "mode defer: {net} was explained {} ago (the banner went to its port {sport}); for the {} left of the window {now}",
                explain::ago(ago),
                explain::ago(left)
            )
            }
        },
    )
}
