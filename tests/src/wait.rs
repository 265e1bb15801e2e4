//! Waiting for an event with a deadline (never a fixed sleep): poll a
//! condition until it holds or the time is up.
use std::time::{Duration, Instant};

/// Wait (bounded) until `cond` holds.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
