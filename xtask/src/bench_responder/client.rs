//! The load clients: N threads in the sender namespace, each looping
//! connect → greeting → close with blocking sockets and time limits, and
//! the file-descriptor limit they need.
use std::{
    io::{self, Read},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::{Barrier, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use mx6gate_tests::STRANGER_SRC;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Plan, Server};

/// Per client and point: at most this many connections (a bound, never
/// reached in practice).
const MAX_CONNS_PER_CLIENT: usize = 2_000_000;
/// Client thread stack.
const CLIENT_STACK: usize = 256 * 1024;
/// Longest greeting we read.
const MAX_GREETING: usize = 2048;

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The expected greeting.
    Ok,
    /// The responder's short "too many connections" 421.
    OverCap,
    /// Some other reply.
    WrongReply,
    Refused,
    ConnectTimeout,
    GreetingTimeout,
    /// Closed before a complete greeting.
    Closed,
    Reset,
    Other,
}

pub(super) const KINDS: [Kind; 9] = [
    Kind::Ok,
    Kind::OverCap,
    Kind::WrongReply,
    Kind::Refused,
    Kind::ConnectTimeout,
    Kind::GreetingTimeout,
    Kind::Closed,
    Kind::Reset,
    Kind::Other,
];

impl Kind {
    pub(super) fn idx(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::OverCap => "over-cap 421",
            Kind::WrongReply => "wrong reply",
            Kind::Refused => "refused",
            Kind::ConnectTimeout => "connect timeout",
            Kind::GreetingTimeout => "greeting timeout",
            Kind::Closed => "closed early",
            Kind::Reset => "reset",
            Kind::Other => "other error",
        }
    }
}

/// One client's record of one run.
#[derive(Default)]
pub(super) struct Tally {
    /// Time-to-banner of the good greetings in the window, µs.
    pub(super) lat_us: Vec<u32>,
    /// Per [`Kind`], connections started in the window.
    pub(super) counts: [u64; KINDS.len()],
    /// All connections, warm-up included.
    pub(super) attempts_all: u64,
    pub(super) example_wrong: Option<String>,
    pub(super) example_err: Option<String>,
}

/// Run `n` clients (called inside the sender namespace: the threads
/// spawned here inherit it).
pub(super) fn drive(plan: &Plan, server: Server, n: usize) -> Result<Vec<Tally>> {
    let barrier = Barrier::new(n + 1);
    let times: OnceLock<(Instant, Instant)> = OnceLock::new();
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let h = std::thread::Builder::new()
                .name(format!("client{i}"))
                .stack_size(CLIENT_STACK)
                .spawn_scoped(s, || {
                    barrier.wait();
                    let Some(&(from, until)) = times.get() else {
                        return Tally::default();
                    };
                    client(server, from, until, plan.timeout)
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Release the ones already waiting, then fail.
                    let _ = times.set((Instant::now(), Instant::now()));
                    for _ in handles.len()..n {
                        let _ = s.spawn(|| barrier.wait());
                    }
                    barrier.wait();
                    return Err(anyhow::Error::new(e).context(format!("spawning client {i}")));
                }
            }
        }
        let from = Instant::now() + plan.warmup;
        let _ = times.set((from, from + plan.window));
        barrier.wait();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?,
            );
        }
        Ok(out)
    })
}

