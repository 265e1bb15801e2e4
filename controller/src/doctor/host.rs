//! The checks `doctor` runs on this host, in the network namespace it is
//! started in (the gateway's). Every failure to look is itself a finding:
//! doctor never stops half way.
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use mx6gate_common::{Counter, Mode};

use super::{Finding, Severity};
use crate::{
    context::Ctx,
    gate::{AttachRecord, Gate, PinLayout},
    iface, kernel,
    maps::GateMaps,
    observe::attachments,
    store::{today_utc, RefusedKind, Store, StoreRefused},
};

/// The "kernel" finding from the probed requirements: below the floor in
/// plain words (what is missing, what that means, what to run instead).
fn kernel_finding(rel: &str, reqs: &[kernel::Requirement]) -> Finding {
    let missing = kernel::missing(reqs);
    let unknown: Vec<String> = reqs
        .iter()
        .filter_map(|r| match &r.present {
            kernel::Probe::Unknown(why) => Some(format!("{}: {why}", r.what)),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|r| r.what).collect();
        let lacks: Vec<String> = missing
            .iter()
            .map(|r| {
                format!(
                    "{} (in Linux since {}; the gate needs them for {})",
                    r.what, r.since, r.why
                )
            })
            .collect();
        Finding::new(
            "kernel",
            Severity::Fail,
            format!(
                "Linux {rel} is too old for the gate: it lacks {}",
                names.join(", ")
            ),
        )
        .detail(format!(
            "The gate runs inside the kernel, and this one lacks {}. `mx6gate run` refuses to start \
             here and nothing is gated: every IPv6 sender reaches the MTA as it does today.",
            lacks.join("; ")
        ))
        .fix(format!(
            "run Linux {} or later: the stock kernels of {} are new enough",
            kernel::FLOOR,
            kernel::FLOOR_DISTROS
        ))
    } else if !unknown.is_empty() {
        Finding::new(
            "kernel",
            Severity::Warn,
            format!("Linux {rel}: could not probe its BPF features"),
        )
        .detail(unknown.join("; "))
        .fix("run doctor as root")
    } else {
        Finding::new(
            "kernel",
            Severity::Ok,
            format!("Linux {rel}: sk_lookup, BPF links and ring buffers present"),
        )
    }
}

/// The end of a long message (verifier logs end with the reason).
fn tail(s: &str, max: usize) -> String {
    match s.char_indices().rev().nth(max) {
        Some((i, _)) => format!("…{}", &s[i..]),
        None => s.to_string(),
    }
}

/// Partners whose `expires` falls within this many days get a warning.
pub const EXPIRY_WARN_DAYS: i64 = 14;

pub fn run_all(ctx: &Ctx, mode: Mode, daemon: Option<i32>) -> Vec<Finding> {
    let mut out = kernel(ctx);
    let maps = gate(ctx, daemon, &mut out);
    responder(ctx, mode, daemon, maps.as_ref(), &mut out);
    listeners(&ctx.cfg.ports, &mut out);
    let interfaces = protected_interfaces(ctx);
    ipv4(&interfaces, mode != Mode::Monitor, &mut out);
    partners(ctx, maps.as_ref(), &mut out);
    out
}

/// The configured interfaces and any the gate is attached to, by name.
fn protected_interfaces(ctx: &Ctx) -> Vec<String> {
    let layout = PinLayout::new(&ctx.cfg.pin_path);
    let mut names: Vec<String> = attachments(&layout, &ctx.state.path, &ctx.cfg.interfaces)
        .into_iter()
        .map(|a| a.interface)
        .collect();
    names.sort();
    names
}

