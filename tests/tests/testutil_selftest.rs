//! Self-tests of the test utilities (crate `mx6gate-tests`): namespaces,
//! the lab topology, TCP and ICMP helpers, Postfix and swaks in namespaces,
//! and cleanup (also after a panic).
//!
//! Tests run in parallel; the ones that assert "no namespace of this process
//! is left" take the write side of `EXCLUSIVE`, all others the read side.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use mx6gate_tests::*;

static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}
fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

const T: Duration = Duration::from_secs(2);

fn v6(a: std::net::Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}
fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

#[test]
fn privilege_verdict_logic() {
    // Pure logic; runs everywhere.
    assert_eq!(privilege::verdict(None, true), Ok(true));
    assert_eq!(privilege::verdict(None, false), Ok(true));
    assert_eq!(
        privilege::verdict(Some("not running as root"), false),
        Ok(false)
    );
    let e = privilege::verdict(Some("not running as root"), true).unwrap_err();
    assert!(
        e.contains("MX6GATE_REQUIRE_PRIV=1") && e.contains("not running as root"),
        "{e}"
    );
}

#[test]
fn netns_run_enter_sysctl_and_bpffs() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let ns = Netns::new("basic").unwrap();
    assert!(ns.name().starts_with(&own_prefix()), "{}", ns.name());
    assert!(ns.name().ends_with("-basic"));
    assert!(ns.path().exists());

    // lo is up; commands run inside.
    let out = ns.run_stdout(&["ip", "-o", "link", "show", "lo"]).unwrap();
    assert!(out.contains("UP"), "{out}");
    // Errors name the namespace, the command and its stderr.
    let err = ns
        .run(&["ip", "link", "show", "nonexistent0"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(ns.name()) && err.contains("nonexistent0"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");

    // nsenter --net keeps the host's mounts: bpffs is visible inside.
    ensure_bpffs().unwrap();
    let fstype = ns
        .run_stdout(&["stat", "-f", "-c", "%T", "/sys/fs/bpf"])
        .unwrap();
    assert_eq!(fstype.trim(), "bpf_fs");

    // enter() runs in the namespace: an address that exists only there can be bound.
    add_addr(&ns, "lo", "2001:db8:ffff::1/128").unwrap();
    let bind =
        |ip: &str| std::net::TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).map(|_| ());
    assert!(ns.enter(|| bind("2001:db8:ffff::1")).is_ok());
    assert!(
        bind("2001:db8:ffff::1").is_err(),
        "the host must not have the namespace's address"
    );
    // A panic inside enter() propagates.
    let r = catch_unwind(AssertUnwindSafe(|| ns.enter(|| panic!("inside"))));
    assert!(r.is_err());

    // Sysctls are per namespace; DAD is off.
    assert_eq!(
        ns.get_sysctl("net.ipv6.conf.default.accept_dad").unwrap(),
        "0"
    );
    ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    assert_eq!(ns.get_sysctl("net.ipv6.conf.all.forwarding").unwrap(), "1");

    // Tracked processes die with the namespace.
    let mut child = ns.spawn(&["sleep", "30"]).unwrap();
    let pid = child.id() as i32;
    let t0 = Instant::now();
    while !ns.pids().contains(&pid) && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ns.pids().contains(&pid));
    let name = ns.name().to_string();
    drop(ns);
    assert!(!cleanup::netns_exists(&name));
    assert!(!cleanup::pid_alive(pid), "sleep survived its namespace");
    let _ = child.try_wait();
}

