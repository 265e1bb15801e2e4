//! `cargo xtask bench-responder [--quick]`: the defer-mode reject-banner
//! responder against the real Postfix smtpd, side by side, in the same run,
//! with the same client code and the same topology.
//!
//! The namespace lab (`Topology`): the gateway namespace runs a real Postfix
//! (port 25) and the real `mx6gate run` daemon with XDP on the gateway's
//! veth and sk_lookup on its namespace. The sender namespace runs N client
//! threads, each looping "connect from STRANGER_SRC to [GW_V6]:25, read the
//! greeting up to its final line, close" (blocking sockets with time
//! limits). Only the gate's mode differs between the two servers:
//!
//! * `defer`   — sk_lookup hands the connection to the responder (`421 4.7.0`);
//! * `monitor` — the connection reaches Postfix's smtpd (`220`).
//!
//! Each point (N, server) runs `reps` times, the servers alternating so that
//! drift hits both; a point is a warm-up (not recorded) and then a fixed
//! window. Recorded: every connection started inside the window; its
//! time-to-banner is connect start → final greeting line complete.
//!
//! Full mode writes `bench/RESPONDER.md`; `--quick` (N = 10, 1 s) writes
//! `target/bench-responder-quick.md`. Both print the table and one
//! `bench-responder: server=… clients=… greetings=… errors=…` line per point
//! (what the smoke test reads).
//!
//! Every loop here is bounded in count and time.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Barrier, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mx6gate_tests::{
    cmd, gate::GateUnderTest, Netns, Postfix, PostfixInstance, Topology, GW_HOSTNAME, GW_V6,
    MAIL_DOMAIN, STRANGER_SRC,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::measure::{loadavg, ratio};

/// Postfix's `default_process_limit` for the main comparison (Debian's and
/// Postfix's default; master.cf's smtpd has maxproc `-`, i.e. this).
const POSTFIX_LIMIT: u32 = 100;
/// ... and the raised limit of the extra "fair" pass at high N.
const POSTFIX_RAISED_LIMIT: u32 = 1000;
/// The responder's `max_connections` and `max_per_source` for the bench:
/// every client comes from one /64, and the default per-source cap (16)
/// would answer most of them with the short over-cap 421 instead of the
/// configured greeting.
const RESPONDER_CAP: u32 = 4096;
/// Per client and point: at most this many connections (a bound, never
/// reached in practice).
const MAX_CONNS_PER_CLIENT: usize = 2_000_000;
/// Client thread stack.
const CLIENT_STACK: usize = 256 * 1024;
/// Longest greeting we read.
const MAX_GREETING: usize = 2048;
/// How often the sampler looks at RSS and the smtpd processes.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

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
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// mx6gate in defer mode: the responder answers.
    Responder,
    /// mx6gate in monitor mode: Postfix smtpd answers; its process limit.
    Postfix(u32),
}

impl Server {
    fn mode(self) -> &'static str {
        match self {
            Server::Responder => "defer",
            Server::Postfix(_) => "monitor",
        }
    }
    /// What a good greeting starts with.
    fn expect(self) -> &'static str {
        match self {
            Server::Responder => "421 4.7.0 ",
            Server::Postfix(_) => "220 ",
        }
    }
    fn key(self) -> String {
        match self {
            Server::Responder => "responder".into(),
            Server::Postfix(l) if l == POSTFIX_LIMIT => "postfix".into(),
            Server::Postfix(l) => format!("postfix-{l}"),
        }
    }
    fn label(self) -> String {
        match self {
            Server::Responder => "responder (mx6gate defer)".into(),
            Server::Postfix(l) => format!("Postfix smtpd (limit {l})"),
        }
    }
}

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The expected greeting.
    Ok,
    /// The responder's short "too many connections" 421.
    OverCap,
    /// Some other reply.
    WrongReply,
    Refused,
    ConnectTimeout,
    GreetingTimeout,
    /// Closed before a complete greeting.
    Closed,
    Reset,
    Other,
}

const KINDS: [Kind; 9] = [
    Kind::Ok,
    Kind::OverCap,
    Kind::WrongReply,
    Kind::Refused,
    Kind::ConnectTimeout,
    Kind::GreetingTimeout,
    Kind::Closed,
    Kind::Reset,
    Kind::Other,
];

impl Kind {
    fn idx(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::OverCap => "over-cap 421",
            Kind::WrongReply => "wrong reply",
            Kind::Refused => "refused",
            Kind::ConnectTimeout => "connect timeout",
            Kind::GreetingTimeout => "greeting timeout",
            Kind::Closed => "closed early",
            Kind::Reset => "reset",
            Kind::Other => "other error",
        }
    }
}

/// One client's record of one run.
#[derive(Default)]
struct Tally {
    /// Time-to-banner of the good greetings in the window, µs.
    lat_us: Vec<u32>,
    /// Per [`Kind`], connections started in the window.
    counts: [u64; KINDS.len()],
    /// All connections, warm-up included.
    attempts_all: u64,
    example_wrong: Option<String>,
    example_err: Option<String>,
}

/// One run: one server, one N, one repetition.
#[derive(Clone, Debug)]
struct RunResult {
    server: Server,
    n: usize,
    rep: usize,
    ok: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    counts: [u64; KINDS.len()],
    attempts_all: u64,
    example_wrong: Option<String>,
    example_err: Option<String>,
    peak_daemon_rss_kb: u64,
    peak_smtpd: usize,
    listen_overflows: u64,
    listen_drops: u64,
    syn_retrans: u64,
    /// sk_lookup's "deferred" / "monitored" counters, delta over the run.
    sk_deferred: u64,
    sk_monitored: u64,
    /// CPU time over the whole run (warm-up included), ms: the mx6gate
    /// process, all Postfix processes (master and children), this process
    /// (the clients).
    cpu_daemon_ms: f64,
    cpu_postfix_ms: f64,
    cpu_clients_ms: f64,
    /// All CPUs' busy time (/proc/stat: everything but idle and iowait), ms.
    cpu_machine_ms: f64,
    /// Of which irq + softirq (mostly the bench's own TCP traffic on the
    /// veth, charged to no process), ms.
    cpu_softirq_ms: f64,
    /// Wall time of the whole run (warm-up included), s.
    wall_s: f64,
}