/// The kernel's features, probed (not read off the version), and whether
/// its verifier takes the gate's programs.
fn kernel(ctx: &Ctx) -> Vec<Finding> {
    let pin_path = &ctx.cfg.pin_path;
    let mut out = Vec::new();
    let reqs = kernel::requirements();
    let found = kernel_finding(&kernel::release(), &reqs);
    let fit = found.severity == Severity::Ok;
    out.push(found);
    if fit {
        out.push(match Gate::verify(&ctx.cfg) {
            Ok(_) => Finding::new(
                "programs",
                Severity::Ok,
                "both programs pass this kernel's verifier",
            ),
            Err(e) => Finding::new(
                "programs",
                Severity::Fail,
                "this kernel's verifier refuses the gate's programs",
            )
            .detail(format!(
                "`mx6gate run` cannot load the gate here, so nothing is gated. The loader said: {}",
                tail(&format!("{e:#}"), 600)
            ))
            .fix("report it with the kernel release and this output; meanwhile run a kernel the project tests (README, Supported kernels)"),
        });
    }
    out.push(
        Finding::new(
            "kernel:features",
            Severity::Info,
            "newer kernel features the gate uses where present",
        )
        .detail(kernel::Optional::probe().describe().join("; ")),
    );
    out.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Finding::new("btf", Severity::Ok, "kernel BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        Finding::new("btf", Severity::Warn, "no kernel BTF (/sys/kernel/btf/vmlinux)")
            .detail("The gate's programs do not need CO-RE today, but bpftool and most BPF tooling work better with it.")
            .fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's are)")
    });
    // The pin path itself may not exist yet: its filesystem is its parent's.
    let probe = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    out.push(match crate::gate::is_bpffs(probe) {
        Ok(true) => Finding::new(
            "bpffs",
            Severity::Ok,
            format!("{} is on a BPF filesystem", probe.display()),
        ),
        Ok(false) => Finding::new(
            "bpffs",
            Severity::Fail,
            format!("{} is not on a BPF filesystem", probe.display()),
        )
        .detail(
            "The gate pins its programs, links and maps there so that they outlive the daemon (restarts \
             leave no gap); without bpffs nothing can be pinned and the gate cannot start.",
        )
        .fix("mount it: `mount -t bpf bpf /sys/fs/bpf` (systemd mounts it at boot), or set pin_path under it"),
        Err(e) => Finding::new(
            "bpffs",
            Severity::Warn,
            format!("could not stat {}: {e}", probe.display()),
        ),
    });
    out
}

