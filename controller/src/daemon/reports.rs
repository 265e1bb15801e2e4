//! The daemon's reports task: the non-partner SYN report service and the
//! control socket `mx6gate top` asks, wired together here so that neither
//! `report` nor `control` needs the other's start-up (control reads the
//! report service's handle; report knows nothing of sockets).
use std::path::Path;

use tracing::error;

use crate::{control, report::Service, state::StateDir};

/// The daemon's part: the service and the control socket `top` asks.
/// The gate works without either, so a failure is logged, not fatal.
pub fn start(pin_path: &Path, state: &StateDir) -> Option<(Service, control::Server)> {
    let started = Service::start(pin_path).and_then(|s| {
        let server = control::spawn(state, s.handle.clone())?;
        Ok((s, server))
    });
    match started {
        Ok(s) => Some(s),
        Err(e) => {
            error!(
                error = format!("{e:#}"),
                "non-partner SYN reports unavailable (`mx6gate top` will not answer); the gate is unaffected"
            );
            None
        }
    }
}
