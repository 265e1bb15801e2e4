//! What the daemon knows about the state it keeps, shared between its
//! sync worker (which writes it), the metrics endpoint and systemd's
//! STATUS= line (which read it): whether the partner store was applied or
//! refused (the last good allowlist kept), and what had to be repaired.
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Why the last read of the partner store was not applied (the
    /// allowlist kept as it was); None when it was applied.
    pub store_refused: Option<String>,
    /// Entries of the store directory skipped (not regular files).
    pub store_skipped: Vec<String>,
    /// Partners and prefixes of the store last applied.
    pub partners: usize,
    pub prefixes: usize,
    /// Times this daemon found its responder socket missing from the
    /// RESPONDER sockmap and registered it again.
    pub socket_repairs: u64,
    /// Times it found pins of its gate removed and pinned them again.
    pub pin_repairs: u64,
}

/// The daemon's one shared copy.
#[derive(Debug, Clone, Default)]
pub struct SharedHealth(Arc<Mutex<Health>>);

impl SharedHealth {
    pub fn lock(&self) -> MutexGuard<'_, Health> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> Health {
        self.lock().clone()
    }
}
