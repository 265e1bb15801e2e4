//! `mx6gate sync`: make the gate's maps match the partner store and the
//! mode, as every changing command does at its end (and the daemon every
//! 30 s). For when `status` reports a mismatch and no daemon runs, or to
//! confirm a fixed store at once. Also removes temp files left in the
//! store and state directories by commands that were killed.
use std::path::Path;

use anyhow::{bail, Context, Result};
use mx6gate::{
    fsutil,
    maps::GateMaps,
    pinlock, reconcile,
    store::{today_utc, Store},
};

use super::{partner::describe, Ctx};

pub fn run(config: &Path) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let _lock = ctx.state.lock()?;
    pinlock::refuse_foreign_owner(&ctx.cfg.pin_path, &ctx.state)?;
    for dir in [&ctx.cfg.partners_dir, &ctx.state.path] {
        for f in fsutil::remove_stale_temps(dir) {
            println!(
                "removed {} (left by a command that was killed)",
                f.display()
            );
        }
    }
    let Some(mut maps) = GateMaps::open_if_loaded(&ctx.cfg.pin_path)? else {
        bail!(
            "no gate is loaded at {}: nothing to sync (`mx6gate run` loads it)",
            ctx.cfg.pin_path.display()
        );
    };
    let store = Store::load(&ctx.cfg.partners_dir).context("the allowlist is unchanged")?;
    let mode = reconcile::sync_config(&ctx.cfg, &ctx.state, &mut maps)?;
    let report = reconcile::reconcile(&store, &ctx.state, &mut maps, today_utc(), false)
        .context("the allowlist is unchanged")?;
    for s in &store.skipped {
        println!("skipped: {s}");
    }
    if report.is_noop() {
        println!(
            "in step: the allowlist holds the store's {} prefix(es); mode {}",
            report.total,
            mode.as_str()
        );
    } else {
        println!("synced: {}; mode {}", describe(&report), mode.as_str());
    }
    Ok(())
}
