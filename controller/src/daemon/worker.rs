//! The daemon's sync worker: a thread of its own that owns the gate (its
//! programs, links, maps and pin lock) and does every slow or blocking
//! thing the daemon does to it — reading the partner store (a million
//! prefixes take seconds to parse), writing the maps, waiting for the
//! state lock a CLI command holds — so the responder, the metrics
//! endpoint and signal handling on the async side never wait for it.
//!
//! Each tick (every [`STORE_POLL`]) it checks, cheaply, that the gate is
//! still its own and whole — the pin directory, every pin, the responder
//! socket in the RESPONDER sockmap — repairing what it can and saying so
//! (log, `Health`, metrics); then it applies the store when its files
//! changed, and in full every [`RESYNC`] (expiry, drift). A store that
//! cannot be applied whole is refused and the allowlist kept as it was.
use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    fsutil,
    gate::Gate,
    health::SharedHealth,
    maps::GateMaps,
    pinlock::PinLock,
    reconcile,
    state::StateDir,
    store::{today_utc, Store, StoreRefused},
};

/// How often the worker looks at the store directory and the pins; edits
/// made by the CLI are applied by the CLI itself, this catches files
/// dropped in by other tools and damage done by hand.
pub const STORE_POLL: Duration = Duration::from_millis(500);
/// Full resync: expiry, and repair if someone edited the maps by hand.
pub const RESYNC: Duration = Duration::from_secs(30);
/// A refusal that lasts is logged again this often (it is in `status` and
/// the metrics all along).
const REFUSAL_REMINDER: Duration = Duration::from_secs(300);
/// BPF_NOEXIST: an update that fails if the slot is taken.
const BPF_NOEXIST: u64 = 1;

/// What the async side asks of the worker.
pub enum Request {
    /// Apply a config that loaded whole: mode and ports, interfaces,
    /// the responder's new socket if it moved, then the store.
    Reload {
        cfg: Box<Config>,
        listener: Option<TcpListener>,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    /// The SPF state changed what is enforced: reconcile now.
    Resync,
}

/// Names, sizes and mtimes of the store's files, and the directory's own
/// identity: cheap change detection (a directory swapped for another, or
/// gone, changes it too).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    dir: Option<(u64, SystemTime)>,
    files: Vec<(PathBuf, SystemTime, u64)>,
}

impl Fingerprint {
    pub fn of(dir: &Path) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(dir) else {
            return Fingerprint::default();
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                // stat(2) follows a symlink and never blocks on a FIFO.
                let m = std::fs::metadata(e.path()).ok()?;
                Some((e.path(), m.modified().ok()?, m.len()))
            })
            .collect();
        files.sort();
        Fingerprint {
            dir: Some((
                meta.ino(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            )),
            files,
        }
    }
}

pub struct Worker {
    pub cfg: Config,
    pub state: StateDir,
    pub gate: Gate,
    pub maps: GateMaps,
    pub pin_lock: PinLock,
    /// The responder's listening socket (a duplicate of the async side's),
    /// registered again whenever the sockmap lost it.
    pub responder_socket: TcpListener,
    pub health: SharedHealth,
    /// The store as last looked at, and whether that look was refused.
    pub store_seen: Fingerprint,
    pub refused_seen: Option<(Fingerprint, String, Instant)>,
    /// Why the config's mode and ports could not be written last time (a
    /// garbled mode file): logged once, the mode in force kept.
    pub config_error: Option<String>,
    /// Set by the async side when the daemon is on its way out (its pid
    /// file is going): the worker no longer keeps the pid file in place.
    pub stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The SPF domains of the store last applied, with their partners:
    /// the refresh task follows this instead of reading the store again.
    pub spf_owners: tokio::sync::watch::Sender<BTreeMap<String, String>>,
}

