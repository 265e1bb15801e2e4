//! One run: one server, one N, one repetition — the clients driven, the
//! side measurements taken before and after, the result.
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    client::{drive, Kind, KINDS},
    observe::{netstat, sample, sk_counters, CpuSnapshot},
    set_responder_threads, Lab, Plan, Server,
};

/// One run: one server, one N, one repetition.
#[derive(Clone, Debug)]
pub(super) struct RunResult {
    pub(super) server: Server,
    pub(super) n: usize,
    pub(super) rep: usize,
    pub(super) ok: u64,
    pub(super) rate: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) counts: [u64; KINDS.len()],
    pub(super) attempts_all: u64,
    pub(super) example_wrong: Option<String>,
    pub(super) example_err: Option<String>,
    pub(super) peak_daemon_rss_kb: u64,
    pub(super) peak_smtpd: usize,
    pub(super) listen_overflows: u64,
    pub(super) listen_drops: u64,
    pub(super) syn_retrans: u64,
    /// sk_lookup's "deferred" / "monitored" counters, delta over the run.
    pub(super) sk_deferred: u64,
    pub(super) sk_monitored: u64,
    /// CPU time over the whole run (warm-up included), ms: the mx6gate
    /// process, all Postfix processes (master and children), this process
    /// (the clients).
    pub(super) cpu_daemon_ms: f64,
    pub(super) cpu_postfix_ms: f64,
    pub(super) cpu_clients_ms: f64,
    /// All CPUs' busy time (/proc/stat: everything but idle and iowait), ms.
    pub(super) cpu_machine_ms: f64,
    /// Of which irq + softirq (mostly the bench's own TCP traffic on the
    /// veth, charged to no process), ms.
    pub(super) cpu_softirq_ms: f64,
    /// Wall time of the whole run (warm-up included), s.
    pub(super) wall_s: f64,
}

impl RunResult {
    /// CPU time of the server being measured per connection, µs.
    pub(super) fn server_cpu_us(&self) -> f64 {
        let ms = match self.server {
            Server::Responder(_) => self.cpu_daemon_ms,
            Server::Postfix(_) | Server::Postscreen => self.cpu_postfix_ms,
        };
        if self.attempts_all == 0 {
            return 0.0;
        }
        ms * 1000.0 / self.attempts_all as f64
    }

    pub(super) fn errors(&self) -> u64 {
        self.counts.iter().sum::<u64>() - self.ok
    }
}

// ---------------------------------------------------------------- one run

pub(super) fn run_point(
    lab: &Lab,
    plan: &Plan,
    server: Server,
    n: usize,
    rep: usize,
) -> Result<RunResult> {
    lab.gate.ok(&["mode", server.mode()])?;
    if let Server::Responder(threads) = server {
        set_responder_threads(lab, threads)?;
    }
    let peer = server.postfix(lab);
    // Let the previous run's sessions (draining, TIME_WAIT) settle a bit.
    std::thread::sleep(Duration::from_millis(500));
    let gw_before = netstat(&lab.topo.gw)?;
    let snd_before = netstat(&lab.topo.sender)?;
    let sk_before = sk_counters(&lab.gate);

    let cpu_before = CpuSnapshot::take(lab, peer);
    let t_run = Instant::now();
    let stop = AtomicBool::new(false);
    let master = peer.master_pid();
    let daemon_pid = lab.daemon_pid;
    let (tallies, (peak_rss, peak_smtpd)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(&stop, daemon_pid, master));
        let tallies = lab.topo.sender.enter(|| drive(plan, server, n));
        stop.store(true, Ordering::Relaxed);
        let peaks = sampler.join().unwrap_or((0, 0));
        (tallies, peaks)
    });
    let wall_s = t_run.elapsed().as_secs_f64();
    let cpu_after = CpuSnapshot::take(lab, peer);
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
pub(super) fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
