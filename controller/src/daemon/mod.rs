//! `mx6gate run`: load or adopt the gate, run the reject-banner responder,
//! then keep the gate in step with the
//! config (SIGHUP), the partner store (polled, so files dropped by config
//! management count too) and the calendar (partner expiry).
//! SIGTERM/SIGINT exit and leave the gate pinned and enforcing.
//!
//! Two halves: this async side (the responder, the metrics endpoint, the
//! control socket, signals) never does slow or blocking work on the gate;
//! the sync worker (`worker`), a thread of its own, owns the gate and does
//! it all. A store that takes seconds to load, or a CLI command holding
//! the state lock, delays only the worker.
//!
//! One daemon per pinned gate: it holds the pin directory's lock
//! (`pinlock`) from start to exit.
mod reports;
mod spf;
mod worker;

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
};

use anyhow::{bail, Context, Result};
use mx6gate_common::Mode;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};
pub use worker::{Fingerprint, RESYNC, STORE_POLL};

use crate::{
    allowlist,
    config::{Config, ResponderConfig},
    gate::{self, Gate, PinLayout},
    health::SharedHealth,
    maps::GateMaps,
    metrics::{gate::GateCollector, Exporter},
    pinlock::PinLock,
    reconcile,
    responder::{self, Responder},
    state::StateDir,
    store::{today_utc, RefusedKind, Store, StoreRefused},
};

struct Daemon {
    config_path: PathBuf,
    iface_override: Vec<String>,
    cfg: Config,
    state: StateDir,
    responder: RunningResponder,
    metrics: Exporter,
    health: SharedHealth,
    requests: mpsc::Sender<worker::Request>,
    /// The `[spf]` table as the refresh task uses it (follows reloads).
    spf_config: tokio::sync::watch::Sender<crate::spf::SpfConfig>,
    fatal: tokio::sync::mpsc::UnboundedReceiver<String>,
    _pid_file: PidFile,
}

/// What the store at start means for the allowlist.
enum StartStore {
    /// Apply it.
    Apply(Store),
    /// Refused (why): keep the allowlist the pinned gate holds.
    Keep(String),
}

/// Decide what to do with the store at start, before anything changes.
/// A refused store (bad file, missing or emptied directory) keeps the
/// allowlist of an adopted gate that holds one; with nothing to keep, a
/// bad store refuses the start, and a missing directory is taken as "no
/// partners" only in monitor mode (where it turns nobody away), with a
/// loud warning: in an enforcing mode it would turn every partner away.
fn start_store(cfg: &Config, mode: Mode, kept_prefixes: usize) -> Result<StartStore> {
    let dir = &cfg.partners_dir;
    match Store::load(dir) {
        Ok(s) if s.files == 0 && kept_prefixes > 0 => Ok(StartStore::Keep(format!(
            "{}: holds no partner file, but the pinned allowlist holds {kept_prefixes} prefixes: taken as a vanished store, kept (to mean no partners, leave a file in it, even an empty one)",
            dir.display()
        ))),
        Ok(s) => Ok(StartStore::Apply(s)),
        Err(e) if kept_prefixes > 0 => Ok(StartStore::Keep(format!("{e:#}"))),
        Err(e) if StoreRefused::of(&e).is_some_and(|r| r.kind == RefusedKind::Missing) => {
            if mode != Mode::Monitor {
                bail!(
                    "partners_dir {} does not exist, and no pinned allowlist is there to keep: starting in mode {} with no partner would turn every IPv6 sender away. Create the directory (even empty, if no partner is meant yet), or start in monitor mode",
                    dir.display(),
                    mode.as_str()
                );
            }
            warn!(
                partners_dir = %dir.display(),
                "partners_dir does not exist: starting with no partners (harmless in monitor mode, which turns nobody away); create it, and mind that an enforcing mode will refuse to start without it"
            );
            Ok(StartStore::Apply(Store::empty(dir)))
        }
        Err(e) => Err(e.context(
            "the partner store is refused and no pinned allowlist is there to keep; fix the store, then start again",
        )),
    }
}

