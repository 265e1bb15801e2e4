//! The settings the controller writes for the programs: the gate's
//! (mode, ports, layout flags) and defer mode's.
use mx6gate_common::{explain::DeferConfig, GateConfig};

use crate::maps::{CONFIG, DEFER};

#[inline(always)]
pub fn config() -> Option<&'static GateConfig> {
    CONFIG.get(0)
}

/// The `[defer]` settings; zeroed (plain defer) if unreadable.
#[inline(always)]
pub fn defer_config() -> DeferConfig {
    DEFER.get(0).copied().unwrap_or_default()
}
