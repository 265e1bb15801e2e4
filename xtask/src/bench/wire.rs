//! Part 2: a SYN flood on a veth between two namespaces, dropped at the
//! gateway by mx6gate's XDP, by xdp-filter, by a bare XDP_DROP, or by an
//! nftables set at the netdev ingress hook.
//!
//! Generator (DESIGN.md, "Performance facts": what reached useful rates here): a raw-instruction
//! XDP program run through BPF_PROG_TEST_RUN in live-frames mode, from a
//! thread in the sender namespace pinned to CPU 0, that randomises the low
//! 64 bits of each SYN's source and `bpf_redirect`s it into the sender's
//! veth. The gateway's veth runs threaded NAPI, its kthread pinned to CPU 1:
//! everything the gateway does with a packet happens on that core, in that
//! thread, whose CPU time (/proc/PID/schedstat, ns) is the cost measured.
//! Figures per run: packets dropped per second and CPU ns per dropped
//! packet on the receiving core; ratios against nftables.
//!
//! Only documentation addresses: sources random in 2001:db8:ffff::/48 (a
//! random /64 and host part per packet), destination the gateway's
//! 2001:db8:100::1; the allowlist holds two partner prefixes in
//! 2001:db8::/32 besides the random table (a /48 and a /64), so every flood
//! source shares its /32 with partners: the gate cannot stop at its first
//! level, and its /64 probe has a different key every packet.
use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv6Net;
use mx6gate_tests::{
    packets::{tcp_frame, Tcp},
    Netns, Topology,
};

use super::{insns, stats::Stat, sys};

/// Partner prefixes inside the documentation /32 (added to every table).
pub const WIRE_PARTNERS: [&str; 2] = ["2001:db8:1::/48", "2001:db8:2:5::/64"];
/// The flood's source /48 (the generator randomises the other 80 bits).
pub const FLOOD_SRC: &str = "2001:db8:ffff::";

pub const NFT_TABLE: &str = "mx6bench";

pub fn wire_partners() -> Vec<Ipv6Net> {
    WIRE_PARTNERS.iter().map(|p| p.parse().unwrap()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dropper {
    XdpDrop,
    Gate,
    XdpFilter,
    Nft,
}

impl Dropper {
    pub fn name(self) -> &'static str {
        match self {
            Dropper::XdpDrop => "bare XDP_DROP",
            Dropper::Gate => "mx6gate XDP (drop mode)",
            Dropper::XdpFilter => "xdp-filter (allow mode)",
            Dropper::Nft => "nftables set, netdev ingress",
        }
    }
}

#[derive(Clone, Debug)]
pub struct WirePoint {
    pub n: usize,
    pub dropper: Dropper,
    /// Dropped packets per second (Mpps).
    pub mpps: Stat,
    /// Receiving core's CPU time per dropped packet, ns.
    pub ns_per_pkt: Stat,
    /// Share of the run the receiving core was busy, %.
    pub busy: Stat,
    /// Generated packets per second (Mpps).
    pub offered: Stat,
    /// Share of the generated packets the sender's veth could not hand
    /// over (the gateway's 256-frame ring was full), %.
    pub lost: Stat,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    mpps: f64,
    ns_per_pkt: f64,
    busy: f64,
    offered: f64,
    lost: f64,
}

/// The two namespaces, the generator and what the gateway side needs.
pub struct Wire {
    pub topo: Topology,
    gen: OwnedFd,
    frame: Vec<u8>,
}

fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.run_stdout(&["ip", "-o", "link", "show", "dev", ifname])?;
    let s = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC in `{out}`"))?;
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {s}"))
}

/// Threads of the gateway veth's NAPI (threaded mode), by pid.
fn napi_threads(ifname: &str) -> Vec<i32> {
    let want = format!("napi/{ifname}-");
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                if c.trim().starts_with(&want) {
                    v.push(pid);
                }
            }
        }
    }
    v
}

/// Total CPU time of `pids`, ns (first field of /proc/PID/schedstat).
fn cpu_ns(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn ethtool_stat(ns: &Netns, ifname: &str, key: &str) -> Result<u64> {
    let out = ns.run_stdout(&["ethtool", "-S", ifname])?;
    out.lines()
        .find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.trim() == key)
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
        .with_context(|| format!("no {key} in `ethtool -S {ifname}`"))
}

