//! Store → maps. The partner store is the single source of truth; this makes
//! ALLOW mirror it by diff, and keeps CONFIG in step with config + mode.
use std::collections::BTreeMap;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use ipnet::Ipv6Net;
use mx6gate_common::{GateConfig, Mode, PartnerId};
use tracing::info;

use crate::{config::Config, maps::GateMaps, state::StateDir, store::Store};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub total: usize,
}

impl SyncReport {
    pub fn is_noop(&self) -> bool {
        self.added + self.changed + self.removed == 0
    }
}

/// The prefixes ALLOW must hold for `store` on `today`, with partner ids
/// assigned (and persisted) through the state dir. Fails, changing
/// nothing, when the store does not fit the maps.
pub fn desired_allow(
    store: &Store,
    state: &StateDir,
    maps: &mut GateMaps,
    today: NaiveDate,
) -> Result<BTreeMap<Ipv6Net, PartnerId>> {
    let prefixes = store.active_prefixes(today);
    if prefixes.len() > maps.allow_capacity as usize {
        bail!(
            "the partner store has {} active prefixes but the ALLOW map holds {} (raise maps.allow_entries, then `mx6gate detach` and restart to resize)",
            prefixes.len(),
            maps.allow_capacity
        );
    }
    let mut ids = state.load_ids()?;
    let names: Vec<&str> = store.partners.keys().map(String::as_str).collect();
    let fresh = ids.assign(&names, maps.partner_capacity)?;
    for id in &fresh {
        // A reused id must not inherit its previous owner's hit count.
        maps.reset_partner_hits(*id)?;
    }
    if !fresh.is_empty() {
        state.save_ids(&ids)?;
    }
    Ok(prefixes
        .into_iter()
        .map(|(net, name)| (net, ids.get(&name).expect("assigned above")))
        .collect())
}

/// Make ALLOW equal `desired`: new and changed entries first, stale ones
/// last, so a prefix moving between partners or being narrowed is never
/// briefly missing. If the map is too full to add first, stale entries go
/// first instead (they are being removed anyway).
pub fn apply_allow(
    maps: &mut GateMaps,
    desired: &BTreeMap<Ipv6Net, PartnerId>,
) -> Result<SyncReport> {
    let current = maps.allow_entries()?;
    let upserts: Vec<(Ipv6Net, PartnerId, bool)> = desired
        .iter()
        .filter(|(net, id)| current.get(net) != Some(id))
        .map(|(net, id)| (*net, *id, current.contains_key(net)))
        .collect();
    let stale: Vec<Ipv6Net> = current
        .keys()
        .filter(|net| !desired.contains_key(net))
        .copied()
        .collect();
    let new_entries = upserts.iter().filter(|(_, _, existed)| !existed).count();
    let stale_first = current.len() + new_entries > maps.allow_capacity as usize;
    if stale_first {
        for net in &stale {
            maps.allow_remove(*net)?;
        }
    }
    for (net, id, _) in &upserts {
        maps.allow_insert(*net, *id)?;
    }
    if !stale_first {
        for net in &stale {
            maps.allow_remove(*net)?;
        }
    }
    Ok(SyncReport {
        added: new_entries,
        changed: upserts.len() - new_entries,
        removed: stale.len(),
        total: desired.len(),
    })
}

/// The whole store → ALLOW step, as every command and the daemon run it.
pub fn sync_allow(
    store: &Store,
    state: &StateDir,
    maps: &mut GateMaps,
    today: NaiveDate,
) -> Result<SyncReport> {
    let desired = desired_allow(store, state, maps, today)?;
    let report = apply_allow(maps, &desired)?;
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

pub fn gate_config(cfg: &Config, mode: Mode) -> GateConfig {
    GateConfig::new(mode, &cfg.ports)
}

/// CONFIG ← config + mode. Rewritten only when it differs.
pub fn sync_config(cfg: &Config, state: &StateDir, maps: &mut GateMaps) -> Result<Mode> {
    let mode = effective_mode(cfg, state)?;
    let want = gate_config(cfg, mode);
    if maps.read_config().ok() != Some(want) {
        maps.write_config(&want)?;
        info!(mode = mode.as_str(), ports = ?cfg.ports, "gate config written");
    }
    Ok(mode)
}