/// The gate's pins, links and daemon; returns the maps when loaded.
fn gate(ctx: &Ctx, daemon: Option<i32>, out: &mut Vec<Finding>) -> Option<GateMaps> {
    let cfg = &ctx.cfg;
    let layout = PinLayout::new(&cfg.pin_path);
    let maps = match GateMaps::open_if_loaded(&cfg.pin_path) {
        Ok(Some(m)) => {
            out.push(Finding::new(
                "gate",
                Severity::Ok,
                format!("loaded, pinned at {}", cfg.pin_path.display()),
            ));
            Some(m)
        }
        Ok(None) if daemon.is_some() => {
            out.push(
                Finding::new(
                    "gate",
                    Severity::Fail,
                    format!(
                        "nothing pinned at {} although the daemon runs",
                        cfg.pin_path.display()
                    ),
                )
                .detail(
                    "The pins were removed by hand (or pin_path changed in the file since the daemon started). \
                     The daemon holds the gate's objects and pins them again within a second; commands cannot reach \
                     the gate meanwhile.",
                )
                .fix("run doctor again; if it persists, read the daemon's log, and remove a gate only with `mx6gate detach`"),
            );
            None
        }
        Ok(None) => {
            out.push(
                Finding::new(
                    "gate",
                    Severity::Warn,
                    format!("not loaded (nothing pinned at {})", cfg.pin_path.display()),
                )
                .detail("No IPv6 SYN is looked at: every sender reaches the MTA as before.")
                .fix("start the daemon: `systemctl start mx6gate` or `mx6gate run`"),
            );
            None
        }
        Err(e) => {
            out.push(
                Finding::new("gate", Severity::Fail, format!("the pinned gate cannot be read: {e:#}"))
                    .fix("run doctor as root; if it persists, `mx6gate detach` and start the daemon again"),
            );
            None
        }
    };
    if let Ok(Some(h)) = crate::pinlock::holder(&cfg.pin_path) {
        if daemon.is_none() || h.pid.is_some_and(|p| Some(p) != daemon) {
            out.push(
                Finding::new(
                    "owner",
                    Severity::Fail,
                    format!(
                        "the gate at {} is run by another mx6gate daemon{}",
                        cfg.pin_path.display(),
                        h.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    ),
                )
                .detail("Another config with the same pin_path drives this gate from its own partner store; this config's store does not count.")
                .fix("give each config its own pin_path, or use the other daemon's config"),
            );
        }
    }
    out.push(match daemon {
        Some(pid) => Finding::new("daemon", Severity::Ok, format!("running (pid {pid})")),
        None if maps.is_some() => Finding::new("daemon", Severity::Warn, "not running")
            .detail(
                "The pinned gate keeps applying the policy without it, but the allowlist no longer follows \
                 the partner store, nothing reports who is turned away, and defer mode has no responder.",
            )
            .fix("`systemctl start mx6gate` (it adopts the pinned gate without a gap)"),
        None => Finding::new("daemon", Severity::Info, "not running"),
    });
    maps.as_ref()?;
    let record = AttachRecord::load(&ctx.state.path);
    let attached = layout.attached_interfaces();
    for name in protected_interfaces(ctx) {
        let check = format!("attach:{name}");
        if crate::gate::ifindex(&name).is_none() {
            out.push(
                Finding::new(
                    &check,
                    Severity::Fail,
                    format!("interface {name} does not exist"),
                )
                .fix(format!("fix `interfaces` in {}", ctx.config_path.display())),
            );
            continue;
        }
        if !attached.contains(&name) {
            out.push(
                Finding::new(&check, Severity::Fail, format!("{name} is configured but the gate is not attached to it"))
                    .detail("IPv6 SYNs arriving on it are not looked at by XDP (sk_lookup still judges connections).")
                    .fix("restart the daemon (`systemctl restart mx6gate`) and read its log for why attaching failed"),
            );
            continue;
        }
        match record.interfaces.get(&name).map(|r| r.mode.as_str()) {
            Some("generic") => out.push(
                Finding::new(&check, Severity::Warn, format!("{name}: XDP in generic (skb) mode"))
                    .detail(
                        "The policy holds, but it runs after the kernel has built a socket buffer for each packet: \
                         a SYN flood costs several times more CPU than in native mode.",
                    )
                    .fix("use a NIC driver with native XDP (most 10G+ drivers, virtio-net, veth), then restart the daemon"),
            ),
            Some(m) => out.push(Finding::new(&check, Severity::Ok, format!("{name}: XDP in {m} mode"))),
            None => out.push(Finding::new(&check, Severity::Ok, format!("{name}: attached"))),
        }
    }
    if !layout.sk_lookup_link().exists() {
        out.push(
            Finding::new("sk_lookup", Severity::Fail, "the sk_lookup program is not attached")
                .detail("Defer mode cannot steer connections to the responder, and what XDP could not parse is not judged.")
                .fix("restart the daemon (`systemctl restart mx6gate`)"),
        );
    } else {
        out.push(Finding::new(
            "sk_lookup",
            Severity::Ok,
            "sk_lookup attached",
        ));
    }
    maps
}

/// Defer mode needs the responder: connect to it and read its greeting,
/// as a sender would.
fn responder(
    ctx: &Ctx,
    mode: Mode,
    daemon: Option<i32>,
    maps: Option<&GateMaps>,
    out: &mut Vec<Finding>,
) {
    let r = &ctx.cfg.responder;
    if mode != Mode::Defer {
        out.push(Finding::new(
            "responder",
            Severity::Ok,
            format!("not used in {} mode", mode.as_str()),
        ));
        return;
    }
    let down = r.down_policy.consequence();
    let greeting = daemon
        .ok_or_else(|| "the daemon is not running".to_string())
        .and_then(|_| read_greeting(SocketAddr::V6(r.listen)));
    match greeting {
        Ok(line) if line.starts_with(&r.code.to_string()) => out.push(Finding::new(
            "responder",
            Severity::Ok,
            format!("answers on {}: {line}", r.listen),
        )),
        Ok(line) => out.push(
            Finding::new(
                "responder",
                Severity::Warn,
                format!("something else answers on {}: {line:?}", r.listen),
            )
            .fix("check `[responder] listen` for a clash with another service"),
        ),
        Err(e) => out.push(
            Finding::new(
                "responder",
                Severity::Fail,
                format!("no responder on {}: {e}", r.listen),
            )
            .detail(format!(
                "The gate is in defer mode; while the responder is down, {down}."
            ))
            .fix("start the daemon (`systemctl start mx6gate`) and check its log"),
        ),
    }
    if let Some(maps) = maps {
        if let Ok(c) = maps.sk_counters() {
            let n: u64 = c
                .iter()
                .filter(|(c, _)| {
                    matches!(
                        c,
                        Counter::SkResponderDownPassed | Counter::SkResponderDownRefused
                    )
                })
                .map(|(_, n)| n)
                .sum();
            if n > 0 {
                out.push(
                    Finding::new(
                        "responder-gaps",
                        Severity::Warn,
                        format!("{n} deferred connection(s) found no responder since the gate was loaded"),
                    )
                    .detail(format!("Each time, {down}."))
                    .fix("keep the daemon running (systemd restarts it on failure); read its log around the gaps"),
                );
            }
        }
    }
}

