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
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::{sleep, timeout, timeout_at, Instant},
};
use tracing::{debug, info, warn};

pub use config::{DownPolicy, GreetingMode, ResponderConfig};
pub use report::{IntervalReport, ResponderStats, SourceEntry, StatsSnapshot};

use limits::{source_prefix, Limiter, Refusal, Slot};
use smtp::{Answer, FixedReplies, MAX_COMMAND_LINE};

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

/// Create the responder's listening socket: IPv6 only, SO_REUSEADDR,
/// backlog [`LISTEN_BACKLOG`], non-blocking (ready for tokio). Its fd is
/// what goes into the SOCKMAP.
pub fn bind_listener(cfg: &ResponderConfig) -> Result<std::net::TcpListener> {
    let addr = SocketAddr::V6(cfg.listen);
    let ctx = |what: &str| format!("responder: cannot listen on {addr}: {what}");
    let sock = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))
        .with_context(|| ctx("socket"))?;
    sock.set_only_v6(true)
        .with_context(|| ctx("setting IPV6_V6ONLY"))?;
    sock.set_reuse_address(true)
        .with_context(|| ctx("setting SO_REUSEADDR"))?;
    sock.bind(&addr.into()).with_context(|| ctx("bind"))?;
    sock.listen(LISTEN_BACKLOG).with_context(|| ctx("listen"))?;
    sock.set_nonblocking(true)
        .with_context(|| ctx("setting O_NONBLOCK"))?;
    Ok(sock.into())
}

fn nofile_limit() -> io::Result<libc::rlimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (or to fs.nr_open if the
/// hard limit is unlimited): thousands of idle connections need as many
/// descriptors. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut r = nofile_limit().context("getrlimit(RLIMIT_NOFILE)")?;
    let mut target = r.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if r.rlim_cur >= target {
        return Ok(r.rlim_cur);
    }
    r.rlim_cur = target;
    // SAFETY: setrlimit reads one valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE) to {target}"));
    }
    Ok(target)
}

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

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// We close: after the greeting (close mode), QUIT, too many commands,
    /// a line too long.
    Close,
    IdleTimeout,
    SessionTimeout,
    /// The client closed or reset the connection.
    PeerGone,
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

