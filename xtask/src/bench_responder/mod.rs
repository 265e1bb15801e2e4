//! `cargo xtask bench-responder [--quick]`: the defer-mode reject-banner
//! responder against the real Postfix — smtpd, and postscreen, the Postfix
//! program that does the responder's job — side by side, in the same run,
//! with the same client code and the same topology; and the responder on
//! one thread against the responder on its own multi-thread runtime.
//!
//! The namespace lab (`Topology`): the gateway namespace runs two real
//! Postfix instances — smtpd on `[GW_V6]:25`, postscreen on
//! `[POSTSCREEN_V6]:25` with the clients' network denylisted — and the real
//! `mx6gate run` daemon with XDP on the gateway's veth and sk_lookup on its
//! namespace. The sender namespace runs N client threads, each looping
//! "connect from STRANGER_SRC to the server's address, port 25, read the
//! greeting up to its final line, close" (blocking sockets with time
//! limits). The gate's mode and the address differ between the servers:
//!
//! * `defer`   — sk_lookup hands the connection to the responder (`421 4.7.0`);
//!   the responder's `threads` is switched by a reload between runs;
//! * `monitor` — the connection reaches Postfix's smtpd (`220`) or
//!   postscreen (`521`).
//!
//! Each point (N, server) runs `reps` times, the servers taking turns at
//! going first so that drift hits all; a point is a warm-up (not recorded)
//! and then a fixed window. Recorded: every connection started inside the
//! window; its time-to-banner is connect start → final greeting line
//! complete.
//!
//! Full mode writes `bench/RESPONDER.md`; `--quick` (N = 10, 1 s) writes
//! `target/bench-responder-quick.md`. Both print the table and one
//! `bench-responder: server=… clients=… greetings=… errors=…` line per point
//! (what the smoke test reads).
//!
//! Every loop here is bounded in count and time.

mod client;
mod env;
mod observe;
mod postfix;
mod report;
mod run;

use std::{cell::Cell, net::Ipv6Addr, time::Duration};

use anyhow::{bail, Context, Result};
use mx6gate_tests::{gate::GateUnderTest, Postfix, Topology, GW_HOSTNAME, GW_V6};

use self::{
    client::{one_connection, raise_nofile, Kind},
    env::Environment,
    observe::{find_daemon, listen_backlogs, rss_kb},
    postfix::{postfix_rss, postfix_warnings, set_postfix_limit, start_postscreen, start_smtpd},
    report::{ratios, render, summary_lines, table, threads_ratios},
    run::{run_point, RunResult},
};
use crate::measure::loadavg;

/// Postfix's `default_process_limit` for the main comparison (Debian's and
/// Postfix's default; master.cf's smtpd has maxproc `-`, i.e. this).
const POSTFIX_LIMIT: u32 = 100;
/// ... and the raised limit of the extra "fair" pass at high N.
const POSTFIX_RAISED_LIMIT: u32 = 1000;
/// The responder's `max_connections` and `max_per_source` for the bench:
/// every client comes from one /64, and the default per-source cap (16)
/// would answer most of them with the short over-cap 421 instead of the
/// configured greeting. postscreen's per-client connection limit is set to
/// the same.
const RESPONDER_CAP: u32 = 4096;
/// The postscreen instance's address on the gateway's link (smtpd has
/// GW_V6): two instances cannot both have the wildcard port 25.
const POSTSCREEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x25);
/// The postscreen instance's `default_process_limit`: it sizes postscreen's
/// listen backlog (the master's max(maxproc, default_process_limit); its
/// maxproc is 1), which at Postfix's 100 would overflow long before the
/// single postscreen process is busy.
const POSTSCREEN_PROCESS_LIMIT: u32 = 1000;

struct Plan {
    quick: bool,
    clients: Vec<usize>,
    warmup: Duration,
    window: Duration,
    reps: usize,
    /// Connect limit, and then again the limit for the greeting.
    timeout: Duration,
    /// Client counts for the extra pass with Postfix's limit raised.
    raised: Vec<usize>,
    /// The responder's `threads` settings measured (the first is the
    /// default, the one compared with Postfix).
    threads: Vec<u16>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                clients: vec![10],
                warmup: Duration::from_millis(300),
                window: Duration::from_secs(1),
                reps: 3,
                timeout: Duration::from_secs(5),
                raised: vec![],
                threads: vec![1, 2],
            }
        } else {
            Plan {
                quick,
                clients: vec![10, 100, 500],
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(5),
                reps: 5,
                timeout: Duration::from_secs(5),
                raised: vec![500],
                threads: vec![1, 2],
            }
        }
    }

    /// The servers of the main pass, in their first repetition's order.
    fn servers(&self) -> Vec<Server> {
        let mut v = vec![Server::Responder(self.threads[0])];
        v.push(Server::Postfix(POSTFIX_LIMIT));
        v.push(Server::Postscreen);
        v.extend(self.threads[1..].iter().map(|&t| Server::Responder(t)));
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// mx6gate in defer mode: the responder answers; its `threads`.
    Responder(u16),
    /// mx6gate in monitor mode: Postfix smtpd answers; its process limit.
    Postfix(u32),
    /// mx6gate in monitor mode: Postfix postscreen answers (denylist, drop).
    Postscreen,
}