impl RunResult {
    /// CPU time of the server being measured per connection, µs.
    fn server_cpu_us(&self) -> f64 {
        let ms = match self.server {
            Server::Responder => self.cpu_daemon_ms,
            Server::Postfix(_) => self.cpu_postfix_ms,
        };
        if self.attempts_all == 0 {
            return 0.0;
        }
        ms * 1000.0 / self.attempts_all as f64
    }

    fn errors(&self) -> u64 {
        self.counts.iter().sum::<u64>() - self.ok
    }
}

/// The lab the runs share.
struct Lab {
    topo: Topology,
    postfix: Postfix,
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
    let postfix = PostfixInstance::receiver(GW_HOSTNAME, MAIL_DOMAIN)
        .set("default_process_limit", &POSTFIX_LIMIT.to_string())
        .start(&topo.gw)?;
    println!(
        "   Postfix listening on port 25 in {} (default_process_limit {POSTFIX_LIMIT})",
        topo.gw.name()
    );
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "monitor",
        &format!(
            // repeat = "defer": every client connection is a repeat of
            // one source, and this measures the responder, not the reset.
            "[responder]\nhostname = \"{GW_HOSTNAME}\"\nmax_connections = {RESPONDER_CAP}\nmax_per_source = {RESPONDER_CAP}\n[defer]\nrepeat = \"defer\"\n"
        ),
    )?;
    gate.start()?;
    let daemon_pid = find_daemon(gate.daemon_pid().context("no daemon pid")?)?;
    println!("   mx6gate run: pid {daemon_pid}");
    let lab = Lab {
        topo,
        postfix,
        gate,
        daemon_pid,
    };

    let mut env = Environment::collect(&lab)?;
    env.nofile = nofile;
    env.loadavg_start = loadavg();
    // Both servers answer before we measure anything.
    for server in [Server::Responder, Server::Postfix(POSTFIX_LIMIT)] {
        lab.gate.ok(&["mode", server.mode()])?;
        let (kind, _, line) = lab.topo.sender.enter(|| one_connection(plan.timeout));
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
    let total_runs = plan.clients.len() * plan.reps * 2 + plan.raised.len() * plan.reps;
    let mut done = 0;
    for &n in &plan.clients {
        for rep in 0..plan.reps {
            let order = if rep % 2 == 0 {
                [Server::Responder, Server::Postfix(POSTFIX_LIMIT)]
            } else {
                [Server::Postfix(POSTFIX_LIMIT), Server::Responder]
            };
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
    env.postfix_rss = postfix_rss(&lab.postfix);
    lab.gate.ok(&["mode", "monitor"]).ok();

    let md = render(&plan, &env, &results);
    println!("\n{}", table(&plan, &results));
    println!("{}", ratios(&plan, &results));
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
        gate,
        ..
    } = lab;
    drop(gate);
    drop(postfix);
    drop(topo);
    Ok(())
}

fn print_run(done: usize, total: usize, r: &RunResult) {
    println!(
        "   [{done:>2}/{total}] N={:<4} {:<28} rep {}: {:>8.0} greetings/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
        r.n,
        r.server.label(),
        r.rep + 1,
        r.rate,
        r.p50_ms,
        r.p99_ms,
        r.errors()
    );
}

// ---------------------------------------------------------------- one run

fn run_point(lab: &Lab, plan: &Plan, server: Server, n: usize, rep: usize) -> Result<RunResult> {
    lab.gate.ok(&["mode", server.mode()])?;
    // Let the previous run's sessions (draining, TIME_WAIT) settle a bit.
    std::thread::sleep(Duration::from_millis(500));
    let gw_before = netstat(&lab.topo.gw)?;
    let snd_before = netstat(&lab.topo.sender)?;
    let sk_before = sk_counters(&lab.gate);

    let cpu_before = CpuSnapshot::take(lab);
    let t_run = Instant::now();
    let stop = AtomicBool::new(false);
    let master = lab.postfix.master_pid();
    let (tallies, (peak_rss, peak_smtpd)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(&stop, lab.daemon_pid, master));
        let tallies = lab.topo.sender.enter(|| drive(plan, server, n));
        stop.store(true, Ordering::Relaxed);
        let peaks = sampler.join().unwrap_or((0, 0));
        (tallies, peaks)
    });
    let wall_s = t_run.elapsed().as_secs_f64();
    let cpu_after = CpuSnapshot::take(lab);
    let tallies = tallies?;

    let gw_after = netstat(&lab.topo.gw)?;
    let snd_after = netstat(&lab.topo.sender)?;
    let sk_after = sk_counters(&lab.gate);
    let delta = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str| {
        a.get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(b.get(k).copied().unwrap_or(0))
    };

    let mut lat: Vec<u32> = Vec::new();
    let mut counts = [0u64; KINDS.len()];
    let mut attempts_all = 0;
    let mut example_wrong = None;
    let mut example_err = None;
    for t in tallies {
        lat.extend_from_slice(&t.lat_us);
        for (c, x) in counts.iter_mut().zip(t.counts) {
            *c += x;
        }
        attempts_all += t.attempts_all;
        example_wrong = example_wrong.or(t.example_wrong);
        example_err = example_err.or(t.example_err);
    }
    lat.sort_unstable();
    let ok = counts[Kind::Ok.idx()];
    Ok(RunResult {
        server,
        n,
        rep,
        ok,
        rate: ok as f64 / plan.window.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&lat, 0.99) as f64 / 1000.0,
        counts,
        attempts_all,
        example_wrong,
        example_err,
        peak_daemon_rss_kb: peak_rss,
        peak_smtpd,
        listen_overflows: delta(&gw_after, &gw_before, "TcpExt:ListenOverflows"),
        listen_drops: delta(&gw_after, &gw_before, "TcpExt:ListenDrops"),
        syn_retrans: delta(&snd_after, &snd_before, "TcpExt:TCPSynRetrans"),
        sk_deferred: delta(&sk_after, &sk_before, "deferred"),
        sk_monitored: delta(&sk_after, &sk_before, "monitored"),
        cpu_daemon_ms: cpu_after.daemon_ms - cpu_before.daemon_ms,
        cpu_postfix_ms: cpu_after.postfix_ms - cpu_before.postfix_ms,
        cpu_clients_ms: cpu_after.self_ms - cpu_before.self_ms,
        cpu_machine_ms: cpu_after.machine_ms - cpu_before.machine_ms,
        cpu_softirq_ms: cpu_after.softirq_ms - cpu_before.softirq_ms,
        wall_s,
    })
}

/// Nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Run `n` clients (called inside the sender namespace: the threads
/// spawned here inherit it).
fn drive(plan: &Plan, server: Server, n: usize) -> Result<Vec<Tally>> {
    let barrier = Barrier::new(n + 1);
    let times: OnceLock<(Instant, Instant)> = OnceLock::new();
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let h = std::thread::Builder::new()
                .name(format!("client{i}"))
                .stack_size(CLIENT_STACK)
                .spawn_scoped(s, || {
                    barrier.wait();
                    let Some(&(from, until)) = times.get() else {
                        return Tally::default();
                    };
                    client(server, from, until, plan.timeout)
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Release the ones already waiting, then fail.
                    let _ = times.set((Instant::now(), Instant::now()));
                    for _ in handles.len()..n {
                        let _ = s.spawn(|| barrier.wait());
                    }
                    barrier.wait();
                    return Err(anyhow::Error::new(e).context(format!("spawning client {i}")));
                }
            }
        }
        let from = Instant::now() + plan.warmup;
        let _ = times.set((from, from + plan.window));
        barrier.wait();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?,
            );
        }
        Ok(out)
    })
}

/// One client: connect, greeting, close, until `until`; records the
/// connections started at or after `from`.
fn client(server: Server, from: Instant, until: Instant, timeout: Duration) -> Tally {
    let mut t = Tally::default();
    for _ in 0..MAX_CONNS_PER_CLIENT {
        let start = Instant::now();
        if start >= until {
            break;
        }
        let (mut kind, ttb, line) = one_connection(timeout);
        t.attempts_all += 1;
        if kind == Kind::Ok {
            let l = line.as_deref().unwrap_or("");
            if !l.starts_with(server.expect()) {
                kind = if l.contains("too many connections") {
                    Kind::OverCap
                } else {
                    Kind::WrongReply
                };
                if kind == Kind::WrongReply && t.example_wrong.is_none() {
                    t.example_wrong = Some(l.to_string());
                }
            }
        } else if t.example_err.is_none() {
            t.example_err = line.clone();
        }
        if start < from {
            continue;
        }
        t.counts[kind.idx()] += 1;
        if kind == Kind::Ok {
            t.lat_us
                .push(ttb.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    t
}

/// One connection from STRANGER_SRC to [GW_V6]:25 in the calling thread's
/// namespace: (how it ended — `Ok` meaning "some complete reply line",
/// time to that line, the line or the error text).
fn one_connection(timeout: Duration) -> (Kind, Duration, Option<String>) {
    let t0 = Instant::now();
    let dst = SocketAddr::new(IpAddr::V6(GW_V6), 25);
    let sock = match Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return (Kind::Other, t0.elapsed(), Some(format!("socket: {e}"))),
    };
    // Choose the source port at connect time, by the full 4-tuple (and so
    // reuse TIME_WAIT ports), not at bind time.
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a valid c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    if let Err(e) = sock.bind(&SockAddr::from(SocketAddr::new(
        IpAddr::V6(STRANGER_SRC),
        0,
    ))) {
        return (Kind::Other, t0.elapsed(), Some(format!("bind: {e}")));
    }
    if let Err(e) = sock.connect_timeout(&SockAddr::from(dst), timeout) {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => Kind::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Kind::ConnectTimeout,
            _ if e.raw_os_error() == Some(libc::ETIMEDOUT) => Kind::ConnectTimeout,
            _ => Kind::Other,
        };
        return (kind, t0.elapsed(), Some(format!("connect: {e}")));
    }
    let mut stream: TcpStream = sock.into();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_GREETING];
    let mut len = 0;
    let mut line_start = 0;
    loop {
        // Complete lines so far: the first final one (`NNN ` or `NNN`) ends
        // the greeting; `NNN-` lines continue it.
        while let Some(nl) = buf[line_start..len].iter().position(|&b| b == b'\n') {
            let line = &buf[line_start..line_start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line_start += nl + 1;
            if line.len() == 3 || (line.len() > 3 && line[3] != b'-') {
                let ttb = t0.elapsed();
                let text = String::from_utf8_lossy(line).into_owned();
                return (Kind::Ok, ttb, Some(text));
            }
        }
        if len == buf.len() {
            let text = String::from_utf8_lossy(&buf[..80]).into_owned();
            return (Kind::WrongReply, t0.elapsed(), Some(text));
        }
        let now = Instant::now();
        if now >= deadline {
            return (
                Kind::GreetingTimeout,
                t0.elapsed(),
                Some("no greeting".into()),
            );
        }
        if stream.set_read_timeout(Some(deadline - now)).is_err() {
            return (Kind::Other, t0.elapsed(), Some("set_read_timeout".into()));
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => {
                return (
                    Kind::Closed,
                    t0.elapsed(),
                    Some("closed before greeting".into()),
                )
            }
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Kind::GreetingTimeout,
                    io::ErrorKind::ConnectionReset => Kind::Reset,
                    _ => Kind::Other,
                };
                return (kind, t0.elapsed(), Some(format!("read: {e}")));
            }
        }
    }
}

// ------------------------------------------------------- side measurements

/// Cumulative CPU time (user + system), ms.
struct CpuSnapshot {
    daemon_ms: f64,
    postfix_ms: f64,
    self_ms: f64,
    machine_ms: f64,
    softirq_ms: f64,
}

impl CpuSnapshot {
    fn take(lab: &Lab) -> CpuSnapshot {
        let postfix_ms = lab
            .postfix
            .master_pid()
            .map(|m| {
                // The master's own time and that of the children it reaped,
                // plus the children alive now (smtpd, anvil, postlogd, …).
                let live: f64 = proc_pids()
                    .into_iter()
                    .filter(|&p| matches!(comm_ppid(p), Some((_, pp)) if pp == m))
                    .map(|p| cpu_ms(p, true))
                    .sum();
                cpu_ms(m, true) + live
            })
            .unwrap_or(0.0);
        // SAFETY: getrusage fills the valid struct given.
        let self_ms = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
            tv(ru.ru_utime) + tv(ru.ru_stime)
        };
        let (machine_ms, softirq_ms) = machine_busy_ms();
        CpuSnapshot {
            daemon_ms: cpu_ms(lab.daemon_pid, false),
            postfix_ms,
            self_ms,
            machine_ms,
            softirq_ms,
        }
    }
}

