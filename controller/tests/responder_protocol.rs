//! The responder's SMTP behaviour over real TCP on [::1] (invariant 8:
//! it never accepts mail). Each test runs its own responder on an
//! ephemeral port of [::1].
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mx6gate::responder::{bind_listener, ResponderConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod support;
use support::*;

struct Client {
    s: TcpStream,
    pending: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.unwrap(),
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// The next reply line, CRLF included.
    async fn line(&mut self) -> String {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8(line).unwrap();
            }
            let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
                .await
                .expect("a reply line in time")
                .expect("no reset before the reply line");
            assert!(
                n > 0,
                "connection closed before a full line; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// The server closes cleanly (FIN, not RST) with nothing more to say.
    async fn expect_eof(&mut self) {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending);
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
            .await
            .expect("the server closes in time")
            .expect("a clean close, not a reset");
        assert_eq!(
            n,
            0,
            "more data: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        );
    }

    /// Everything until the server closes; the close must be clean.
    async fn read_all(&mut self) -> String {
        let mut all = std::mem::take(&mut self.pending);
        tokio::time::timeout(WAIT, self.s.read_to_end(&mut all))
            .await
            .expect("the server closes in time")
            .expect("a clean close, not a reset");
        String::from_utf8(all).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_is_exact_and_close_mode_closes_cleanly() {
    let srv = Server::start(close_cfg()).await;
    let mut c = Client::connect(srv.addr).await;
    // The whole line, then a clean FIN (read_all fails on a reset).
    assert_eq!(c.read_all().await, CLOSE_GREETING);
    let st = srv.stats.snapshot();
    assert_eq!((st.connections, st.deferred, st.commands), (1, 1, 0));
    drop(c);
    wait_until("the session ends", || srv.stats.snapshot().active == 0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_expansion() {
    let srv = Server::start(ResponderConfig {
        code: 451,
        enhanced_code: "4.3.2".into(),
        text: "%H %A %% 100%%; again %A".into(),
        ..close_cfg()
    })
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.read_all().await,
        "451 4.3.2 mx.example.test ::1 % 100%; again ::1\r\n"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mode_client_talking_first_still_reads_the_greeting() {
    let srv = Server::start(close_cfg()).await;
    // A client that pipelines before reading (or an impatient one): its
    // input is drained, so the close is a FIN and the greeting arrives.
    for extra in [
        &b"EHLO client.example.test\r\n"[..],
        b"EHLO a\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
        &[b'x'; 16 * 1024][..],
    ] {
        let mut c = Client::connect(srv.addr).await;
        c.send(extra).await;
        assert_eq!(c.read_all().await, CLOSE_GREETING);
        // The responder read what was sent (no reset answered it) and is
        // still draining: more input is taken quietly too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.s.write_all(b"QUIT\r\n")
            .await
            .expect("no reset from the responder");
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.s.write_all(b"QUIT\r\n")
            .await
            .expect("no reset from the responder");
    }
    // The client that reads, then says QUIT as MTAs do after a 421.
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CLOSE_GREETING);
    c.send(b"QUIT\r\n").await;
    c.expect_eof().await;
    assert_eq!(srv.stats.snapshot().deferred, 4);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mode_drain_is_bounded() {
    let srv = Server::start(ResponderConfig {
        idle_timeout: Duration::from_millis(400),
        ..close_cfg()
    })
    .await;
    // A client that reads the greeting and then just sits there: the
    // responder sends its FIN at once, and closes the socket after the
    // drain time (min(2 s, idle_timeout)).
    let t0 = Instant::now();
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CLOSE_GREETING);
    c.expect_eof().await;
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "FIN right after the greeting"
    );
    wait_until("the drain ends", || srv.stats.snapshot().active == 0).await;
    let took = t0.elapsed();
    println!("close mode: closed {took:?} after connect (idle_timeout 400 ms)");
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_answers_every_verb() {
    let srv = Server::start(ResponderConfig {
        max_commands: 100,
        ..converse_cfg()
    })
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    let deny = CONVERSE_GREETING;
    let cases: &[(&str, &str)] = &[
        ("EHLO client.example.test", deny),
        ("HELO client.example.test", deny),
        ("ehlo lower.case", deny),
        ("MAIL FROM:<a@example.test>", deny),
        ("RCPT TO:<b@example.test>", deny),
        ("DATA", deny),
        ("BDAT 100 LAST", deny),
        ("RSET", deny),
        ("VRFY postmaster", deny),
        ("EXPN staff", deny),
        ("NOOP", "250 2.0.0 OK\r\n"),
        ("noop with args", "250 2.0.0 OK\r\n"),
        (
            "HELP",
            "214 2.0.0 This host does not accept mail over IPv6 yet; please send over IPv4\r\n",
        ),
        ("STARTTLS", "502 5.5.1 command not implemented\r\n"),
        (
            "AUTH PLAIN AGFAAGI=",
            "502 5.5.1 command not implemented\r\n",
        ),
        ("ETRN example.test", "502 5.5.1 command not implemented\r\n"),
        ("FROB", "500 5.5.1 command unrecognized\r\n"),
        ("", "500 5.5.2 syntax error\r\n"),
        ("Subject: hello", "500 5.5.2 syntax error\r\n"),
        (".", "500 5.5.2 syntax error\r\n"),
        ("EHLO caf\u{e9}", "500 5.5.2 syntax error\r\n"),
    ];
    for (cmd, want) in cases {
        c.send(format!("{cmd}\r\n").as_bytes()).await;
        assert_eq!(c.line().await, *want, "reply to {cmd:?}");
    }
    // A bare LF ends a line too.
    c.send(b"NOOP\n").await;
    assert_eq!(c.line().await, "250 2.0.0 OK\r\n");
    c.send(b"QUIT\r\n").await;
    assert_eq!(
        c.line().await,
        "221 2.0.0 mx.example.test closing connection\r\n"
    );
    c.expect_eof().await;
    let st = srv.stats.snapshot();
    assert_eq!(st.commands, cases.len() as u64 + 2);
    assert_eq!((st.deferred, st.timeouts), (1, 0));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_closes_after_max_commands() {
    let srv = Server::start(ResponderConfig {
        max_commands: 3,
        ..converse_cfg()
    })
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    for _ in 0..3 {
        c.send(b"NOOP\r\n").await;
        assert_eq!(c.line().await, "250 2.0.0 OK\r\n");
    }
    c.send(b"NOOP\r\n").await;
    assert_eq!(
        c.line().await,
        "421 4.7.0 mx.example.test too many commands, closing connection\r\n"
    );
    c.expect_eof().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_never_accepts_content() {
    let srv = Server::start(ResponderConfig {
        max_commands: 100,
        ..converse_cfg()
    })
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    // A client that ignores the replies and sends a whole transaction.
    let message = "EHLO client.example.test\r\nMAIL FROM:<a@example.test>\r\n\
        RCPT TO:<b@example.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody text\r\n.\r\nQUIT\r\n";
    c.send(message.as_bytes()).await;
    let all = c.read_all().await;
    let replies: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(
        replies,
        [
            CONVERSE_GREETING,                    // EHLO
            CONVERSE_GREETING,                    // MAIL
            CONVERSE_GREETING,                    // RCPT
            CONVERSE_GREETING,                    // DATA: refused, so what follows is no content
            "500 5.5.2 syntax error\r\n",         // "Subject: hi"
            "500 5.5.2 syntax error\r\n",         // ""
            "500 5.5.1 command unrecognized\r\n", // "body text"
            "500 5.5.2 syntax error\r\n",         // "."
            "221 2.0.0 mx.example.test closing connection\r\n",
        ]
    );
    // Never a 354 (go ahead) nor a 250 to anything but NOOP.
    assert!(!replies
        .iter()
        .any(|r| r.starts_with("354") || r.starts_with("250")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let srv = Server::start(converse_cfg()).await;
    let mut c = Client::connect(srv.addr).await;
    // One segment, several commands, sent before the greeting is read.
    c.send(b"NOOP\r\nHELO a\r\nNOOP\r\nVRFY b\r\nHELP\r\nFROB\r\nNOOP\r\nQUIT\r\nNOOP\r\n")
        .await;
    let all = c.read_all().await;
    let replies: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(
        replies,
        [
            CONVERSE_GREETING,
            "250 2.0.0 OK\r\n",
            CONVERSE_GREETING,
            "250 2.0.0 OK\r\n",
            CONVERSE_GREETING,
            "214 2.0.0 This host does not accept mail over IPv6 yet; please send over IPv4\r\n",
            "500 5.5.1 command unrecognized\r\n",
            "250 2.0.0 OK\r\n",
            "221 2.0.0 mx.example.test closing connection\r\n",
            // Nothing after QUIT.
        ]
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes() {
    let srv = Server::start(ResponderConfig {
        idle_timeout: Duration::from_millis(300),
        session_timeout: Duration::from_secs(5),
        ..converse_cfg()
    })
    .await;
    // Silent client.
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    let t0 = Instant::now();
    assert_eq!(
        c.line().await,
        "421 4.4.2 mx.example.test idle timeout, closing connection\r\n"
    );
    c.expect_eof().await;
    let took = t0.elapsed();
    println!("idle timeout: silent client closed after {took:?} (idle_timeout 300 ms)");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // A client trickling one byte every 100 ms never completes a line:
    // the idle clock runs from the last complete line, not the last byte.
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    let t0 = Instant::now();
    let mut chunk = [0u8; 512];
    let mut got = Vec::new();
    for b in b"NOOPNOOPNOOPNOOPNOOP" {
        c.s.write_all(&[*b]).await.unwrap();
        // Stop writing as soon as the server speaks.
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), c.s.read(&mut chunk)).await
        {
            got.extend_from_slice(&chunk[..r.unwrap()]);
            break;
        }
    }
    c.pending = got;
    let rest = c.read_all().await;
    assert_eq!(
        rest,
        "421 4.4.2 mx.example.test idle timeout, closing connection\r\n"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(srv.stats.snapshot().timeouts, 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeout_closes_a_busy_client() {
    let srv = Server::start(ResponderConfig {
        idle_timeout: Duration::from_secs(1),
        session_timeout: Duration::from_millis(800),
        max_commands: 1000,
        ..converse_cfg()
    })
    .await;
    let t0 = Instant::now();
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    // Always busy, never idle: only the session limit ends it.
    let end = loop {
        assert!(t0.elapsed() < WAIT, "session never ended");
        c.send(b"NOOP\r\n").await;
        let l = c.line().await;
        if l != "250 2.0.0 OK\r\n" {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        end,
        "421 4.4.2 mx.example.test session time limit reached, closing connection\r\n"
    );
    let took = t0.elapsed();
    println!("session timeout: busy client closed after {took:?} (session_timeout 800 ms)");
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert_eq!(srv.stats.snapshot().timeouts, 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpit_stutters_the_greeting() {
    let srv = Server::start(ResponderConfig {
        tarpit: Duration::from_millis(5),
        ..close_cfg()
    })
    .await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut chunk = [0u8; 512];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        got.extend_from_slice(&chunk[..n]);
    }
    let took = t0.elapsed();
    println!(
        "tarpit 5 ms/byte: {} bytes in {reads} reads over {took:?}",
        got.len()
    );
    assert_eq!(String::from_utf8(got).unwrap(), CLOSE_GREETING);
    // ~94 bytes at 5 ms each.
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(reads > 10, "{reads} reads: the greeting was not stuttered");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpit_never_outlasts_the_session() {
    // 1 s per byte would take ~94 s; the stutter is cut to fit in half the
    // session, so the client still gets the whole greeting.
    let srv = Server::start(ResponderConfig {
        tarpit: Duration::from_millis(1000),
        idle_timeout: Duration::from_millis(500),
        session_timeout: Duration::from_secs(1),
        ..close_cfg()
    })
    .await;
    let t0 = Instant::now();
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.line().await, CLOSE_GREETING);
    let took = t0.elapsed();
    println!("tarpit 1000 ms/byte, session 1 s: greeting complete after {took:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    c.expect_eof().await;
    assert_eq!(srv.stats.snapshot().timeouts, 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sessions_and_serve() {
    let srv = Server::start(ResponderConfig {
        session_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..converse_cfg()
    })
    .await;
    let addr = srv.addr;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.line().await, CONVERSE_GREETING);
    let stats = Arc::clone(&srv.stats);
    let t0 = Instant::now();
    srv.stop().await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The held session was closed, and nobody listens any more.
    let mut chunk = [0u8; 64];
    let n = tokio::time::timeout(WAIT, c.s.read(&mut chunk))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(stats.snapshot().active, 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_aggregated_per_prefix() {
    let srv = Server::start(close_cfg()).await;
    for _ in 0..3 {
        let mut c = Client::connect(srv.addr).await;
        assert_eq!(c.read_all().await, CLOSE_GREETING);
    }
    let report = srv.stats.sources.take();
    assert_eq!(report.sources.len(), 1, "{report:?}");
    let e = &report.sources[0];
    assert_eq!(e.prefix.to_string(), "::/64");
    assert_eq!((e.connections, e.refused), (3, 0));
    assert!(e.first_seen <= e.last_seen);
    // Taking the report starts a new interval.
    assert!(srv.stats.sources.take().is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors_name_the_address() {
    let first = bind_listener(&ResponderConfig {
        listen: "[::1]:0".parse().unwrap(),
        ..close_cfg()
    })
    .unwrap();
    let taken = match first.local_addr().unwrap() {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => unreachable!(),
    };
    let e = bind_listener(&ResponderConfig {
        listen: taken,
        ..close_cfg()
    })
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&taken.to_string()), "{e}");
    assert!(e.contains("in use"), "{e}");
}
