//! A real sending MTA behind the gate: Postfix in the sender namespace
//! delivers to a domain whose MX host has both an IPv6 and an IPv4 address
//! of the gateway (served by dnsmasq), preferring IPv6. When the gate turns
//! its IPv6 connection away, the message must still arrive — over IPv4 —
//! and once the sender's prefix is a partner, over IPv6.
use std::{net::IpAddr, time::Duration};

use mx6gate_tests::{
    dns::Dnsmasq, gate::GateUnderTest, require_root, swaks_with, xdp_pass::attach_xdp_pass,
    Postfix, PostfixInstance, SwaksOptions, Topology, GW_HOSTNAME, GW_V4, GW_V6, MAIL_DOMAIN,
    SENDER_V4, STRANGER_SRC,
};

struct World {
    topo: Topology,
    _dns: Dnsmasq,
    sender: Postfix,
    receiver: Postfix,
    _pass: mx6gate_tests::xdp_pass::XdpPass,
}

fn world() -> World {
    let topo = Topology::new().unwrap();
    let pass = attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let receiver = Postfix::start_receiver(&topo.gw, GW_HOSTNAME, MAIL_DOMAIN).unwrap();
    let dns = Dnsmasq::start(
        &topo.sender,
        &[
            &format!("mx-host={MAIL_DOMAIN},{GW_HOSTNAME},10"),
            &format!("host-record={GW_HOSTNAME},{GW_V6},{GW_V4}"),
        ],
    )
    .unwrap();
    let mut inst = PostfixInstance::sender("mta.sender.example", "sender.example")
        .set("smtp_bind_address6", &STRANGER_SRC.to_string())
        .set("smtp_bind_address", &SENDER_V4.to_string());
    inst.resolv_conf = Some(dns.resolv_conf.clone());
    let sender = inst.start(&topo.sender).unwrap();
    World {
        topo,
        _dns: dns,
        sender,
        receiver,
        _pass: pass,
    }
}

/// Hand a message to the sending Postfix (its SMTP listener on loopback).
fn submit(w: &World, subject: &str) {
    let mut o = SwaksOptions::new(
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        "127.0.0.1:25".parse::<std::net::SocketAddr>().unwrap(),
        Duration::from_secs(5),
    );
    o.to = format!("postmaster@{MAIL_DOMAIN}");
    o.headers = vec![format!("Subject: {subject}")];
    let r = swaks_with(&w.topo.sender, &o).unwrap();
    assert!(
        r.success(),
        "the sending Postfix must accept the message:\n{}",
        r.transcript
    );
}

/// The message with `subject` in the receiver's mailbox, waiting for it.
fn delivered(w: &World, n: usize, subject: &str) -> String {
    let mbox = w
        .receiver
        .wait_for_messages(n, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nsender log:\n{}", w.sender.log()));
    mx6gate_tests::postfix::split_mbox(&mbox)
        .into_iter()
        .find(|m| m.contains(&format!("Subject: {subject}")))
        .unwrap_or_else(|| panic!("no message {subject:?} in\n{mbox}"))
}

fn received_from_ipv4(msg: &str) -> bool {
    msg.contains(&format!("[{SENDER_V4}]"))
}

fn received_from_ipv6(msg: &str) -> bool {
    msg.contains(&format!("[IPv6:{STRANGER_SRC}]"))
}

/// The story both modes tell: a stranger's mail, turned away on IPv6 (the
/// sender's log shows `turned_away`), arrives over IPv4; once the sender is
/// a partner, the next message arrives over IPv6. Returns the running gate.
fn ipv4_fallback_then_partner_ipv6(
    w: &World,
    mode: &str,
    extra: &str,
    turned_away: &str,
) -> GateUnderTest {
    let mut gate = GateUnderTest::new(&w.topo.gw, &w.topo.gw_if, mode, extra).unwrap();
    gate.start().unwrap();

    submit(w, "stranger");
    let msg = delivered(w, 1, "stranger");
    assert!(
        received_from_ipv4(&msg),
        "{mode}: turned away on IPv6, delivered over IPv4:\n{msg}"
    );
    let log = w.sender.log();
    assert!(
        log.contains(turned_away),
        "{mode}: the sender tried IPv6 first and met {turned_away:?}:\n{log}"
    );

    gate.ok(&[
        "partner",
        "add",
        "sender-example",
        &format!("{STRANGER_SRC}/128"),
    ])
    .unwrap();
    submit(w, "partner");
    let msg = delivered(w, 2, "partner");
    assert!(
        received_from_ipv6(&msg),
        "{mode}: a partner now, delivered over IPv6:\n{msg}"
    );
    gate
}

#[test]
fn reset_mode_sender_falls_back_to_ipv4_then_partner_uses_ipv6() {
    if !require_root() {
        return;
    }
    let w = world();
    ipv4_fallback_then_partner_ipv6(
        &w,
        "reset",
        "",
        &format!("connect to {GW_HOSTNAME}[{GW_V6}]:25: Connection refused"),
    );
}

#[test]
fn defer_mode_421_sends_the_mail_over_ipv4_then_partner_uses_ipv6() {
    if !require_root() {
        return;
    }
    let w = world();
    let mut gate = ipv4_fallback_then_partner_ipv6(
        &w,
        "defer",
        &format!("[responder]\nlisten = \"[::1]:2528\"\nhostname = \"{GW_HOSTNAME}\"\n"),
        &format!("host {GW_HOSTNAME}[{GW_V6}] refused to talk to me: 421 4.7.0 {GW_HOSTNAME}"),
    );

    // Exactly one deferral, counted by the kernel and by the responder
    // (its report is logged when the daemon stops).
    let status = gate.ok(&["status"]).unwrap();
    let deferred = status
        .lines()
        .skip_while(|l| !l.starts_with("sk_lookup ("))
        .find(|l| l.trim_start().starts_with("deferred"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(deferred, "1", "{status}");
    gate.stop().unwrap();
    let daemon_log = gate.log();
    let report: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains("responder deferred IPv6 SMTP source"))
        .collect();
    assert_eq!(report.len(), 1, "{daemon_log}");
    assert!(
        report[0].contains("2001:db8:2::/64") && report[0].contains("connections=1"),
        "{}",
        report[0]
    );
}
