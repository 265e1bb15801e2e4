//! The responder: the socket that the sk_lookup program hands IPv6 SMTP
//! connections from non-partners to in `defer` mode. It greets them with a
//! temporary failure (`421 4.7.0 … please retry over IPv4` by default) so
//! that the sender tries its next MX or the IPv4 address, and it never
//! accepts mail (invariant 8).
//!
//! - `config` — the `[responder]` table, validated
//! - `smtp`   — the protocol: reply text, fixed replies, command answers
//! - `limits` — total and per-source (/64) connection caps
//! - `report` — counters and the aggregated per-source log
//! - `listener` — the listening socket and its fd budget
//! - `session` — one served connection (the accept loop is here)
//!
//! Bounds (invariant 8): every connection passes the caps before it gets a
//! task; over a cap it gets a short 421 and is closed at once, so the
//! accept queue never backs up. A served connection holds one fixed
//! 512-octet line buffer and one 1 KiB reply buffer, lives at most
//! `session_timeout` plus a final drain of at most [`DRAIN_TIME`], and
//! waits at most `idle_timeout` for each command line. A line longer than 512 octets (RFC 5321 4.5.3.1.4) ends the
//! session, so an endless line never grows memory.
//!
//! The accepted socket's local address is the original destination
//! (`[gateway]:25`), its peer the real client: sk_lookup hands over the
//! connection itself, nothing is rewritten.
pub mod config;
pub mod limits;
pub mod report;
pub mod smtp;

