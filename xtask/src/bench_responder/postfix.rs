//! The Postfix peers — smtpd, and postscreen beside it on its own address —
//! started, smtpd's process limit changed between passes, their RSS and
//! warnings for the report.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mx6gate_tests::{
    cmd, Netns, Postfix, PostfixInstance, GW_HOSTNAME, GW_V6, MAIL_DOMAIN, STRANGER_NET,
};

use super::{
    observe::{comm_ppid, listen_backlogs, proc_pids, rss_kb},
    POSTFIX_LIMIT, POSTSCREEN_PROCESS_LIMIT, POSTSCREEN_V6, RESPONDER_CAP,
};

/// Raise Postfix's `default_process_limit` and restart it in `ns`. Not
/// `postfix reload`: the master sizes an inet listener's backlog as
/// max(maxproc, default_process_limit) when it creates the socket, and a
/// reload keeps the existing socket (backlog 100 stays 100).
pub(super) fn set_postfix_limit(pf: &Postfix, ns: &Netns, limit: u32) -> Result<()> {
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
                .any(|(a, q)| *a == format!("[{GW_V6}]:25") && *q == want);
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
pub(super) fn postfix_rss(pf: &Postfix) -> String {
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
pub(super) fn postfix_warnings(pf: &Postfix) -> Vec<String> {
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

/// The smtpd instance: the tests' receiver, bound to `[GW_V6]:25` only
/// (not the wildcard, so that the postscreen instance can have port 25 on
/// its own address beside it).
pub(super) fn start_smtpd(ns: &Netns) -> Result<Postfix> {
    let mut smtpd = PostfixInstance::receiver(GW_HOSTNAME, MAIL_DOMAIN)
        .set("default_process_limit", &POSTFIX_LIMIT.to_string());
    smtpd.smtpd_listen = Some(format!("[{GW_V6}]:25"));
    smtpd.start(ns)
}

/// The postscreen instance: Postfix's own answer to "turn this client away
/// at connect time, from one process". Its access list rejects the
/// clients' network and `postscreen_denylist_action = drop` (Postfix 3.6's
/// name for `postscreen_blacklist_action`) answers it with a 521 and
/// closes, before any after-greeting test (those are off by default) and
/// before any smtpd. Listens on `[POSTSCREEN_V6]:25`.
pub(super) fn start_postscreen(ns: &Netns) -> Result<Postfix> {
    let access = mx6gate_tests::run_dir()?.join("postscreen-access.cidr");
    std::fs::write(
        &access,
        format!("# mx6gate bench: the clients' network is denylisted\n{STRANGER_NET} reject\n"),
    )
    .with_context(|| format!("writing {}", access.display()))?;
    let mut ps = PostfixInstance::receiver(GW_HOSTNAME, MAIL_DOMAIN)
        // Not the clients' prefix: permit_mynetworks would let them past.
        .set("mynetworks", "127.0.0.0/8 [::1]/128")
        .set(
            "postscreen_access_list",
            &format!("permit_mynetworks, cidr:{}", access.display()),
        )
        .set("postscreen_denylist_action", "drop")
        // As the responder's max_per_source: one source, many clients.
        .set(
            "postscreen_client_connection_count_limit",
            &RESPONDER_CAP.to_string(),
        )
        // The master gives an inet listener a backlog of
        // max(maxproc, default_process_limit); postscreen's maxproc is 1.
        .set(
            "default_process_limit",
            &POSTSCREEN_PROCESS_LIMIT.to_string(),
        )
        .master_line(&format!(
            "[{POSTSCREEN_V6}]:25 inet  n       -       n       -       1       postscreen"
        ))
        .master_line("smtpd      pass  -       -       n       -       -       smtpd")
        .master_line("dnsblog    unix  -       -       n       -       0       dnsblog")
        .master_line("tlsproxy   unix  -       -       n       -       0       tlsproxy");
    ps.smtpd_listen = None;
    let pf = ps.start(ns)?;
    // With no smtpd_listen, start() does not wait for the port.
    let want = format!("[{POSTSCREEN_V6}]:25");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !listen_backlogs(ns)?.iter().any(|(a, _)| *a == want) {
        if Instant::now() >= deadline {
            bail!(
                "postscreen did not listen on {want} within 20 s; log:\n{}",
                mx6gate_tests::postfix::tail(&pf.log(), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pf)
}
