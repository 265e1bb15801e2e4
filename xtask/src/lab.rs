//! `cargo xtask lab`: the gate in front of a real Postfix, walked through
//! its modes with a real SMTP client (swaks) from a partner IPv6 address, a
//! stranger IPv6 address (twice in defer mode: the banner, then the reset)
//! and IPv4. Everything lives in two network
//! namespaces with documentation addresses; nothing touches the host's
//! interfaces.
//!
//! The lab checks its own story: the partner reaches the MTA over IPv6 in
//! every mode, IPv4 always, and the stranger gets what the mode promises
//! (the MTA in monitor, the 421 in defer, a RST in reset, nothing in
//! drop). Anything else — swaks without IPv6 support on a fresh machine,
//! a gate that does not enforce — is listed at the end and the lab exits
//! non-zero: a demo that silently shows nothing is no demo.
use std::{net::IpAddr, time::Duration};

use anyhow::{bail, Result};
use mx6gate_tests::{
    gate::GateUnderTest, swaks, xdp_pass::attach_xdp_pass, Postfix, Topology, GW_HOSTNAME,
    MAIL_DOMAIN, PARTNER_NET, PARTNER_SRC, SENDER_V4, STRANGER_SRC,
};

const MODES: [&str; 4] = ["monitor", "defer", "reset", "drop"];

/// Who is sending, as the lab's story tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Partner,
    Stranger,
    Ipv4,
}

/// What the mode promises `who`, checked against what swaks got: None if
/// it holds, else what went wrong (with the fix, when it is known).
fn judge(mode: &str, who: Who, r: &mx6gate_tests::SwaksResult) -> Option<String> {
    let t = &r.transcript;
    if t.contains("IPv6 not available") {
        return Some(
            "swaks has no IPv6 support (it needs the Perl module IO::Socket::INET6): install libio-socket-inet6-perl, or run scripts/install-deps.sh".into(),
        );
    }
    let first = r.first_reply.as_deref().unwrap_or("");
    let (want, ok) = match (who, mode) {
        (Who::Partner | Who::Ipv4, _) | (Who::Stranger, "monitor") => (
            "the MTA's 220 and the message delivered",
            first.starts_with("220") && r.success(),
        ),
        (Who::Stranger, "defer") => ("the responder's 421", first.starts_with("421")),
        (Who::Stranger, "reset") => (
            "connection refused (a TCP RST)",
            r.first_reply.is_none() && t.contains("Connection refused"),
        ),
        (Who::Stranger, "drop") => (
            "no answer (the SYN dropped)",
            r.first_reply.is_none()
                && (t.to_lowercase().contains("timeout") || t.contains("timed out")),
        ),
        (Who::Stranger, other) => return Some(format!("unknown mode {other}")),
    };
    (!ok).then(|| format!("expected {want}, got: {}", outcome(r)))
}

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
    let mut problems: Vec<String> = Vec::new();
    let mut delivered_expected = 0;
    for mode in MODES {
        print!("\n$ mx6gate mode {mode}\n{}", gate.ok(&["mode", mode])?);
        for ((label, src, dst), who) in sources.iter().zip([Who::Partner, Who::Stranger, Who::Ipv4])
        {
            let r = swaks(&topo.sender, *src, *dst, Duration::from_secs(3))?;
            let verdict = judge(mode, who, &r);
            println!(
                "   {label:<14} {src:<16} → {dst:<22} {}{}",
                outcome(&r),
                if verdict.is_some() {
                    "   ✗ NOT WHAT THE MODE PROMISES"
                } else {
                    ""
                }
            );
            if let Some(v) = verdict {
                problems.push(format!("mode {mode}, {label} ({src}): {v}"));
            }
            if who != Who::Stranger || mode == "monitor" {
                delivered_expected += 1;
            }
        }
        if mode == "defer" {
            // Explain once, then reset: the stranger's next attempt.
            let (src, dst) = (IpAddr::V6(STRANGER_SRC), Topology::gw_v6(25));
            let r = swaks(&topo.sender, src, dst, Duration::from_secs(3))?;
            // Explained within the window: what reset mode promises.
            let verdict = judge("reset", Who::Stranger, &r);
            println!(
                "   {:<14} {src:<16} → {dst:<22} {}{}",
                "stranger again",
                outcome(&r),
                if verdict.is_some() {
                    "   ✗ NOT WHAT THE MODE PROMISES"
                } else {
                    ""
                }
            );
            if let Some(v) = verdict {
                problems.push(format!(
                    "mode defer, the stranger's second attempt (explained: the reset is due): {v}"
                ));
            }
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
    let delivered = postfix
        .wait_for_messages(delivered_expected, Duration::from_secs(10))
        .map(|_| postfix.message_count().unwrap_or(0))
        .unwrap_or_else(|_| postfix.message_count().unwrap_or(0));
    println!("\nmessages delivered to Postfix: {delivered} (the story says {delivered_expected})");
    if delivered != delivered_expected {
        problems.push(format!(
            "Postfix received {delivered} messages, the partner, IPv4 and the monitored stranger should have delivered {delivered_expected}"
        ));
    }

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
        return verdict(&problems);
    }
    println!("\n== cleaning up");
    verdict(&problems)
}

