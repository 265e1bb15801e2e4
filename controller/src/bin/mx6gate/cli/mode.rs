//! `mx6gate mode monitor|defer|reset|drop`
//!
//! The one-command rollback (`mode monitor`) must work whatever state the
//! partner store is in: the mode is set even when the store is refused (a
//! bad file, a vanished directory), and the allowlist is then left as it
//! is, with a note. With a good store the command ends, like every
//! changing command, with the allowlist matching the whole store.
use std::path::Path;

use anyhow::Result;
use mx6gate::{
    maps::GateMaps,
    pinlock, reconcile,
    store::{today_utc, Store, StoreRefused},
};
use mx6gate_common::Mode;

use super::{loaded_note, partner::describe, Ctx};

pub fn run(config: &Path, mode: Mode) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let _lock = ctx.state.lock()?;
    pinlock::refuse_foreign_owner(&ctx.cfg.pin_path, &ctx.state)?;
    let before = reconcile::effective_mode(&ctx.cfg, &ctx.state).ok();
    let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
    ctx.state.set_mode(mode)?;
    let loaded = maps.is_some();
    let mut notes = Vec::new();
    let store = Store::load(&ctx.cfg.partners_dir);
    if let Some(mut maps) = maps {
        reconcile::sync_config(&ctx.cfg, &ctx.state, &mut maps)?;
        let reconciled = store
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|s| reconcile::reconcile(s, &ctx.state, &mut maps, today_utc(), false));
        match reconciled {
            Ok(r) if !r.is_noop() => notes.push(format!(
                "the allowlist did not match the store and was brought in step: {}",
                describe(&r)
            )),
            Ok(_) => {}
            Err(e) => notes.push(format!(
                "the partner store is refused, so the allowlist was left as it is: {e:#}"
            )),
        }
    } else if let Err(e) = &store {
        if StoreRefused::of(e).is_some() {
            notes.push(format!("the partner store is refused: {e:#}"));
        }
    }
    println!(
        "mode: {} (was {}); {}",
        mode.as_str(),
        before.map_or("unknown", |m| m.as_str()),
        loaded_note(loaded)
    );
    for n in notes {
        println!("note: {n}");
    }
    if let Ok(store) = &store {
        // The policy's allowlist: manual prefixes and enforced SPF sets.
        let spf = mx6gate::spf::SpfState::load(&ctx.state.path).unwrap_or_default();
        if mode != Mode::Monitor && mx6gate::policy::allowed(store, &spf, today_utc()).is_empty() {
            println!("note: the allowlist is empty, so every IPv6 SMTP client is turned away");
        }
    }
    Ok(())
}
