//! Hostile clients against the responder, over real TCP on [::1]
//! (invariant 8: bounded resources per connection and in total, and it
//! survives misbehaving clients). The tests here run one at a time (they
//! measure memory and use thousands of sockets).
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use mx6gate::responder::{raise_nofile_limit, GreetingMode, ResponderConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod support;
use support::*;

const OVER_CAP: &str = "421 4.7.0 mx.example.test too many connections\r\n";
static SERIAL: Mutex<()> = Mutex::new(());

/// Run one test on its own runtime, one test at a time.
fn serially(test: impl std::future::Future<Output = ()>) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

impl Server {
    /// A fresh client still gets the whole greeting, promptly.
    async fn still_greets(&self, greeting: &str) {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let line = read_line(&mut s).await;
        assert_eq!(line, greeting);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
}

/// One line, read a byte at a time (so nothing after it is consumed).
async fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("a line in time")
            .expect("no reset before the line");
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&line));
        line.push(b[0]);
        assert!(line.len() <= 512, "reply line too long");
    }
    String::from_utf8(line).unwrap()
}

/// Read until the server closes (EOF or reset), within `WAIT`.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("the server closes in time")
        {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Deterministic pseudo-random bytes (xorshift64).
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn line_too_long_gets_500_and_close() {
    serially(line_too_long_gets_500_and_close_body());
}

async fn line_too_long_gets_500_and_close_body() {
    let srv = Server::start(converse_cfg()).await;
    // 512 octets with CRLF is the longest allowed command line ...
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_line(&mut s).await, CONVERSE_GREETING);
    let longest = format!("NOOP {}\r\n", "x".repeat(512 - 7));
    assert_eq!(longest.len(), 512);
    s.write_all(longest.as_bytes()).await.unwrap();
    assert_eq!(read_line(&mut s).await, "250 2.0.0 OK\r\n");
    // ... one more octet is too long.
    let too_long = format!("NOOP {}\r\n", "x".repeat(512 - 6));
    s.write_all(too_long.as_bytes()).await.unwrap();
    assert_eq!(read_line(&mut s).await, "500 5.5.2 line too long\r\n");
    assert_eq!(read_until_closed(&mut s).await, b"");
    assert_eq!(srv.stats.snapshot().lines_too_long, 1);
    srv.still_greets(CONVERSE_GREETING).await;
    srv.stop().await;
}

/// A client that sends 10 MB without a line end: cut off after 512 octets
/// (converse) or after the bounded drain (close), and the process's
/// memory does not grow with what was sent.
#[test]
fn endless_line_is_cut_off_and_memory_stays_bounded() {
    serially(endless_line_is_cut_off_and_memory_stays_bounded_body());
}

async fn endless_line_is_cut_off_and_memory_stays_bounded_body() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    for (cfg, greeting, reply) in [
        (
            converse_cfg(),
            CONVERSE_GREETING,
            "500 5.5.2 line too long\r\n",
        ),
        (close_cfg(), CLOSE_GREETING, ""),
    ] {
        let mode = cfg.greeting;
        let srv = Server::start(cfg).await;
        srv.still_greets(greeting).await; // warm up before measuring
        let before = vm_rss_kb();
        let t0 = Instant::now();
        let s = TcpStream::connect(srv.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'A'; 64 * 1024];
            let mut sent = 0;
            while sent < TEN_MB {
                match tokio::time::timeout(WAIT, wr.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    _ => break,
                }
            }
            sent
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, rd.read(&mut chunk))
                .await
                .expect("the server closes in time")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let sent = writer.await.unwrap();
        wait_until("the session ends", || srv.stats.snapshot().active == 0).await;
        let after = vm_rss_kb();
        println!(
            "endless line ({}): sent {sent} bytes before the server cut it off after {:?}; \
             VmRSS before {before} kB, after {after} kB (growth {} kB)",
            mode.as_str(),
            t0.elapsed(),
            after as i64 - before as i64
        );
        assert_eq!(String::from_utf8_lossy(&got), format!("{greeting}{reply}"));
        assert!(sent < TEN_MB, "the server read all 10 MB");
        assert!(
            after < before + 20 * 1024,
            "VmRSS grew from {before} kB to {after} kB"
        );
        srv.still_greets(greeting).await;
        srv.stop().await;
    }
}

#[test]
fn binary_garbage_is_survived() {
    serially(binary_garbage_is_survived_body());
}

async fn binary_garbage_is_survived_body() {
    for cfg in [converse_cfg(), close_cfg()] {
        let greeting = if cfg.greeting == GreetingMode::Converse {
            CONVERSE_GREETING
        } else {
            CLOSE_GREETING
        };
        let srv = Server::start(ResponderConfig {
            idle_timeout: Duration::from_millis(500),
            ..cfg
        })
        .await;
        let inputs: Vec<Vec<u8>> = vec![
            garbage(1 << 20, 0x9e37_79b9_7f4a_7c15),
            vec![0u8; 100_000],
            vec![b'\n'; 100_000],
            b"\r\r\r\r\xff\xfe\x00\nEHLO \xc3\xa9\r\n\x1b[31mQUIT\r\n".to_vec(),
        ];
        for (i, input) in inputs.iter().enumerate() {
            let t0 = Instant::now();
            let s = TcpStream::connect(srv.addr).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            let len = input.len();
            let input = input.clone();
            let writer = tokio::spawn(async move {
                let _ = tokio::time::timeout(WAIT, wr.write_all(&input)).await;
                wr
            });
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match tokio::time::timeout(WAIT, rd.read(&mut chunk))
                    .await
                    .expect("the server closes in time")
                {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            drop(writer.await.unwrap());
            let text = String::from_utf8(got).expect("replies are ASCII");
            assert!(text.starts_with(greeting), "{text:?}");
            // Bounded answers: at most max_commands + 1 replies after the
            // greeting, each a well-formed reply line.
            let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
            assert!(lines.len() <= 1 + 21, "{} replies", lines.len());
            for l in &lines {
                assert!(l.ends_with("\r\n") && l.len() <= 512, "{l:?}");
                assert!(!l.starts_with("354") && !l.starts_with("250 2.1"), "{l:?}");
            }
            println!(
                "garbage #{i} ({} bytes, {}): {} replies, last {:?}, closed after {:?}",
                len,
                srv_mode(greeting),
                lines.len(),
                lines.last(),
                t0.elapsed()
            );
        }
        // A client that resets at once, and one that half-closes at once.
        let s = TcpStream::connect(srv.addr).await.unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.shutdown().await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(String::from_utf8(got).unwrap(), greeting);

        wait_until("all sessions end", || srv.stats.snapshot().active == 0).await;
        srv.still_greets(greeting).await;
        srv.stop().await;
    }
}

fn srv_mode(greeting: &str) -> &'static str {
    if greeting == CONVERSE_GREETING {
        "converse"
    } else {
        "close"
    }
}

