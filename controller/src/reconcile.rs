//! Store → maps. The partner store is the single source of truth; this makes
//! ALLOW mirror it by diff, and keeps CONFIG in step with config + mode.
//!
//! Every command that changes something ends with [`reconcile`]: the maps
//! are made to hold what the *whole* store says (never a replay of the
//! command's own delta), so a command killed between writing the store and
//! the maps is healed by the next command of any kind, or by the daemon.
use std::collections::BTreeMap;

use anyhow::Result;
use chrono::NaiveDate;
use ipnet::Ipv6Net;
use mx6gate_common::{GateConfig, Mode, PartnerId};
use tracing::info;

pub use crate::allowlist::Changes as SyncReport;
use crate::{
    allowlist,
    config::{Config, DownPolicy},
    maps::GateMaps,
    state::StateDir,
    store::{RefusedKind, Store, StoreRefused},
};

impl SyncReport {
    pub fn is_noop(&self) -> bool {
        self.added + self.changed + self.removed == 0
    }
}

/// The prefixes the allowlist must hold for `store` on `today`, with partner ids
/// assigned (and persisted) through the state dir. Fails, changing
/// nothing (not even the ids file), when the store does not fit the maps.
pub fn desired_allow(
    store: &Store,
    state: &StateDir,
    maps: &mut GateMaps,
    today: NaiveDate,
) -> Result<BTreeMap<Ipv6Net, PartnerId>> {
    // The one policy (manual ∪ enforced SPF sets): see `policy`. A damaged
    // SPF state file refuses the sync rather than reading as "no SPF".
    let spf = crate::spf::SpfState::load(&state.path)?;
    let prefixes = crate::policy::allowed(store, &spf, today);
    let mut ids = state.load_ids()?;
    let names: Vec<&str> = store.partners.keys().map(String::as_str).collect();
    let fresh = ids.assign(&names, maps.partner_capacity)?;
    // Sorted by prefix already: collect() builds the map in one pass.
    let desired = prefixes
        .into_iter()
        .map(|a| (a.net, ids.get(&a.partner).expect("assigned above")))
        .collect();
    allowlist::check_fits(maps, &desired)?;
    // Only a store that will be applied gets ids.
    for id in &fresh {
        // A reused id must not inherit its previous owner's hit count.
        maps.reset_partner_hits(*id)?;
    }
    if !fresh.is_empty() {
        state.save_ids(&ids)?;
    }
    Ok(desired)
}

/// Refuse a store that holds no partner file at all while the allowlist
/// holds prefixes: that is what an unmounted volume or a directory swap
/// caught midway looks like, not an operator's "no partners" (who says so
/// with an empty file, or removes partners with `mx6gate partner remove`).
/// Edits made through the CLI pass `explicit` and are taken as meant.
pub fn refuse_vacant(store: &Store, maps: &GateMaps, explicit: bool) -> Result<()> {
    if explicit || store.files > 0 || allowlist::is_empty(maps)? {
        return Ok(());
    }
    Err(StoreRefused {
        kind: RefusedKind::Vacant,
        file: None,
        message: format!(
            "{}: holds no partner file, but the allowlist holds prefixes: taken as a vanished store (an unmounted volume, a directory swap midway), not as \"no partners\"; to mean no partners, leave a file in it, even an empty one (e.g. `touch {}/none.toml`)",
            store.dir.display(),
            store.dir.display()
        ),
    }
    .into())
}

/// maps = f(store): the allowlist made to hold exactly what the whole
/// `store` says (after [`refuse_vacant`]). What every changing command
/// and the daemon end with.
pub fn reconcile(
    store: &Store,
    state: &StateDir,
    maps: &mut GateMaps,
    today: NaiveDate,
    explicit: bool,
) -> Result<SyncReport> {
    refuse_vacant(store, maps, explicit)?;
    sync_allow(store, state, maps, today)
}

/// Make the allowlist maps hold exactly `desired`, diffing against the
/// state dir's snapshot of the last update when it is still valid (see
/// `allowlist::apply_tracked`). Every command and the daemon go this way.
pub fn apply_allow_tracked(
    maps: &mut GateMaps,
    state: &StateDir,
    desired: &BTreeMap<Ipv6Net, PartnerId>,
) -> Result<SyncReport> {
    allowlist::apply_tracked(maps, desired, &snapshot_path(state))
}

pub fn snapshot_path(state: &StateDir) -> std::path::PathBuf {
    state.path.join("allowlist.snap")
}

/// Make the allowlist maps hold exactly `desired`, reading them back whole
/// (see `allowlist::apply`).
pub fn apply_allow(
    maps: &mut GateMaps,
    desired: &BTreeMap<Ipv6Net, PartnerId>,
) -> Result<SyncReport> {
    allowlist::apply(maps, desired)
}

/// The whole store → ALLOW step, as every command and the daemon run it.
pub fn sync_allow(
    store: &Store,
    state: &StateDir,
    maps: &mut GateMaps,
    today: NaiveDate,
) -> Result<SyncReport> {
    let desired = desired_allow(store, state, maps, today)?;
    let report = apply_allow_tracked(maps, state, &desired)?;
    if !report.is_noop() {
        info!(
            added = report.added,
            changed = report.changed,
            removed = report.removed,
            total = report.total,
            "allowlist synced"
        );
    }
    Ok(report)
}

/// The mode in force: `mx6gate mode` (persisted in the state dir) overrides
/// the config file's `mode`.
pub fn effective_mode(cfg: &Config, state: &StateDir) -> Result<Mode> {
    Ok(state.mode_override()?.unwrap_or(cfg.mode))
}

/// CONFIG as config + mode make it. `flags` and `allow_generation`
/// describe the allowlist and belong to `allowlist::apply`: carried over.
pub fn gate_config(cfg: &Config, mode: Mode, current: Option<&GateConfig>) -> GateConfig {
    let mut g = GateConfig::new(mode, &cfg.ports);
    g.responder_down_refuse = u32::from(cfg.responder.down_policy == DownPolicy::Refuse);
    if let Some(c) = current {
        g.flags = c.flags;
        g.allow_generation = c.allow_generation;
    }
    g
}

/// CONFIG ← config + mode, DEFER ← `[defer]`. Each rewritten only when
/// it differs. DEFER first: a switch to defer mode finds its settings.
pub fn sync_config(cfg: &Config, state: &StateDir, maps: &mut GateMaps) -> Result<Mode> {
    let defer = cfg.defer.kernel();
    if maps.read_defer().ok() != Some(defer) && maps.write_defer(&defer)? {
        info!(
            explain_window = %crate::explain::human(cfg.defer.explain_window),
            explain_by = cfg.defer.explain_by,
            repeat = cfg.defer.repeat.as_str(),
            "defer settings written"
        );
    }
    let mode = effective_mode(cfg, state)?;
    let current = maps.read_config().ok();
    let want = gate_config(cfg, mode, current.as_ref());
    if current != Some(want) {
        maps.write_config(&want)?;
        info!(mode = mode.as_str(), ports = ?cfg.ports, "gate config written");
    }
    Ok(mode)
}