/// Busy time of all CPUs since boot (/proc/stat `cpu`: user nice system
/// irq softirq steal) and the irq + softirq part of it, ms.
fn machine_busy_ms() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let f: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    let soft: u64 = [5, 6].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (busy as f64 * 1000.0 / hz, soft as f64 * 1000.0 / hz)
}

/// utime + stime (and with `children`, cutime + cstime) of a process, ms.
fn cpu_ms(pid: i32, children: bool) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = s.rfind(')') else {
        return 0.0;
    };
    // Fields after the comm: state is field 3; utime is 14 … cstime 17.
    let f: Vec<u64> = s[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let take = if children { 4 } else { 2 };
    let ticks: u64 = f.iter().skip(11).take(take).sum();
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / hz
}

/// Peak daemon RSS (kB) and peak number of smtpd processes, sampled until
/// `stop`.
fn sample(stop: &AtomicBool, daemon: i32, master: Option<i32>) -> (u64, usize) {
    let mut peak = (0, 0);
    // Bounded: a run lasts seconds; this gives up after 10 minutes anyway.
    for _ in 0..3000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        peak.0 = peak.0.max(rss_kb(daemon).unwrap_or(0));
        if let Some(m) = master {
            peak.1 = peak.1.max(smtpd_count(m));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    peak
}

/// VmRSS of a process, kB.
fn rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (comm, ppid) of a process.
fn comm_ppid(pid: i32) -> Option<(String, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let ppid = s[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn smtpd_count(master: i32) -> usize {
    proc_pids()
        .into_iter()
        .filter(|&p| matches!(comm_ppid(p), Some((c, pp)) if c == "smtpd" && pp == master))
        .count()
}

/// The `mx6gate run` process: the pid we spawned is `nsenter`, which execs
/// mx6gate (no --fork); if it did fork, its mx6gate child.
fn find_daemon(spawned: u32) -> Result<i32> {
    let spawned = spawned as i32;
    for _ in 0..100 {
        if let Some((comm, _)) = comm_ppid(spawned) {
            if comm == "mx6gate" {
                return Ok(spawned);
            }
            if let Some(p) = proc_pids()
                .into_iter()
                .find(|&p| matches!(comm_ppid(p), Some((c, pp)) if c == "mx6gate" && pp == spawned))
            {
                return Ok(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("cannot find the mx6gate process of pid {spawned}")
}

/// /proc/net/netstat and /proc/net/snmp of a namespace, as
/// `Section:Field -> value`.
fn netstat(ns: &Netns) -> Result<BTreeMap<String, u64>> {
    let text = ns.run_stdout(&["cat", "/proc/net/netstat", "/proc/net/snmp"])?;
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [head, vals] = pair else { continue };
        let (Some((sec, names)), Some((sec2, values))) =
            (head.split_once(':'), vals.split_once(':'))
        else {
            continue;
        };
        if sec != sec2 {
            continue;
        }
        for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                m.insert(format!("{sec}:{k}"), v);
            }
        }
    }
    Ok(m)
}

/// The sk_lookup counters from `mx6gate status`.
fn sk_counters(gate: &GateUnderTest) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(out) = gate.ok(&["status"]) else {
        return m;
    };
    let mut in_sk = false;
    for l in out.lines() {
        if l.starts_with("sk_lookup (") {
            in_sk = true;
            continue;
        }
        if in_sk {
            if !l.starts_with(' ') {
                break;
            }
            let mut it = l.split_whitespace();
            if let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok())) {
                m.insert(k.to_string(), v);
            }
        }
    }
    m
}

/// Listening sockets of the gateway namespace: local address and backlog
/// (`ss -ltn`: Send-Q of a listener is its backlog).
fn listen_backlogs(ns: &Netns) -> Result<Vec<(String, String)>> {
    let out = ns.run_stdout(&["ss", "-Hltn"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[3].to_string(), f[2].to_string()))
        })
        .collect())
}

