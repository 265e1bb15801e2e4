//! The product under test, loaded only through its own userspace API
//! (`Gate::load`, `GateMaps`, `reconcile::apply_allow_tracked` /
//! `reconcile::apply_allow`) under a private pin path,
//! never attached by it, and removed (`gate::detach`) when dropped — also on
//! error or panic. The bench never writes the allowlist maps itself, so
//! whatever layout the product uses is what gets measured.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use aya::programs::{SkLookup, Xdp};
use ipnet::Ipv6Net;
use mx6gate::{config::Config, gate::Gate, maps::GateMaps};
use mx6gate_common::{GateConfig, Mode, SK_LOOKUP_PROGRAM, XDP_PROGRAM};

use super::sys;

/// Every pin path the bench makes starts with this (then `<pid>-<n>`).
pub const PIN_PREFIX: &str = "/sys/fs/bpf/mx6bench-";

static N: AtomicU32 = AtomicU32::new(0);

pub struct BenchGate {
    // Field order: the maps and the object close before the pins go.
    pub maps: GateMaps,
    pub gate: Gate,
    pub cfg: Config,
    _dir: tempfile::TempDir,
}

impl Drop for BenchGate {
    fn drop(&mut self) {
        if let Err(e) = mx6gate::gate::detach(&self.cfg.pin_path, &self.cfg.state_dir) {
            eprintln!("bench: removing {}: {e:#}", self.cfg.pin_path.display());
        }
    }
}