impl Server {
    fn mode(self) -> &'static str {
        match self {
            Server::Responder(_) => "defer",
            Server::Postfix(_) | Server::Postscreen => "monitor",
        }
    }
    /// What a good greeting starts with.
    fn expect(self) -> &'static str {
        match self {
            Server::Responder(_) => "421 4.7.0 ",
            Server::Postfix(_) => "220 ",
            Server::Postscreen => "521 ",
        }
    }
    /// Where the clients connect (port 25).
    fn addr(self) -> Ipv6Addr {
        match self {
            Server::Postscreen => POSTSCREEN_V6,
            _ => GW_V6,
        }
    }
    fn key(self) -> String {
        match self {
            Server::Responder(1) => "responder".into(),
            Server::Responder(t) => format!("responder-{t}t"),
            Server::Postfix(l) if l == POSTFIX_LIMIT => "postfix".into(),
            Server::Postfix(l) => format!("postfix-{l}"),
            Server::Postscreen => "postscreen".into(),
        }
    }
    fn label(self) -> String {
        match self {
            Server::Responder(1) => "responder (mx6gate defer)".into(),
            Server::Responder(t) => format!("responder, {t} threads (mx6gate defer)"),
            Server::Postfix(l) => format!("Postfix smtpd (limit {l})"),
            Server::Postscreen => "Postfix postscreen (denylist, drop)".into(),
        }
    }
    /// The Postfix instance whose processes are this server's (for the
    /// responder: smtpd's, idle then, as before).
    fn postfix(self, lab: &Lab) -> &Postfix {
        match self {
            Server::Postscreen => &lab.postscreen,
            _ => &lab.postfix,
        }
    }
}

/// The lab the runs share.
struct Lab {
    topo: Topology,
    /// smtpd, on `[GW_V6]:25`.
    postfix: Postfix,
    /// postscreen, on `[POSTSCREEN_V6]:25`.
    postscreen: Postfix,
    /// The responder's `threads` in the daemon's config now.
    responder_threads: Cell<u16>,
    gate: GateUnderTest,
    daemon_pid: i32,
}