/// The lab's last word: all as promised, or every broken promise.
fn verdict(problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        println!("\nlab: every sender got what its mode promises");
        return Ok(());
    }
    eprintln!("\nlab FAILED: {} broken promise(s):", problems.len());
    for p in problems {
        eprintln!("  - {p}");
    }
    bail!("the lab did not show what the gate promises (see above)")
}

/// One line for what an SMTP client got.
fn outcome(r: &mx6gate_tests::SwaksResult) -> String {
    let t = &r.transcript;
    if t.contains("IPv6 not available") {
        return "swaks has no IPv6 support (IO::Socket::INET6 missing)".into();
    }
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
        match r.code {
            Some(c) => format!("no banner (swaks exit {c})"),
            None => "no banner (swaks killed)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use mx6gate_tests::SwaksResult;

    use super::*;

    fn r(code: i32, first: Option<&str>, transcript: &str) -> SwaksResult {
        SwaksResult {
            code: Some(code),
            transcript: transcript.into(),
            first_reply: first.map(String::from),
        }
    }

    #[test]
    fn what_each_mode_promises() {
        let delivered = r(0, Some("220 mx ESMTP"), "<-  220 mx ESMTP\n");
        let deferred = r(
            21,
            Some("421 4.7.0 retry over IPv4"),
            "<** 421 4.7.0 retry over IPv4\n",
        );
        let refused = r(
            2,
            None,
            "=== Trying ...\n*** Error connecting: Connection refused\n",
        );
        let dropped = r(2, None, "*** Error connecting: timeout\n");
        for mode in MODES {
            assert_eq!(judge(mode, Who::Partner, &delivered), None, "{mode}");
            assert_eq!(judge(mode, Who::Ipv4, &delivered), None, "{mode}");
            assert!(judge(mode, Who::Partner, &deferred).is_some(), "{mode}");
        }
        assert_eq!(judge("monitor", Who::Stranger, &delivered), None);
        assert_eq!(judge("defer", Who::Stranger, &deferred), None);
        assert_eq!(judge("reset", Who::Stranger, &refused), None);
        assert_eq!(judge("drop", Who::Stranger, &dropped), None);
        // A gate that lets the stranger through while enforcing.
        for mode in ["defer", "reset", "drop"] {
            assert!(judge(mode, Who::Stranger, &delivered).is_some(), "{mode}");
        }
        assert!(judge("drop", Who::Stranger, &refused).is_some());
    }

    #[test]
    fn swaks_without_ipv6_is_named_with_its_fix() {
        // What Debian's swaks prints without IO::Socket::INET6 (exit 10).
        let no_v6 = r(
            10,
            None,
            "*** IPv6 not available: requires IO::Socket::INET6\n",
        );
        for who in [Who::Partner, Who::Stranger] {
            let v = judge("drop", who, &no_v6).expect("a problem");
            assert!(v.contains("libio-socket-inet6-perl"), "{v}");
        }
    }
}