/// Raise Postfix's `default_process_limit` and restart it in `ns`. Not
/// `postfix reload`: the master sizes an inet listener's backlog as
/// max(maxproc, default_process_limit) when it creates the socket, and a
/// reload keeps the existing socket (backlog 100 stays 100).
fn set_postfix_limit(pf: &Postfix, ns: &Netns, limit: u32) -> Result<()> {
    let etc = pf.config_dir();
    let etc_s = etc.display().to_string();
    cmd::run(
        &[
            "postconf",
            "-c",
            &etc_s,
            "-e",
            &format!("default_process_limit = {limit}"),
        ],
        Duration::from_secs(30),
    )?;
    // Postfix waits for a main.cf changed in the last second to settle.
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(etc.join("main.cf"))
        .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(past)))
        .context("backdating main.cf")?;
    // Stop: the control command only signals the master (any namespace).
    pf.postfix(&["stop"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pf.master_pid().is_some() {
        if Instant::now() >= deadline {
            bail!("postfix did not stop within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Start: inside the gateway namespace, where it must listen.
    let out = ns.try_run(&["postfix", "-c", &etc_s, "start"], Duration::from_secs(60))?;
    if !out.status.success() {
        bail!(
            "postfix -c {etc_s} start failed: {}",
            cmd::describe_output(&out)
        );
    }
    let want = limit.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = pf.master_pid().is_some()
            && listen_backlogs(ns)
                .unwrap_or_default()
                .iter()
                .any(|(a, q)| a.ends_with(":25") && *q == want);
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "postfix did not come back listening on port 25 with backlog {limit} within 20 s: {:?}",
                listen_backlogs(ns).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// The VmRSS of the Postfix processes alive now, in words.
fn postfix_rss(pf: &Postfix) -> String {
    let Some(m) = pf.master_pid() else {
        return "Postfix is not running".into();
    };
    let mut by_comm: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in proc_pids() {
        if let Some((comm, pp)) = comm_ppid(p) {
            if pp == m {
                by_comm
                    .entry(comm)
                    .or_default()
                    .push(rss_kb(p).unwrap_or(0));
            }
        }
    }
    let mut parts = vec![format!("master {} kB", rss_kb(m).unwrap_or(0))];
    for (comm, mut v) in by_comm {
        v.sort_unstable();
        let sum: u64 = v.iter().sum();
        if v.len() == 1 {
            parts.push(format!("{comm} {sum} kB"));
        } else {
            parts.push(format!(
                "{} × {comm}, VmRSS {}–{} kB each, {sum} kB summed",
                v.len(),
                v[0],
                v[v.len() - 1]
            ));
        }
    }
    format!(
        "{} (VmRSS counts shared pages in every process, so the sums overstate)",
        parts.join("; ")
    )
}

/// Postfix log lines that say something went wrong (warnings, fatals, the
/// process limit), deduplicated, at most 15.
fn postfix_warnings(pf: &Postfix) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in pf.log().lines() {
        if !(l.contains("warning:") || l.contains("fatal:") || l.contains("panic:")) {
            continue;
        }
        // Drop the time stamp and pid.
        let key = l.split_once("]: ").map(|(_, r)| r).unwrap_or(l).to_string();
        *seen.entry(key).or_default() += 1;
    }
    seen.into_iter()
        .take(15)
        .map(|(l, n)| format!("{n}× {l}"))
        .collect()
}

/// Raise RLIMIT_NOFILE to 65536, or (where even root may not raise the
/// hard limit, e.g. without CAP_SYS_RESOURCE) the soft limit to the hard
/// one. Returns the soft limit in force. Not the responder's
/// `raise_nofile_limit`: that one never raises the hard limit (a daemon
/// stays inside what systemd gave it), while the bench's clients must
/// reach 65536 to load both servers alike.
fn raise_nofile() -> Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let want: u64 = 65536;
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        if r.rlim_cur >= want {
            return Ok(r.rlim_cur);
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Ok(want);
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {})", r.rlim_max));
        }
    }
    Ok(r.rlim_cur)
}

// ------------------------------------------------------------ environment

#[derive(Default)]
struct Environment {
    nofile: u64,
    loadavg_start: String,
    loadavg_end: String,
    date: String,
    kernel: String,
    cpu: String,
    cpus: usize,
    mem: String,
    postfix_version: String,
    git: String,
    backlog: Vec<(String, String)>,
    backlog_raised: Vec<(String, String)>,
    greetings: Vec<(Server, String)>,
    rss_before_kb: u64,
    rss_after_n: Vec<(usize, u64)>,
    rss_end_kb: u64,
    status_end: String,
    postfix_log_tail: Vec<String>,
    daemon_threads: String,
    postfix_rss: String,
}

fn sh(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

impl Environment {
    fn collect(lab: &Lab) -> Result<Environment> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let root = crate::workspace_root();
        let root_s = root.display().to_string();
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", lab.daemon_pid)).unwrap_or_default();
        Ok(Environment {
            date: sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: sh(&["uname", "-sr"]),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_else(|| "?".into()),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            mem: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_else(|| "?".into()),
            postfix_version: sh(&["postconf", "-d", "-h", "mail_version"]),
            git: sh(&["git", "-C", &root_s, "rev-parse", "--short", "HEAD"]),
            backlog: listen_backlogs(&lab.topo.gw)?,
            daemon_threads: status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_else(|| "?".into()),
            ..Environment::default()
        })
    }
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (m, v[0], v[v.len() - 1])
}

/// (server, N) in the order they ran.
fn groups(plan: &Plan) -> Vec<(Server, usize)> {
    let mut g = Vec::new();
    for &n in &plan.clients {
        g.push((Server::Responder, n));
        g.push((Server::Postfix(POSTFIX_LIMIT), n));
        if plan.raised.contains(&n) {
            g.push((Server::Postfix(POSTFIX_RAISED_LIMIT), n));
        }
    }
    g
}

fn runs_of(results: &[RunResult], server: Server, n: usize) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.server == server && r.n == n)
        .collect()
}

struct Agg {
    rate: (f64, f64, f64),
    p50: (f64, f64, f64),
    p99: (f64, f64, f64),
    cpu_us: (f64, f64, f64),
    /// Share of the machine's CPU time the clients used (median).
    client_share: f64,
    /// Share of the machine's CPU time used outside the bench (median).
    other_share: f64,
    softirq_share: f64,
    ok: u64,
    errors: [u64; KINDS.len()],
}

fn agg(runs: &[&RunResult]) -> Agg {
    let mut errors = [0; KINDS.len()];
    for r in runs {
        for (e, c) in errors.iter_mut().zip(r.counts) {
            *e += c;
        }
    }
    errors[Kind::Ok.idx()] = 0;
    Agg {
        rate: median(runs.iter().map(|r| r.rate).collect()),
        p50: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99: median(runs.iter().map(|r| r.p99_ms).collect()),
        cpu_us: median(runs.iter().map(|r| r.server_cpu_us()).collect()),
        client_share: median(runs.iter().map(client_share).collect()).0,
        other_share: median(runs.iter().map(|r| other_share(r)).collect()).0,
        softirq_share: median(runs.iter().map(|r| softirq_share(r)).collect()).0,
        ok: runs.iter().map(|r| r.ok).sum(),
        errors,
    }
}

/// CPU time of other processes (machine busy time minus irq/softirq, the
/// clients, mx6gate and Postfix) over all the CPU time of the run.
fn other_share(r: &RunResult) -> f64 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if r.wall_s <= 0.0 {
        return 0.0;
    }
    let other =
        r.cpu_machine_ms - r.cpu_softirq_ms - r.cpu_clients_ms - r.cpu_daemon_ms - r.cpu_postfix_ms;
    (other.max(0.0) / 1000.0 / (r.wall_s * cpus)).min(1.0)
}

/// irq + softirq time over all the CPU time of the run.
fn softirq_share(r: &RunResult) -> f64 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if r.wall_s <= 0.0 {
        return 0.0;
    }
    r.cpu_softirq_ms / 1000.0 / (r.wall_s * cpus)
}

/// The clients' CPU time over all the CPU time of the run's wall time.
fn client_share(r: &&RunResult) -> f64 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if r.wall_s <= 0.0 {
        return 0.0;
    }
    r.cpu_clients_ms / 1000.0 / (r.wall_s * cpus)
}

fn fmt_rate((m, lo, hi): (f64, f64, f64)) -> String {
    format!("{m:.0} ({lo:.0}–{hi:.0})")
}

