//! The listening socket and the file-descriptor budget it needs (the
//! nofile limit raised, a warning when it is too low for the caps).
use super::*;
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

pub(super) fn nofile_limit() -> io::Result<libc::rlimit> {
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

pub(super) fn warn_if_nofile_low(max_connections: u32) {
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
