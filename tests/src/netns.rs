//! Network namespaces, veth pairs, addresses and routes.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    cleanup::{self, lock, NETNS_DIR, NS_PREFIX},
    cmd::{self, DEFAULT_CMD_TIMEOUT},
};

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);
static IF_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace `mx6t-<pid>-<n>-<tag>`, with `lo` up and IPv6
/// duplicate address detection off. Dropping it kills every process in it
/// (tracked or not) and deletes it, with its interfaces.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    tracked: Mutex<Vec<u32>>,
}

impl Netns {
    /// Create a namespace. `tag` (letters, digits, `-`, `_`) ends its name.
    pub fn new(tag: &str) -> Result<Netns> {
        if tag.is_empty()
            || tag.len() > 32
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("bad namespace tag {tag:?}: use 1-32 of [A-Za-z0-9_-]");
        }
        cleanup::init_once();
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id());
        // Register first: if anything below fails (or panics), cleanup still
        // finds it.
        cleanup::register_ns(&name);
        let made = cleanup::with_netns_lock(|| {
            cmd::run(&["ip", "netns", "add", &name], DEFAULT_CMD_TIMEOUT)
        });
        if let Err(e) = made {
            cleanup::unregister_ns(&name);
            return Err(e.context(format!("creating network namespace {name}")));
        }
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            tracked: Mutex::new(Vec::new()),
        };
        // From here on, Drop removes it on error.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: for `nsenter --net=…`, `setns`, `ip -n`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `Command` that runs `argv` inside the namespace via
    /// `nsenter --net=PATH --` (only the network namespace changes, so bpffs
    /// pins stay visible, unlike with `ip netns exec`). Not tracked; see
    /// [`Netns::spawn_command`].
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .args(argv);
        c
    }

    fn describe(&self, argv: &[&str]) -> String {
        format!("[netns {}] {}", self.name, cmd::describe(argv))
    }

    /// Run `argv` in the namespace (30 s limit); a non-zero exit is an error
    /// naming the namespace, the command, its status and stderr.
    pub fn run(&self, argv: &[&str]) -> Result<Output> {
        self.run_timeout(argv, DEFAULT_CMD_TIMEOUT)
    }

    /// [`Netns::run`] with an explicit time limit (the command is killed at it).
    pub fn run_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        let out = self.try_run(argv, timeout)?;
        if !out.status.success() {
            bail!(
                "`{}` failed: {}",
                self.describe(argv),
                cmd::describe_output(&out)
            );
        }
        Ok(out)
    }

    /// Run `argv` in the namespace and return its output whatever its exit
    /// status (errors only when it cannot start or overruns `timeout`).
    pub fn try_run(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        if argv.is_empty() {
            bail!("empty command");
        }
        cmd::output_with_timeout(self.command(argv), &self.describe(argv), timeout)
    }

    /// Run `argv` and return its stdout as a string (checked like `run`).
    pub fn run_stdout(&self, argv: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.run(argv)?.stdout).into_owned())
    }

    /// Start `argv` in the namespace in the background: stdin /dev/null,
    /// stdout and stderr piped (read them, or they may fill up). The process
    /// is killed when the namespace is dropped.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        if argv.is_empty() {
            bail!("empty command");
        }
        let mut c = self.command(argv);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_command(c)
            .with_context(|| format!("starting `{}`", self.describe(argv)))
    }

    /// Spawn a command made with [`Netns::command`] (your own stdio) and
    /// track it like [`Netns::spawn`].
    pub fn spawn_command(&self, mut c: Command) -> Result<Child> {
        let child = c.spawn()?;
        lock(&self.tracked).push(child.id());
        Ok(child)
    }

    /// Run `f` on a fresh thread whose network namespace is this one
    /// (`setns(CLONE_NEWNET)`), and return its result. Sockets created in `f`
    /// belong to the namespace and stay there when returned. A panic in `f`
    /// is propagated.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file =
            File::open(&self.path).unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()));
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                // SAFETY: valid fd to a netns file; affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    panic!(
                        "setns({}): {}",
                        self.path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                drop(file);
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Set a sysctl of this namespace (`net.ipv6.conf.all.forwarding` or
    /// `net/ipv6/conf/all/forwarding`). Only `net.*` keys are per namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))
            .with_context(|| format!("[netns {}] sysctl {key}={value}", self.name))
    }

    /// Read a sysctl of this namespace.
    pub fn get_sysctl(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::read_to_string(&path))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("[netns {}] sysctl {key}", self.name))
    }

    /// Pids of the processes in this namespace now (not this process).
    pub fn pids(&self) -> Vec<i32> {
        cleanup::pids_in_netns(&self.path)
    }

    /// SIGKILL every process in the namespace (tracked or not), then reap
    /// the tracked ones (our children) so they do not linger as zombies.
    /// A `Child` from [`Netns::spawn`] is therefore already reaped after
    /// this: its `wait` reports an error, its `try_wait` likewise.
    pub fn kill_all(&self) {
        // Only what is still in this namespace is killed: a tracked pid that
        // exited and was reaped may have been reused by someone else.
        cleanup::kill_netns_processes(&self.path);
        let tracked: Vec<u32> = lock(&self.tracked).drain(..).collect();
        for pid in tracked {
            for _ in 0..100 {
                let mut status = 0;
                // SAFETY: plain syscall on our own child.
                let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
                if r != 0 {
                    break; // reaped, or not ours / already reaped (-1)
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        cleanup::delete_netns(&self.name);
        cleanup::unregister_ns(&self.name);
    }
}

/// A fresh interface name: `m<pid % 100000><letter><n>`, at most 15 bytes and
/// unique within this process.
pub fn ifname(letter: char) -> String {
    let n = IF_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("m{}{letter}{n}", std::process::id() % 100_000)
}

/// Create a veth pair with one end in `a` and one in `b`, both up; returns
/// (name in `a`, name in `b`). The ends are created directly inside the
/// namespaces and never appear in the host's.
pub fn veth_pair(a: &Netns, b: &Netns) -> Result<(String, String)> {
    let n = IF_COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let (ia, ib) = (format!("m{pid}a{n}"), format!("m{pid}b{n}"));
    debug_assert!(ia.len() <= 15 && ib.len() <= 15);
    cmd::run(
        &[
            "ip",
            "link",
            "add",
            &ia,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &ib,
            "netns",
            b.name(),
        ],
        DEFAULT_CMD_TIMEOUT,
    )
    .with_context(|| format!("creating veth {ia}@{} <-> {ib}@{}", a.name(), b.name()))?;
    a.run(&["ip", "link", "set", &ia, "up"])?;
    b.run(&["ip", "link", "set", &ib, "up"])?;
    Ok((ia, ib))
}

/// `ethtool -K IF gro on|off` in `ns`. GRO must be on at the receiving end
/// of a veth for frames sent there by XDP_TX/redirect to be received.
pub fn set_gro(ns: &Netns, ifname: &str, on: bool) -> Result<()> {
    ns.run(&[
        "ethtool",
        "-K",
        ifname,
        "gro",
        if on { "on" } else { "off" },
    ])?;
    Ok(())
}

/// `ip addr add CIDR dev IF` in `ns`; IPv6 addresses get `nodad` (usable at
/// once).
pub fn add_addr(ns: &Netns, ifname: &str, cidr: &str) -> Result<()> {
    if cidr.contains(':') {
        ns.run(&["ip", "addr", "add", cidr, "dev", ifname, "nodad"])?;
    } else {
        ns.run(&["ip", "addr", "add", cidr, "dev", ifname])?;
    }
    Ok(())
}

/// `ip route add DEST via VIA` in `ns` (`DEST` may be `default`; the family
/// follows `VIA`).
pub fn add_route(ns: &Netns, dest: &str, via: &str) -> Result<()> {
    let fam = if via.contains(':') { "-6" } else { "-4" };
    ns.run(&["ip", fam, "route", "add", dest, "via", via])?;
    Ok(())
}
