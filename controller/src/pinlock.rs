//! One owner per pinned gate: the daemon holds an exclusive flock(2) on the
//! pin directory itself (`pin_path`) for as long as it runs.
//!
//! Why the pin directory and not a file in the state dir: the state-dir
//! lock (`state::StateDir::lock`) serializes commands that share a state
//! dir, but two configs with different state dirs and the same `pin_path`
//! would each take their own and both drive one gate (each daemon
//! rewriting the allowlist from its own store at every resync). The pin
//! directory is the gate: every config that reaches the gate reaches this
//! inode, whatever the path's spelling (symlinks, `//`), and bpffs
//! directories can be opened and flocked like any other. It needs nothing
//! writable beyond what the daemon already has, and the lock goes with the
//! process (crash, SIGKILL) and with the directory: a gate detached and
//! loaded again is a new directory, hence a new lock — the old owner sees
//! its pins gone (`gate::Gate::check_pins`).
//!
//! CLI commands that change the gate only look: [`refuse_foreign_owner`] tells
//! them whether a daemon other than their state dir's holds it.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};

use crate::state::StateDir;

/// How long `acquire` retries while the lock is held only for an instant
/// (a CLI's look with [`holder`]).
const ACQUIRE_PATIENCE: Duration = Duration::from_secs(3);

/// The daemon's hold on a pinned gate; released when dropped (or when the
/// process dies).
#[derive(Debug)]
pub struct PinLock {
    /// Held open: the lock lives on this open file description.
    _dir: File,
    dev: u64,
    ino: u64,
}

/// Who holds a pin directory's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// From /proc/locks, when this process may read it.
    pub pid: Option<i32>,
}

fn open_dir(pin_path: &Path) -> Result<File> {
    File::open(pin_path).map_err(|e| anyhow!("{}: cannot open: {e}", pin_path.display()))
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn would_block(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

impl PinLock {
    /// Take the gate at `pin_path` (which must exist) for this process.
    /// Fails, naming the other daemon, when one holds it.
    pub fn acquire(pin_path: &Path) -> Result<PinLock> {
        let dir = open_dir(pin_path)?;
        let meta = dir
            .metadata()
            .map_err(|e| anyhow!("{}: {e}", pin_path.display()))?;
        let deadline = Instant::now() + ACQUIRE_PATIENCE;
        loop {
            match flock(&dir, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {
                    return Ok(PinLock {
                        _dir: dir,
                        dev: meta.dev(),
                        ino: meta.ino(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if would_block(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if would_block(&e) => {
                    let who = describe(&holder_pid(meta.dev(), meta.ino()));
                    bail!(
                        "the pinned gate at {} is already run by another mx6gate daemon{who}: two daemons on one gate would overwrite each other's allowlist. Stop that one, or give this config its own pin_path",
                        pin_path.display()
                    );
                }
                Err(e) => bail!("{}: cannot lock: {e}", pin_path.display()),
            }
        }
    }

    /// Whether `pin_path` is still the directory this lock is on (not
    /// removed, not replaced by another).
    pub fn still_covers(&self, pin_path: &Path) -> bool {
        std::fs::metadata(pin_path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

fn describe(pid: &Option<i32>) -> String {
    match pid {
        Some(p) => format!(" (pid {p})"),
        None => String::new(),
    }
}

/// Who holds the lock on `pin_path`, if anyone (None also when there is no
/// such directory). Looks with a shared lock taken and dropped at once.
pub fn holder(pin_path: &Path) -> Result<Option<Holder>> {
    let dir = match File::open(pin_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("{}: cannot open: {e}", pin_path.display()),
    };
    match flock(&dir, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => {
            flock(&dir, libc::LOCK_UN).ok();
            Ok(None)
        }
        Err(e) if would_block(&e) => {
            let meta = dir
                .metadata()
                .map_err(|e| anyhow!("{}: {e}", pin_path.display()))?;
            Ok(Some(Holder {
                pid: holder_pid(meta.dev(), meta.ino()),
            }))
        }
        Err(e) => bail!("{}: cannot lock: {e}", pin_path.display()),
    }
}

/// Refuse to change the gate at `pin_path` when a daemon holds it that is
/// not the one running for `state` (another config's).
pub fn refuse_foreign_owner(pin_path: &Path, state: &StateDir) -> Result<()> {
    let Some(h) = holder(pin_path)? else {
        return Ok(());
    };
    let ours = state.running_daemon();
    let foreign = match (h.pid, ours) {
        (Some(p), Some(o)) => p != o,
        // Holder unknown (no access to /proc/locks): ours if ours runs.
        (None, Some(_)) => false,
        (_, None) => true,
    };
    if foreign {
        bail!(
            "the pinned gate at {} is run by another mx6gate daemon{} (not the one of state dir {}): changing it from here would fight that daemon's own store. Use that daemon's config (--config), or give this config its own pin_path",
            pin_path.display(),
            describe(&h.pid),
            state.path.display()
        );
    }
    Ok(())
}

/// The pid holding a FLOCK on (dev, ino), from /proc/locks.
fn holder_pid(dev: u64, ino: u64) -> Option<i32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    text.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:12345 0 EOF"
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let (pid, id) = (f.get(4)?, f.get(5)?);
        let mut parts = id.split(':');
        let fmaj = u32::from_str_radix(parts.next()?, 16).ok()?;
        let fmin = u32::from_str_radix(parts.next()?, 16).ok()?;
        let fino: u64 = parts.next()?.parse().ok()?;
        (fmaj == maj && fmin == min && fino == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_and_its_pid() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(holder(t.path()).unwrap(), None);
        let lock = PinLock::acquire(t.path()).unwrap();
        assert!(lock.still_covers(t.path()));
        let h = holder(t.path()).unwrap().expect("held");
        assert_eq!(h.pid, Some(std::process::id() as i32));
        // A second acquire in this process: a new open file description,
        // so flock excludes it too.
        let start = Instant::now();
        let e = format!("{:#}", PinLock::acquire(t.path()).unwrap_err());
        assert!(start.elapsed() >= ACQUIRE_PATIENCE, "gave up too soon");
        assert!(
            e.contains("already run by another mx6gate daemon")
                && e.contains(&format!("pid {}", std::process::id()))
                && e.contains(&t.path().display().to_string()),
            "{e}"
        );
        drop(lock);
        assert_eq!(holder(t.path()).unwrap(), None);
        assert_eq!(holder(&t.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn a_replaced_directory_is_not_covered() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("gate");
        std::fs::create_dir(&d).unwrap();
        let lock = PinLock::acquire(&d).unwrap();
        std::fs::remove_dir(&d).unwrap();
        assert!(!lock.still_covers(&d));
        std::fs::create_dir(&d).unwrap();
        assert!(
            !lock.still_covers(&d),
            "a new directory is not the locked one"
        );
        // And it can be taken by someone else.
        let _other = PinLock::acquire(&d).unwrap();
    }

    #[test]
    fn foreign_owner_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(&t.path().join("state"));
        refuse_foreign_owner(t.path(), &state).unwrap();
        let _lock = PinLock::acquire(t.path()).unwrap();
        // This process holds it, but no daemon runs for `state`.
        let e = format!("{:#}", refuse_foreign_owner(t.path(), &state).unwrap_err());
        assert!(e.contains("another mx6gate daemon"), "{e}");
    }
}