fn read_greeting(addr: SocketAddr) -> Result<String, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    r.read_line(&mut line)
        .map_err(|e| format!("reading the greeting: {e}"))?;
    let _ = (&s).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}

/// A listening TCP socket from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// Parse /proc/net/tcp or tcp6 text: the sockets in LISTEN state.
pub fn parse_proc_listeners(text: &str, v6: bool) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((a, p)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(p, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word of the address as the host
        // reads it: native byte order.
        let words: Option<Vec<[u8; 4]>> = (0..a.len() / 8)
            .map(|i| {
                u32::from_str_radix(&a[i * 8..i * 8 + 8], 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect();
        let Some(words) = words else { continue };
        let addr = match (v6, words.len()) {
            (false, 1) => std::net::IpAddr::V4(Ipv4Addr::from(words[0])),
            (true, 4) => {
                let mut b = [0u8; 16];
                for (i, w) in words.iter().enumerate() {
                    b[i * 4..i * 4 + 4].copy_from_slice(w);
                }
                std::net::IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        out.push(Listener { addr, port });
    }
    out
}

/// Senders the gate turns away retry over IPv4, and partners come over
/// IPv6: each protected port needs a listener for both.
fn listeners(ports: &[u16], out: &mut Vec<Finding>) {
    let read = |p: &str, v6| std::fs::read_to_string(p).map(|t| parse_proc_listeners(&t, v6));
    let (v4, v6) = match (read("/proc/net/tcp", false), read("/proc/net/tcp6", true)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            out.push(Finding::new(
                "listeners",
                Severity::Warn,
                format!("could not read /proc/net/tcp*: {e}"),
            ));
            return;
        }
    };
    for &port in ports {
        let check = format!("listen:{port}");
        let on4 = v4.iter().any(|l| l.port == port);
        let wild6 = v6
            .iter()
            .any(|l| l.port == port && l.addr == std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let on6 = v6.iter().any(|l| l.port == port);
        // A wildcard IPv6 socket takes IPv4 too unless it is v6-only, which
        // /proc does not show: try it.
        let dual = !on4
            && wild6
            && TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(1),
            )
            .is_ok();
        match (on4 || dual, on6) {
            (true, true) => out.push(Finding::new(
                &check,
                Severity::Ok,
                format!("port {port}: listening on IPv4 and IPv6"),
            )),
            (false, on6) => out.push(
                Finding::new(
                    &check,
                    Severity::Fail,
                    if on6 {
                        format!("port {port}: nothing listens on IPv4")
                    } else {
                        format!("port {port}: nothing listens, on IPv4 or IPv6")
                    },
                )
                    .detail(
                        "Senders the gate turns away over IPv6 retry over IPv4 — and would find nothing here. \
                         (This looks at the namespace doctor runs in: run it where the MTA runs.)",
                    )
                    .fix(format!(
                        "make the MTA listen on IPv4 port {port} (Postfix: inet_protocols = all; Exim: local_interfaces)"
                    )),
            ),
            (true, false) => out.push(
                Finding::new(&check, Severity::Warn, format!("port {port}: nothing listens on IPv6"))
                    .detail("Partners' IPv6 connections are refused by the kernel; they fall back to IPv4 themselves.")
                    .fix(format!("make the MTA listen on IPv6 port {port} too, or drop the AAAA records")),
            ),
        }
    }
}

fn ipv4(interfaces: &[String], enforcing: bool, out: &mut Vec<Finding>) {
    let addrs = match iface::ipv4_addresses() {
        Ok(a) => a,
        Err(e) => {
            out.push(Finding::new(
                "ipv4",
                Severity::Warn,
                format!("could not list addresses: {e:#}"),
            ));
            return;
        }
    };
    if interfaces.is_empty() {
        out.push(
            Finding::new("interfaces", Severity::Warn, "no interface is configured")
                .fix("set `interfaces = [\"eth0\"]` in the config (or `mx6gate run --iface eth0`)"),
        );
    }
    let missing = iface::without_ipv4(interfaces, &addrs);
    for name in interfaces {
        let check = format!("ipv4:{name}");
        if missing.contains(name) {
            out.push(
                Finding::new(
                    &check,
                    if enforcing { Severity::Fail } else { Severity::Warn },
                    format!("{name} has no IPv4 address a sender could reach"),
                )
                .detail(
                    "Deferring IPv6 only helps when the sender can retry over IPv4. With no IPv4 here, a \
                     non-partner's mail waits in its queue and bounces after days unless another MX takes it.",
                )
                .fix(format!(
                    "give {name} an IPv4 address (and publish it in the MX host's A record), or keep `mx6gate mode monitor`"
                )),
            );
            continue;
        }
        let v: Vec<Ipv4Addr> = addrs.get(name).cloned().unwrap_or_default();
        let public: Vec<String> = v
            .iter()
            .filter(|a| iface::reach(**a) == iface::Reach::Public)
            .map(ToString::to_string)
            .collect();
        if public.is_empty() {
            let list: Vec<String> = v.iter().map(ToString::to_string).collect();
            out.push(
                Finding::new(&check, Severity::Info, format!("{name}: private IPv4 only ({})", list.join(", ")))
                    .detail("Fine behind NAT or a load balancer that forwards port 25 from the public address in the MX's A record."),
            );
        } else {
            out.push(Finding::new(
                &check,
                Severity::Ok,
                format!("{name}: IPv4 {}", public.join(", ")),
            ));
        }
    }
}

fn partners(ctx: &Ctx, maps: Option<&GateMaps>, out: &mut Vec<Finding>) {
    for w in ctx.cfg.warnings() {
        out.push(Finding::new("ports", Severity::Warn, w));
    }
    let store = match Store::load(&ctx.cfg.partners_dir) {
        Ok(s) => s,
        Err(e)
            if StoreRefused::of(&e).is_some_and(|r| r.kind == RefusedKind::Missing)
                && maps.is_none_or(|m| crate::allowlist::is_empty(m).unwrap_or(false)) =>
        {
            out.push(
                Finding::new("partners", Severity::Warn, format!("{e:#}"))
                    .detail("Harmless in monitor mode; `mx6gate run` in an enforcing mode refuses to start without it, since it would turn every partner away.")
                    .fix(format!("`mkdir -p {}`, then add partners", ctx.cfg.partners_dir.display())),
            );
            return;
        }
        Err(e) => {
            out.push(
                Finding::new("partners", Severity::Fail, format!("the partner store is refused: {e:#}"))
                    .detail("The daemon keeps the last good allowlist, but no change to the store takes effect.")
                    .fix("fix what is named above (`mx6gate status` and `mx6gate partner list` show it too)"),
            );
            return;
        }
    };
    for s in &store.skipped {
        out.push(Finding::new("partners", Severity::Warn, s.clone()));
    }
    let today = today_utc();
    let mut soon = Vec::new();
    let mut expired = Vec::new();
    for (name, p) in &store.partners {
        if let Some(d) = p.expires {
            let days = (d - today).num_days();
            if days < 0 {
                expired.push(format!("{name} ({d})"));
            } else if days <= EXPIRY_WARN_DAYS {
                soon.push(format!("{name} on {d}"));
            }
        }
    }
    let active = store.active_prefixes(today).len();
    out.push(Finding::new(
        "partners",
        Severity::Ok,
        format!(
            "{} partner(s), {active} active prefix(es)",
            store.partners.len()
        ),
    ));
    if !soon.is_empty() {
        out.push(
            Finding::new(
                "expiry",
                Severity::Warn,
                format!(
                    "expiring within {EXPIRY_WARN_DAYS} days: {}",
                    soon.join(", ")
                ),
            )
            .detail("After that day their IPv6 mail is turned away like anyone else's.")
            .fix("extend them if still wanted: `mx6gate partner add NAME --expires YYYY-MM-DD`"),
        );
    }
    if !expired.is_empty() {
        out.push(
            Finding::new("expired", Severity::Info, format!("expired, no longer allowed: {}", expired.join(", ")))
                .detail("Their prefixes stay in the store but out of the allowlist; remove them or extend them."),
        );
    }
    if let Some(maps) = maps {
        match crate::allowlist::entries(maps) {
            Ok(e) if store.files == 0 && !e.is_empty() => out.push(
                Finding::new(
                    "partners",
                    Severity::Fail,
                    format!(
                        "{} holds no partner file, but the gate allows {} prefix(es)",
                        ctx.cfg.partners_dir.display(),
                        e.len()
                    ),
                )
                .detail("Taken as a vanished store (an unmounted volume, a directory swap midway): the daemon keeps the allowlist.")
                .fix(format!(
                    "restore the files; to mean no partners, leave an empty file: `touch {}/none.toml`",
                    ctx.cfg.partners_dir.display()
                )),
            ),
            Ok(e) if e.len() == active => {}
            Ok(e) => out.push(
                Finding::new(
                    "allowlist",
                    Severity::Warn,
                    format!("the gate holds {} prefix(es), the store {active}", e.len()),
                )
                .detail("The running allowlist does not follow the store: a command was interrupted, the daemon is down or its sync failed.")
                .fix("`mx6gate sync` brings them in step; then check the daemon's log"),
            ),
            Err(e) => out.push(Finding::new("allowlist", Severity::Warn, format!("could not read the allowlist: {e:#}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listeners() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:0019 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0\n";
        let l = parse_proc_listeners(tcp, false);
        assert_eq!(
            l,
            vec![
                Listener {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 25
                },
                Listener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 3306
                },
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:0019 00000000000000000000000000000000:0000 0A 0\n\
   1: 00000000000000000000000001000000:28D5 00000000000000000000000000000000:0000 0A 0\n\
   2: B80D0120000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 0\n";
        let l = parse_proc_listeners(tcp6, true);
        assert_eq!(
            l[0],
            Listener {
                addr: "::".parse().unwrap(),
                port: 25
            }
        );
        assert_eq!(
            l[1],
            Listener {
                addr: "::1".parse().unwrap(),
                port: 10453
            }
        );
        assert_eq!(
            l[2],
            Listener {
                addr: "2001:db8::1".parse().unwrap(),
                port: 25
            }
        );
    }

    #[test]
    fn own_listener_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert!(parse_proc_listeners(&text, false)
            .iter()
            .any(|x| x.port == port));
    }

    /// A kernel below the floor (Ubuntu 20.04's 5.4 lacks these three; no
    /// such kernel boots in the matrix, so the wording is held here).
    #[test]
    fn kernel_below_the_floor_in_plain_words() {
        let mut reqs = kernel::requirements_with(|what| match what {
            "XDP programs" => kernel::Probe::Yes,
            _ => kernel::Probe::No,
        });
        // A ring buffer probe that could not run is not held against it.
        reqs[2].present = kernel::Probe::Unknown("EPERM".into());
        let f = kernel_finding("5.4.0-150-generic", &reqs);
        assert_eq!(f.severity, Severity::Fail);
        assert_eq!(
            f.summary,
            "Linux 5.4.0-150-generic is too old for the gate: it lacks sk_lookup programs, \
             BPF links for XDP and sk_lookup, and updating them in place"
        );
        assert!(
            f.detail.contains("sk_lookup programs (in Linux since 5.9;"),
            "{}",
            f.detail
        );
        assert!(f.detail.contains("nothing is gated"), "{}", f.detail);
        assert!(!f.detail.contains("ring buffers"), "{}", f.detail);
        let fix = f.fix.unwrap();
        assert!(
            fix.contains("Linux 5.10 or later") && fix.contains("Debian 11"),
            "{fix}"
        );

        let unknown = kernel::requirements_with(|_| kernel::Probe::Unknown("EPERM".into()));
        let f = kernel_finding("6.1.0", &unknown);
        assert_eq!(f.severity, Severity::Warn);
        assert_eq!(f.fix.as_deref(), Some("run doctor as root"));

        let fine = kernel::requirements_with(|_| kernel::Probe::Yes);
        assert_eq!(kernel_finding("6.1.0", &fine).severity, Severity::Ok);
    }
}