fn fmt_ms((m, lo, hi): (f64, f64, f64)) -> String {
    let p = |x: f64| {
        if x < 10.0 {
            format!("{x:.3}")
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} ({}–{})", p(m), p(lo), p(hi))
}

fn fmt_errors(e: &[u64; KINDS.len()]) -> String {
    let total: u64 = e.iter().sum();
    if total == 0 {
        return "0".into();
    }
    let parts: Vec<String> = KINDS
        .iter()
        .filter(|k| e[k.idx()] > 0)
        .map(|k| format!("{} {}", e[k.idx()], k.name()))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn table(plan: &Plan, results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| N clients | server | greetings/s | p50 time-to-banner, ms | p99 time-to-banner, ms | server CPU per connection, µs | CPU share: clients / softirq / other processes | greetings (all reps) | errors/timeouts (all reps) |"
    );
    let _ = writeln!(s, "|--:|---|--:|--:|--:|--:|--:|--:|---|");
    for (server, n) in groups(plan) {
        let runs = runs_of(results, server, n);
        if runs.is_empty() {
            continue;
        }
        let a = agg(&runs);
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} | {} | {:.0}% / {:.0}% / {:.0}% | {} | {} |",
            server.label(),
            fmt_rate(a.rate),
            fmt_ms(a.p50),
            fmt_ms(a.p99),
            fmt_rate(a.cpu_us),
            a.client_share * 100.0,
            a.softirq_share * 100.0,
            a.other_share * 100.0,
            a.ok,
            fmt_errors(&a.errors)
        );
    }
    s
}

fn ratios(plan: &Plan, results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| N clients | against | greetings/s responder/Postfix | p50 responder/Postfix | p99 responder/Postfix | server CPU per connection responder/Postfix |"
    );
    let _ = writeln!(s, "|--:|---|--:|--:|--:|--:|");
    for &n in &plan.clients {
        let resp = runs_of(results, Server::Responder, n);
        if resp.is_empty() {
            continue;
        }
        let r = agg(&resp);
        let mut against = vec![Server::Postfix(POSTFIX_LIMIT)];
        if plan.raised.contains(&n) {
            against.push(Server::Postfix(POSTFIX_RAISED_LIMIT));
        }
        for p in against {
            let pr = runs_of(results, p, n);
            if pr.is_empty() {
                continue;
            }
            let p_agg = agg(&pr);
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {} | {} | {} |",
                p.label(),
                ratio(r.rate.0, p_agg.rate.0),
                ratio(r.p50.0, p_agg.p50.0),
                ratio(r.p99.0, p_agg.p99.0),
                ratio(r.cpu_us.0, p_agg.cpu_us.0)
            );
        }
    }
    s
}

fn summary_lines(plan: &Plan, results: &[RunResult]) -> Vec<String> {
    groups(plan)
        .into_iter()
        .filter_map(|(server, n)| {
            let runs = runs_of(results, server, n);
            if runs.is_empty() {
                return None;
            }
            let a = agg(&runs);
            Some(format!(
                "bench-responder: server={} clients={n} greetings={} errors={} rate={:.0}",
                server.key(),
                a.ok,
                a.errors.iter().sum::<u64>(),
                a.rate.0
            ))
        })
        .collect()
}

fn per_run_table(results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| N | server | rep | greetings/s | p50 ms | p99 ms | errors | connections incl. warm-up | sk_lookup deferred / monitored | peak smtpd procs | peak mx6gate RSS, kB | gw ListenOverflows / ListenDrops | client SYN retransmits | CPU ms: mx6gate / Postfix / clients / irq+softirq / whole machine (wall s) | other processes' CPU share |"
    );
    let _ = writeln!(
        s,
        "|--:|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|--:|"
    );
    for r in results {
        let mut e = r.counts;
        e[Kind::Ok.idx()] = 0;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} / {} | {} | {} | {} / {} | {} | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} ({:.1}) | {:.0}% |",
            r.n,
            r.server.key(),
            r.rep + 1,
            r.rate,
            r.p50_ms,
            r.p99_ms,
            fmt_errors(&e),
            r.attempts_all,
            r.sk_deferred,
            r.sk_monitored,
            r.peak_smtpd,
            r.peak_daemon_rss_kb,
            r.listen_overflows,
            r.listen_drops,
            r.syn_retrans,
            r.cpu_daemon_ms,
            r.cpu_postfix_ms,
            r.cpu_clients_ms,
            r.cpu_softirq_ms,
            r.cpu_machine_ms,
            r.wall_s,
            other_share(r) * 100.0
        );
    }
    s
}

/// Facts the numbers show, in words.
fn observations(plan: &Plan, results: &[RunResult]) -> Vec<String> {
    let mut o = Vec::new();
    for (server, n) in groups(plan) {
        let runs = runs_of(results, server, n);
        if runs.is_empty() {
            continue;
        }
        let overflows: u64 = runs.iter().map(|r| r.listen_overflows).sum();
        let drops: u64 = runs.iter().map(|r| r.listen_drops).sum();
        let syn: u64 = runs.iter().map(|r| r.syn_retrans).sum();
        let peak = runs.iter().map(|r| r.peak_smtpd).max().unwrap_or(0);
        let label = server.label();
        if let Server::Postfix(limit) = server {
            if n > limit as usize {
                o.push(format!(
                    "N = {n}, {label}: {n} clients but at most {limit} smtpd processes \
                     (peak seen {peak}): the other connections were accepted by the kernel and \
                     waited in the listen queue for a free smtpd (time-to-banner includes that wait)."
                ));
            } else if peak > 0 {
                o.push(format!(
                    "N = {n}, {label}: peak {peak} smtpd processes (limit {limit})."
                ));
            }
        }
        if overflows > 0 || drops > 0 {
            o.push(format!(
                "N = {n}, {label}: the gateway's listen queue overflowed \
                 (ListenOverflows {overflows}, ListenDrops {drops} over {} runs: SYNs and \
                 handshake-completing ACKs dropped); the clients retransmitted {syn} SYNs. \
                 A client whose SYN or final ACK was dropped waits for a retransmission \
                 (1 s, then 2 s more…): that is the p99 of about a second, and the greeting \
                 timeouts are connections the client saw as established while the server \
                 still had them half-open.",
                runs.len()
            ));
        } else if syn > 0 {
            o.push(format!(
                "N = {n}, {label}: no listen queue overflow; the clients retransmitted {syn} \
                 SYNs over {} runs.",
                runs.len()
            ));
        }
        let over_cap: u64 = runs.iter().map(|r| r.counts[Kind::OverCap.idx()]).sum();
        if over_cap > 0 {
            o.push(format!(
                "N = {n}, {label}: {over_cap} connections got the responder's over-cap 421 \
                 (counted as errors, not greetings)."
            ));
        }
        // One example of each, not one per repetition.
        if let Some(r) = runs.iter().find(|r| r.example_wrong.is_some()) {
            o.push(format!(
                "N = {n}, {label}, rep {}: unexpected reply {:?}",
                r.rep + 1,
                r.example_wrong.as_deref().unwrap_or("")
            ));
        }
        if let Some(r) = runs
            .iter()
            .find(|r| r.errors() > 0 && r.example_err.is_some())
        {
            o.push(format!(
                "N = {n}, {label}: errors in {} of {} runs; e.g. (rep {}) {}",
                runs.iter().filter(|r| r.errors() > 0).count(),
                runs.len(),
                r.rep + 1,
                r.example_err.as_deref().unwrap_or("")
            ));
        }
        if server == Server::Responder {
            let (dfr, all): (u64, u64) = runs
                .iter()
                .map(|r| (r.sk_deferred, r.attempts_all))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            if dfr < all {
                o.push(format!(
                    "N = {n}, {label}: sk_lookup counted {dfr} deferrals for {all} client \
                     connections (fewer: some connections never reached sk_lookup)."
                ));
            }
        }
    }
    let others: Vec<f64> = results.iter().map(other_share).collect();
    let (med, lo, hi) = median(others);
    if hi > 0.10 {
        o.push(format!(
            "Other processes took {:.0}% of the machine's CPU in the median run ({:.0}–{:.0}%): \
             the machine was not quiet, and greetings/s and latencies swing with that load \
             (see the min–max ranges). The server CPU per connection is the steadier \
             comparison.",
            med * 100.0,
            lo * 100.0,
            hi * 100.0
        ));
    }
    o
}