/// A private pin path for this process.
pub fn pin_path(what: &str) -> PathBuf {
    PathBuf::from(format!(
        "{PIN_PREFIX}{}-{}{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

impl BenchGate {
    /// Load a fresh gate sized for `capacity` prefixes, CONFIG set to
    /// `mode` protecting port 25. Returns the gate and how long the load
    /// (maps created and pinned, both programs through the verifier) took.
    pub fn load(capacity: usize, mode: Mode) -> Result<(BenchGate, Duration)> {
        BenchGate::load_with(capacity, mode, None)
    }

    /// [`BenchGate::load`] with the kernel's optional features given
    /// (`Gate::load_with`) instead of probed.
    pub fn load_with(
        capacity: usize,
        mode: Mode,
        features: Option<mx6gate::kernel::Optional>,
    ) -> Result<(BenchGate, Duration)> {
        let dir = tempfile::tempdir()?;
        let mut cfg = Config {
            pin_path: pin_path(""),
            state_dir: dir.path().join("state"),
            partners_dir: dir.path().join("partners.d"),
            interfaces: vec![],
            ports: vec![25],
            mode,
            ..Default::default()
        };
        std::fs::create_dir_all(&cfg.state_dir)?;
        std::fs::create_dir_all(&cfg.partners_dir)?;
        cfg.maps.allow_entries = (capacity as u32).max(1024);
        let t = Instant::now();
        let loaded = match features {
            Some(f) => Gate::load_with(&cfg, f),
            None => Gate::load(&cfg),
        };
        let took = t.elapsed();
        let gate = match loaded {
            Ok(g) => g,
            Err(e) => {
                mx6gate::gate::detach(&cfg.pin_path, &cfg.state_dir).ok();
                return Err(e.context("loading the gate (Gate::load)"));
            }
        };
        // From here on Drop cleans up.
        let maps = match GateMaps::open(&cfg.pin_path) {
            Ok(m) => m,
            Err(e) => {
                drop(gate);
                mx6gate::gate::detach(&cfg.pin_path, &cfg.state_dir).ok();
                return Err(e);
            }
        };
        let mut g = BenchGate {
            maps,
            gate,
            cfg,
            _dir: dir,
        };
        g.maps
            .write_config(&GateConfig::new(mode, &[25]))
            .context("writing CONFIG")?;
        // Defer mode as it ships: escalation on ([defer] defaults).
        g.maps
            .write_defer(&g.cfg.defer.kernel())
            .context("writing DEFER")?;
        Ok((g, took))
    }

    /// Record `sources` as explained now (their /64s, the default
    /// granularity), by a connection from port 1 (so a bench SYN, from
    /// another port, is a repeat, not the explained connection's
    /// retransmit).
    pub fn explain(&mut self, sources: &[u128]) -> Result<()> {
        let x = self.maps.read_defer()?;
        let now = mx6gate::explain::monotonic_now_ns();
        let maps = self
            .maps
            .explain
            .as_mut()
            .ok_or_else(|| anyhow!("the gate has no EXPLAINED map"))?;
        let rec = mx6gate_common::explain::Explained {
            at_ns: now,
            sport: 1,
            dport: 25,
            _pad: 0,
        };
        for s in sources {
            maps.explained
                .insert(x.key(&s.to_be_bytes()), rec, 0)
                .context("writing EXPLAINED")?;
        }
        Ok(())
    }

    /// The sync every command and the daemon run
    /// (`reconcile::apply_allow_tracked`: a diff against the state dir's snapshot
    /// of the last update, or a full apply when there is none); returns its
    /// wall time.
    pub fn apply(&mut self, desired: &BTreeMap<Ipv6Net, u32>) -> Result<Duration> {
        let state = mx6gate::state::StateDir::new(&self.cfg.state_dir);
        let t = Instant::now();
        mx6gate::reconcile::apply_allow_tracked(&mut self.maps, &state, desired)
            .context("reconcile::apply_allow_tracked")?;
        Ok(t.elapsed())
    }

    /// The full path (`reconcile::apply_allow`: the maps read back whole and
    /// diffed), what a sync falls back to after a crash or when the
    /// snapshot does not describe the maps. Leaves the snapshot stale: do
    /// not call `apply` after it.
    pub fn apply_full(&mut self, desired: &BTreeMap<Ipv6Net, u32>) -> Result<Duration> {
        let t = Instant::now();
        mx6gate::reconcile::apply_allow(&mut self.maps, desired)
            .context("reconcile::apply_allow")?;
        Ok(t.elapsed())
    }

    /// Change the mode, keeping whatever else the product keeps in CONFIG
    /// (its allowlist flags).
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let mut c = self.maps.read_config()?;
        if c.mode != mode as u32 {
            c.mode = mode as u32;
            self.maps.write_config(&c)?;
        }
        Ok(())
    }

    pub fn prog(&self) -> Result<BorrowedFd<'_>> {
        let p: &Xdp = self
            .gate
            .ebpf
            .program(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("no program {XDP_PROGRAM}"))?
            .try_into()?;
        Ok(p.fd()?.as_fd())
    }

    pub fn sk_lookup_prog(&self) -> Result<BorrowedFd<'_>> {
        let p: &SkLookup = self
            .gate
            .ebpf
            .program(SK_LOOKUP_PROGRAM)
            .ok_or_else(|| anyhow!("no program {SK_LOOKUP_PROGRAM}"))?
            .try_into()?;
        Ok(p.fd()?.as_fd())
    }

    /// Kernel memory of every map the gate pinned, by name (fdinfo memlock).
    pub fn map_memory(&self) -> Result<Vec<(String, u64)>> {
        let dir = self.cfg.pin_path.join("maps");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let fd = sys::obj_get(&e.path())?;
            v.push((
                e.file_name().to_string_lossy().into_owned(),
                sys::fd_memlock(fd.as_fd())?,
            ));
        }
        v.sort();
        Ok(v)
    }
}

/// Remove pins left by bench runs whose process is gone (a crash, a kill).
pub fn cleanup_stale_pins() {
    let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&PIN_PREFIX["/sys/fs/bpf/".len()..]) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_pin_tree(&e.path());
    }
}

/// Unlink every pin below `root` and the directories (bpffs has no rm -r).
pub fn remove_pin_tree(root: &Path) {
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                remove_pin_tree(&p);
            } else {
                std::fs::remove_file(&p).ok();
            }
        }
    }
    std::fs::remove_dir(root).ok();
}
