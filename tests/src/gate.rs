//! The real `mx6gate` binary driven in a test namespace: a private config,
//! partner store, state dir and pin path per instance, so tests (and the
//! lab) run side by side; the daemon and every CLI call run in the
//! gateway's network namespace via nsenter (pins stay visible).
use std::{
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

static GATE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The shape `mx6gate status --json` prints (README, "Machine-readable
/// output").
pub const STATUS_SCHEMA: &str = "mx6gate.status/1";

/// The mx6gate binary: $MX6GATE_BIN, else target/release, else target/debug
/// (`cargo xtask test` builds the release one first).
pub fn mx6gate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MX6GATE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let candidates = [
        root.join("target/release/mx6gate"),
        root.join("target/debug/mx6gate"),
    ];
    candidates
        .iter()
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no mx6gate binary: run `cargo xtask build` (or `cargo build -p mx6gate`)")
        })
}

/// Whether an sk_lookup counter that moved by `moved` fits `conns`
/// connections. sk_lookup counts lookups, not SYNs (it sees no TCP
/// flags): a stray segment of a connection already closed, or a SYN
/// retransmitted before the handshake was in the kernel's tables, is
/// looked up again — on a slow machine (the kernel matrix under emulation)
/// that happens. One extra lookup per connection at most, never fewer.
pub fn lookups_fit(moved: u64, conns: u64) -> bool {
    (conns..=2 * conns).contains(&moved)
}

pub struct GateUnderTest {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pin_path: PathBuf,
    ns_path: PathBuf,
    daemon: Option<Child>,
    /// Whether dropping this removes whatever is left at `pin_path` (not
    /// for a second config sharing another's pin path).
    owns_pins: bool,
}

impl GateUnderTest {
    /// Write a config protecting `iface` in `mode`; `extra` is appended to
    /// the TOML (e.g. `ports = [25, 587]`).
    pub fn new(gw: &Netns, iface: &str, mode: &str, extra: &str) -> Result<GateUnderTest> {
        crate::ensure_bpffs()?;
        remove_stale_pins();
        let n = GATE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let pin_path = PathBuf::from(format!(
            "/sys/fs/bpf/{}{}-{n}",
            crate::cleanup::NS_PREFIX,
            std::process::id()
        ));
        let mut g = Self::with_pin_path(gw, iface, mode, extra, &pin_path)?;
        g.owns_pins = true;
        Ok(g)
    }

