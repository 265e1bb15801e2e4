//! A real systemd, PID 1 of its own PID namespace, for tests of the
//! installed unit (`systemctl start/reload/restart/stop`, Type=notify,
//! Restart=, the hardening) on machines whose PID 1 is not systemd.
//!
//! What keeps it from touching the host:
//! - a private mount namespace: a fresh tmpfs on /run (the host's
//!   /run/netns is carried over so NetworkNamespacePath= works), a cgroup2
//!   mount that shows only its own cgroup (cgroup namespace);
//! - private copies of /etc, /var and /usr: an overlay over each, the
//!   machine's directory read-only below, a writable layer above (a tmpfs
//!   private to the instance's mount namespace). `dpkg -i`/`--purge` inside change the
//!   copies (files, the dpkg database, its lock), never the machine's, and
//!   what the machine already holds (an mx6gate install, a state dir left
//!   by an earlier run) can be hidden in the copy ([`SystemdInstance::hide`]);
//! - it boots `mx6gate-lab.target` (DefaultDependencies=no, nothing wanted),
//!   not default.target: no udev, no journald, no getty, no networking;
//!   units it is asked to start must say DefaultDependencies=no too (a
//!   drop-in), so sysinit.target is never pulled in;
//! - /usr/sbin/policy-rc.d, if the machine has one (container images do),
//!   is hidden inside, so maintainer scripts run under dpkg there manage
//!   services as on a normal systemd host;
//! - its own UTS namespace; the network namespace stays the host's, but
//!   nothing in it runs unless a test starts it (and tests put services in
//!   lab namespaces with NetworkNamespacePath=).
//!
//! Units the test passes go to its private /run/systemd/system. Dropping it
//! kills the whole PID namespace (SIGKILL to `unshare --kill-child`) and
//! removes its cgroup.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The target the instance boots: nothing but what tests start.
pub const LAB_TARGET: &str = "mx6gate-lab.target";

const BOOT_SCRIPT: &str = r#"#!/bin/sh
# PID 1 of a new PID, mount, UTS and cgroup namespace (mounts private).
set -eu
stage=$1
mount -t proc proc /proc
# Private copies of /etc, /var and /usr (see the module doc): the machine's
# directories below, read-only; this instance's changes above, on a tmpfs
# private to this mount namespace: overlayfs refuses some filesystems as
# upperdir (the kernel matrix's guests see the host's /tmp over 9p).
mkdir -p "$stage/overlay"
mount -t tmpfs -o mode=700 tmpfs "$stage/overlay"
for d in etc var usr; do
  mkdir -p "$stage/overlay/$d/upper" "$stage/overlay/$d/work"
  mount -t overlay overlay \
    -o "lowerdir=/$d,upperdir=$stage/overlay/$d/upper,workdir=$stage/overlay/$d/work" "/$d"
done
# Only this instance's cgroup is visible and writable to it.
umount -R /sys/fs/cgroup 2>/dev/null || umount -l /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# A private /run (systemd would mount one anyway), keeping /run/netns.
mkdir -p "$stage/netns"
mount --rbind /run/netns "$stage/netns"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/systemd/system
mount --move "$stage/netns" /run/netns
cp -r "$stage/units/." /run/systemd/system/
# Container images (this machine among them) ship a policy-rc.d that
# forbids maintainer scripts to touch services (exit 101); a real systemd
# host has none. Hidden here only: /dev/null is not executable, so
# invoke-rc.d and deb-systemd-invoke act as if it were absent.
if [ -e /usr/sbin/policy-rc.d ]; then mount --bind /dev/null /usr/sbin/policy-rc.d; fi
hostname mx6gate-systemd-test
export container=mx6gate-test
exec /lib/systemd/systemd --system --unit=mx6gate-lab.target --log-target=console --log-level=notice
"#;

pub struct SystemdInstance {
    launcher: Option<Child>,
    /// systemd's pid as the host sees it.
    pub pid: i32,
    cgroup: PathBuf,
    _stage: tempfile::TempDir,
}

impl SystemdInstance {
    /// True when this machine has systemd installed (it need not run it).
    pub fn available() -> bool {
        Path::new("/lib/systemd/systemd").exists() && cmd::have_program("unshare")
    }