#[test]
fn per_source_cap_holds() {
    serially(per_source_cap_holds_body());
}

async fn per_source_cap_holds_body() {
    let srv = Server::start(ResponderConfig {
        max_connections: 100,
        max_per_source: 3,
        ..converse_cfg()
    })
    .await;
    // All of these come from ::1, one /64.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        assert_eq!(read_line(&mut s).await, CONVERSE_GREETING);
        held.push(s);
    }
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(String::from_utf8(got).unwrap(), OVER_CAP);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
    let st = srv.stats.snapshot();
    assert_eq!(
        (st.active, st.refused_over_cap, st.refused_per_source),
        (3, 5, 5)
    );
    let report = srv.stats.sources.take();
    assert_eq!(report.sources.len(), 1);
    assert_eq!(
        (report.sources[0].connections, report.sources[0].refused),
        (8, 5)
    );
    // A slot that is given back can be taken again.
    drop(held.pop());
    wait_until("a slot is free", || srv.stats.snapshot().active == 2).await;
    srv.still_greets(CONVERSE_GREETING).await;
    srv.stop().await;
}

#[test]
fn total_cap_holds() {
    serially(total_cap_holds_body());
}

async fn total_cap_holds_body() {
    let srv = Server::start(ResponderConfig {
        max_connections: 4,
        max_per_source: 1000,
        ..converse_cfg()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        assert_eq!(read_line(&mut s).await, CONVERSE_GREETING);
        held.push(s);
    }
    // Over the cap: the short 421 at once, even for a client that talks
    // first; nothing waits in a queue.
    for i in 0..5 {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"EHLO early.example.test\r\n").await.unwrap();
        }
        let got = read_until_closed(&mut s).await;
        assert_eq!(String::from_utf8(got).unwrap(), OVER_CAP);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
    let st = srv.stats.snapshot();
    assert_eq!(
        (st.active, st.refused_over_cap, st.refused_per_source),
        (4, 5, 0)
    );
    drop(held.pop());
    wait_until("a slot is free", || srv.stats.snapshot().active == 3).await;
    srv.still_greets(CONVERSE_GREETING).await;
    srv.stop().await;
}

/// 2,000 idle sessions held open do not keep a new client from its banner.
#[test]
fn two_thousand_idle_connections_do_not_block_a_new_client() {
    serially(two_thousand_idle_connections_do_not_block_a_new_client_body());
}

async fn two_thousand_idle_connections_do_not_block_a_new_client_body() {
    const IDLE: usize = 2000;
    let nofile = raise_nofile_limit().unwrap();
    println!("RLIMIT_NOFILE soft limit now {nofile}");
    assert!(
        nofile >= 2 * IDLE as u64 + 200,
        "RLIMIT_NOFILE {nofile} is too low for {IDLE} connections"
    );
    let srv = Server::start(ResponderConfig {
        max_connections: IDLE as u32 + 1,
        max_per_source: IDLE as u32 + 1,
        idle_timeout: Duration::from_secs(60),
        session_timeout: Duration::from_secs(60),
        ..converse_cfg()
    })
    .await;
    let before = vm_rss_kb();
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(IDLE);
    for batch in 0..IDLE / 200 {
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let addr = srv.addr;
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    assert_eq!(read_line(&mut s).await, CONVERSE_GREETING);
                    s
                })
            })
            .collect();
        for t in tasks {
            held.push(t.await.unwrap_or_else(|e| panic!("batch {batch}: {e}")));
        }
    }
    let opened = t0.elapsed();
    assert_eq!(srv.stats.snapshot().active, IDLE as u64);
    let with_idle = vm_rss_kb();

    let t1 = Instant::now();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_line(&mut s).await, CONVERSE_GREETING);
    let banner = t1.elapsed();
    // The cap is full now: the next one is refused at once, not queued.
    let t2 = Instant::now();
    let mut over = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(
        String::from_utf8(read_until_closed(&mut over).await).unwrap(),
        OVER_CAP
    );
    let refused = t2.elapsed();
    println!(
        "{IDLE} idle sessions opened in {opened:?}; new client's banner after {banner:?}; \
         over-cap refusal after {refused:?}; VmRSS {before} kB before, {with_idle} kB with \
         {IDLE} sessions ({} kB per session, client and server side together)",
        (with_idle as i64 - before as i64) / IDLE as i64
    );
    assert!(banner < Duration::from_secs(1), "banner took {banner:?}");
    assert!(refused < Duration::from_secs(1), "refusal took {refused:?}");
    drop(held);
    drop(s);
    wait_until("all sessions end", || srv.stats.snapshot().active == 0).await;
    srv.stop().await;
}
