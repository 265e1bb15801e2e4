//! `mx6gate check ADDR`: which partner and prefix match, and what the gate
//! would do with an SMTP connection from ADDR right now.
use std::{net::IpAddr, path::Path};

use anyhow::{bail, Result};
use mx6gate_common::Mode;

use super::Ctx;
use crate::{
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
            Mode::Defer => format!("mode defer: connections to port(s) {ports} get the responder's 4xx banner, the sender retries over IPv4"),
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