pub fn main(quick: bool) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-responder needs root (network namespaces, XDP, sk_lookup)");
    }
    // The smoke test (tests/tests/bench_responder_smoke.rs) passes a built
    // binary and skips the build: build_all() re-links the controller every
    // time (its eBPF object is rewritten), which alone takes ~30 s.
    let skip_build = std::env::var("MX6GATE_BENCH_SKIP_BUILD").is_ok_and(|v| v == "1");
    match std::env::var_os("MX6GATE_BIN") {
        Some(bin) if skip_build => {
            println!(
                "   MX6GATE_BENCH_SKIP_BUILD=1: using {}",
                bin.to_string_lossy()
            )
        }
        _ => {
            let bin = crate::build_all()?;
            std::env::set_var("MX6GATE_BIN", &bin);
        }
    }
    let plan = Plan::new(quick);
    let nofile = raise_nofile()?;
    println!(
        "== bench-responder ({})",
        if quick { "quick" } else { "full" }
    );
    println!("   RLIMIT_NOFILE of the clients (and of Postfix, started by us): {nofile}");

    println!("== building the lab: sender and gateway namespaces, one veth pair");
    let topo = Topology::new()?;
    // The clients close first against Postfix, so their side keeps
    // TIME_WAIT: let them use the whole port range and reuse TIME_WAIT
    // ports (connect-time port choice, IP_BIND_ADDRESS_NO_PORT below).
    topo.sender
        .sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    topo.sender.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    mx6gate_tests::add_addr(&topo.gw, &topo.gw_if, &format!("{POSTSCREEN_V6}/64"))?;
    let postfix = start_smtpd(&topo.gw)?;
    println!(
        "   Postfix smtpd listening on [{GW_V6}]:25 in {} (default_process_limit {POSTFIX_LIMIT})",
        topo.gw.name()
    );
    let postscreen = start_postscreen(&topo.gw)?;
    println!(
        "   Postfix postscreen listening on [{POSTSCREEN_V6}]:25 (denylist: the clients' network, action drop)"
    );
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "monitor",
        &format!(
            // repeat = "defer": every client connection is a repeat of
            // one source, and this measures the responder, not the reset.
            "[responder]\nhostname = \"{GW_HOSTNAME}\"\nmax_connections = {RESPONDER_CAP}\nmax_per_source = {RESPONDER_CAP}\nthreads = {}\n[defer]\nrepeat = \"defer\"\n",
            plan.threads[0]
        ),
    )?;
    gate.start()?;
    let daemon_pid = find_daemon(gate.daemon_pid().context("no daemon pid")?)?;
    println!("   mx6gate run: pid {daemon_pid}");
    let lab = Lab {
        topo,
        postfix,
        postscreen,
        responder_threads: Cell::new(plan.threads[0]),
        gate,
        daemon_pid,
    };

    let mut env = Environment::collect(&lab)?;
    env.nofile = nofile;
    env.loadavg_start = loadavg();
    // Every server answers before we measure anything.
    for server in plan.servers() {
        lab.gate.ok(&["mode", server.mode()])?;
        if let Server::Responder(t) = server {
            set_responder_threads(&lab, t)?;
        }
        let (kind, _, line) = lab
            .topo
            .sender
            .enter(|| one_connection(server.addr(), plan.timeout));
        let line = line.unwrap_or_default();
        if kind != Kind::Ok || !line.starts_with(server.expect()) {
            bail!(
                "{}: probe got {} ({line:?}); expected a greeting starting {:?}",
                server.label(),
                kind.name(),
                server.expect()
            );
        }
        println!("   {} greets: {}", server.label(), line.trim());
        env.greetings.push((server, line.trim().to_string()));
    }
    std::thread::sleep(Duration::from_secs(1));
    env.rss_before_kb = rss_kb(lab.daemon_pid).unwrap_or(0);

    let mut results = Vec::new();
    let servers = plan.servers();
    let total_runs = plan.clients.len() * plan.reps * servers.len() + plan.raised.len() * plan.reps;
    let mut done = 0;
    for &n in &plan.clients {
        for rep in 0..plan.reps {
            // Each server goes first in turn.
            let mut order = servers.clone();
            order.rotate_left(rep % servers.len());
            for server in order {
                done += 1;
                let r = run_point(&lab, &plan, server, n, rep)?;
                print_run(done, total_runs, &r);
                results.push(r);
            }
        }
        env.rss_after_n
            .push((n, rss_kb(lab.daemon_pid).unwrap_or(0)));
    }
    if !plan.raised.is_empty() {
        set_postfix_limit(&lab.postfix, &lab.topo.gw, POSTFIX_RAISED_LIMIT)?;
        env.backlog_raised = listen_backlogs(&lab.topo.gw).unwrap_or_default();
        println!("   Postfix default_process_limit raised to {POSTFIX_RAISED_LIMIT} (restarted)");
        for &n in &plan.raised {
            for rep in 0..plan.reps {
                done += 1;
                let r = run_point(&lab, &plan, Server::Postfix(POSTFIX_RAISED_LIMIT), n, rep)?;
                print_run(done, total_runs, &r);
                results.push(r);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    env.rss_end_kb = rss_kb(lab.daemon_pid).unwrap_or(0);
    env.loadavg_end = loadavg();
    env.status_end = lab.gate.ok(&["status"]).unwrap_or_default();
    env.postfix_log_tail = postfix_warnings(&lab.postfix);
    env.postfix_log_tail.extend(
        postfix_warnings(&lab.postscreen)
            .into_iter()
            .map(|l| format!("(postscreen instance) {l}")),
    );
    env.postfix_rss = postfix_rss(&lab.postfix);
    env.postscreen_rss = postfix_rss(&lab.postscreen);
    lab.gate.ok(&["mode", "monitor"]).ok();

    let md = render(&plan, &env, &results);
    println!("\n{}", table(&plan, &results));
    println!("{}", ratios(&plan, &results));
    println!("{}", threads_ratios(&plan, &results));
    for line in summary_lines(&plan, &results) {
        println!("{line}");
    }
    let out = if quick {
        crate::workspace_root().join("target/bench-responder-quick.md")
    } else {
        crate::workspace_root().join("bench/RESPONDER.md")
    };
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    println!("== cleaning up");
    // Leak nothing: gate, then Postfix, then the namespaces.
    let Lab {
        topo,
        postfix,
        postscreen,
        gate,
        ..
    } = lab;
    drop(gate);
    drop(postscreen);
    drop(postfix);
    drop(topo);
    Ok(())
}

fn print_run(done: usize, total: usize, r: &RunResult) {
    println!(
        "   [{done:>2}/{total}] N={:<4} {:<40} rep {}: {:>8.0} greetings/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
        r.n,
        r.server.label(),
        r.rep + 1,
        r.rate,
        r.p50_ms,
        r.p99_ms,
        r.errors()
    );
}

/// Set the responder's `threads` in the daemon's config and reload, unless
/// it is set so already; returns once the daemon has restarted the
/// responder with it.
fn set_responder_threads(lab: &Lab, threads: u16) -> Result<()> {
    if lab.responder_threads.get() == threads {
        return Ok(());
    }
    let path = &lab.gate.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut replaced = false;
    let new: String = text
        .lines()
        .map(|l| {
            if l.starts_with("threads = ") {
                replaced = true;
                format!("threads = {threads}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if !replaced {
        bail!("{}: no `threads = ` line to change", path.display());
    }
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    const RESTARTED: &str = "responder restarted with the new settings";
    let before = lab.gate.log().matches(RESTARTED).count();
    lab.gate.hup();
    if !lab
        .gate
        .wait_log(RESTARTED, before, Duration::from_secs(30))
    {
        bail!(
            "the daemon did not restart the responder with threads = {threads} within 30 s; log tail:\n{}",
            mx6gate_tests::postfix::tail(&lab.gate.log(), 20)
        );
    }
    lab.responder_threads.set(threads);
    Ok(())
}
