//! `mx6gate run`: the daemon.
use std::path::Path;

use anyhow::Result;

use super::ModeArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interface to protect (repeatable); replaces `interfaces` from the config.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Set the mode on start, as `mx6gate mode` would (persisted).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

/// EX_CONFIG from sysexits.h: `run` refused its config (unreadable, invalid,
/// or no interface named) and changed nothing. The systemd unit lists it in RestartPreventExitStatus=,
/// so an unconfigured or broken install fails once instead of restarting in
/// a loop.
pub const EXIT_CONFIG: u8 = 78;

/// EX_UNAVAILABLE from sysexits.h: the kernel lacks a feature the gate
/// needs (`kernel::BelowFloor`). Also in the unit's
/// RestartPreventExitStatus=: no restart gives the kernel what it lacks.
pub const EXIT_KERNEL: u8 = 69;

/// Marks the error `run` exits with [`EXIT_CONFIG`] for.
#[derive(Debug, thiserror::Error)]
#[error("refusing to start")]
pub struct ConfigRefused;

pub fn run(config: &Path, args: Args) -> Result<()> {
    // Checked up front so a bad config gets its own exit status; the daemon
    // checks it again under its lock.
    // A missing interface exits 1 instead: it may come up late, so systemd
    // retries.
    mx6gate::daemon::checked_config(config, &args.ifaces).map_err(|e| e.context(ConfigRefused))?;
    warn_without_ipv4(config, &args.ifaces);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(mx6gate::daemon::run(
        config,
        args.ifaces,
        args.mode.map(Into::into),
    ));
    // Dropping the runtime would wait for blocking helpers still running
    // (the SPF task reading a big store behind the state lock): SIGTERM
    // must end the daemon at once, and what they write is atomic.
    rt.shutdown_background();
    result
}

/// Deferring IPv6 strands senders when they cannot retry over IPv4: say so
/// at start (the daemon validates the config itself; a bad one is its error
/// to report, not this warning's).
fn warn_without_ipv4(config: &Path, ifaces: &[String]) {
    let Ok(cfg) = mx6gate::config::Config::load(config) else {
        return;
    };
    let ifaces = if ifaces.is_empty() {
        &cfg.interfaces[..]
    } else {
        ifaces
    };
    // A missing interface is the daemon's error to report, first and alone:
    // warning that it has no IPv4 would only bury it.
    let present: Vec<String> = ifaces
        .iter()
        .filter(|i| mx6gate::gate::ifindex(i).is_some())
        .cloned()
        .collect();
    if present.len() < ifaces.len() {
        return;
    }
    if let Ok(addrs) = mx6gate::iface::ipv4_addresses() {
        if let Some(w) =
            mx6gate::iface::stranding_warning(&mx6gate::iface::without_ipv4(&present, &addrs))
        {
            tracing::warn!("{w}");
        }
    }
}