/// One client: connect, greeting, close, until `until`; records the
/// connections started at or after `from`.
pub(super) fn client(server: Server, from: Instant, until: Instant, timeout: Duration) -> Tally {
    let mut t = Tally::default();
    for _ in 0..MAX_CONNS_PER_CLIENT {
        let start = Instant::now();
        if start >= until {
            break;
        }
        let (mut kind, ttb, line) = one_connection(server.addr(), timeout);
        t.attempts_all += 1;
        if kind == Kind::Ok {
            let l = line.as_deref().unwrap_or("");
            if !l.starts_with(server.expect()) {
                kind = if l.contains("too many connections") {
                    Kind::OverCap
                } else {
                    Kind::WrongReply
                };
                if kind == Kind::WrongReply && t.example_wrong.is_none() {
                    t.example_wrong = Some(l.to_string());
                }
            }
        } else if t.example_err.is_none() {
            t.example_err = line.clone();
        }
        if start < from {
            continue;
        }
        t.counts[kind.idx()] += 1;
        if kind == Kind::Ok {
            t.lat_us
                .push(ttb.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    t
}

/// One connection from STRANGER_SRC to `[addr]:25` in the calling thread's
/// namespace: (how it ended — `Ok` meaning "some complete reply line",
/// time to that line, the line or the error text).
pub(super) fn one_connection(
    addr: Ipv6Addr,
    timeout: Duration,
) -> (Kind, Duration, Option<String>) {
    let t0 = Instant::now();
    let dst = SocketAddr::new(IpAddr::V6(addr), 25);
    let sock = match Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return (Kind::Other, t0.elapsed(), Some(format!("socket: {e}"))),
    };
    // Choose the source port at connect time, by the full 4-tuple (and so
    // reuse TIME_WAIT ports), not at bind time.
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a valid c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    if let Err(e) = sock.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V6(STRANGER_SRC),
        0,
    ))) {
        return (Kind::Other, t0.elapsed(), Some(format!("bind: {e}")));
    }
    if let Err(e) = sock.connect_timeout(&SockAddr::from(dst), timeout) {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => Kind::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Kind::ConnectTimeout,
            _ if e.raw_os_error() == Some(libc::ETIMEDOUT) => Kind::ConnectTimeout,
            _ => Kind::Other,
        };
        return (kind, t0.elapsed(), Some(format!("connect: {e}")));
    }
    let mut stream: TcpStream = sock.into();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_GREETING];
    let mut len = 0;
    let mut line_start = 0;
    loop {
        // Complete lines so far: the first final one (`NNN ` or `NNN`) ends
        // the greeting; `NNN-` lines continue it.
        while let Some(nl) = buf[line_start..len].iter().position(|&b| b == b'\n') {
            let line = &buf[line_start..line_start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line_start += nl + 1;
            if line.len() == 3 || (line.len() > 3 && line[3] != b'-') {
                let ttb = t0.elapsed();
                let text = String::from_utf8_lossy(line).into_owned();
                return (Kind::Ok, ttb, Some(text));
            }
        }
        if len == buf.len() {
            let text = String::from_utf8_lossy(&buf[..80]).into_owned();
            return (Kind::WrongReply, t0.elapsed(), Some(text));
        }
        let now = Instant::now();
        if now >= deadline {
            return (
                Kind::GreetingTimeout,
                t0.elapsed(),
                Some("no greeting".into()),
            );
        }
        if stream.set_read_timeout(Some(deadline - now)).is_err() {
            return (Kind::Other, t0.elapsed(), Some("set_read_timeout".into()));
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => {
                return (
                    Kind::Closed,
                    t0.elapsed(),
                    Some("closed before greeting".into()),
                )
            }
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Kind::GreetingTimeout,
                    io::ErrorKind::ConnectionReset => Kind::Reset,
                    _ => Kind::Other,
                };
                return (kind, t0.elapsed(), Some(format!("read: {e}")));
            }
        }
    }
}

/// Raise RLIMIT_NOFILE to 65536, or (where even root may not raise the
/// hard limit, e.g. without CAP_SYS_RESOURCE) the soft limit to the hard
/// one. Returns the soft limit in force. Not the responder's
/// `raise_nofile_limit`: that one never raises the hard limit (a daemon
/// stays inside what systemd gave it), while the bench's clients must
/// reach 65536 to load both servers alike.
pub(super) fn raise_nofile() -> Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let want: u64 = 65536;
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        if r.rlim_cur >= want {
            return Ok(r.rlim_cur);
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Ok(want);
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {})", r.rlim_max));
        }
    }
    Ok(r.rlim_cur)
}