fn nft_counter(ns: &Netns) -> Result<u64> {
    let out = ns.run_stdout(&["nft", "list", "chain", "netdev", NFT_TABLE, "ingress"])?;
    let i = out
        .find("counter packets ")
        .context("no counter in the nft chain")?;
    out[i + 16..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("parsing the nft counter")
}

impl Wire {
    pub fn new() -> Result<Wire> {
        let topo = Topology::new().context("building the sender/gateway namespaces")?;
        let (gw, gw_if) = (&topo.gw, topo.gw_if.clone());
        // NAPI on the gateway's veth even without XDP (for nftables), in
        // threaded mode so its work is one kthread we can pin and time.
        mx6gate_tests::set_gro(gw, &gw_if, true)?;
        gw.run(&[
            "ip",
            "netns",
            "exec",
            gw.name(),
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{gw_if}/threaded"),
        ])
        .context("enabling threaded NAPI on the gateway's veth")?;
        let sender_if = topo.sender_if.clone();
        let sender_ifindex = topo.sender.enter(|| sys::ifindex(&sender_if))?;
        let gen = sys::load_xdp("mx6b_gen", &insns::redirect_gen(sender_ifindex))?;
        let src: std::net::Ipv6Addr = FLOOD_SRC.parse().unwrap();
        let mut frame = tcp_frame(&[], src.octets(), &[], &Tcp::syn(25));
        frame[0..6].copy_from_slice(&mac_of(gw, &gw_if)?);
        frame[6..12].copy_from_slice(&mac_of(&topo.sender, &topo.sender_if)?);
        Ok(Wire { topo, gen, frame })
    }

    /// The gateway namespace, where the nftables set lives.
    pub fn nft_ns(&self) -> &Netns {
        &self.topo.gw
    }

    /// Offer SYNs for `dur`; returns (generated packets, elapsed).
    fn flood(&self, dur: Duration) -> Result<(u64, Duration)> {
        const CHUNK: u32 = 1 << 16;
        let gen = self.gen.as_fd();
        let frame = &self.frame;
        self.topo.sender.enter(|| -> Result<(u64, Duration)> {
            sys::pin_thread(0)?;
            sys::nice_thread(-20)?;
            let t = Instant::now();
            let mut sent = 0u64;
            // Bounded in count as well as time.
            for _ in 0..100_000 {
                if t.elapsed() >= dur {
                    break;
                }
                sys::test_run_live(gen, frame, CHUNK, 64)?;
                sent += u64::from(CHUNK);
            }
            Ok((sent, t.elapsed()))
        })
    }

    fn pin_napi(&self) -> Result<Vec<i32>> {
        let pids = napi_threads(&self.topo.gw_if);
        if pids.is_empty() {
            bail!(
                "no NAPI thread for {} (threaded NAPI off?)",
                self.topo.gw_if
            );
        }
        for p in &pids {
            sys::pin_pid(*p, 1)?;
            // Nothing else on that core may delay it: a late NAPI run
            // overflows the veth's 256-frame ring and loses packets that
            // were never the dropper's work.
            sys::set_fifo(*p, 50)?;
        }
        Ok(pids)
    }

    /// One run with `prog` attached to the gateway's veth (None: nftables).
    fn one(&self, prog: Option<BorrowedFd<'_>>, dur: Duration, small: bool) -> Result<Sample> {
        let gw_if = self.topo.gw_if.clone();
        let link = match prog {
            Some(p) => Some(
                self.topo
                    .gw
                    .enter(|| sys::xdp_link(p, sys::ifindex(&gw_if)?))?,
            ),
            None => None,
        };
        // Let the attach settle.
        std::thread::sleep(Duration::from_millis(50));
        let pids = self.pin_napi()?;
        // nftables drops what the veth hands to the stack: every flood
        // packet is a stranger's SYN to 25, so everything received (checked
        // against the rule's counter where reading it is cheap).
        let stat = if prog.is_some() {
            "rx_queue_0_xdp_drops"
        } else {
            "rx_queue_0_xdp_packets"
        };
        let check_nft = prog.is_none() && small;
        let count = || ethtool_stat(&self.topo.gw, &gw_if, stat);
        let n0 = if check_nft {
            nft_counter(&self.topo.gw)?
        } else {
            0
        };
        let lost = || {
            ethtool_stat(
                &self.topo.sender,
                &self.topo.sender_if,
                "tx_queue_0_xdp_xmit_errors",
            )
        };
        let (c0, l0) = (count()?, lost().unwrap_or(0));
        let cpu0 = cpu_ns(&pids);
        let (sent, el) = self.flood(dur)?;
        // The ring drains within microseconds; give it a moment.
        std::thread::sleep(Duration::from_millis(20));
        let cpu1 = cpu_ns(&pids);
        let (c1, l1) = (count()?, lost().unwrap_or(0));
        drop(link);
        if check_nft {
            let (got, want) = (nft_counter(&self.topo.gw)? - n0, c1 - c0);
            if got.abs_diff(want) > want / 50 + 10 {
                bail!("the nft rule dropped {got} packets but the veth received {want}");
            }
        }
        let dropped = c1.saturating_sub(c0) as f64;
        if dropped < 1.0 {
            bail!("nothing was dropped at the gateway ({sent} packets offered)");
        }
        let secs = el.as_secs_f64();
        let cpu = cpu1.saturating_sub(cpu0) as f64;
        Ok(Sample {
            mpps: dropped / secs / 1e6,
            ns_per_pkt: cpu / dropped,
            busy: 100.0 * cpu / 1e9 / secs,
            offered: sent as f64 / secs / 1e6,
            lost: 100.0 * l1.saturating_sub(l0) as f64 / sent.max(1) as f64,
        })
    }

    /// `runs` interleaved runs of every dropper given.
    pub fn measure(
        &mut self,
        n: usize,
        droppers: &[(Dropper, Option<BorrowedFd<'_>>)],
        runs: usize,
        dur: Duration,
    ) -> Result<Vec<WirePoint>> {
        let mut acc: Vec<Vec<Sample>> = vec![Vec::new(); droppers.len()];
        for _ in 0..runs {
            for (i, (d, fd)) in droppers.iter().enumerate() {
                let r = self.one(*fd, dur, n <= 10_000);
                acc[i].push(r.with_context(|| format!("wire run: {}", d.name()))?);
            }
        }
        Ok(droppers
            .iter()
            .zip(acc)
            .map(|((d, _), a)| {
                let st = |f: fn(&Sample) -> f64| Stat::of(&a.iter().map(f).collect::<Vec<_>>());
                WirePoint {
                    n,
                    dropper: *d,
                    mpps: st(|s| s.mpps),
                    ns_per_pkt: st(|s| s.ns_per_pkt),
                    busy: st(|s| s.busy),
                    offered: st(|s| s.offered),
                    lost: st(|s| s.lost),
                }
            })
            .collect())
    }
}
