//! One served connection: the greeting, the command loop over the
//! sans-I/O protocol in `smtp`, the timeouts and the final drain.
use super::*;
/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// We close: after the greeting (close mode), QUIT, too many commands,
    /// a line too long.
    Close,
    IdleTimeout,
    SessionTimeout,
    /// The client closed or reset the connection.
    PeerGone,
}

/// One served connection: its session, cut short by a shutdown.
pub(super) async fn connection(
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

pub(super) async fn session(mut stream: TcpStream, peer: Ipv6Addr, sh: &Shared) {
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
pub(super) async fn finish(stream: &mut TcpStream, drain_for: Duration, buf: &mut [u8]) {
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
pub(super) fn tarpit_delay(cfg: &ResponderConfig, len: usize) -> Duration {
    if cfg.tarpit.is_zero() || len == 0 {
        return Duration::ZERO;
    }
    let cap = cfg.session_timeout / 2 / u32::try_from(len).unwrap_or(u32::MAX);
    cfg.tarpit.min(cap)
}

pub(super) async fn write_greeting(
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
pub(super) struct Out {
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
pub(super) async fn talk(
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
