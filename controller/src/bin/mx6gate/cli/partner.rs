//! `mx6gate partner add|remove|list`
//!
//! An edit is validated whole, checked against the map capacity, written
//! atomically, then the maps are made to match the whole store; if the map
//! update fails the partner's file is put back, so store and map never
//! disagree (invariants 5 and 6). Before the edit, the maps are brought in
//! step with the store as it is on disk, so a command killed between its
//! store write and its map update is healed by the next one (re-running
//! it included).
use std::{fs, path::Path};

use anyhow::{Context, Result};
use mx6gate::{
    maps::GateMaps,
    observe::PartnersView,
    pinlock,
    reconcile::{self, SyncReport},
    store::{today_utc, Store},
};

use super::{json, loaded_note, Ctx};

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
        /// Accept prefixes shorter than /16. No registry gives one
        /// organisation more than a /16, so a shorter prefix spans many
        /// networks (at /3, the whole IPv6 Internet); remembered for the
        /// partner.
        #[arg(long)]
        allow_short_prefix: bool,
    },
    /// Remove a partner, or some of its prefixes.
    Remove { name: String, prefixes: Vec<String> },
    /// List partners with their prefixes and hit counts.
    List {
        /// Print the store as JSON (schema "mx6gate.partners/1").
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Path, cmd: Cmd) -> Result<()> {
    let ctx = Ctx::load(config)?;
    match cmd {
        Cmd::List { json } => list(&ctx, json),
        Cmd::Add {
            name,
            prefixes,
            note,
            expires,
            allow_short_prefix,
        } => {
            let _lock = ctx.state.lock()?;
            let mut maps = open_maps(&ctx)?;
            // A missing directory is a new store (this edit creates it),
            // unless the gate holds partners that must have been there.
            let mut store = Store::load_or_new(&ctx.cfg.partners_dir)?;
            heal(&ctx, &store, maps.as_mut())?;
            let existed = store.partners.contains_key(&name);
            let notices = store.add(&name, &prefixes, note, expires, allow_short_prefix)?;
            let loaded = commit(&ctx, &store, &name, maps.as_mut())?;
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
            let mut maps = open_maps(&ctx)?;
            let mut store = Store::load(&ctx.cfg.partners_dir)?;
            heal(&ctx, &store, maps.as_mut())?;
            store.remove(&name, &prefixes)?;
            let loaded = commit(&ctx, &store, &name, maps.as_mut())?;
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

/// The gate's maps, if one is loaded and no other config's daemon owns it.
fn open_maps(ctx: &Ctx) -> Result<Option<GateMaps>> {
    pinlock::refuse_foreign_owner(&ctx.cfg.pin_path, &ctx.state)?;
    GateMaps::open_if_loaded(&ctx.cfg.pin_path)
}

/// Bring the maps in step with `store` as it is on disk, before an edit.
/// A store that looks vanished refuses the edit (see `reconcile::refuse_vacant`).
fn heal(ctx: &Ctx, store: &Store, maps: Option<&mut GateMaps>) -> Result<()> {
    let Some(maps) = maps else { return Ok(()) };
    let report = reconcile::reconcile(store, &ctx.state, maps, today_utc(), false)
        .context("bringing the allowlist in step with the store before the edit")?;
    if !report.is_noop() {
        println!(
            "note: the allowlist did not match the store (an earlier command interrupted?); brought in step first: {}",
            describe(&report)
        );
    }
    Ok(())
}

/// "+2 added, 1 changed, 3 removed (40 in all)".
pub fn describe(r: &SyncReport) -> String {
    format!(
        "{} added, {} changed, {} removed ({} in all)",
        r.added, r.changed, r.removed, r.total
    )
}

/// Persist the edit of partner `name`, then make the maps match the whole
/// store. Returns whether a gate was loaded.
fn commit(ctx: &Ctx, store: &Store, name: &str, maps: Option<&mut GateMaps>) -> Result<bool> {
    let today = today_utc();
    let Some(maps) = maps else {
        store.save(name)?;
        return Ok(false);
    };
    // Capacity and ids are checked before anything is written.
    let desired = reconcile::desired_allow(store, &ctx.state, maps, today)?;
    let file = store.file_of(name);
    let previous = fs::read(&file).ok();
    store.save(name)?;
    if let Err(e) = reconcile::apply_allow_tracked(maps, &ctx.state, &desired) {
        // Put the store back as it was and the map with it.
        match previous {
            Some(bytes) => mx6gate::fsutil::write_atomic(&file, &bytes)?,
            None => {
                fs::remove_file(&file).ok();
            }
        }
        let old = Store::load_or_new(&ctx.cfg.partners_dir)?;
        reconcile::reconcile(&old, &ctx.state, maps, today, true)
            .context("restoring the ALLOW map after a failed update")?;
        return Err(e.context("updating the ALLOW map; the store was left unchanged"));
    }
    Ok(true)
}

fn list(ctx: &Ctx, as_json: bool) -> Result<()> {
    // Diagnosis keeps working with a bad file: what reads cleanly is
    // listed, each refused file is named with its reason.
    let v = PartnersView::observe(ctx)?;
    if as_json {
        return json::print(json::PARTNERS, &v);
    }
    for r in &v.refused {
        println!("REFUSED: {r}");
    }
    if !v.refused.is_empty() {
        println!(
            "(the store is refused as a whole: the gate keeps its last good allowlist; below, what the readable files hold)"
        );
    }
    for s in &v.skipped {
        println!("skipped: {s}");
    }
    if v.partners.is_empty() {
        println!("no partners in {}", v.partners_dir.display());
        return Ok(());
    }
    println!(
        "{:<24} {:>10}  {:<12} {:<44} NOTE",
        "PARTNER", "HITS", "EXPIRES", "PREFIXES"
    );
    for p in &v.partners {
        let hits = match (p.hits, p.hits_unreadable) {
            (Some(h), _) => h.to_string(),
            (None, true) => "?".into(),
            (None, false) => "-".into(),
        };
        let expires = match p.expires {
            Some(d) if !p.active => format!("{d} EXPIRED"),
            Some(d) => d.to_string(),
            None => "never".into(),
        };
        let prefixes: Vec<String> = p.prefixes.iter().map(|n| n.prefix.to_string()).collect();
        println!(
            "{:<24} {:>10}  {:<12} {:<44} {}",
            p.name,
            hits,
            expires,
            prefixes.join(","),
            p.note.as_deref().unwrap_or("")
        );
    }
    if !v.gate_loaded {
        println!("(no gate loaded: hit counts appear once `mx6gate run` has loaded it)");
    }
    Ok(())
}
