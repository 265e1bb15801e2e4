//! The systemd readiness protocol (sd_notify(3)) for `mx6gate run` under
//! `Type=notify`: READY=1 once the gate is attached, the maps synced and
//! the responder bound; RELOADING=1 … READY=1 around a SIGHUP reload;
//! STOPPING=1 on the way out; STATUS= lines say the mode and partners.
//! Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
use sd_notify::NotifyState;
use tracing::debug;

/// The gate is in force and the responder serves: `systemctl start` returns.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new STATUS= line (after a store change or a periodic resync, which
/// also picks up `mx6gate mode`).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A SIGHUP reload begins. systemd ≥ 253 (`Type=notify-reload`) wants the
/// CLOCK_MONOTONIC time with it to match the reload to its request; older
/// ones ignore the field.
pub fn reloading() {
    let mut msg = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        msg.push(now);
    }
    send(&msg);
}

/// The daemon exits (the gate stays pinned).
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("exiting; the gate stays attached and pinned"),
    ]);
}

fn send(states: &[NotifyState<'_>]) {
    // A lost notification must not stop the gate; systemd's start timeout
    // reports a missing READY=1 on its own.
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}