pub async fn run(config_path: &Path, ifaces: Vec<String>, mode: Option<Mode>) -> Result<()> {
    // First of all: SIGHUP's default action ends the process, so a reload
    // asked for as soon as the daemon says it is up (`systemctl start` then
    // `reload`; a slow machine widens the gap) must find the handler there.
    let signals = Signals::install()?;
    // Everything that can be refused is checked before the pinned gate,
    // the saved mode or the maps change (invariant 5).
    let cfg = load_config(config_path, &ifaces)?;
    for w in cfg.warnings() {
        warn!("{w}");
    }
    let state = StateDir::new(&cfg.state_dir);
    let (gate, maps, pin_lock, pid_file, listener, metrics, kept, running, spf_owners) = {
        let _lock = state.lock()?;
        if let Some(pid) = state.running_daemon() {
            bail!(
                "another mx6gate daemon (pid {pid}) is running for state dir {}",
                state.path.display()
            );
        }
        // One owner per pinned gate, whatever its state dir (pinlock.rs).
        gate::ensure_bpffs(&cfg.pin_path)?;
        let made_pin_dir = NewPinDir::create(&cfg.pin_path)?;
        let pin_lock = PinLock::acquire(&cfg.pin_path)?;
        // Claimed under the lock, so a second `run`, `status` or `detach`
        // sees this daemon from here on.
        let pid_file = PidFile::create(&state)?;
        let start_mode = match mode {
            Some(m) => m,
            None => reconcile::effective_mode(&cfg, &state)?,
        };
        let pinned_prefixes = if PinLayout::new(&cfg.pin_path).is_loaded() {
            GateMaps::open(&cfg.pin_path)
                .and_then(|m| {
                    if allowlist::is_empty(&m)? {
                        Ok(0)
                    } else {
                        Ok(allowlist::entries(&m)?.len())
                    }
                })
                .unwrap_or(0)
        } else {
            0
        };
        let store = start_store(&cfg, start_mode, pinned_prefixes)?;
        // Bound before anything changes: a busy address fails the start cleanly.
        if let Err(e) = responder::raise_nofile_limit() {
            warn!(
                error = format!("{e:#}"),
                "could not raise the open-file limit"
            );
        }
        let listener = responder::bind_listener(&cfg.responder)?;
        let metrics = Exporter::start(
            &cfg.metrics,
            GateCollector::new(&cfg.pin_path, &cfg.state_dir, cfg.interfaces.clone()),
        )?;
        let mut gate = Gate::load(&cfg)?;
        let mut maps = GateMaps::open(&cfg.pin_path)?;
        if maps.allow_capacity != cfg.maps.allow_entries
            || maps.partner_capacity != cfg.maps.max_partners
        {
            warn!(
                allow_entries = maps.allow_capacity,
                max_partners = maps.partner_capacity,
                "adopted maps keep their sizes; `mx6gate detach` and restart to apply the configured sizes"
            );
        }
        let desired = match &store {
            StartStore::Apply(s) => {
                Some(reconcile::desired_allow(s, &state, &mut maps, today_utc())?)
            }
            StartStore::Keep(_) => None,
        };
        if let Some(m) = mode {
            state.set_mode(m)?;
        }
        // Policy first, then attach: a fresh link starts with the right
        // mode and allowlist.
        let mode = reconcile::sync_config(&cfg, &state, &mut maps)?;
        if let Some(desired) = &desired {
            reconcile::apply_allow_tracked(&mut maps, &state, desired)?;
        }
        gate.attach(&cfg.interfaces, cfg.xdp_mode, &state.path)?;
        gate.attach_sk_lookup()?;
        // From here sk_lookup can hand deferred connections to us.
        maps.register_responder(&listener)?;
        let (partners, prefixes) = match &store {
            StartStore::Apply(s) => (s.partners.len(), s.prefix_count()),
            StartStore::Keep(why) => {
                error!(
                    reason = why.as_str(),
                    kept_prefixes = pinned_prefixes,
                    "partner store refused at start; the pinned allowlist is kept (`mx6gate status` shows why)"
                );
                (0, pinned_prefixes)
            }
        };
        let running = (mode, gate.adopted, gate.features, partners, prefixes);
        {
            let health = metrics.metrics().health();
            let mut h = health.lock();
            h.partners = partners;
            h.prefixes = prefixes;
            match &store {
                StartStore::Apply(s) => h.store_skipped = s.skipped.clone(),
                StartStore::Keep(why) => h.store_refused = Some(why.clone()),
            }
        }
        for s in match &store {
            StartStore::Apply(s) => s.skipped.clone(),
            StartStore::Keep(_) => Vec::new(),
        } {
            warn!("partner store: {s}");
        }
        let spf_owners = match &store {
            StartStore::Apply(s) => s.spf_owners(),
            StartStore::Keep(_) => Default::default(),
        };
        let kept = match store {
            StartStore::Keep(why) => Some(why),
            StartStore::Apply(_) => None,
        };
        made_pin_dir.keep();
        (
            gate, maps, pin_lock, pid_file, listener, metrics, kept, running, spf_owners,
        )
    };
    let health = metrics.metrics().health();
    let responder_socket = listener
        .try_clone()
        .context("duplicating the responder socket")?;
    let responder = RunningResponder::start(&cfg.responder, listener, &metrics)?;
    // Who is being turned away: read the kernel's reports, answer `top`.
    let _reports = reports::start(&cfg.pin_path, &state);
    let (requests, requests_rx) = mpsc::channel();
    let (fatal_tx, fatal) = tokio::sync::mpsc::unbounded_channel();
    let store_seen = Fingerprint::of(&cfg.partners_dir);
    let (spf_owners_tx, spf_owners) = tokio::sync::watch::channel(spf_owners);
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    worker::Worker {
        cfg: cfg.clone(),
        state: state.clone(),
        gate,
        maps,
        pin_lock,
        responder_socket,
        health: health.clone(),
        // A store refused at start is looked at again at once.
        store_seen: if kept.is_some() {
            Fingerprint::default()
        } else {
            store_seen
        },
        refused_seen: kept.map(|why| (Fingerprint::default(), why, std::time::Instant::now())),
        config_error: None,
        stopping: stopping.clone(),
        spf_owners: spf_owners_tx,
    }
    .spawn(requests_rx, fatal_tx)?;
    // Partners by domain: re-expanded by their TTLs; changes go to the
    // worker like any store change.
    let (spf_config, spf_config_rx) = tokio::sync::watch::channel(cfg.spf.clone());
    let _spf = spf::RefreshTask {
        owners: spf_owners,
        state: state.clone(),
        config: spf_config_rx,
        worker: requests.clone(),
        metrics: metrics.metrics().spf(),
    }
    .spawn();
    // Logged once everything serves and the signals are handled: what
    // waits for this line (an operator, the tests) may act at once.
    let (mode, adopted, features, partners, prefixes) = running;
    info!(
        mode = mode.as_str(),
        adopted,
        interfaces = ?cfg.interfaces,
        partners,
        prefixes,
        kernel = crate::kernel::release(),
        coarse_clock = features.coarse_clock,
        sk_lookup_ifindex = features.sk_lookup_ifindex,
        "gate running"
    );
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        iface_override: ifaces,
        cfg,
        state,
        responder,
        metrics,
        health,
        requests,
        spf_config,
        fatal,
        _pid_file: pid_file,
    };
    crate::notify::ready(&d.status_line());
    let result = d.serve(signals).await;
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    crate::notify::stopping();
    d.responder.stop().await;
    result
}

