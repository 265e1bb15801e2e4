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
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ResponderConfig},
    gate::Gate,
    maps::GateMaps,
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
    store_seen: Vec<(PathBuf, SystemTime, u64)>,
    _pid_file: PidFile,
}

pub async fn run(config_path: &Path, ifaces: Vec<String>, mode: Option<Mode>) -> Result<()> {
    // Everything that can be refused is checked before the pinned gate,
    // the saved mode or the maps change (invariant 5).
    let cfg = load_config(config_path, &ifaces)?;
    let state = StateDir::new(&cfg.state_dir);
    let (gate, maps, pid_file, listener) = {
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
        info!(
            mode = mode.as_str(),
            adopted = gate.adopted,
            interfaces = ?cfg.interfaces,
            partners = store.partners.len(),
            prefixes = store.prefix_count(),
            "gate running"
        );
        (gate, maps, pid_file, listener)
    };
    let responder = RunningResponder::start(&cfg.responder, listener)?;
    // Who is being turned away: read the kernel's reports, answer `top`.
    let _reports = crate::report::start_in_daemon(&cfg.pin_path, &state);
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        iface_override: ifaces,
        store_seen: store_fingerprint(&cfg.partners_dir),
        cfg,
        state,
        gate,
        maps,
        responder,
        _pid_file: pid_file,
    };
    let result = d.serve().await;
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
    fn start(cfg: &ResponderConfig, listener: std::net::TcpListener) -> Result<RunningResponder> {
        let serving = listener
            .try_clone()
            .context("duplicating the responder socket")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let r = Responder::new(cfg.clone());
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = r.serve(serving, shutdown).await {
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

fn load_config(path: &Path, ifaces: &[String]) -> Result<Config> {
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
        if crate::gate::ifindex(iface).is_none() {
            bail!("interface {iface:?} does not exist (in this network namespace)");
        }
    }
    Ok(cfg)
}

impl Daemon {
    async fn serve(&mut self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut poll = tokio::time::interval(STORE_POLL);
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading config and store");
                    if let Err(e) = self.reload().await {
                        error!(error = format!("{e:#}"), "reload failed; the running policy is unchanged");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = poll.tick() => {
                    let seen = store_fingerprint(&self.cfg.partners_dir);
                    let full = last_full.elapsed() >= RESYNC;
                    if seen != self.store_seen || full {
                        self.store_seen = seen;
                        last_full = Instant::now();
                        if let Err(e) = self.sync_store() {
                            error!(error = format!("{e:#}"), "partner store not applied; the allowlist is unchanged");
                        }
                    }
                }
            }
        }
        info!("exiting; the gate stays attached and pinned (`mx6gate detach` removes it)");
        Ok(())
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
        self.responder = RunningResponder::start(cfg, listener)?;
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
