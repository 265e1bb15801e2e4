//! `cargo xtask lab`: the gate in front of a real Postfix, walked through
//! its modes with a real SMTP client (swaks) from a partner IPv6 address, a
//! stranger IPv6 address (twice in defer mode: the banner, then the reset)
//! and IPv4. Everything lives in two network
//! namespaces with documentation addresses; nothing touches the host's
//! interfaces.
use std::{net::IpAddr, time::Duration};

use anyhow::{bail, Result};
use mx6gate_tests::{
    gate::GateUnderTest, swaks, xdp_pass::attach_xdp_pass, Postfix, Topology, GW_HOSTNAME,
    MAIL_DOMAIN, PARTNER_NET, PARTNER_SRC, SENDER_V4, STRANGER_SRC,
};

const MODES: [&str; 4] = ["monitor", "defer", "reset", "drop"];

pub fn lab(keep: bool) -> Result<()> {
    let bin = crate::build_all()?;
    std::env::set_var("MX6GATE_BIN", &bin);
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, XDP)");
    }
    println!("== building the lab: sender and gateway namespaces, one veth pair");
    let topo = Topology::new()?;
    // Lets reset mode's XDP_TX RSTs reach the sender on veth (see xdp_pass.rs).
    let _pass = attach_xdp_pass(&topo.sender, &topo.sender_if)?;
    let postfix = Postfix::start_receiver(&topo.gw, GW_HOSTNAME, MAIL_DOMAIN)?;
    println!("   Postfix listening on port 25 in {}", topo.gw.name());
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "monitor",
        &format!("[responder]\nhostname = \"{GW_HOSTNAME}\"\n"),
    )?;
    print!(
        "$ mx6gate partner add lab-partner {PARTNER_NET}\n{}",
        gate.ok(&[
            "partner",
            "add",
            "lab-partner",
            PARTNER_NET,
            "--note",
            "the lab's trusted sender"
        ])?
    );
    gate.start()?;
    println!("$ mx6gate run   (XDP attached to {})", topo.gw_if);

    let sources: [(&str, IpAddr, std::net::SocketAddr); 3] = [
        ("partner IPv6", IpAddr::V6(PARTNER_SRC), Topology::gw_v6(25)),
        (
            "stranger IPv6",
            IpAddr::V6(STRANGER_SRC),
            Topology::gw_v6(25),
        ),
        ("IPv4", IpAddr::V4(SENDER_V4), Topology::gw_v4(25)),
    ];
    for mode in MODES {
        print!("\n$ mx6gate mode {mode}\n{}", gate.ok(&["mode", mode])?);
        for (label, src, dst) in &sources {
            let r = swaks(&topo.sender, *src, *dst, Duration::from_secs(3))?;
            println!("   {label:<14} {src:<16} → {dst:<22} {}", outcome(&r));
        }
        if mode == "defer" {
            // Explain once, then reset: the stranger's next attempt.
            let (src, dst) = (IpAddr::V6(STRANGER_SRC), Topology::gw_v6(25));
            let r = swaks(&topo.sender, src, dst, Duration::from_secs(3))?;
            println!(
                "   {:<14} {src:<16} → {dst:<22} {}",
                "stranger again",
                outcome(&r)
            );
            print!(
                "$ mx6gate check {STRANGER_SRC}\n{}",
                gate.ok(&["check", &STRANGER_SRC.to_string()])?
            );
        }
    }
    print!("\n$ mx6gate status\n{}", gate.ok(&["status"])?);
    // Who was turned away, and how: what an operator reads before enforcing.
    print!(
        "\n$ mx6gate top --by 64 --suggest\n{}",
        gate.ok(&["top", "--by", "64", "--suggest"])?
    );
    print!(
        "\n$ mx6gate partner list\n{}",
        gate.ok(&["partner", "list"])?
    );
    println!(
        "\nmessages delivered to Postfix: {}",
        postfix.message_count()?
    );

    if keep {
        println!(
            "\nThe lab stays up. Enter it with:\n  nsenter --net=/var/run/netns/{gw}      # the gateway (mx6gate, Postfix)\n  nsenter --net=/var/run/netns/{s}      # the sender (swaks --local-interface {STRANGER_SRC} --server {gw6} …)\n  {bin} --config {cfg} status\nRemove it with:\n  {bin} --config {cfg} detach; ip netns del {gw}; ip netns del {s}",
            gw = topo.gw.name(),
            s = topo.sender.name(),
            gw6 = mx6gate_tests::GW_V6,
            bin = bin.display(),
            cfg = gate.config.display(),
        );
        // Leak on purpose: their Drop impls would tear the lab down.
        std::mem::forget(postfix);
        std::mem::forget(gate);
        std::mem::forget(topo);
        std::mem::forget(_pass);
        return Ok(());
    }
    println!("\n== cleaning up");
    Ok(())
}

/// One line for what an SMTP client got.
fn outcome(r: &mx6gate_tests::SwaksResult) -> String {
    let t = &r.transcript;
    if let Some(first) = &r.first_reply {
        let delivered = if r.success() {
            " (message delivered)"
        } else {
            ""
        };
        return format!("got \"{}\"{delivered}", first.trim());
    }
    if t.contains("Connection refused") {
        "connection refused (TCP RST) → falls back to IPv4 at once".into()
    } else if t.to_lowercase().contains("timeout") || t.contains("timed out") {
        "timed out (SYN dropped) → falls back after its TCP timeout".into()
    } else {
        format!("no banner (swaks exit {:?})", r.code)
    }
}