/// The reject-banner responder task and the listener it serves (kept so a
/// reload can restart it with new settings on the same socket).
struct RunningResponder {
    listener: std::net::TcpListener,
    cfg: ResponderConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningResponder {
    fn start(
        cfg: &ResponderConfig,
        listener: std::net::TcpListener,
        metrics: &Exporter,
    ) -> Result<RunningResponder> {
        let serving = listener
            .try_clone()
            .context("duplicating the responder socket")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let r = Responder::with_stats(cfg.clone(), metrics.metrics().responder_stats());
        let up = metrics.metrics().responder_up();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            up.set(1);
            let served = r.serve(serving, shutdown).await;
            up.set(0);
            if let Err(e) = served {
                error!(
                    error = format!("{e:#}"),
                    "responder failed; defer-mode connections get the down policy"
                );
            }
        });
        Ok(RunningResponder {
            listener,
            cfg: cfg.clone(),
            stop: Some(tx),
            task: Some(task),
        })
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The pin directory, if this start created it: removed again (with the
/// empty sub-directories a failed load leaves) unless the start succeeds,
/// so a refused start leaves nothing pinned behind.
struct NewPinDir(Option<PathBuf>);

impl NewPinDir {
    fn create(pin_path: &Path) -> Result<NewPinDir> {
        let existed = pin_path.exists();
        crate::fsutil::create_dir_all(pin_path)?;
        Ok(NewPinDir((!existed).then(|| pin_path.to_path_buf())))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for NewPinDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let l = PinLayout::new(p);
            for d in [l.links(), l.progs(), l.maps()] {
                std::fs::remove_dir(d).ok();
            }
            std::fs::remove_dir(p).ok();
        }
    }
}

/// `state_dir/mx6gate.pid` while this daemon runs; removed on every exit.
struct PidFile(PathBuf);

impl PidFile {
    fn create(state: &StateDir) -> Result<PidFile> {
        let path = state.pid_path();
        crate::fsutil::write_atomic(&path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// The config as `run` applies it (`--iface` replaces `interfaces`), with
/// every interface present in this network namespace.
pub fn load_config(path: &Path, ifaces: &[String]) -> Result<Config> {
    let cfg = checked_config(path, ifaces)?;
    for iface in &cfg.interfaces {
        if crate::gate::ifindex(iface).is_none() {
            bail!("interface {iface:?} does not exist (in this network namespace)");
        }
    }
    Ok(cfg)
}

/// What is wrong with the config itself, whatever the machine's state: it
/// loads, and names at least one valid interface. (A missing interface is
/// not in here: it may yet appear, and a retry can succeed.)
pub fn checked_config(path: &Path, ifaces: &[String]) -> Result<Config> {
    let mut cfg = Config::load(path)?;
    if !ifaces.is_empty() {
        cfg.interfaces = ifaces.to_vec();
    }
    if cfg.interfaces.is_empty() {
        bail!(
            "no interfaces to protect: set `interfaces` in {} or pass --iface",
            path.display()
        );
    }
    for iface in &cfg.interfaces {
        crate::config::validate_ifname(iface)?;
    }
    Ok(cfg)
}

/// The signals the daemon acts on, caught from the moment they are
/// installed (a signal that arrives before the loop polls is kept).
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Daemon {
    async fn serve(&mut self, signals: Signals) -> Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading config and store");
                    crate::notify::reloading();
                    // SIGTERM is heard while the worker applies a reload
                    // (a big store takes seconds): the reload is dropped.
                    let reloaded = tokio::select! {
                        r = self.reload() => r,
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                    };
                    self.metrics.metrics().record_reload(reloaded.is_ok());
                    if let Err(e) = reloaded {
                        error!(error = format!("{e:#}"), "reload failed; the running policy is unchanged");
                    }
                    // READY=1 either way: the daemon serves, with the new
                    // settings or the old ones.
                    crate::notify::ready(&self.status_line());
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                why = self.fatal.recv() => {
                    let why = why.unwrap_or_else(|| "the sync worker stopped".into());
                    bail!("{why}");
                }
            }
        }
        info!("exiting; the gate stays attached and pinned (`mx6gate detach` removes it)");
        Ok(())
    }

