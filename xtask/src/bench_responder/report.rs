//! The report: aggregation over repetitions, the tables, the observations
//! and the markdown file.
use std::fmt::Write as _;

use mx6gate_tests::{GW_V6, STRANGER_NET, STRANGER_SRC};

use super::{
    client::{Kind, KINDS},
    env::Environment,
    run::RunResult,
    Plan, Server, POSTFIX_LIMIT, POSTFIX_RAISED_LIMIT, POSTSCREEN_PROCESS_LIMIT, POSTSCREEN_V6,
    RESPONDER_CAP,
};
use crate::measure::ratio;

pub(super) fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
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
pub(super) fn groups(plan: &Plan) -> Vec<(Server, usize)> {
    let mut g = Vec::new();
    for &n in &plan.clients {
        g.extend(plan.servers().into_iter().map(|s| (s, n)));
        if plan.raised.contains(&n) {
            g.push((Server::Postfix(POSTFIX_RAISED_LIMIT), n));
        }
    }
    g
}

pub(super) fn runs_of(results: &[RunResult], server: Server, n: usize) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.server == server && r.n == n)
        .collect()
}

pub(super) struct Agg {
    pub(super) rate: (f64, f64, f64),
    pub(super) p50: (f64, f64, f64),
    pub(super) p99: (f64, f64, f64),
    pub(super) cpu_us: (f64, f64, f64),
    /// Share of the machine's CPU time the clients used (median).
    pub(super) client_share: f64,
    /// Share of the machine's CPU time used outside the bench (median).
    pub(super) other_share: f64,
    pub(super) softirq_share: f64,
    pub(super) ok: u64,
    pub(super) errors: [u64; KINDS.len()],
}

pub(super) fn agg(runs: &[&RunResult]) -> Agg {
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
pub(super) fn other_share(r: &RunResult) -> f64 {
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
pub(super) fn softirq_share(r: &RunResult) -> f64 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if r.wall_s <= 0.0 {
        return 0.0;
    }
    r.cpu_softirq_ms / 1000.0 / (r.wall_s * cpus)
}

/// The clients' CPU time over all the CPU time of the run's wall time.
pub(super) fn client_share(r: &&RunResult) -> f64 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if r.wall_s <= 0.0 {
        return 0.0;
    }
    r.cpu_clients_ms / 1000.0 / (r.wall_s * cpus)
}

pub(super) fn fmt_rate((m, lo, hi): (f64, f64, f64)) -> String {
    format!("{m:.0} ({lo:.0}–{hi:.0})")
}