#[test]
fn topology_addresses_reachable() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    assert!(t.gw_if.len() <= 15 && t.sender_if.len() <= 15);
    for (src, dst) in [
        (v6(PARTNER_SRC), v6(GW_V6)),
        (v6(STRANGER_SRC), v6(GW_V6)),
        (v6(SENDER_V6), v6(GW_V6)),
        (v4(SENDER_V4), v4(GW_V4)),
    ] {
        let rtt =
            ping(&t.sender, src, dst, T).unwrap_or_else(|e| panic!("ping {src} -> {dst}: {e:#}"));
        assert!(rtt < T);
    }
    // And the other way (the gateway's routes to the sender's sources).
    ping(&t.gw, v6(GW_V6), v6(PARTNER_SRC), T).unwrap();
    ping(&t.gw, v6(GW_V6), v6(STRANGER_SRC), T).unwrap();
    // No answer from an address nobody owns.
    assert!(ping(
        &t.sender,
        v6(SENDER_V6),
        v6(UNUSED_LINK_V6),
        Duration::from_millis(500)
    )
    .is_err());

    // GRO on at the sender's end, where XDP_TX frames arrive.
    let k = t
        .sender
        .run_stdout(&["ethtool", "-k", &t.sender_if])
        .unwrap();
    assert!(k.contains("generic-receive-offload: on"), "{k}");
    // The interfaces live only in their namespaces.
    assert!(t.gw.run(&["ip", "link", "show", &t.gw_if]).is_ok());
    assert!(t.sender.run(&["ip", "link", "show", &t.gw_if]).is_err());
    let host = cmd::try_run(&["ip", "link", "show", &t.gw_if], T).unwrap();
    assert!(!host.status.success(), "veth end visible on the host");
}

#[test]
fn listener_greets_and_counts() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    let mut l = Listener::start(&t.gw, "[::]:2525".parse().unwrap()).unwrap();
    assert_eq!(l.local_addr().port(), 2525);

    let s =
        connect_from(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(2525), T).expect_connected("v6");
    assert_eq!(s.local_addr().unwrap().ip(), v6(PARTNER_SRC));
    assert_eq!(read_banner(&s, T).unwrap(), "220 test");
    assert_eq!(tcp::command(&s, "QUIT", T).unwrap(), "221 2.0.0 bye");

    // IPv4 reaches a [::] listener too.
    let s4 =
        connect_from(&t.sender, v4(SENDER_V4), Topology::gw_v4(2525), T).expect_connected("v4");
    assert_eq!(read_banner(&s4, T).unwrap(), "220 test");

    assert!(l.wait_for_accepted(2, T));
    assert_eq!(l.accepted(), 2);
    let peers: Vec<IpAddr> = l.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(peers[0], v6(PARTNER_SRC));
    // The IPv4 client shows up as a v4-mapped address on the dual-stack socket.
    assert!(
        peers[1] == v4(SENDER_V4) || peers[1].to_string() == format!("::ffff:{SENDER_V4}"),
        "{peers:?}"
    );
    assert_eq!(l.connections()[0].local, Topology::gw_v6(2525));

    // Multi-line replies and a custom greeting.
    let _l2 = Listener::start_with_greeting(
        &t.gw,
        SocketAddr::new(v6(GW_V6), 0),
        "220-first\r\n220-second\r\n220 last\r\n",
    )
    .unwrap();
    let s =
        connect_from(&t.sender, v6(STRANGER_SRC), _l2.local_addr(), T).expect_connected("multi");
    assert_eq!(
        read_banner(&s, T).unwrap(),
        "220-first\n220-second\n220 last"
    );

    l.stop();
    assert!(connect_from(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(2525), T).is_refused());
}