    /// Boot an instance with extra units (`(file name, contents)`) in its
    /// /run/systemd/system, and wait (≤ 180 s) until it is up.
    pub fn boot(units: &[(&str, &str)]) -> Result<SystemdInstance> {
        let stage = tempfile::Builder::new()
            .prefix("mx6gate-systemd")
            .tempdir()?;
        let unit_dir = stage.path().join("units");
        std::fs::create_dir_all(&unit_dir)?;
        std::fs::write(
            unit_dir.join(LAB_TARGET),
            "[Unit]\nDescription=mx6gate tests: only what a test starts\nDefaultDependencies=no\n",
        )?;
        for (name, text) in units {
            let p = unit_dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(&p, text)?;
        }
        let script = stage.path().join("boot.sh");
        std::fs::write(&script, BOOT_SCRIPT)?;

        let cgroup = cgroup2_root()?.join(format!(
            "{}{}-systemd",
            crate::cleanup::NS_PREFIX,
            std::process::id()
        ));
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        // The shell moves itself into the cgroup, then becomes unshare,
        // whose child (the script, then systemd) is PID 1 inside.
        let launcher = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount --uts --cgroup --propagation private --kill-child sh "$2" "$3""#)
            .arg("sh")
            .arg(&cgroup)
            .arg(&script)
            .arg(stage.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stage.path().join("console.log"))?)
            .spawn()
            .context("starting unshare for systemd")?;
        let mut inst = SystemdInstance {
            pid: 0,
            launcher: Some(launcher),
            cgroup,
            _stage: stage,
        };
        // Generous: under emulation (the kernel matrix) systemd alone takes
        // tens of seconds to reach its target.
        let limit = Duration::from_secs(180);
        let deadline = Instant::now() + limit;
        let mut last_state = String::from("(no answer yet)");
        loop {
            if inst.pid == 0 {
                inst.pid = inst.find_pid().unwrap_or(0);
            }
            if inst.pid != 0 {
                if let Ok(out) = inst.try_run(&["systemctl", "is-system-running"]) {
                    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    if state == "running" || state == "degraded" {
                        return Ok(inst);
                    }
                    last_state = format!("{state} {}", String::from_utf8_lossy(&out.stderr).trim());
                }
            }
            if let Some(st) = inst.launcher.as_mut().unwrap().try_wait()? {
                bail!("systemd exited during boot ({st}): {}", inst.console());
            }
            if Instant::now() > deadline {
                let jobs = inst
                    .try_run(&["systemctl", "list-jobs", "--no-pager"])
                    .map(|o| cmd::describe_output(&o))
                    .unwrap_or_default();
                bail!(
                    "systemd did not come up in {limit:?} (is-system-running: {last_state}; jobs: {jobs}): {}",
                    inst.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// systemd's host pid: the child of the `unshare` process.
    fn find_pid(&self) -> Option<i32> {
        let l = self.launcher.as_ref()?.id();
        let kids = std::fs::read_to_string(format!("/proc/{l}/task/{l}/children")).ok()?;
        let pid: i32 = kids.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "systemd").then_some(pid)
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self._stage.path().join("console.log")).unwrap_or_default()
    }

    /// `argv` inside the instance's PID, mount and UTS namespaces (so
    /// `systemctl` finds this systemd, and `dpkg`'s maintainer scripts see
    /// /run/systemd/system as on a systemd host).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-p", "-u", "--"])
            .args(argv);
        c
    }

    /// Run `argv` inside (180 s limit: `dpkg -i` under emulation takes
    /// a minute); its output whatever the status.
    pub fn try_run(&self, argv: &[&str]) -> Result<Output> {
        cmd::output_with_timeout(
            self.command(argv),
            &format!("[systemd {}] {}", self.pid, cmd::describe(argv)),
            Duration::from_secs(180),
        )
    }

    /// Run `argv` inside; a non-zero exit is an error with its output.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = self.try_run(argv)?;
        if !out.status.success() {
            bail!(
                "[systemd {}] `{}` failed: {}",
                self.pid,
                cmd::describe(argv),
                cmd::describe_output(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn show(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .run(&["systemctl", "show", "-p", prop, "--value", unit])?
            .trim()
            .to_string())
    }

    /// A path inside the instance's mount namespace, seen from the host.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    /// Make the instance's copy of the system look as if the Debian
    /// package `package` had never been installed and `paths` did not
    /// exist: the paths are removed from the copy (overlay whiteouts), the
    /// package's record from the copy of the dpkg database (its status
    /// stanza and `info/PACKAGE.*`). No maintainer script runs, so nothing
    /// of the machine's own install (its pinned gate, its daemon) is
    /// touched. Returns what was hidden.
    pub fn hide(&self, package: &str, paths: &[&str]) -> Result<Vec<String>> {
        let mut hidden = Vec::new();
        for p in paths {
            if self.path(p).symlink_metadata().is_ok() {
                self.run(&["rm", "-rf", "--one-file-system", p])?;
                hidden.push(p.to_string());
            }
        }
        let status = self.path("/var/lib/dpkg/status");
        let text = std::fs::read_to_string(&status)
            .with_context(|| format!("reading {}", status.display()))?;
        let stanza = format!("Package: {package}\n");
        let kept: Vec<&str> = text
            .split("\n\n")
            .filter(|s| !s.trim_start_matches('\n').starts_with(&stanza))
            .collect();
        if kept.len() != text.split("\n\n").count() {
            std::fs::write(&status, kept.join("\n\n"))
                .with_context(|| format!("writing {}", status.display()))?;
            hidden.push(format!("dpkg's record of {package}"));
        }
        self.run(&[
            "sh",
            "-c",
            &format!("rm -f /var/lib/dpkg/info/{package}.* /var/lib/dpkg/info/{package}:*"),
        ])?;
        Ok(hidden)
    }
}

impl Drop for SystemdInstance {
    fn drop(&mut self) {
        // PID 1 of the namespace first (SIGKILL from outside works), then
        // unshare (--kill-child would do the same); with PID 1 the whole
        // PID namespace goes.
        if self.pid > 0 {
            // SAFETY: plain kill(2) on the pid we found as unshare's child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if let Some(mut l) = self.launcher.take() {
            l.kill().ok();
            l.wait().ok();
        }
        // The namespace's processes go asynchronously; then the cgroups
        // (deepest first) can go.
        for _ in 0..100 {
            if remove_cgroup_tree(&self.cgroup) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) -> bool {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

/// Where a cgroup2 hierarchy is mounted: /sys/fs/cgroup (unified) or
/// /sys/fs/cgroup/unified (hybrid, as on this project's machines).
fn cgroup2_root() -> Result<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let c = std::ffi::CString::new(p).unwrap();
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out pointer.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0
            && st.f_type as i64 == CGROUP2_SUPER_MAGIC
        {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}
