//! `mx6gate detach`: the one way to remove the gate (invariant 4).
use std::{path::Path, time::Duration};

use anyhow::{bail, Result};
use mx6gate::{gate, pinlock};

use super::Ctx;

pub fn run(config: &Path) -> Result<()> {
    let ctx = Ctx::load(config)?;
    // Another config's daemon holds the gate: it would pin it again.
    pinlock::refuse_foreign_owner(&ctx.cfg.pin_path, &ctx.state)?;
    // A daemon left running would re-attach on its next reload.
    if let Some(pid) = ctx.state.running_daemon() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            ctx.state.running_daemon() != Some(pid)
        });
        if !gone {
            bail!("the daemon (pid {pid}) did not exit after SIGTERM; nothing was detached");
        }
        println!("stopped the daemon (pid {pid})");
    }
    let _lock = ctx.state.lock()?;
    let removed = gate::detach(&ctx.cfg.pin_path, &ctx.state.path)?;
    if removed.is_empty() {
        println!("no gate was loaded at {}", ctx.cfg.pin_path.display());
    } else {
        println!(
            "gate removed: XDP detached, {} pins under {} removed",
            removed.len(),
            ctx.cfg.pin_path.display()
        );
    }
    Ok(())
}
