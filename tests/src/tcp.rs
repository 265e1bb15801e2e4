//! TCP clients and a tiny greeting server, run inside namespaces.

use std::{
    fmt,
    io::{self, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{cleanup::lock, netns::Netns};

/// How a TCP connection attempt ended.
#[derive(Debug)]
pub enum ConnectOutcome {
    /// The handshake completed.
    Connected(TcpStream),
    /// The peer answered the SYN with a RST (ECONNREFUSED).
    Refused,
    /// No answer within the timeout (SYN dropped, or no neighbour).
    TimedOut,
    /// Anything else (EHOSTUNREACH, ENETUNREACH, bind failure, …).
    Other(io::Error),
}

impl ConnectOutcome {
    /// Short name of the variant: "connected", "refused", "timed out", "other".
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectOutcome::Connected(_) => "connected",
            ConnectOutcome::Refused => "refused",
            ConnectOutcome::TimedOut => "timed out",
            ConnectOutcome::Other(_) => "other",
        }
    }
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectOutcome::Connected(_))
    }
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectOutcome::Refused)
    }
    pub fn is_timed_out(&self) -> bool {
        matches!(self, ConnectOutcome::TimedOut)
    }
    /// The stream, or a panic naming what happened instead.
    pub fn expect_connected(self, what: &str) -> TcpStream {
        match self {
            ConnectOutcome::Connected(s) => s,
            other => panic!("{what}: expected a connection, got {other}"),
        }
    }
}

impl fmt::Display for ConnectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectOutcome::Connected(s) => match (s.local_addr(), s.peer_addr()) {
                (Ok(l), Ok(p)) => write!(f, "connected {l} -> {p}"),
                _ => write!(f, "connected"),
            },
            ConnectOutcome::Other(e) => write!(f, "error: {e}"),
            o => f.write_str(o.kind()),
        }
    }
}

/// Connect from `src` (bound first, port chosen by the kernel) to `dst`,
/// inside `ns`, giving up after `timeout`. The returned stream lives in `ns`.
pub fn connect_from(ns: &Netns, src: IpAddr, dst: SocketAddr, timeout: Duration) -> ConnectOutcome {
    ns.enter(|| connect_here(src, dst, timeout))
}

/// [`connect_from`] in the calling thread's current namespace.
pub fn connect_here(src: IpAddr, dst: SocketAddr, timeout: Duration) -> ConnectOutcome {
    let attempt = || -> io::Result<TcpStream> {
        let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        sock.connect_timeout(&SockAddr::from(dst), timeout)?;
        Ok(sock.into())
    };
    match attempt() {
        Ok(s) => ConnectOutcome::Connected(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => ConnectOutcome::Refused,
        Err(e)
            if e.kind() == io::ErrorKind::TimedOut
                || e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::ETIMEDOUT) =>
        {
            ConnectOutcome::TimedOut
        }
        Err(e) => ConnectOutcome::Other(e),
    }
}

/// Largest SMTP reply [`read_reply`] accepts.
pub const MAX_REPLY: usize = 64 * 1024;

/// Read one SMTP reply (e.g. the banner) within `timeout`: lines up to and
/// including the first `NNN ` (or bare `NNN`) line; multi-line `NNN-` lines
/// before it are included. Returned without line endings, lines joined by
/// `\n`. Reads byte by byte, so nothing after the reply is consumed.
///
/// Errors wrap an `io::Error` (downcast to see its kind): `UnexpectedEof`
/// when the peer closed first, `TimedOut`/`WouldBlock` on timeout,
/// `ConnectionReset` on RST.
pub fn read_reply(mut stream: &TcpStream, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut lines: Vec<String> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut byte = [0u8; 1];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(anyhow::Error::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "reply timeout",
            ))
            .context(partial_msg("no complete SMTP reply", &lines, &cur, timeout)));
        }
        stream.set_read_timeout(Some(deadline - now))?;
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(anyhow::Error::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ))
                .context(partial_msg(
                    "peer closed before a complete SMTP reply",
                    &lines,
                    &cur,
                    timeout,
                )))
            }
            Ok(_) => {
                total += 1;
                if total > MAX_REPLY {
                    return Err(anyhow!("SMTP reply longer than {MAX_REPLY} bytes"));
                }
                if byte[0] != b'\n' {
                    cur.push(byte[0]);
                    continue;
                }
                if cur.last() == Some(&b'\r') {
                    cur.pop();
                }
                let line = String::from_utf8_lossy(&cur).into_owned();
                cur.clear();
                let b = line.as_bytes();
                let last = b.len() >= 3
                    && b[..3].iter().all(u8::is_ascii_digit)
                    && (b.len() == 3 || b[3] == b' ');
                lines.push(line);
                if last {
                    return Ok(lines.join("\n"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = partial_msg("reading SMTP reply", &lines, &cur, timeout);
                return Err(anyhow::Error::new(e).context(what));
            }
        }
    }
}

