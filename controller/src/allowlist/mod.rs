//! The allowlist in the kernel: prefix → partner id, laid out in the
//! levels the programs probe (see `mx6gate_common::allow`) plus the
//! fallback trie. `plan` turns a prefix set into that layout; `apply`
//! moves the maps to it by diff, in an order that never hides a prefix
//! that stays (`table`: the /32 level's double-buffered images);
//! `entries` and `lookup` read it back; `upgrade` adopts a gate pinned
//! before the /32 table.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv6Addr,
    path::Path,
};

use anyhow::{bail, Context, Result};
use aya::maps::{lpm_trie::Key, IterableMap};
use ipnet::Ipv6Net;
use mx6gate_common::{
    allow::{
        cell_of, walk, Levels, LongKey, Slash32, CELL_LEN, MAX_PROBES, MIN_EXPAND_LEN, NO_PARTNER,
        OCCUPIED_TOP3, SUMMARY_SHIFT, USE_TRIE,
    },
    GateConfig, PartnerId,
};

use crate::{batch, maps::GateMaps};

mod plan;
mod read;
mod snapshot;
mod table;
mod upgrade;
mod write;

pub use self::{
    plan::plan,
    read::{entries, is_empty, lookup, read, table_fill},
    snapshot::apply_tracked,
    table::grace_period,
    upgrade::adopt_legacy_slash32,
    write::{apply, check_capacity, check_fits, Changes},
};
use self::{plan::*, read::*, write::*};

/// What the maps must hold for one prefix set.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// OCCUPIED's non-zero cell words (a word missing here is zero) …
    pub occupied: BTreeMap<u32, u64>,
    /// … and its summary's set cells.
    pub summary: BTreeMap<u32, ()>,
    pub slash32: BTreeMap<[u8; 4], Slash32>,
    pub long: BTreeMap<LongKey, PartnerId>,
    pub trie: BTreeMap<Ipv6Net, PartnerId>,
    pub trie_on_miss: bool,
}

#[cfg(test)]
mod tests;