impl Worker {
    /// Run on a thread of its own until the async side goes away. A
    /// `fatal` message (the gate is no longer this daemon's) ends it.
    pub fn spawn(
        mut self,
        requests: mpsc::Receiver<Request>,
        fatal: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("mx6gate-sync".into())
            .spawn(move || {
                let mut last_full = Instant::now();
                loop {
                    match requests.recv_timeout(STORE_POLL) {
                        Ok(Request::Reload {
                            cfg,
                            listener,
                            reply,
                        }) => {
                            let _ = reply.send(self.reload(*cfg, listener));
                            last_full = Instant::now();
                        }
                        Ok(Request::Resync) => {
                            // Read and apply the store as if it had changed.
                            self.store_seen = Fingerprint::default();
                            self.refused_seen = None;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    if let Err(why) = self.check_gate() {
                        error!("{why}");
                        let _ = fatal.send(why);
                        return;
                    }
                    let full = last_full.elapsed() >= RESYNC;
                    if full {
                        last_full = Instant::now();
                    }
                    self.poll_store(full);
                }
            })
            .context("starting the sync worker thread")
    }

    /// Is the gate still ours and whole? Repairs missing pins and a lost
    /// responder socket; Err when another gate took the pin path.
    fn check_gate(&mut self) -> Result<(), String> {
        let pin = self.cfg.pin_path.clone();
        if !self.pin_lock.still_covers(&pin) {
            // The directory was removed (or replaced) under us: we still
            // hold every object, so take the path again and pin them.
            if let Err(e) = std::fs::create_dir_all(&pin) {
                warn!(error = %e, pin_path = %pin.display(), "cannot recreate the pin directory");
                return Ok(());
            }
            match PinLock::acquire(&pin) {
                Ok(l) => self.pin_lock = l,
                Err(e) => {
                    return Err(format!(
                        "the pin directory {} was replaced and is now another gate's ({e:#}); this daemon no longer owns a pinned gate and exits",
                        pin.display()
                    ))
                }
            }
        }
        let check = self.gate.check_pins();
        if !check.foreign.is_empty() {
            return Err(format!(
                "pins under {} now hold another gate's objects ({}); this daemon no longer owns the pinned gate and exits",
                pin.display(),
                list(&check.foreign)
            ));
        }
        if !check.missing.is_empty() {
            match self.gate.repair_pins(&check.missing) {
                Ok(pinned) => {
                    self.health.lock().pin_repairs += 1;
                    error!(
                        pinned = list(&pinned),
                        "pins of the gate were removed while the daemon ran; enforcement went on (this daemon holds the links and maps) and they are pinned again. Remove the gate with `mx6gate detach`, never by hand"
                    );
                }
                Err(e) => error!(
                    error = format!("{e:#}"),
                    "pins of the gate were removed and could not all be pinned again; enforcement goes on while this daemon runs, but a restart would lose the missing parts"
                ),
            }
        }
        self.check_responder_socket(false);
        self.check_pid_file();
        Ok(())
    }

    /// `status`, `detach` and a second `run` find this daemon by its pid
    /// file: put it back if the state dir lost it (removed by hand).
    fn check_pid_file(&mut self) {
        use std::sync::atomic::Ordering;
        let path = self.state.pid_path();
        let me = std::process::id();
        let ok = crate::state::read_state_file(&path)
            .ok()
            .flatten()
            .is_some_and(|t| t.trim() == me.to_string());
        if ok || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        match fsutil::write_atomic(&path, format!("{me}\n").as_bytes()) {
            Ok(()) => {
                warn!(pid_file = %path.display(), "the daemon's pid file was gone or changed; written again")
            }
            Err(e) => warn!(
                error = format!("{e:#}"),
                "cannot write the daemon's pid file"
            ),
        }
    }

    /// The sockmap must hold our socket: a BPF_NOEXIST update succeeds
    /// only on an empty slot, so it finds a lost socket and puts it back
    /// in one step, with no moment without one. With `force`, an occupied
    /// slot is overwritten with ours as well (someone else's socket).
    fn check_responder_socket(&mut self, force: bool) {
        match self
            .maps
            .responder
            .set(0, &self.responder_socket, BPF_NOEXIST)
        {
            Ok(()) => {
                self.health.lock().socket_repairs += 1;
                error!("the RESPONDER sockmap had lost this daemon's socket (defer-mode connections got the down policy meanwhile); registered it again");
            }
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                if force {
                    if let Err(e) = self.maps.register_responder(&self.responder_socket) {
                        warn!(
                            error = format!("{e:#}"),
                            "re-registering the responder socket"
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, "checking the RESPONDER sockmap"),
        }
    }

    /// Apply the store when it changed, or in full every RESYNC.
    fn poll_store(&mut self, full: bool) {
        let seen = Fingerprint::of(&self.cfg.partners_dir);
        let changed = seen != self.store_seen;
        // The same refused files again: nothing to learn by re-reading
        // (or re-planning) them until they change.
        let same_refusal = self
            .refused_seen
            .as_ref()
            .is_some_and(|(f, _, _)| *f == seen);
        // Nothing new to read: the files are as last seen, and either this
        // is no full resync or the last read refused these very files.
        if !changed && (!full || same_refusal) {
            if full {
                self.check_responder_socket(true);
                self.remind_refusal();
            }
            return;
        }
        self.store_seen = seen.clone();
        if full {
            self.check_responder_socket(true);
        }
        match self.sync_store(full) {
            Ok(()) => {
                if let Some((_, why, _)) = self.refused_seen.take() {
                    info!(previously = why, "partner store applied again");
                }
                crate::notify::status(&self.status_line());
            }
            Err(e) => self.refused(seen, e),
        }
    }

    fn refused(&mut self, seen: Fingerprint, e: anyhow::Error) {
        let why = format!("{e:#}");
        let kept = self.health.lock().prefixes;
        if self.refused_seen.as_ref().map(|(_, w, _)| w) != Some(&why) {
            if StoreRefused::of(&e).is_some() {
                error!(
                    reason = why,
                    kept_prefixes = kept,
                    "partner store refused; the allowlist is kept as it was (`mx6gate status` shows why)"
                );
            } else {
                error!(
                    error = why,
                    "partner store not applied; the allowlist is kept as it was"
                );
            }
        }
        self.health.lock().store_refused = Some(why.clone());
        self.refused_seen = Some((seen, why, Instant::now()));
        crate::notify::status(&self.status_line());
        // A refused big store was read (and maybe planned) for nothing.
        release_memory();
    }

    fn remind_refusal(&mut self) {
        if let Some((_, why, at)) = &mut self.refused_seen {
            if at.elapsed() >= REFUSAL_REMINDER {
                warn!(
                    reason = why.as_str(),
                    "partner store still refused; the allowlist is still the last good one"
                );
                *at = Instant::now();
            }
        }
    }

    /// Store and config → maps, under the state lock. A refused store is
    /// an error and changes nothing.
    fn sync_store(&mut self, full: bool) -> Result<()> {
        let _lock = self.state.lock()?;
        if full {
            for dir in [&self.cfg.partners_dir, &self.state.path] {
                for f in fsutil::remove_stale_temps(dir) {
                    info!(file = %f.display(), "removed a temp file left by a killed command");
                }
            }
        }
        // `mx6gate mode` writes the map itself; this only repairs drift. Not
        // the store's business: a failure here keeps the mode in force and
        // is said on its own, whatever the store does.
        match reconcile::sync_config(&self.cfg, &self.state, &mut self.maps) {
            Ok(_) => {
                if self.config_error.take().is_some() {
                    info!("mode and ports applied again");
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                if self.config_error.as_ref() != Some(&why) {
                    error!(
                        error = why.as_str(),
                        "cannot apply the mode and ports; the ones in force are kept"
                    );
                }
                self.config_error = Some(why);
            }
        }
        let store = Store::load(&self.cfg.partners_dir)?;
        let owners = store.spf_owners();
        match crate::partners::forget_unnamed_domains(&self.state, &owners) {
            Ok(gone) if !gone.is_empty() => {
                info!(domains = ?gone, "spf: state dropped for domains no partner names")
            }
            Ok(_) => {}
            Err(e) => warn!(
                error = format!("{e:#}"),
                "spf: cannot drop the state of domains no partner names"
            ),
        }
        let report = reconcile::reconcile(&store, &self.state, &mut self.maps, today_utc(), false)?;
        self.spf_owners.send_if_modified(|o| {
            let changed = *o != owners;
            *o = owners;
            changed
        });
        let mut h = self.health.lock();
        h.store_refused = None;
        h.partners = store.partners.len();
        // Manual and SPF prefixes alike: what the allowlist holds.
        h.prefixes = report.total;
        if h.store_skipped != store.skipped {
            for s in &store.skipped {
                warn!("partner store: {s}");
            }
            h.store_skipped = store.skipped;
        }
        drop(h);
        release_memory();
        Ok(())
    }

    /// A config that loaded whole: mode and ports, interfaces, the new
    /// responder socket, then the store (which is refused or applied on
    /// its own; a refused store does not fail the reload of a good config).
    fn reload(&mut self, cfg: Config, listener: Option<TcpListener>) -> Result<()> {
        {
            let _lock = self.state.lock()?;
            if let Some(l) = listener {
                self.maps.register_responder(&l)?;
                self.responder_socket = l;
            }
            reconcile::sync_config(&cfg, &self.state, &mut self.maps)?;
            if cfg.interfaces != self.cfg.interfaces || cfg.xdp_mode != self.cfg.xdp_mode {
                self.gate
                    .attach(&cfg.interfaces, cfg.xdp_mode, &self.state.path)?;
            }
        }
        self.cfg = cfg;
        self.store_seen = Fingerprint::default();
        self.refused_seen = None;
        self.poll_store(true);
        Ok(())
    }

    /// systemd's STATUS= line (`systemctl status` shows it).
    pub fn status_line(&self) -> String {
        status_line(&self.cfg, &self.state, &self.health)
    }
}

/// "mode defer; 3 partners, 12 prefixes; on eth0" (or why the store is
/// refused).
pub fn status_line(cfg: &Config, state: &StateDir, health: &SharedHealth) -> String {
    let mode = reconcile::effective_mode(cfg, state)
        .map(|m| m.as_str())
        .unwrap_or("unknown");
    let h = health.get();
    let store = match &h.store_refused {
        None => format!("{} partners, {} prefixes", h.partners, h.prefixes),
        Some(_) => format!(
            "partner store REFUSED, keeping the last good allowlist ({} prefixes)",
            h.prefixes
        ),
    };
    format!("mode {mode}; {store}; on {}", cfg.interfaces.join(", "))
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Give the memory of a big store read back to the system (glibc keeps
/// freed heap otherwise: a million-prefix load would leave the daemon at
/// hundreds of MB).
fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
