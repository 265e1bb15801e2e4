//! `mx6gate mode monitor|defer|reset|drop`
use std::path::Path;

use anyhow::Result;
use mx6gate_common::Mode;

use super::{loaded_note, Ctx};
use crate::{maps::GateMaps, store::Store, sync};

pub fn run(config: &Path, mode: Mode) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let _lock = ctx.state.lock()?;
    // Read first: a broken store must fail the command before anything changes.
    let store = Store::load(&ctx.cfg.partners_dir)?;
    let before = sync::effective_mode(&ctx.cfg, &ctx.state)?;
    ctx.state.set_mode(mode)?;
    let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
    let loaded = maps.is_some();
    if let Some(mut maps) = maps {
        sync::sync_config(&ctx.cfg, &ctx.state, &mut maps)?;
    }
    println!(
        "mode: {} (was {}); {}",
        mode.as_str(),
        before.as_str(),
        loaded_note(loaded)
    );
    if mode != Mode::Monitor && store.active_prefixes(crate::store::today_utc()).is_empty() {
        println!("note: the allowlist is empty, so every IPv6 SMTP client is turned away");
    }
    Ok(())
}