use std::{
    future::Future,
    io,
    mem::MaybeUninit,
    net::{Ipv6Addr, Shutdown, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use anyhow::{bail, Context, Result};
pub use config::{DownPolicy, GreetingMode, ResponderConfig};
use limits::{source_prefix, Limiter, Refusal, Slot};
pub use report::{IntervalReport, ResponderStats, SourceEntry, StatsSnapshot};
use smtp::{Answer, FixedReplies, MAX_COMMAND_LINE};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::{sleep, timeout, timeout_at, Instant},
};
use tracing::{debug, info, warn};

mod listener;
mod session;

pub use self::listener::{bind_listener, raise_nofile_limit};
use self::{listener::*, session::*};

/// Listen backlog (the kernel caps it at net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;
/// After the last reply, how long input is read and discarded before the
/// socket is closed, so that the client reads the reply rather than a
/// reset. Bounded further by `idle_timeout`.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);
/// ... and how much of it at most.
pub const DRAIN_BYTES: usize = 64 * 1024;
/// The same after a timeout: just long enough for the notice to leave.
const TIMEOUT_DRAIN: Duration = Duration::from_millis(250);
/// How long a timeout notice may take to write.
const NOTICE_WRITE: Duration = Duration::from_millis(100);
/// Reply buffer: replies to pipelined commands go out together.
const OUT_BUF: usize = 1024;
/// On shutdown, how long `serve` waits for sessions to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after an accept error caused by a resource shortage (EMFILE…).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// File descriptors kept for everything but the responder's connections.
const FD_RESERVE: u64 = 64;

struct Shared {
    cfg: ResponderConfig,
    stats: Arc<ResponderStats>,
    limiter: Arc<Limiter>,
    replies: FixedReplies,
}

/// The responder. Cheap to create; [`serve`](Responder::serve) runs it.
pub struct Responder {
    shared: Arc<Shared>,
}

/// Keeps a connection counted (cap slot and `active`) while it lives.
struct ActiveGuard {
    stats: Arc<ResponderStats>,
    _slot: Slot,
}

impl ActiveGuard {
    fn new(stats: Arc<ResponderStats>, slot: Slot) -> ActiveGuard {
        stats.active.fetch_add(1, Relaxed);
        ActiveGuard { stats, _slot: slot }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}
impl Responder {
    /// A responder for `cfg`. The config is expected to be validated
    /// ([`ResponderConfig::validate`]); an unvalidated one still gives
    /// bounded, single-line replies.
    pub fn new(cfg: ResponderConfig) -> Responder {
        Responder::with_stats(cfg, Arc::default())
    }

    /// A responder that counts into `stats` (the daemon keeps one set for
    /// its metrics across responder restarts).
    pub fn with_stats(cfg: ResponderConfig, stats: Arc<ResponderStats>) -> Responder {
        let replies = FixedReplies::new(&cfg.hostname);
        Responder {
            shared: Arc::new(Shared {
                limiter: Limiter::new(cfg.max_connections, cfg.max_per_source),
                stats,
                replies,
                cfg,
            }),
        }
    }

    pub fn config(&self) -> &ResponderConfig {
        &self.shared.cfg
    }

    /// The counters (shared: they keep counting while served).
    pub fn stats(&self) -> Arc<ResponderStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serve connections from `listener` until `shutdown` resolves, then
    /// close the sessions (waiting up to a second), log the last report
    /// and return. Takes the std listener, whose fd the controller also
    /// puts into the SOCKMAP. Must run inside a tokio runtime.
    pub async fn serve(
        &self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let sh = &self.shared;
        let local = listener
            .local_addr()
            .context("responder: the listener has no local address")?;
        if !local.is_ipv6() {
            bail!(
                "responder: listener {local} is not an IPv6 socket: the sk_lookup program \
                 cannot hand IPv6 connections to an AF_INET socket (EAFNOSUPPORT)"
            );
        }
        listener
            .set_nonblocking(true)
            .with_context(|| format!("responder: listener {local}: setting O_NONBLOCK"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .with_context(|| format!("responder: listener {local}: registering with tokio"))?;
        warn_if_nofile_low(sh.cfg.max_connections);
        info!(
            listen = %local,
            code = sh.cfg.code,
            enhanced_code = %sh.cfg.enhanced_code,
            greeting = sh.cfg.greeting.as_str(),
            max_connections = sh.cfg.max_connections,
            max_per_source = sh.cfg.max_per_source,
            "responder listening"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let reporter = tokio::spawn(report_loop(Arc::clone(sh), stop_rx.clone()));
        let mut warned_cap: Option<Instant> = None;
        let mut warned_err: Option<Instant> = None;
        tokio::pin!(shutdown);
        let result = loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer, &stop_rx, &mut warned_cap),
                Err(e) => {
                    if is_fatal_accept_error(&e) {
                        break Err(
                            anyhow::Error::new(e).context(format!("responder: accept on {local}"))
                        );
                    }
                    ResponderStats::inc(&sh.stats.accept_errors);
                    if should_warn(&mut warned_err, sh.cfg.report_interval) {
                        warn!(listen = %local, error = %e, "responder: accept failed");
                    }
                    if is_resource_error(&e) {
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break Ok(()),
                            () = sleep(ACCEPT_BACKOFF) => {}
                        }
                    }
                }
            }
        };
        drop(listener);
        let _ = stop_tx.send(true);
        let until = Instant::now() + SHUTDOWN_GRACE;
        while sh.stats.active.load(Relaxed) > 0 && Instant::now() < until {
            sleep(Duration::from_millis(10)).await;
        }
        let _ = reporter.await;
        info!(listen = %local, "responder stopped");
        result
    }

    /// Apply the caps to a new connection, then serve or refuse it.
    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        stop: &watch::Receiver<bool>,
        warned_cap: &mut Option<Instant>,
    ) {
        let sh = &self.shared;
        let ip = match peer {
            SocketAddr::V6(a) => *a.ip(),
            SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        };
        let prefix = source_prefix(ip);
        ResponderStats::inc(&sh.stats.connections);
        match sh.limiter.try_acquire(prefix) {
            Ok(slot) => {
                sh.stats.sources.record(prefix, false);
                let guard = ActiveGuard::new(Arc::clone(&sh.stats), slot);
                tokio::spawn(connection(stream, ip, guard, Arc::clone(sh), stop.clone()));
            }
            Err(why) => {
                ResponderStats::inc(&sh.stats.refused_over_cap);
                if why == Refusal::PerSource {
                    ResponderStats::inc(&sh.stats.refused_per_source);
                }
                sh.stats.sources.record(prefix, true);
                if why == Refusal::Total && should_warn(warned_cap, sh.cfg.report_interval) {
                    warn!(
                        max_connections = sh.cfg.max_connections,
                        "responder: connection cap reached; refusing new connections with 421"
                    );
                }
                refuse_now(&stream, sh.replies.over_cap.as_bytes());
            }
        }
    }
}

fn should_warn(last: &mut Option<Instant>, every: Duration) -> bool {
    let now = Instant::now();
    match last {
        Some(t) if now.duration_since(*t) < every => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

fn is_fatal_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Over a cap: the short 421 and close, without a task and without
/// waiting. The reply fits any fresh socket's send buffer; input already
/// received is read first so that the close sends a FIN, not a reset.
fn refuse_now(stream: &TcpStream, line: &[u8]) {
    let sock = SockRef::from(stream);
    let _ = sock.send_with_flags(line, libc::MSG_NOSIGNAL);
    let mut junk = [MaybeUninit::<u8>::uninit(); 512];
    for _ in 0..8 {
        match sock.recv(&mut junk) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
}

async fn report_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = sh.cfg.report_interval.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => report_once(&sh),
            _ = stop.wait_for(|stopping| *stopping) => {
                report_once(&sh);
                return;
            }
        }
    }
}

fn report_once(sh: &Shared) {
    let report = sh.stats.sources.take();
    if !report.is_empty() {
        report.log();
    }
}

#[cfg(test)]
mod tests;