fn warn_if_nofile_low(max_connections: u32) {
    let Ok(r) = nofile_limit() else { return };
    let need = u64::from(max_connections) + FD_RESERVE;
    if r.rlim_cur != libc::RLIM_INFINITY && r.rlim_cur < need {
        warn!(
            nofile = r.rlim_cur,
            needed = need,
            "responder: RLIMIT_NOFILE is below max_connections plus a reserve; connections \
             past it cannot be accepted (raise the limit or lower responder.max_connections)"
        );
    }
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

/// One served connection: its session, cut short by a shutdown.
async fn connection(
    stream: TcpStream,
    peer: Ipv6Addr,
    guard: ActiveGuard,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        () = session(stream, peer, &sh) => {}
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    drop(guard);
}

async fn session(mut stream: TcpStream, peer: Ipv6Addr, sh: &Shared) {
    let cfg = &sh.cfg;
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + cfg.session_timeout;
    let text = smtp::expand_text(&cfg.text, peer, &cfg.hostname);
    let greeting = smtp::reply_line(cfg.code, &cfg.enhanced_code, &text);
    let mut buf = [0u8; MAX_COMMAND_LINE];
    let mut greeted = false;
    let end = timeout_at(
        deadline,
        talk(&mut stream, &greeting, sh, &mut buf, &mut greeted),
    )
    .await
    .unwrap_or(End::SessionTimeout);
    debug!(peer = %peer, end = ?end, "responder session ended");
    let drain_for = match end {
        End::PeerGone => return,
        End::Close => DRAIN_TIME.min(cfg.idle_timeout),
        End::IdleTimeout | End::SessionTimeout => {
            ResponderStats::inc(&sh.stats.timeouts);
            if greeted && cfg.greeting == GreetingMode::Converse {
                let notice = if end == End::IdleTimeout {
                    &sh.replies.idle_timeout
                } else {
                    &sh.replies.session_timeout
                };
                let _ = timeout(NOTICE_WRITE, stream.write_all(notice.as_bytes())).await;
            }
            TIMEOUT_DRAIN
        }
    };
    finish(&mut stream, drain_for, &mut buf).await;
}

/// Stop writing (FIN after the last reply), then read and discard input
/// for at most `drain_for` and [`DRAIN_BYTES`], so the client reads our
/// last reply rather than a reset; then the caller drops (closes) it.
async fn finish(stream: &mut TcpStream, drain_for: Duration, buf: &mut [u8]) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + drain_for;
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match timeout_at(until, stream.read(buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Per-byte delay of the greeting: `tarpit`, shortened so the whole
/// greeting takes at most half the session timeout (the client must get
/// all of it to act on it).
fn tarpit_delay(cfg: &ResponderConfig, len: usize) -> Duration {
    if cfg.tarpit.is_zero() || len == 0 {
        return Duration::ZERO;
    }
    let cap = cfg.session_timeout / 2 / u32::try_from(len).unwrap_or(u32::MAX);
    cfg.tarpit.min(cap)
}

async fn write_greeting(
    stream: &mut TcpStream,
    greeting: &[u8],
    delay: Duration,
) -> io::Result<()> {
    if delay.is_zero() {
        return stream.write_all(greeting).await;
    }
    // OpenBSD spamd's stutter: one byte at a time (TCP_NODELAY is set, so
    // each goes out in its own segment). Byte i leaves at start + i *
    // delay: timer overshoot does not add up.
    let mut at = Instant::now();
    for b in greeting {
        tokio::time::sleep_until(at).await;
        stream.write_all(std::slice::from_ref(b)).await?;
        at += delay;
    }
    Ok(())
}

/// Replies waiting to be written: answers to pipelined commands leave in
/// one write, in order.
struct Out {
    buf: [u8; OUT_BUF],
    len: usize,
}

impl Out {
    async fn flush(&mut self, stream: &mut TcpStream, deadline: Instant) -> Result<(), End> {
        if self.len == 0 {
            return Ok(());
        }
        let r = timeout_at(deadline, stream.write_all(&self.buf[..self.len])).await;
        self.len = 0;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::PeerGone),
            // The client does not take our replies: as idle as not talking.
            Err(_) => Err(End::IdleTimeout),
        }
    }

    async fn push(
        &mut self,
        stream: &mut TcpStream,
        reply: &[u8],
        deadline: Instant,
    ) -> Result<(), End> {
        if self.len + reply.len() > OUT_BUF {
            self.flush(stream, deadline).await?;
        }
        let n = reply.len().min(OUT_BUF);
        self.buf[self.len..self.len + n].copy_from_slice(&reply[..n]);
        self.len += n;
        Ok(())
    }
}

/// The greeting, then (converse mode) the command loop.
async fn talk(
    stream: &mut TcpStream,
    greeting: &str,
    sh: &Shared,
    buf: &mut [u8; MAX_COMMAND_LINE],
    greeted: &mut bool,
) -> End {
    let cfg = &sh.cfg;
    let r = &sh.replies;
    let delay = tarpit_delay(cfg, greeting.len());
    if write_greeting(stream, greeting.as_bytes(), delay)
        .await
        .is_err()
    {
        return End::PeerGone;
    }
    *greeted = true;
    ResponderStats::inc(&sh.stats.deferred);
    if cfg.greeting == GreetingMode::Close {
        return End::Close;
    }

    let mut out = Out {
        buf: [0; OUT_BUF],
        len: 0,
    };
    let mut len = 0;
    let mut commands: u32 = 0;
    // No complete line within idle_timeout ends the session; a slow
    // trickle of bytes does not restart the clock.
    let mut line_deadline = Instant::now() + cfg.idle_timeout;
    loop {
        let mut start = 0;
        while let Some(i) = buf[start..len].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + i];
            start += i + 1;
            line_deadline = Instant::now() + cfg.idle_timeout;
            ResponderStats::inc(&sh.stats.commands);
            commands = commands.saturating_add(1);
            let (reply, close): (&str, bool) = if commands > cfg.max_commands {
                // RFC 5321 3.8: a server that decides to close answers the
                // next command with 421.
                (&r.too_many_commands, true)
            } else {
                let a = smtp::answer(line);
                let reply = match a {
                    Answer::Deny => greeting,
                    Answer::Noop => &r.noop,
                    Answer::Help => &r.help,
                    Answer::Quit => &r.quit,
                    Answer::NotImplemented => &r.not_implemented,
                    Answer::Unrecognized => &r.unrecognized,
                    Answer::Syntax => &r.syntax,
                };
                (reply, a.closes())
            };
            if let Err(end) = out.push(stream, reply.as_bytes(), line_deadline).await {
                return end;
            }
            if close {
                return match out.flush(stream, line_deadline).await {
                    Ok(()) => End::Close,
                    Err(end) => end,
                };
            }
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if let Err(end) = out.flush(stream, line_deadline).await {
            return end;
        }
        if len == buf.len() {
            ResponderStats::inc(&sh.stats.lines_too_long);
            let _ = out
                .push(stream, r.line_too_long.as_bytes(), line_deadline)
                .await;
            return match out.flush(stream, line_deadline).await {
                Ok(()) => End::Close,
                Err(end) => end,
            };
        }
        match timeout_at(line_deadline, stream.read(&mut buf[len..])).await {
            Err(_) => return End::IdleTimeout,
            Ok(Ok(0)) | Ok(Err(_)) => return End::PeerGone,
            Ok(Ok(n)) => len += n,
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn tarpit_is_bounded_by_the_session() {
        let mut cfg = ResponderConfig {
            tarpit: Duration::from_millis(1000),
            session_timeout: Duration::from_secs(30),
            ..ResponderConfig::default()
        };
        // 100 bytes at 1 s each would be 100 s: cut to 15 s in total.
        assert_eq!(tarpit_delay(&cfg, 100), Duration::from_millis(150));
        assert_eq!(tarpit_delay(&cfg, 10), Duration::from_millis(1000));
        cfg.tarpit = Duration::ZERO;
        assert_eq!(tarpit_delay(&cfg, 100), Duration::ZERO);
    }
}