pub(super) fn fmt_ms((m, lo, hi): (f64, f64, f64)) -> String {
    let p = |x: f64| {
        if x < 10.0 {
            format!("{x:.3}")
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} ({}–{})", p(m), p(lo), p(hi))
}

pub(super) fn fmt_errors(e: &[u64; KINDS.len()]) -> String {
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

pub(super) fn table(plan: &Plan, results: &[RunResult]) -> String {
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

pub(super) fn ratios(plan: &Plan, results: &[RunResult]) -> String {
    let mut against = vec![Server::Postfix(POSTFIX_LIMIT), Server::Postscreen];
    against.push(Server::Postfix(POSTFIX_RAISED_LIMIT));
    ratio_table(
        plan,
        results,
        Server::Responder(plan.threads[0]),
        "responder",
        "Postfix",
        &against,
    )
}

/// The responder's other `threads` settings against the first.
pub(super) fn threads_ratios(plan: &Plan, results: &[RunResult]) -> String {
    let mut s = String::new();
    for &t in &plan.threads[1..] {
        s.push_str(&ratio_table(
            plan,
            results,
            Server::Responder(t),
            &format!("{t} threads"),
            &format!("{} thread", plan.threads[0]),
            &[Server::Responder(plan.threads[0])],
        ));
    }
    s
}

/// One row per N and `against` server that ran at that N: `base`'s medians
/// over theirs.
fn ratio_table(
    plan: &Plan,
    results: &[RunResult],
    base: Server,
    base_name: &str,
    other_name: &str,
    against: &[Server],
) -> String {
    let mut s = String::new();
    let q = format!("{base_name}/{other_name}");
    let _ = writeln!(
        s,
        "| N clients | against | greetings/s {q} | p50 {q} | p99 {q} | server CPU per connection {q} |"
    );
    let _ = writeln!(s, "|--:|---|--:|--:|--:|--:|");
    for &n in &plan.clients {
        let resp = runs_of(results, base, n);
        if resp.is_empty() {
            continue;
        }
        let r = agg(&resp);
        for &p in against {
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

pub(super) fn summary_lines(plan: &Plan, results: &[RunResult]) -> Vec<String> {
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

pub(super) fn per_run_table(results: &[RunResult]) -> String {
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
pub(super) fn observations(plan: &Plan, results: &[RunResult]) -> Vec<String> {
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
        if matches!(server, Server::Responder(_)) {
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

pub(super) fn render(plan: &Plan, env: &Environment, results: &[RunResult]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "# Responder benchmark: mx6gate's reject-banner responder vs Postfix smtpd and postscreen\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo xtask bench-responder{}` (xtask/src/bench_responder/); \
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
        "- one virtual machine: the clients, mx6gate (threads in the daemon with the \
         responder on its current-thread runtime: {}) and Postfix all share these {} vCPUs.\n",
        env.daemon_threads, env.cpus
    );

    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- Lab: the namespace topology of the integration tests (sender and gateway \
         namespaces joined by one veth pair). In the gateway namespace: two real Postfix \
         ({}) instances — smtpd listening on `[{GW_V6}]:25`, postscreen on \
         `[{POSTSCREEN_V6}]:25` (a second address on the gateway's veth: two instances \
         cannot both have the wildcard) — and the real `mx6gate run` daemon, XDP on the \
         gateway's veth, sk_lookup on its namespace, the responder listening on \
         `[::1]:10421`.",
        env.postfix_version
    );
    let _ = writeln!(
        w,
        "- The same clients for every server: N threads in the sender namespace (Rust, \
         blocking sockets), each looping: connect from `{STRANGER_SRC}` (a non-partner) to \
         `[{GW_V6}]:25` (responder, smtpd) or `[{POSTSCREEN_V6}]:25` (postscreen), read the \
         greeting up to its final line, close (no QUIT, for all). Connect limit {t:?}, then \
         {t:?} for the greeting.",
        t = plan.timeout
    );
    let _ = writeln!(
        w,
        "- The gate's mode, switched with `mx6gate mode`, picks the server on port 25: \
         `defer` → sk_lookup hands the connection to the responder, which greets \
         `421 4.7.0 …` and closes; `monitor` → the connection reaches Postfix's smtpd, which \
         greets `220 …`, or postscreen, which answers `521 …` and closes. A connection counts \
         as a greeting only if its reply starts with `421 4.7.0 ` (responder), `220 ` (smtpd) \
         or `521 ` (postscreen); anything else is an error."
    );
    let _ = writeln!(
        w,
        "- Per point: {:?} warm-up (not recorded), then a {:?} window; every connection \
         started in the window is recorded. greetings/s = good greetings started in the \
         window / window length. Time-to-banner = connect() start → the greeting's final \
         line complete (nearest-rank p50/p99 over the run's greetings). {} repetitions \
         per point; the servers take turns at going first (repetition k starts with the \
         k-th of: {}, and goes on in that order); the tables give the median and (min–max) \
         over the repetitions.",
        plan.warmup,
        plan.window,
        plan.reps,
        plan.servers()
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        w,
        "- Server CPU per connection: CPU time (user + system, from /proc/<pid>/stat) of \
         the server being measured over the whole run, warm-up included, divided by the \
         connections of the run: for the responder the `mx6gate run` process (all its \
         threads), for Postfix the instance's master plus all its children (smtpd, anvil, \
         postlogd, …, or postscreen and postlogd; reaped children via the master's \
         cutime/cstime). Kernel work in softirq context (most of TCP on the \
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
    let _ = writeln!(
        w,
        "- postscreen config: a second instance of the same receiver config with, in \
         master.cf, `[{POSTSCREEN_V6}]:25 inet n - n - 1 postscreen` (one process, as \
         Postfix ships it) and the `smtpd pass` service behind it; in main.cf \
         `postscreen_access_list = permit_mynetworks, cidr:…` with the table \
         `{STRANGER_NET} reject` (the clients' network), `mynetworks` loopback only (else \
         permit_mynetworks would let the clients past), `postscreen_denylist_action = drop` \
         (Postfix 3.6's name for `postscreen_blacklist_action`; `postconf -d` of this \
         Postfix lists both): a `521` and close at once, before any pregreet wait and any \
         smtpd. The after-greeting tests (pipelining, non-SMTP command, bare newline) are \
         off (Postfix's default), no DNSBL. `postscreen_client_connection_count_limit = \
         {RESPONDER_CAP}` (as the responder's per-source cap: one source, many clients) and \
         `default_process_limit = {POSTSCREEN_PROCESS_LIMIT}` (it sets postscreen's listen \
         backlog, max(maxproc, default_process_limit): at 100 it would overflow long before \
         the one postscreen process is busy). It logs three lines per connection (CONNECT, \
         DENYLISTED, DISCONNECT) through postlogd."
    );
    let _ = writeln!(
        w,
        "- Responder threads: `threads = {}` (the default: the responder shares the daemon's \
         current-thread tokio runtime){}. One listening socket and one accept loop either \
         way (the SOCKMAP holds one socket; a reuseport group would let the kernel choose \
         among its members); with more threads the sessions it accepts run on the workers. \
         Switched between runs by editing `[responder] threads` in the daemon's config and \
         SIGHUP: the daemon restarts the responder on the same socket.",
        plan.threads[0],
        plan.threads[1..]
            .iter()
            .map(|t| format!(
                " and `threads = {t}` (its own multi-thread runtime with {t} workers)"
            ))
            .collect::<String>()
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
    if plan.threads.len() > 1 {
        let _ = writeln!(
            w,
            "The responder's other `threads` settings against `threads = {}` (same run; \
             above 1 for greetings/s and below 1 for latency and CPU mean more threads \
             help):\n",
            plan.threads[0]
        );
        let _ = writeln!(w, "{}", threads_ratios(plan, results));
    }

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
         max_idle = 100 s): {}.",
        env.postfix_rss
    );
    let _ = writeln!(
        w,
        "- Postfix postscreen instance at the end: {}.\n",
        env.postscreen_rss
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
        "The responder (by default) runs on one thread (current-thread tokio runtime), \
         postscreen in one process: the like-for-like pair. smtpd uses up to its process \
         limit of processes, each serving one connection at a time and exiting after \
         max_use connections (fork/exec cost included in its numbers).",
        "postscreen against the responder is the same job done two ways: both turn the \
         client away at connect time, from one process, without an smtpd. postscreen's \
         `521` (RFC 7504: this host does not accept mail) is a permanent refusal — Exim, \
         for one, fails the message on a 5xx greeting — while the responder's `421` is a \
         temporary one that sends senders to IPv4; postscreen cannot give that reply \
         (`postscreen_denylist_action` has no 4xx drop; `enforce` answers 550 after the \
         greeting). The \
         comparison is the cost of the turning away, not a claim that postscreen can do \
         the responder's job as configured here.",
        "Postfix here does no reverse DNS lookup (smtpd_peername_lookup = no) and no anvil \
         accounting for this client (mynetworks); a production smtpd does both before the \
         banner: real smtpd greetings are slower than measured here. postscreen needs \
         neither for a denylisted client.",
        "In defer mode the connection goes through the XDP program and the sk_lookup program \
         and is then handed to the responder; in monitor mode it goes through the same XDP \
         program and sk_lookup returns pass. The kernel path costs differ only by the \
         SOCKMAP assignment.",
        "More responder threads: with `threads = 2` the responder has two runnable threads \
         where it had one, so on a machine whose CPUs are contended (the clients, softirq, \
         other processes: see the shares) the scheduler gives it a larger part of them — \
         which alone raises and steadies its greetings/s. The price is in its CPU per \
         connection (the multi-thread scheduler's work stealing and cross-thread wake-ups) \
         and in its RSS (a malloc arena per worker thread, and the runtime rebuilt at each \
         switch): see the per-run table.",
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
