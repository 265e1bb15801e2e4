//! `mx6gate partner add|remove|list`
//!
//! An edit is validated whole, checked against the map capacity, written
//! atomically, then mirrored into ALLOW; if the map update fails the
//! partner's file is put back, so store and map never disagree (invariants
//! 5 and 6).
use std::{fs, path::Path};

use anyhow::{Context, Result};

use super::{loaded_note, Ctx};
use crate::{
    maps::GateMaps,
    store::{today_utc, Store},
    sync,
};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Add a partner, or more prefixes to one.
    Add {
        name: String,
        /// IPv6 prefixes (an address alone means /128).
        #[arg(required = true)]
        prefixes: Vec<String>,
        #[arg(long)]
        note: Option<String>,
        /// Last day (UTC) the partner is allowed, YYYY-MM-DD.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Remove a partner, or some of its prefixes.
    Remove { name: String, prefixes: Vec<String> },
    /// List partners with their prefixes and hit counts.
    List,
}

pub fn run(config: &Path, cmd: Cmd) -> Result<()> {
    let ctx = Ctx::load(config)?;
    match cmd {
        Cmd::List => list(&ctx),
        Cmd::Add {
            name,
            prefixes,
            note,
            expires,
        } => {
            let _lock = ctx.state.lock()?;
            let mut store = Store::load(&ctx.cfg.partners_dir)?;
            let existed = store.partners.contains_key(&name);
            let notices = store.add(&name, &prefixes, note, expires)?;
            let loaded = commit(&ctx, &store, &name)?;
            for n in notices {
                println!("note: {n}");
            }
            let p = &store.partners[&name];
            println!(
                "{} partner {name}: {} prefix(es); {}",
                if existed { "updated" } else { "added" },
                p.prefixes.len(),
                loaded_note(loaded)
            );
            Ok(())
        }
        Cmd::Remove { name, prefixes } => {
            let _lock = ctx.state.lock()?;
            let mut store = Store::load(&ctx.cfg.partners_dir)?;
            store.remove(&name, &prefixes)?;
            let loaded = commit(&ctx, &store, &name)?;
            match store.partners.get(&name) {
                Some(p) => println!(
                    "partner {name}: {} prefix(es) left; {}",
                    p.prefixes.len(),
                    loaded_note(loaded)
                ),
                None => println!("removed partner {name}; {}", loaded_note(loaded)),
            }
            Ok(())
        }
    }
}

/// Persist the edit of partner `name` and mirror it into ALLOW. Returns
/// whether a gate was loaded.
fn commit(ctx: &Ctx, store: &Store, name: &str) -> Result<bool> {
    let today = today_utc();
    let Some(mut maps) = GateMaps::open_if_loaded(&ctx.cfg.pin_path)? else {
        store.save(name)?;
        return Ok(false);
    };
    // Capacity and ids are checked before anything is written.
    let desired = sync::desired_allow(store, &ctx.state, &mut maps, today)?;
    let file = store.file_of(name);
    let previous = fs::read(&file).ok();
    store.save(name)?;
    if let Err(e) = sync::apply_allow_tracked(&mut maps, &ctx.state, &desired) {
        // Put the store back as it was and the map with it.
        match previous {
            Some(bytes) => crate::fsutil::write_atomic(&file, &bytes)?,
            None => {
                fs::remove_file(&file).ok();
            }
        }
        let old = Store::load(&ctx.cfg.partners_dir)?;
        sync::sync_allow(&old, &ctx.state, &mut maps, today)
            .context("restoring the ALLOW map after a failed update")?;
        return Err(e.context("updating the ALLOW map; the store was left unchanged"));
    }
    Ok(true)
}

fn list(ctx: &Ctx) -> Result<()> {
    let store = Store::load(&ctx.cfg.partners_dir)?;
    let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
    let ids = ctx.state.load_ids()?;
    let today = today_utc();
    if store.partners.is_empty() {
        println!("no partners in {}", ctx.cfg.partners_dir.display());
        return Ok(());
    }
    println!(
        "{:<24} {:>10}  {:<12} {:<44} NOTE",
        "PARTNER", "HITS", "EXPIRES", "PREFIXES"
    );
    for p in store.partners.values() {
        let hits = match (&maps, ids.get(&p.name)) {
            (Some(m), Some(id)) => m
                .partner_hits(id)
                .map(|h| h.to_string())
                .unwrap_or("?".into()),
            _ => "-".into(),
        };
        let expires = match p.expires {
            Some(d) if !p.is_active(today) => format!("{d} EXPIRED"),
            Some(d) => d.to_string(),
            None => "never".into(),
        };
        let prefixes: Vec<String> = p.prefixes.iter().map(|n| n.to_string()).collect();
        println!(
            "{:<24} {:>10}  {:<12} {:<44} {}",
            p.name,
            hits,
            expires,
            prefixes.join(","),
            p.note.as_deref().unwrap_or("")
        );
    }
    if maps.is_none() {
        println!("(no gate loaded: hit counts appear once `mx6gate run` has loaded it)");
    }
    Ok(())
}