#[test]
fn connect_outcomes_refused_and_timed_out() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();

    // Closed port: RST at once.
    let t0 = Instant::now();
    let r = connect_from(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(9), T);
    assert!(r.is_refused(), "{r}");
    assert!(t0.elapsed() < Duration::from_millis(500));
    let r = connect_from(&t.sender, v4(SENDER_V4), Topology::gw_v4(9), T);
    assert!(r.is_refused(), "{r}");

    // Nobody owns the address: neighbour discovery never answers, the SYN is
    // never sent, the connect times out.
    let to = Duration::from_secs(1);
    for dst in [
        SocketAddr::new(v6(UNUSED_LINK_V6), 25),
        SocketAddr::new(v4(UNUSED_LINK_V4), 25),
    ] {
        let src = if dst.is_ipv6() {
            v6(PARTNER_SRC)
        } else {
            v4(SENDER_V4)
        };
        let t0 = Instant::now();
        let r = connect_from(&t.sender, src, dst, to);
        let took = t0.elapsed();
        assert!(r.is_timed_out(), "{dst}: {r}");
        assert!(
            // poll(2) works in whole milliseconds and may wake a hair early
            took >= to - Duration::from_millis(50) && took < to + Duration::from_millis(800),
            "{dst}: {took:?}"
        );
    }

    // A source the namespace does not own: a bind error, reported as Other.
    let r = connect_from(
        &t.sender,
        "2001:db8:3::1".parse().unwrap(),
        Topology::gw_v6(25),
        T,
    );
    assert!(matches!(r, ConnectOutcome::Other(_)), "{r}");

    // read_banner on a silent server times out, with an io::Error inside.
    let _l = Listener::start_with_greeting(&t.gw, Topology::gw_v6(2526), "").unwrap();
    let s = connect_from(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(2526), T)
        .expect_connected("silent");
    let e = read_banner(&s, Duration::from_millis(300)).unwrap_err();
    let io = e
        .downcast_ref::<std::io::Error>()
        .expect("io::Error inside");
    assert!(
        matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{e:#}"
    );
}

#[test]
fn swaks_quit_after_banner_against_listener() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    let l = Listener::start(&t.gw, Topology::gw_v6(25)).unwrap();
    let mut o = SwaksOptions::new(v6(STRANGER_SRC), Topology::gw_v6(25), T);
    o.quit_after = Some("banner".into());
    let r = swaks_with(&t.sender, &o).unwrap();
    assert_eq!(
        r.first_reply.as_deref(),
        Some("220 test"),
        "{}",
        r.transcript
    );
    assert!(r.success(), "{}", r.transcript);
    assert_eq!(l.peers()[0].ip(), v6(STRANGER_SRC));

    // Nothing listening: swaks exits 2 (cannot connect), no reply.
    let r = swaks(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(26), T).unwrap();
    assert_eq!(r.code, Some(2), "{}", r.transcript);
    assert_eq!(r.first_reply, None);
}

#[test]
fn postfix_receives_over_ipv6_and_ipv4() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    let pf = Postfix::start_receiver(&t.gw, GW_HOSTNAME, MAIL_DOMAIN).unwrap();

    // The instance runs in the gateway's namespace and listens there only.
    let master = pf.master_pid().expect("master running");
    assert!(
        t.gw.pids().contains(&master),
        "master {master} not in {}",
        t.gw.name()
    );
    let ss = t.sender.run_stdout(&["ss", "-Hltn"]).unwrap();
    assert!(!ss.contains(":25 "), "sender has a listener on 25: {ss}");

    let mut o = SwaksOptions::new(v6(PARTNER_SRC), Topology::gw_v6(25), Duration::from_secs(5));
    o.to = format!("someone@{MAIL_DOMAIN}");
    o.headers.push("X-Mx6t-Test: over-ipv6".into());
    let r = swaks_with(&t.sender, &o).unwrap();
    assert!(r.success(), "{}\nlog:\n{}", r.transcript, pf.log());
    let banner = r.first_reply.clone().unwrap();
    assert!(
        banner.starts_with(&format!("220 {GW_HOSTNAME} ESMTP")),
        "{banner}"
    );

    let mut o4 = SwaksOptions::new(v4(SENDER_V4), Topology::gw_v4(25), Duration::from_secs(5));
    o4.headers.push("X-Mx6t-Test: over-ipv4".into());
    let r4 = swaks_with(&t.sender, &o4).unwrap();
    assert!(r4.success(), "{}\nlog:\n{}", r4.transcript, pf.log());

    let mbox = pf.wait_for_messages(2, Duration::from_secs(20)).unwrap();
    assert_eq!(pf.message_count().unwrap(), 2);
    let msgs = pf.messages().unwrap();
    let m6 = msgs
        .iter()
        .find(|m| m.contains("X-Mx6t-Test: over-ipv6"))
        .expect("v6 message");
    let m4 = msgs
        .iter()
        .find(|m| m.contains("X-Mx6t-Test: over-ipv4"))
        .expect("v4 message");
    assert!(m6.contains(&format!("[IPv6:{PARTNER_SRC}]")), "{m6}");
    assert!(m4.contains(&format!("[{SENDER_V4}]")), "{m4}");
    assert!(mbox.contains(&format!("someone@{MAIL_DOMAIN}")));
    let log = pf.log();
    assert!(
        log.contains(&format!("connect from unknown[{PARTNER_SRC}]")),
        "{log}"
    );
    assert!(log.contains("status=sent (delivered to mailbox)"), "{log}");

    // Dropping stops it and removes its directory.
    let dir = pf.dir().to_path_buf();
    drop(pf);
    assert!(!cleanup::pid_alive(master), "master survived");
    assert!(!dir.exists());
}