fn partial_msg(what: &str, lines: &[String], cur: &[u8], timeout: Duration) -> String {
    let mut got = lines.join("\\n");
    if !cur.is_empty() {
        got.push_str(&String::from_utf8_lossy(cur));
    }
    format!("{what} (timeout {timeout:?}); got so far: {got:?}")
}

/// Read the greeting: same as [`read_reply`].
pub fn read_banner(stream: &TcpStream, timeout: Duration) -> Result<String> {
    read_reply(stream, timeout)
}

/// Send `line` + CRLF and read the reply.
pub fn command(mut stream: &TcpStream, line: &str, timeout: Duration) -> Result<String> {
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .with_context(|| format!("sending {line:?}"))?;
    read_reply(stream, timeout).with_context(|| format!("reply to {line:?}"))
}

/// The greeting [`Listener`] sends by default.
pub const LISTENER_GREETING: &str = "220 test\r\n";

/// How long a [`Listener`] connection may stay idle before it is closed.
pub const LISTENER_IDLE: Duration = Duration::from_secs(5);
/// The longest a [`Listener`] runs (safety net; stop or drop it sooner).
pub const LISTENER_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// One accepted connection, as the listener saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address of the accepted socket (with sk_lookup steering,
    /// the address the client dialled).
    pub local: SocketAddr,
}

/// A plain TCP server in a namespace: greets with `220 test\r\n`, answers
/// `QUIT` with `221` and anything else with `502`, closes after
/// [`LISTENER_IDLE`] of silence. Counts accepted connections. Runs on its
/// own thread until [`Listener::stop`] or drop.
pub struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Accepted>>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("accepted", &self.accepted())
            .finish()
    }
}

impl Listener {
    /// Listen on `addr` inside `ns` (port 0 picks one; see
    /// [`Listener::local_addr`]). `[::]:port` accepts IPv4 too.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Listener> {
        Listener::start_with_greeting(ns, addr, LISTENER_GREETING)
    }

    /// Like [`Listener::start`] with another greeting (include the CRLF).
    pub fn start_with_greeting(ns: &Netns, addr: SocketAddr, greeting: &str) -> Result<Listener> {
        let listener = ns
            .enter(|| -> io::Result<TcpListener> {
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                if addr.is_ipv6() {
                    s.set_only_v6(!addr.ip().is_unspecified())?;
                }
                s.bind(&SockAddr::from(addr))?;
                s.listen(128)?;
                Ok(s.into())
            })
            .with_context(|| format!("[netns {}] listening on {addr}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (st, ac, lg) = (stop.clone(), accepted.clone(), log.clone());
        let greeting = greeting.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("listener-{addr}"))
            .spawn(move || accept_loop(listener, st, ac, lg, greeting))?;
        Ok(Listener {
            addr,
            stop,
            accepted,
            log,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every accepted connection so far, in order.
    pub fn connections(&self) -> Vec<Accepted> {
        lock(&self.log).clone()
    }

    /// The clients' addresses, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.connections().into_iter().map(|a| a.peer).collect()
    }

    /// Wait (bounded) until at least `n` connections were accepted.
    pub fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.accepted() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stop accepting and close the listening socket (idempotent).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Accepted>>>,
    greeting: String,
) {
    let end = Instant::now() + LISTENER_MAX_LIFETIME;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        match listener.accept() {
            Ok((stream, peer)) => {
                let local = stream.local_addr().unwrap_or(peer);
                lock(&log).push(Accepted { peer, local });
                accepted.fetch_add(1, Ordering::SeqCst);
                let g = greeting.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("listener-conn-{peer}"))
                    .spawn(move || serve(stream, &g));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Greet, then answer up to 100 lines; bounded by LISTENER_IDLE per read.
fn serve(stream: TcpStream, greeting: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(LISTENER_IDLE));
    let _ = stream.set_write_timeout(Some(LISTENER_IDLE));
    let mut w = &stream;
    if w.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut r = &stream;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut lines = 0;
    while lines < 100 && line.len() < 4096 {
        match r.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => {
                lines += 1;
                let text = String::from_utf8_lossy(&line).trim().to_ascii_uppercase();
                line.clear();
                if text == "QUIT" {
                    let _ = w.write_all(b"221 2.0.0 bye\r\n");
                    break;
                }
                if w.write_all(b"502 5.5.2 test listener\r\n").is_err() {
                    break;
                }
            }
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