    /// systemd's STATUS= line (`systemctl status` shows it).
    fn status_line(&self) -> String {
        worker::status_line(&self.cfg, &self.state, &self.health)
    }

    /// Validate everything first; apply only a config that loaded whole.
    /// The worker applies it to the gate (and the store after it); this
    /// side restarts the responder and the metrics endpoint.
    async fn reload(&mut self) -> Result<()> {
        let cfg =
            load_config(&self.config_path, &self.iface_override).context("reloading the config")?;
        if cfg.pin_path != self.cfg.pin_path || cfg.state_dir != self.cfg.state_dir {
            bail!("pin_path and state_dir cannot change on reload; restart the daemon");
        }
        for w in cfg.warnings() {
            warn!("{w}");
        }
        let metrics_rebind = self.metrics.prepare_reload(&cfg.metrics)?;
        // A new responder address: bound (and registered by the worker)
        // before the old socket goes.
        let new_listener = if cfg.responder.listen != self.responder.cfg.listen {
            Some(responder::bind_listener(&cfg.responder)?)
        } else {
            None
        };
        let for_worker = new_listener
            .as_ref()
            .map(|l| l.try_clone())
            .transpose()
            .context("duplicating the responder socket")?;
        let (reply, replied) = tokio::sync::oneshot::channel();
        self.requests
            .send(worker::Request::Reload {
                cfg: Box::new(cfg.clone()),
                listener: for_worker,
                reply,
            })
            .map_err(|_| anyhow::anyhow!("the sync worker is gone"))?;
        replied
            .await
            .map_err(|_| anyhow::anyhow!("the sync worker is gone"))??;
        if cfg.responder != self.responder.cfg {
            self.restart_responder(&cfg.responder, new_listener).await?;
        }
        self.metrics
            .apply_reload(&cfg.metrics, cfg.interfaces.clone(), metrics_rebind)?;
        self.spf_config.send_replace(cfg.spf.clone());
        self.cfg = cfg;
        info!("reloaded");
        Ok(())
    }

    /// New responder settings: a fresh responder task, on the new socket
    /// if the address changed (already registered by the worker).
    async fn restart_responder(
        &mut self,
        cfg: &ResponderConfig,
        new_listener: Option<std::net::TcpListener>,
    ) -> Result<()> {
        let listener = match new_listener {
            Some(l) => l,
            None => self.responder.listener.try_clone()?,
        };
        self.responder.stop().await;
        self.responder = RunningResponder::start(cfg, listener, &self.metrics)?;
        info!(listen = %cfg.listen, "responder restarted with the new settings");
        Ok(())
    }
}
