//! The privilege gate every privileged test starts with.
//!
//! ```no_run
//! #[test]
//! fn needs_namespaces() {
//!     if !mx6gate_tests::require_root() {
//!         return; // skipped (prints "SKIP: needs root"), or panicked under CI
//!     }
//!     // ...
//! }
//! ```

use std::{ffi::CString, sync::OnceLock};

use anyhow::{bail, Result};

use crate::cmd;

/// Environment variable that turns a skip into a failure (CI sets it to `1`).
pub const REQUIRE_PRIV_ENV: &str = "MX6GATE_REQUIRE_PRIV";

/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// True when the privileged tests can run here: root, bpffs mounted (mounted
/// by us if it was not), and the tools the helpers call exist (`ip`,
/// `nsenter`).
///
/// When they cannot: with `MX6GATE_REQUIRE_PRIV=1` this panics with the
/// reason (a skipped privileged test must fail CI); otherwise it prints
/// `SKIP: needs root (<reason>)` to stderr and returns false.
pub fn require_root() -> bool {
    let problem = privilege_problem();
    let require = std::env::var(REQUIRE_PRIV_ENV)
        .map(|v| v == "1")
        .unwrap_or(false);
    match verdict(problem.as_deref(), require) {
        Ok(run) => run,
        Err(msg) => panic!("{msg}"),
    }
}

/// For tests that need programs from Debian packages (scripts/install-deps.sh
/// installs them): true when all of `progs` are on PATH. When one is not,
/// the same rule as [`require_root`]: a failure under
/// `MX6GATE_REQUIRE_PRIV=1`, else `SKIP: …` and false.
pub fn require_programs(progs: &[&str]) -> bool {
    let missing: Vec<&str> = progs
        .iter()
        .copied()
        .filter(|p| !cmd::have_program(p))
        .collect();
    let problem = (!missing.is_empty()).then(|| {
        format!(
            "{} not found on PATH (scripts/install-deps.sh installs it)",
            missing.join(", ")
        )
    });
    let require = std::env::var(REQUIRE_PRIV_ENV)
        .map(|v| v == "1")
        .unwrap_or(false);
    match verdict(problem.as_deref(), require) {
        Ok(run) => run,
        Err(msg) => panic!("{msg}"),
    }
}

/// The decision of [`require_root`], separated so it can be unit-tested
/// without changing privileges: `Ok(true)` run, `Ok(false)` skip (after
/// printing SKIP), `Err(message)` must fail.
pub fn verdict(problem: Option<&str>, require: bool) -> Result<bool, String> {
    match problem {
        None => Ok(true),
        Some(why) if require => Err(format!(
            "privileged test cannot run ({why}) but {REQUIRE_PRIV_ENV}=1 demands it: \
             run the suite as root on a machine with iproute2 and util-linux, or unset {REQUIRE_PRIV_ENV}"
        )),
        Some(why) => {
            // Straight to fd 2 (not eprintln!, which the test harness
            // captures) so skips show up in the suite's output.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: needs root ({why})");
            Ok(false)
        }
    }
}

/// Why privileged tests cannot run here, or None when they can. Computed once.
pub fn privilege_problem() -> Option<String> {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    PROBLEM
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Some("not running as root".into());
            }
            for prog in ["ip", "nsenter"] {
                if !cmd::have_program(prog) {
                    return Some(format!("`{prog}` not found on PATH"));
                }
            }
            if let Err(e) = ensure_bpffs() {
                return Some(format!("bpffs unavailable: {e:#}"));
            }
            None
        })
        .clone()
}

/// Is a bpf filesystem mounted at [`BPFFS`]?
pub fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let mut f = l.split_whitespace();
                let (_src, dir, fstype) = (f.next(), f.next(), f.next());
                dir == Some(BPFFS) && fstype == Some("bpf")
            })
        })
        .unwrap_or(false)
}

/// Mount bpffs at /sys/fs/bpf unless it already is. Idempotent.
pub fn ensure_bpffs() -> Result<()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if bpffs_mounted() {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).ok();
    let src = CString::new("bpf").unwrap();
    let dir = CString::new(BPFFS).unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dir.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Another thread or process may have mounted it meanwhile.
        if bpffs_mounted() {
            return Ok(());
        }
        bail!("mount -t bpf bpf {BPFFS}: {e}");
    }
    Ok(())
}