#[test]
fn two_receivers_in_two_namespaces() {
    if !require_root() {
        return;
    }
    let _g = shared();
    // Both bind port 25, each in its own namespace: no conflict.
    let t = Topology::new().unwrap();
    let a = Postfix::start_receiver(&t.gw, "mx-a.example.test", "a.example.test").unwrap();
    let b = Postfix::start_receiver(&t.sender, "mx-b.example.test", "b.example.test").unwrap();
    let s = connect_from(&t.sender, v6(PARTNER_SRC), Topology::gw_v6(25), T).expect_connected("a");
    assert!(read_banner(&s, T)
        .unwrap()
        .starts_with("220 mx-a.example.test"));
    let s = connect_from(&t.gw, v6(GW_V6), SocketAddr::new(v6(PARTNER_SRC), 25), T)
        .expect_connected("b");
    assert!(read_banner(&s, T)
        .unwrap()
        .starts_with("220 mx-b.example.test"));
    drop((a, b));
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    if !require_root() {
        return;
    }
    let _g = shared();
    // A pid that is surely dead: a child that exited and was reaped.
    let mut c = std::process::Command::new("true").spawn().unwrap();
    c.wait().unwrap();
    let dead = c.id();
    assert!(!cleanup::pid_alive(dead as i32));
    let stale = format!("mx6t-{dead}-0-stale");
    cmd::run(&["ip", "netns", "add", &stale], T * 5).unwrap();
    let removed = cleanup_stale().unwrap();
    let still_there = cleanup::netns_exists(&stale);
    if still_there {
        let _ = cmd::run(&["ip", "netns", "delete", &stale], T * 5);
    }
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!still_there);
    // Live processes' namespaces (ours) are never touched.
    let mine = Netns::new("alive").unwrap();
    cleanup_stale().unwrap();
    assert!(cleanup::netns_exists(mine.name()));
}

