//! Process-wide bookkeeping so that nothing a test made outlives it.
//!
//! * Every [`crate::Netns`] and [`crate::Postfix`] registers itself here and
//!   unregisters on `Drop` (which also runs when a test panics and unwinds).
//! * An `atexit` handler removes whatever is still registered when the
//!   process exits normally (leaked values, statics).
//! * [`cleanup_stale`] (run automatically before the first namespace of a
//!   process is made) removes namespaces `mx6t-<pid>-…` and run directories
//!   `$TMPDIR/mx6t-<pid>` left by crashed earlier runs whose `<pid>` is dead.
//! * [`cleanup_all`] removes everything of this process now (for a signal
//!   handler, e.g. `cargo xtask lab` on Ctrl-C).

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, Once},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::cmd;

/// Every name this library gives a namespace starts with this.
pub const NS_PREFIX: &str = "mx6t-";
/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

static LIVE_NS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static LIVE_POSTFIX: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mx6t-<pid>-`: the prefix of this process's namespaces.
pub fn own_prefix() -> String {
    format!("{NS_PREFIX}{}-", std::process::id())
}

/// Namespaces of this process that exist now (from /var/run/netns).
pub fn own_namespaces() -> Vec<String> {
    let prefix = own_prefix();
    list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// All named namespaces (entries of /var/run/netns), sorted.
pub fn list_namespaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Does a namespace with this name exist?
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// This process's run directory: `$TMPDIR/mx6t-<pid>` (mode 0755, so that
/// unprivileged daemons such as Postfix's can traverse it). Created on first
/// use, removed at exit.
pub fn run_dir() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("{NS_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", dir.display()))?;
    Ok(dir)
}

pub(crate) fn register_ns(name: &str) {
    lock(&LIVE_NS).insert(name.to_string());
}
pub(crate) fn unregister_ns(name: &str) {
    lock(&LIVE_NS).remove(name);
}
pub(crate) fn register_postfix(dir: &Path) {
    lock(&LIVE_POSTFIX).insert(dir.to_path_buf());
}
pub(crate) fn unregister_postfix(dir: &Path) {
    lock(&LIVE_POSTFIX).remove(dir);
}

/// Run once per process before the first namespace: stale cleanup and the
/// exit handler.
pub(crate) fn init_once() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = cleanup_stale() {
            eprintln!("mx6gate-tests: stale cleanup failed: {e:#}");
        }
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

extern "C" fn at_exit() {
    // Never unwind out of an extern "C" fn.
    let _ = std::panic::catch_unwind(cleanup_all);
}

/// Remove everything this process made that is still around: stop Postfix
/// instances, kill processes in and delete our namespaces, remove the run
/// directory. Safe to call more than once; values still alive become inert
/// (their `Drop` finds nothing to do).
pub fn cleanup_all() {
    let dirs: Vec<PathBuf> = lock(&LIVE_POSTFIX).iter().cloned().collect();
    for d in dirs {
        crate::postfix::kill_instance_dir(&d);
        let _ = std::fs::remove_dir_all(&d);
        unregister_postfix(&d);
    }
    let names: Vec<String> = lock(&LIVE_NS).iter().cloned().collect();
    for n in names {
        delete_netns(&n);
        unregister_ns(&n);
    }
    // Also anything with our prefix that is not registered (e.g. a value that
    // was being built when a panic hit).
    for n in own_namespaces() {
        delete_netns(&n);
    }
    let dir = std::env::temp_dir().join(format!("{NS_PREFIX}{}", std::process::id()));
    if dir.exists() {
        remove_run_dir(&dir);
    }
}

/// The pid in `mx6t-<pid>-…` (namespaces) or `mx6t-<pid>` (run dirs).
pub fn pid_of_name(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let digits = rest.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Is a process with this pid alive (zombies count as dead)?
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => proc_stat_fields(&s)
            .map(|f| f.first() != Some(&"Z"))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Fields of /proc/PID/stat after the `(comm)`: [state, ppid, pgrp, session, …].
pub(crate) fn proc_stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

/// Remove namespaces and run directories of earlier runs of this library
/// whose process is gone (`mx6t-<pid>-*` with `<pid>` dead). Namespaces of
/// live processes (parallel runs) are never touched. Returns what was removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let me = std::process::id() as i32;
    let mut removed = Vec::new();
    for name in list_namespaces() {
        match pid_of_name(&name) {
            Some(pid) if pid != me && !pid_alive(pid) => {
                delete_netns(&name);
                removed.push(name);
            }
            _ => {}
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Some(pid) = pid_of_name(&name) else {
                continue;
            };
            // run dirs are exactly mx6t-<pid>
            if name != format!("{NS_PREFIX}{pid}") || pid == me || pid_alive(pid) {
                continue;
            }
            remove_run_dir(&e.path());
            removed.push(e.path().display().to_string());
        }
    }
    Ok(removed)
}

/// Kill Postfix instances below a run dir, then remove it.
fn remove_run_dir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().join("etc/main.cf").exists() {
                crate::postfix::kill_instance_dir(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// (st_dev, st_ino) identifying a network namespace file.
pub(crate) fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Pids of all processes whose (main thread's) network namespace is the one
/// at `path`, except this process.
pub fn pids_in_netns(path: &Path) -> Vec<i32> {
    let Some(id) = ns_id(path) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            if ns_id(&e.path().join("ns/net")) == Some(id) {
                v.push(pid);
            }
        }
    }
    v
}

/// SIGKILL every process in the namespace at `path`, repeating (bounded)
/// until none is left (a dying parent may have forked meanwhile).
pub fn kill_netns_processes(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _round in 0..50 {
        let pids = pids_in_netns(path);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serialize `ip netns add/del` across threads and processes: concurrent
/// first-time `ip netns add` calls can stack two mounts on /var/run/netns and
/// hide namespaces made under the lower one.
pub(crate) fn with_netns_lock<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = lock(&LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/mx6gate-tests-netns.lock")
        .ok();
    if let Some(f) = &file {
        // SAFETY: valid fd; released when the file is closed.
        unsafe {
            libc::flock(f.as_raw_fd(), libc::LOCK_EX);
        }
    }
    f()
}

/// Kill everything in the namespace and delete it. Errors are ignored
/// (best effort; used from Drop and exit handlers).
pub(crate) fn delete_netns(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        return;
    }
    kill_netns_processes(&path);
    with_netns_lock(|| {
        let r = cmd::try_run(&["ip", "netns", "delete", name], Duration::from_secs(10));
        if let Ok(out) = &r {
            if !out.status.success() && path.exists() {
                eprintln!(
                    "mx6gate-tests: `ip netns delete {name}` failed: {}",
                    cmd::describe_output(out)
                );
            }
        }
    });
}