    /// Like [`GateUnderTest::new`] (its own config, store and state dir),
    /// but on the pin path `pin_path`, e.g. another instance's: dropping
    /// it leaves the pins to their owner.
    pub fn with_pin_path(
        gw: &Netns,
        iface: &str,
        mode: &str,
        extra: &str,
        pin_path: &Path,
    ) -> Result<GateUnderTest> {
        crate::ensure_bpffs()?;
        let pin_path = pin_path.to_path_buf();
        let dir = tempfile::Builder::new().prefix("mx6gate-test").tempdir()?;
        let config = dir.path().join("mx6gate.toml");
        std::fs::write(
            &config,
            format!(
                "interfaces = [\"{iface}\"]\nmode = \"{mode}\"\npin_path = \"{}\"\npartners_dir = \"partners.d\"\nstate_dir = \"state\"\n{extra}\n",
                pin_path.display()
            ),
        )?;
        std::fs::create_dir_all(dir.path().join("partners.d"))?;
        Ok(GateUnderTest {
            dir,
            config,
            pin_path,
            ns_path: gw.path().to_path_buf(),
            daemon: None,
            owns_pins: false,
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn partners_dir(&self) -> PathBuf {
        self.dir.path().join("partners.d")
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net={}", self.ns_path.display()))
            .arg("--")
            .arg(mx6gate_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args);
        c
    }

    /// Run a CLI verb; the output whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        self.cli_within(args, Duration::from_secs(30))
    }

    /// Run a CLI verb that must end within `limit` (an error otherwise).
    pub fn cli_within(&self, args: &[&str], limit: Duration) -> Result<Output> {
        crate::cmd::output_with_timeout(
            self.command(args),
            &format!("mx6gate {}", args.join(" ")),
            limit,
        )
    }

    /// The command line of a CLI verb, to run it some other way.
    pub fn cli_command(&self, args: &[&str]) -> std::process::Command {
        self.command(args)
    }

    /// Run a CLI verb with `resolv_conf` bind-mounted over /etc/resolv.conf
    /// in a private mount namespace (the host's file is never touched), so
    /// the system resolver it reads points at a test DNS server.
    pub fn cli_with_resolv_conf(&self, resolv_conf: &Path, args: &[&str]) -> Result<Output> {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net={}", self.ns_path.display()))
            .args([
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(resolv_conf)
            .arg(mx6gate_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args);
        crate::cmd::output_with_timeout(
            c,
            &format!("mx6gate {} (private resolv.conf)", args.join(" ")),
            Duration::from_secs(60),
        )
    }

    /// Run a CLI verb that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "mx6gate {} failed: {}",
                args.join(" "),
                crate::cmd::describe_output(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `mx6gate status --json`, its schema checked: the one view of the
    /// gate that the tests read instead of parsing status text.
    pub fn status(&self) -> Result<serde_json::Value> {
        let text = self.ok(&["status", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("status --json is not JSON:\n{text}"))?;
        if v["schema"] != STATUS_SCHEMA {
            bail!(
                "status --json: schema {} (want {STATUS_SCHEMA})",
                v["schema"]
            );
        }
        Ok(v)
    }

    /// The loaded gate's counters from [`GateUnderTest::status`], keyed by
    /// program: `xdp.<name>` (per packet), `sk.<name>` (sk_lookup, per
    /// connection), `report.<name>` (non-partner SYN reports). Panics when
    /// no gate is loaded: every caller reads counters of a running gate.
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        let v = self.status().unwrap();
        let mut out = std::collections::BTreeMap::new();
        for (section, key) in [("xdp", "xdp"), ("sk", "sk_lookup"), ("report", "report")] {
            let Some(m) = v["maps"]["counters"][key].as_object() else {
                continue;
            };
            for (name, n) in m {
                out.insert(format!("{section}.{name}"), n.as_u64().unwrap());
            }
        }
        assert!(
            out.contains_key("xdp.dropped"),
            "no counters in status: {v:#}"
        );
        out
    }

    /// Start `mx6gate run` and wait until its XDP link is pinned.
    pub fn start(&mut self) -> Result<()> {
        self.start_with_env(&[])
    }

    /// [`GateUnderTest::start`] with extra environment for the daemon
    /// (e.g. `MX6GATE_DISABLE_FEATURES` to run the older kernels' paths).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.start_and_wait_for_with_env("gate running", env)
    }

    /// Start `mx6gate run` and wait until its log says `marker`, or until
    /// it exits: then the error carries its log.
    pub fn start_and_wait_for(&mut self, marker: &str) -> Result<()> {
        self.start_and_wait_for_with_env(marker, &[])
    }

    fn start_and_wait_for_with_env(&mut self, marker: &str, env: &[(&str, &str)]) -> Result<()> {
        if self.daemon.is_some() {
            bail!("daemon already running");
        }
        let log = std::fs::File::create(self.dir.path().join("daemon.log"))?;
        let child = self
            .command(&["run"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning mx6gate run")?;
        self.daemon = Some(child);
        // Generous: under emulation (the kernel matrix) a start takes seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log().contains(marker) {
                return Ok(());
            }
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait()? {
                self.daemon = None;
                bail!("mx6gate run exited ({st}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "mx6gate run did not say {marker:?} in 60 s:\n{}",
            self.log()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// Whether the daemon has exited (its status then), without waiting.
    pub fn daemon_exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.daemon.as_mut() {
            None => Ok(None),
            Some(c) => {
                let st = c.try_wait()?;
                if st.is_some() {
                    self.daemon = None;
                }
                Ok(st)
            }
        }
    }

    /// Poll (every 50 ms, ≤ `limit`) until the log holds `needle` more
    /// than `before` times.
    pub fn wait_log(&self, needle: &str, before: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() > before {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM (orderly exit, gate stays pinned) and wait.
    pub fn stop(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    pub fn hup(&self) {
        if let Some(c) = &self.daemon {
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }

    fn signal(&mut self, sig: i32) -> Result<()> {
        if let Some(mut c) = self.daemon.take() {
            unsafe { libc::kill(c.id() as i32, sig) };
            match crate::cmd::wait_timeout(&mut c, Duration::from_secs(10))? {
                Some(_) => {}
                None => {
                    c.kill().ok();
                    c.wait().ok();
                    bail!("mx6gate run did not exit on signal {sig}");
                }
            }
        }
        Ok(())
    }
}

impl Drop for GateUnderTest {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            c.kill().ok();
            c.wait().ok();
        }
        if !self.owns_pins {
            return;
        }
        let _ = self.cli(&["detach"]);
        // Whatever detach could not remove (it failed, or the test broke the
        // layout): remove the pins by hand so no gate outlives the test.
        if self.pin_path.exists() {
            remove_pins(&self.pin_path);
        }
    }
}

pub fn remove_pins(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                remove_pins(&p);
            } else {
                std::fs::remove_file(&p).ok();
            }
        }
    }
    std::fs::remove_dir(dir).ok();
}

/// Pin dirs `/sys/fs/bpf/mx6t-<pid>-<n>` of test processes that died
/// without cleaning up (SIGKILL, a crash): their gates must not linger.
fn remove_stale_pins() {
    let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(crate::cleanup::NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !crate::cleanup::pid_alive(pid) {
            remove_pins(&e.path());
        }
    }
}