fn render(plan: &Plan, env: &Environment, results: &[RunResult]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "# Responder benchmark: mx6gate's reject-banner responder vs Postfix smtpd\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo xtask bench-responder{}` (xtask/src/bench_responder.rs); \
         rerun it to refresh this file.\n",
        if plan.quick { " --quick" } else { "" }
    );
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "- date: {}", env.date);
    let _ = writeln!(w, "- kernel: {}", env.kernel);
    let _ = writeln!(w, "- CPU: {} × {}", env.cpus, env.cpu);
    let _ = writeln!(w, "- memory: {}", env.mem);
    let _ = writeln!(
        w,
        "- load average (1, 5, 15 min) at the start {}, at the end {}; the share of CPU \
         used outside the bench during each run is in the per-run table",
        env.loadavg_start, env.loadavg_end
    );
    let _ = writeln!(w, "- Postfix: {}", env.postfix_version);
    let _ = writeln!(w, "- mx6gate: git {} (release build)", env.git);
    let _ = writeln!(
        w,
        "- one virtual machine: the clients, mx6gate (its tokio runtime is current-thread; \
         threads in the daemon: {}) and Postfix all share these {} vCPUs.\n",
        env.daemon_threads, env.cpus
    );

    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- Lab: the namespace topology of the integration tests (sender and gateway \
         namespaces joined by one veth pair). In the gateway namespace: a real Postfix \
         ({}) listening on port 25, and the real `mx6gate run` daemon, XDP on the gateway's \
         veth, sk_lookup on its namespace, the responder listening on `[::1]:10421`.",
        env.postfix_version
    );
    let _ = writeln!(
        w,
        "- The same clients for both servers: N threads in the sender namespace (Rust, \
         blocking sockets), each looping: connect from `{STRANGER_SRC}` (a non-partner) to \
         `[{GW_V6}]:25`, read the greeting up to its final line, close (no QUIT, for both). \
         Connect limit {t:?}, then {t:?} for the greeting.",
        t = plan.timeout
    );
    let _ = writeln!(
        w,
        "- The only difference between the servers is the gate's mode, switched with \
         `mx6gate mode`: `defer` → sk_lookup hands the connection to the responder, which \
         greets `421 4.7.0 …` and closes; `monitor` → the connection reaches Postfix's smtpd, \
         which greets `220 …`. A connection counts as a greeting only if its reply starts \
         with `421 4.7.0 ` (responder) or `220 ` (Postfix); anything else is an error."
    );
    let _ = writeln!(
        w,
        "- Per point: {:?} warm-up (not recorded), then a {:?} window; every connection \
         started in the window is recorded. greetings/s = good greetings started in the \
         window / window length. Time-to-banner = connect() start → the greeting's final \
         line complete (nearest-rank p50/p99 over the run's greetings). {} repetitions \
         per point, the two servers alternating (responder first in odd repetitions, \
         Postfix first in even ones); the tables give the median and (min–max) over the \
         repetitions.",
        plan.warmup, plan.window, plan.reps
    );
    let _ = writeln!(
        w,
        "- Server CPU per connection: CPU time (user + system, from /proc/<pid>/stat) of \
         the server being measured over the whole run, warm-up included, divided by the \
         connections of the run: for the responder the `mx6gate run` process, for Postfix \
         the master plus all its children (smtpd, anvil, postlogd, …; reaped children via \
         the master's cutime/cstime). Kernel work in softirq context (most of TCP on the \
         veth, both ends) is not in these figures: /proc/stat accounts it as softirq. CPU shares (of wall time × vCPUs): the clients (this \
         process), irq + softirq (/proc/stat; mostly both ends of the bench's own TCP \
         traffic, so it grows with the connection rate), and other processes (busy time \
         minus all that: whatever else ran on the machine)."
    );
    let _ = writeln!(
        w,
        "- Client side: RLIMIT_NOFILE raised to {nofile}; in the sender namespace \
         `ip_local_port_range = 1024 65535` and `tcp_tw_reuse = 1`, sockets with \
         `IP_BIND_ADDRESS_NO_PORT` (the client closes first against Postfix and would \
         otherwise run out of ports in TIME_WAIT).",
        nofile = env.nofile
    );
    let _ = writeln!(
        w,
        "- Responder config: defaults (greeting `close`, no tarpit) except `max_connections` \
         = `max_per_source` = {RESPONDER_CAP}: all clients come from one /64 and the \
         default per-source cap (16) would otherwise answer most of them with the \
         short over-cap 421 — also a deferral, but not the path being measured."
    );
    let _ = writeln!(
        w,
        "- Postfix config: the tests' receiver instance (tests/src/postfix.rs): \
         `default_process_limit = {POSTFIX_LIMIT}` (Postfix's default; smtpd's maxproc is `-`), \
         `max_use = 100` (default), `smtpd_peername_lookup = no` (no DNS in the lab), the \
         client's prefix in `mynetworks`, so anvil's connection count/rate limits do not apply \
         to it (`smtpd_client_event_limit_exceptions = $mynetworks`, the default). Logging goes \
         to a file through postlogd (two lines per connection).{}",
        if plan.raised.is_empty() {
            String::new()
        } else {
            format!(
                " After the main runs, `default_process_limit` was raised to \
                 {POSTFIX_RAISED_LIMIT} (postconf -e, then `postfix stop` and `postfix start`: a reload would keep the \
                 listen socket and with it the backlog of 100) and N = {:?} run again \
                 against Postfix alone (\"Postfix smtpd (limit {POSTFIX_RAISED_LIMIT})\").",
                plan.raised
            )
        }
    );
    let backlog = |b: &[(String, String)]| {
        b.iter()
            .map(|(a, q)| format!("`{a}` {q}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        w,
        "- Listen backlogs in the gateway namespace (`ss -ltn` Send-Q): {}{}.",
        backlog(&env.backlog),
        if env.backlog_raised.is_empty() {
            String::new()
        } else {
            format!(
                "; after raising Postfix's limit: {}",
                backlog(&env.backlog_raised)
            )
        }
    );
    for (server, line) in &env.greetings {
        let _ = writeln!(w, "- {} greets: `{line}`", server.label());
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(w, "Median (min–max) over {} repetitions.\n", plan.reps);
    let _ = writeln!(w, "{}", table(plan, results));
    let _ = writeln!(
        w,
        "Ratios (of the medians; greetings/s above 1 and latency below 1 mean the responder \
         is faster):\n"
    );
    let _ = writeln!(w, "{}", ratios(plan, results));

    let _ = writeln!(w, "### Memory\n");
    let _ = writeln!(
        w,
        "- mx6gate daemon (the `mx6gate run` process: gate, control plane and responder) \
         VmRSS: before the load {} kB; {}; at the end {} kB; peak sampled during any run \
         {} kB.",
        env.rss_before_kb,
        env.rss_after_n
            .iter()
            .map(|(n, k)| format!("after the N = {n} runs {k} kB"))
            .collect::<Vec<_>>()
            .join("; "),
        env.rss_end_kb,
        results
            .iter()
            .map(|r| r.peak_daemon_rss_kb)
            .max()
            .unwrap_or(0)
    );
    let _ = writeln!(
        w,
        "- Postfix: peak smtpd processes per run are in the per-run table below; each is a \
         separate process. At the end of the runs (idle smtpd processes linger up to \
         max_idle = 100 s): {}.\n",
        env.postfix_rss
    );

    let obs = observations(plan, results);
    if !obs.is_empty() {
        let _ = writeln!(w, "### What the counters say\n");
        for o in obs {
            let _ = writeln!(w, "- {o}");
        }
        let _ = writeln!(w);
    }
    if !env.postfix_log_tail.is_empty() {
        let _ = writeln!(w, "Postfix warnings during the run (deduplicated):\n");
        let _ = writeln!(w, "```");
        for l in &env.postfix_log_tail {
            let _ = writeln!(w, "{l}");
        }
        let _ = writeln!(w, "```\n");
    }

    let _ = writeln!(w, "## Caveats\n");
    for c in [
        "Everything shares one small VM: the client threads, the kernel's TCP stack on both \
         sides of the veth, mx6gate and Postfix compete for the same vCPUs, so the numbers \
         are a comparison on this machine, not capacities. A client thread's CPU time is the \
         same per connection for both servers, but at high rates it takes CPU away from \
         whichever server is being measured.",
        "The scheduler shares the CPUs per runnable task: Postfix brings up to its \
         process limit of smtpd processes, the responder one thread. When other processes \
         compete for the CPUs (see the shares), they take a larger part of the machine \
         from the responder's runs than from Postfix's.",
        "The responder runs on one thread (current-thread tokio runtime); Postfix uses up to \
         its process limit of smtpd processes, each serving one connection at a time and \
         exiting after max_use connections (fork/exec cost included in its numbers).",
        "Postfix here does no reverse DNS lookup (smtpd_peername_lookup = no) and no anvil \
         accounting for this client (mynetworks); a production smtpd does both before the \
         banner, and postscreen (if used) adds its own pre-greet delay: real Postfix greetings \
         are slower than measured here.",
        "In defer mode the connection goes through the XDP program and the sk_lookup program \
         and is then handed to the responder; in monitor mode it goes through the same XDP \
         program and sk_lookup returns pass. The kernel path costs differ only by the \
         SOCKMAP assignment.",
        "The client closes right after the greeting. The responder closes its side first \
         (FIN after the greeting), Postfix waits for the client: TIME_WAIT ends up on the \
         gateway for the responder and on the client for Postfix.",
        "Closed-loop load: each client waits for its greeting before the next connect, so \
         greetings/s ≈ N / (time-to-banner + connect/close overhead): by Little's law a \
         server that keeps all N clients in service shows p50 ≈ N / rate. When a listen \
         queue overflows, the clients whose SYN or ACK was dropped sit out a retransmission \
         timeout and stop offering load meanwhile; the others see a shorter queue, so the \
         p50 of the overflowing server can look *better* than that of one that serves \
         everybody — the cost is in its p99, its errors and its greetings/s.",
    ] {
        let _ = writeln!(w, "- {c}");
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Every run\n");
    let _ = writeln!(
        w,
        "Counters are deltas over the run (warm-up included): sk_lookup's `deferred` / \
         `monitored` from `mx6gate status`, `ListenOverflows`/`ListenDrops` from the gateway \
         namespace's /proc/net/netstat, `TCPSynRetrans` from the sender's.\n"
    );
    let _ = writeln!(w, "{}", per_run_table(results));
    let sk: Vec<&str> = env
        .status_end
        .lines()
        .skip_while(|l| !l.starts_with("sk_lookup ("))
        .collect();
    if !sk.is_empty() {
        let _ = writeln!(
            w,
            "`mx6gate status` at the end (sk_lookup counters, since load):\n"
        );
        let _ = writeln!(w, "```");
        for l in sk {
            let _ = writeln!(w, "{l}");
        }
        let _ = writeln!(w, "```");
    }
    s
}
