//! `mx6gate run`: load or adopt the gate, run the reject-banner responder,
//! then keep the gate in step with the
//! config (SIGHUP), the partner store (polled, so files dropped by config
//! management count too) and the calendar (partner expiry).
//! SIGTERM/SIGINT exit and leave the gate pinned and enforcing.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};
use mx6gate_common::Mode;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ResponderConfig},
    gate::Gate,
    maps::GateMaps,
    metrics::Exporter,
    responder::{self, Responder},
    state::StateDir,
    store::{today_utc, Store},
    sync,
};

/// How often the store directory is looked at; edits made by the CLI are
/// applied by the CLI itself, this catches files dropped in by other tools.
const STORE_POLL: Duration = Duration::from_millis(500);
/// Full resync: expiry, and repair if someone edited the map by hand.
const RESYNC: Duration = Duration::from_secs(30);

struct Daemon {
    config_path: PathBuf,
    iface_override: Vec<String>,
    cfg: Config,
    state: StateDir,
    gate: Gate,
    maps: GateMaps,
    responder: RunningResponder,
    metrics: Exporter,
    store_seen: Vec<(PathBuf, SystemTime, u64)>,
    _pid_file: PidFile,
}

pub async fn run(config_path: &Path, ifaces: Vec<String>, mode: Option<Mode>) -> Result<()> {
    // First of all: SIGHUP's default action ends the process, so a reload
    // asked for as soon as the daemon says it is up (`systemctl start` then
    // `reload`; a slow machine widens the gap) must find the handler there.
    let signals = Signals::install()?;
    // Everything that can be refused is checked before the pinned gate,
    // the saved mode or the maps change (invariant 5).
    let cfg = load_config(config_path, &ifaces)?;
    let state = StateDir::new(&cfg.state_dir);
    let (gate, maps, pid_file, listener, metrics, running) = {
        let _lock = state.lock()?;
        if let Some(pid) = state.running_daemon() {
            bail!(
                "another mx6gate daemon (pid {pid}) is running for state dir {}",
                state.path.display()
            );
        }
        // Claimed under the lock, so a second `run`, `status` or `detach`
        // sees this daemon from here on.
        let pid_file = PidFile::create(&state)?;
        let store = Store::load(&cfg.partners_dir)?;
        // Bound before anything changes: a busy address fails the start cleanly.
        if let Err(e) = responder::raise_nofile_limit() {
            warn!(
                error = format!("{e:#}"),
                "could not raise the open-file limit"
            );
        }
        let listener = responder::bind_listener(&cfg.responder)?;
        let metrics = Exporter::start(&cfg)?;
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
        let desired = sync::desired_allow(&store, &state, &mut maps, today_utc())?;
        if let Some(m) = mode {
            state.set_mode(m)?;
        }
        // Policy first, then attach: a fresh link starts with the right
        // mode and allowlist.
        let mode = sync::sync_config(&cfg, &state, &mut maps)?;
        sync::apply_allow_tracked(&mut maps, &state, &desired)?;
        gate.attach(&cfg.interfaces, cfg.xdp_mode, &state.path)?;
        gate.attach_sk_lookup()?;
        // From here sk_lookup can hand deferred connections to us.
        maps.register_responder(&listener)?;
        let running = (mode, store.partners.len(), store.prefix_count());
        (gate, maps, pid_file, listener, metrics, running)
    };
    let responder = RunningResponder::start(&cfg.responder, listener, &metrics)?;
    // Who is being turned away: read the kernel's reports, answer `top`.
    let _reports = crate::report::start_in_daemon(&cfg.pin_path, &state);
    // Logged once everything serves and the signals are handled: what
    // waits for this line (an operator, the tests) may act at once.
    let (mode, partners, prefixes) = running;
    info!(
        mode = mode.as_str(),
        adopted = gate.adopted,
        interfaces = ?cfg.interfaces,
        partners,
        prefixes,
        kernel = crate::kernel::release(),
        coarse_clock = gate.features.coarse_clock,
        sk_lookup_ifindex = gate.features.sk_lookup_ifindex,
        "gate running"
    );
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        iface_override: ifaces,
        store_seen: store_fingerprint(&cfg.partners_dir),
        cfg,
        state,
        gate,
        maps,
        responder,
        metrics,
        _pid_file: pid_file,
    };
    crate::notify::ready(&d.status_line());
    let result = d.serve(signals).await;
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
        let mut poll = tokio::time::interval(STORE_POLL);
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading config and store");
                    crate::notify::reloading();
                    let reloaded = self.reload().await;
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
                _ = poll.tick() => {
                    let seen = store_fingerprint(&self.cfg.partners_dir);
                    let full = last_full.elapsed() >= RESYNC;
                    if seen != self.store_seen || full {
                        self.store_seen = seen;
                        last_full = Instant::now();
                        match self.sync_store() {
                            Ok(()) => crate::notify::status(&self.status_line()),
                            Err(e) => error!(error = format!("{e:#}"), "partner store not applied; the allowlist is unchanged"),
                        }
                    }
                }
            }
        }
        info!("exiting; the gate stays attached and pinned (`mx6gate detach` removes it)");
        Ok(())
    }

    /// systemd's STATUS= line (`systemctl status` shows it).
    fn status_line(&self) -> String {
        let mode = sync::effective_mode(&self.cfg, &self.state)
            .map(|m| m.as_str())
            .unwrap_or("unknown");
        let partners = Store::load(&self.cfg.partners_dir)
            .map(|s| {
                format!(
                    "{} partners, {} prefixes",
                    s.partners.len(),
                    s.prefix_count()
                )
            })
            .unwrap_or_else(|_| "partner store unreadable".into());
        format!(
            "mode {mode}; {partners}; on {}",
            self.cfg.interfaces.join(", ")
        )
    }

    fn sync_store(&mut self) -> Result<()> {
        let _lock = self.state.lock()?;
        let store = Store::load(&self.cfg.partners_dir)?;
        sync::sync_allow(&store, &self.state, &mut self.maps, today_utc())?;
        // `mx6gate mode` writes the map itself; this only repairs drift.
        sync::sync_config(&self.cfg, &self.state, &mut self.maps)?;
        Ok(())
    }

    /// New responder settings: a new socket if the address changed
    /// (registered before the old one goes), then a fresh responder task.
    async fn restart_responder(&mut self, cfg: &ResponderConfig) -> Result<()> {
        let listener = if cfg.listen != self.responder.cfg.listen {
            let l = responder::bind_listener(cfg)?;
            self.maps.register_responder(&l)?;
            l
        } else {
            self.responder.listener.try_clone()?
        };
        self.responder.stop().await;
        self.responder = RunningResponder::start(cfg, listener, &self.metrics)?;
        info!(listen = %cfg.listen, "responder restarted with the new settings");
        Ok(())
    }

    /// Validate everything first; apply only a config that loaded whole.
    async fn reload(&mut self) -> Result<()> {
        let cfg =
            load_config(&self.config_path, &self.iface_override).context("reloading the config")?;
        if cfg.pin_path != self.cfg.pin_path || cfg.state_dir != self.cfg.state_dir {
            bail!("pin_path and state_dir cannot change on reload; restart the daemon");
        }
        let metrics_rebind = self.metrics.prepare_reload(&cfg.metrics)?;
        let _lock = self.state.lock()?;
        let store = Store::load(&cfg.partners_dir)?;
        let desired = sync::desired_allow(&store, &self.state, &mut self.maps, today_utc())?;
        sync::sync_config(&cfg, &self.state, &mut self.maps)?;
        sync::apply_allow_tracked(&mut self.maps, &self.state, &desired)?;
        if cfg.interfaces != self.cfg.interfaces || cfg.xdp_mode != self.cfg.xdp_mode {
            self.gate
                .attach(&cfg.interfaces, cfg.xdp_mode, &self.state.path)?;
        }
        if cfg.responder != self.responder.cfg {
            self.restart_responder(&cfg.responder).await?;
        }
        self.metrics.apply_reload(&cfg, metrics_rebind)?;
        self.store_seen = store_fingerprint(&cfg.partners_dir);
        self.cfg = cfg;
        info!("reloaded");
        Ok(())
    }
}

/// Names, sizes and mtimes of the store's files: cheap change detection.
fn store_fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok()?, m.len()))
        })
        .collect();
    v.sort();
    v
}