#[test]
fn nothing_left_after_drop_or_panic() {
    if !require_root() {
        return;
    }
    let _g = exclusive();
    assert_eq!(
        own_namespaces(),
        Vec::<String>::new(),
        "leftovers from other tests"
    );

    // Normal drop.
    let t = Topology::new().unwrap();
    let names: Vec<String> = t.namespaces().iter().map(|s| s.to_string()).collect();
    assert_eq!(own_namespaces().len(), 2);
    drop(t);
    assert_eq!(own_namespaces(), Vec::<String>::new());
    for n in &names {
        assert!(!cleanup::netns_exists(n));
    }

    // Panic in the middle of a test body, with a Postfix and a spawned
    // process running in the namespaces.
    struct Seen {
        names: Vec<String>,
        master: Option<i32>,
        sleeper: Option<i32>,
        dir: Option<std::path::PathBuf>,
    }
    let seen = Mutex::new(Seen {
        names: vec![],
        master: None,
        sleeper: None,
        dir: None,
    });
    let r = catch_unwind(AssertUnwindSafe(|| {
        let t = Topology::new().unwrap();
        let pf = Postfix::start_receiver(&t.gw, GW_HOSTNAME, MAIL_DOMAIN).unwrap();
        // Never waited for here on purpose: dropping the namespace kills
        // and reaps it.
        #[allow(clippy::zombie_processes)]
        let child = t.sender.spawn(&["sleep", "30"]).unwrap();
        {
            let mut s = seen.lock().unwrap();
            s.names = t.namespaces().iter().map(|s| s.to_string()).collect();
            s.master = pf.master_pid();
            s.sleeper = Some(child.id() as i32);
            s.dir = Some(pf.dir().to_path_buf());
        }
        panic!("test body failed on purpose");
    }));
    assert!(r.is_err());
    let s = seen.into_inner().unwrap();
    assert_eq!(s.names.len(), 2);
    assert_eq!(
        own_namespaces(),
        Vec::<String>::new(),
        "namespaces left after a panic"
    );
    assert!(
        !cleanup::pid_alive(s.master.unwrap()),
        "postfix master left after a panic"
    );
    assert!(
        !cleanup::pid_alive(s.sleeper.unwrap()),
        "spawned process left after a panic"
    );
    assert!(!s.dir.unwrap().exists(), "postfix dir left after a panic");
}

#[test]
fn swaks_reports_a_4xx_greeting() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    let _l = Listener::start_with_greeting(
        &t.gw,
        Topology::gw_v6(25),
        "421 4.7.0 please retry over IPv4\r\n",
    )
    .unwrap();
    let r = swaks(&t.sender, v6(STRANGER_SRC), Topology::gw_v6(25), T).unwrap();
    assert_eq!(r.code, Some(21), "{}", r.transcript);
    assert_eq!(
        r.first_reply.as_deref(),
        Some("421 4.7.0 please retry over IPv4")
    );
}

#[test]
fn sender_role_relays_to_the_receiver() {
    if !require_root() {
        return;
    }
    let _g = shared();
    let t = Topology::new().unwrap();
    let rx = Postfix::start_receiver(&t.gw, GW_HOSTNAME, MAIL_DOMAIN).unwrap();
    // A sending MTA in the sender namespace, SMTP on loopback only, relaying
    // mail for the domain to the gateway over IPv6 from the partner source.
    let tx = PostfixInstance::sender("mta.partner.example", "partner.example")
        .set(
            "transport_maps",
            &format!("inline:{{ {MAIL_DOMAIN}=smtp:[{GW_V6}]:25 }}"),
        )
        .set("smtp_bind_address6", &PARTNER_SRC.to_string())
        .start(&t.sender)
        .unwrap();
    let ss = t.sender.run_stdout(&["ss", "-Hltn"]).unwrap();
    assert!(ss.contains("127.0.0.1:25"), "{ss}");
    assert!(!ss.contains("0.0.0.0:25") && !ss.contains("*:25"), "{ss}");
    let mut o = SwaksOptions::new(
        "127.0.0.1".parse().unwrap(),
        SocketAddr::new("127.0.0.1".parse().unwrap(), 25),
        T,
    );
    o.to = format!("relayed@{MAIL_DOMAIN}");
    let r = swaks_with(&t.sender, &o).unwrap();
    assert!(r.success(), "{}", r.transcript);
    let mbox = rx
        .wait_for_messages(1, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\nsender log:\n{}", tx.log()));
    assert!(
        mbox.contains(&format!("[IPv6:{PARTNER_SRC}]")),
        "{mbox}\nsender log:\n{}",
        tx.log()
    );
}
