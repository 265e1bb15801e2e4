//! Real Postfix instances inside test namespaces.
//!
//! Each instance is a separate Postfix (`postfix -c DIR/etc`) with its own
//! queue, data directory, log file and mail spool under
//! `$TMPDIR/mx6t-<pid>/pf<n>/`; the system-wide instance is never touched.
//! Its processes run in the namespace it was started in (the master is
//! started through `nsenter --net`, the children inherit it), so it listens
//! on port 25 there and nowhere else.
//!
//! Layout of an instance directory:
//!
//! ```text
//! etc/main.cf, etc/master.cf   config_directory (root, 0755/0644)
//! queue/                       queue_directory: made by us (root, 0755);
//!                              its subdirectories are made by `postfix check`
//! data/                        data_directory (made by `postfix check`)
//! spool/                       mail_spool_directory (1777): one mbox file per
//!                              local user; all mail to the domain lands in
//!                              spool/root
//! maillog                      maillog_file (no syslog in a namespace)
//! ```

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{cleanup, cmd, netns::Netns};

static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Networks every test instance trusts (`mynetworks`): loopback, the IPv6
/// documentation prefix and the two IPv4 TEST-NETs the tests use.
pub const TEST_MYNETWORKS: &str =
    "127.0.0.0/8 [::1]/128 [2001:db8::]/32 198.51.100.0/24 203.0.113.0/24";

/// What the instance is for; decides the role-specific main.cf settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The gateway's MTA: listens on port 25 on all addresses of its
    /// namespace, accepts mail for `domain` and delivers it locally to an
    /// mbox file; never sends mail anywhere (`default_transport = error`).
    Receiver,
    /// A sending MTA: SMTP listener on loopback only (inject mail there),
    /// delivers with `smtp`, tries IPv6 first (`smtp_address_preference =
    /// ipv6`). Name resolution (DNS/hosts) is left to the caller.
    Sender,
}

/// The configuration of one instance: role defaults plus overrides.
/// `start` writes it out and starts Postfix in a namespace.
#[derive(Clone, Debug)]
pub struct PostfixInstance {
    pub role: Role,
    /// `myhostname` (also in the banner and Received headers).
    pub hostname: String,
    /// `mydomain`; for a receiver also a local destination.
    pub domain: String,
    /// The `smtp inet` service of master.cf: `"25"`, `"[::1]:2525"`, … or
    /// None for no SMTP listener.
    pub smtpd_listen: Option<String>,
    /// A resolv.conf for this instance alone: Postfix then runs in a
    /// private mount namespace with it bind-mounted over /etc/resolv.conf
    /// (the host's file is never touched).
    pub resolv_conf: Option<PathBuf>,
    overrides: Vec<(String, String)>,
    extra_master: Vec<String>,
}

impl PostfixInstance {
    /// The receiving MTA of a gateway.
    pub fn receiver(hostname: &str, domain: &str) -> PostfixInstance {
        PostfixInstance {
            role: Role::Receiver,
            hostname: hostname.into(),
            domain: domain.into(),
            smtpd_listen: Some("25".into()),
            resolv_conf: None,
            overrides: Vec::new(),
            extra_master: Vec::new(),
        }
    }

    /// A sending MTA (settings from DESIGN.md, "Sending MTAs on a 4xx greeting").
    pub fn sender(hostname: &str, domain: &str) -> PostfixInstance {
        PostfixInstance {
            role: Role::Sender,
            hostname: hostname.into(),
            domain: domain.into(),
            smtpd_listen: Some("25".into()),
            resolv_conf: None,
            overrides: Vec::new(),
            extra_master: Vec::new(),
        }
    }

    /// Set (or override) a main.cf parameter. Later calls win.
    pub fn set(mut self, key: &str, value: &str) -> PostfixInstance {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Append a raw line (service definition or `  -o …` continuation) to
    /// master.cf.
    pub fn master_line(mut self, line: &str) -> PostfixInstance {
        self.extra_master.push(line.into());
        self
    }

    /// The SMTP listener's port, if there is a listener.
    pub fn smtpd_port(&self) -> Option<u16> {
        let l = self.smtpd_listen.as_deref()?;
        let port = l.rsplit(':').next().unwrap_or(l);
        match port {
            "smtp" => Some(25),
            p => p.parse().ok(),
        }
    }

    /// main.cf parameters, in order, for an instance living in `dir`.
    pub fn main_cf_params(&self, dir: &Path) -> Vec<(String, String)> {
        let d = dir.display();
        let mut p: Vec<(String, String)> = vec![
            ("compatibility_level".into(), "3.6".into()),
            ("queue_directory".into(), format!("{d}/queue")),
            ("data_directory".into(), format!("{d}/data")),
            ("mail_owner".into(), "postfix".into()),
            ("setgid_group".into(), "postdrop".into()),
            ("myhostname".into(), self.hostname.clone()),
            ("mydomain".into(), self.domain.clone()),
            ("myorigin".into(), "$myhostname".into()),
            ("inet_protocols".into(), "all".into()),
            ("mynetworks".into(), TEST_MYNETWORKS.into()),
            // no syslog inside a namespace
            ("maillog_file_prefixes".into(), format!("{d}")),
            ("maillog_file".into(), format!("{d}/maillog")),
            // no /etc/aliases of the host
            ("alias_maps".into(), String::new()),
            ("alias_database".into(), String::new()),
            ("mail_spool_directory".into(), format!("{d}/spool")),
            ("biff".into(), "no".into()),
            ("append_dot_mydomain".into(), "no".into()),
            ("smtputf8_enable".into(), "no".into()),
            // no reverse DNS for clients: there is no resolver in the lab
            ("smtpd_peername_lookup".into(), "no".into()),
            (
                "smtpd_banner".into(),
                "$myhostname ESMTP Postfix (mx6gate-tests)".into(),
            ),
            ("queue_run_delay".into(), "1s".into()),
            ("minimal_backoff_time".into(), "1s".into()),
            ("maximal_backoff_time".into(), "2s".into()),
        ];
        match self.role {
            Role::Receiver => p.extend([
                ("inet_interfaces".into(), "all".into()),
                (
                    "mydestination".into(),
                    format!("$myhostname, localhost, {}", self.domain),
                ),
                // any local part is accepted …
                ("local_recipient_maps".into(), String::new()),
                // … and unknown users' mail goes to root (spool/root)
                ("luser_relay".into(), "root@localhost".into()),
                (
                    "default_transport".into(),
                    "error:mx6gate-tests receiver delivers locally only".into(),
                ),
                (
                    "relay_transport".into(),
                    "error:mx6gate-tests receiver delivers locally only".into(),
                ),
            ]),
            Role::Sender => p.extend([
                ("inet_interfaces".into(), "loopback-only".into()),
                ("mydestination".into(), "localhost".into()),
                ("smtp_address_preference".into(), "ipv6".into()),
                ("default_transport".into(), "smtp".into()),
            ]),
        }
        for (k, v) in &self.overrides {
            if let Some(slot) = p.iter_mut().find(|(pk, _)| pk == k) {
                slot.1 = v.clone();
            } else {
                p.push((k.clone(), v.clone()));
            }
        }
        p
    }

    /// The main.cf text for an instance living in `dir`.
    pub fn main_cf(&self, dir: &Path) -> String {
        let mut s = String::from("# generated by mx6gate-tests\n");
        for (k, v) in self.main_cf_params(dir) {
            let _ = writeln!(s, "{k} = {v}");
        }
        s
    }

    /// The master.cf text: Debian's services, all with `chroot = n` (the
    /// instance has no chroot jail), plus the SMTP listener if any.
    pub fn master_cf(&self) -> String {
        let mut s = String::from(
            "# generated by mx6gate-tests; every service runs unchrooted\n\
             # service type  private unpriv  chroot  wakeup  maxproc command\n",
        );
        if let Some(l) = &self.smtpd_listen {
            let _ = writeln!(
                s,
                "{l:<10} inet  n       -       n       -       -       smtpd"
            );
        }
        s.push_str(MASTER_CF_SERVICES);
        for l in &self.extra_master {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Write the instance into `dir` (which must exist and be traversable
    /// by the postfix user) and run `postfix check`, which creates the queue
    /// subdirectories and data directory with the right owners.
    pub fn write_config(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .with_context(|| format!("chmod {m:o} {}", p.display()))
        };
        mode(dir, 0o755)?;
        let etc = dir.join("etc");
        for (sub, m) in [("etc", 0o755), ("queue", 0o755), ("spool", 0o1777)] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
            mode(&p, m)?;
        }
        std::fs::write(etc.join("main.cf"), self.main_cf(dir))?;
        std::fs::write(etc.join("master.cf"), self.master_cf())?;
        mode(&etc.join("main.cf"), 0o644)?;
        mode(&etc.join("master.cf"), 0o644)?;
        // Postfix does not read a main.cf modified in the last second or so:
        // it sleeps in 300 ms steps until the file is "stable" (~2 s for a
        // fresh file). Backdate the files.
        for f in ["main.cf", "master.cf"] {
            backdate(&etc.join(f))?;
        }
        // `postfix check` makes the queue subdirectories and the data
        // directory with the owners and modes of postfix-files.
        let etc_s = etc.display().to_string();
        cmd::run(&["postfix", "-c", &etc_s, "check"], Duration::from_secs(60)).with_context(
            || {
                format!(
                    "postfix check of {etc_s}; log: {}",
                    tail(&read_log(dir), 20)
                )
            },
        )?;
        Ok(())
    }

    /// Write the configuration into a fresh directory under the run dir and
    /// start the instance inside `ns`. Returns once the master runs and (if
    /// there is an SMTP listener) the port is listening in `ns`.
    pub fn start(&self, ns: &Netns) -> Result<Postfix> {
        if !cmd::have_program("postfix") {
            bail!("postfix is not installed (apt-get install postfix, preseeded \"No configuration\")");
        }
        let n = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = cleanup::run_dir()?.join(format!("pf{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ok();
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        cleanup::register_postfix(&dir);
        // From here on Drop cleans up.
        let pf = Postfix {
            dir,
            ns_name: ns.name().to_string(),
            config: self.clone(),
            stopped: false,
        };
        self.write_config(&pf.dir)?;
        let etc = pf.config_dir().display().to_string();
        let out = match &self.resolv_conf {
            None => ns.try_run(&["postfix", "-c", &etc, "start"], Duration::from_secs(60))?,
            Some(resolv) => {
                let resolv = resolv.display().to_string();
                // The master daemonizes inside the private mount namespace;
                // every Postfix process it starts inherits it.
                ns.try_run(
                    &[
                        "unshare",
                        "--mount",
                        "--propagation",
                        "private",
                        "--",
                        "sh",
                        "-c",
                        "mount --bind \"$1\" /etc/resolv.conf && exec postfix -c \"$2\" start",
                        "sh",
                        &resolv,
                        &etc,
                    ],
                    Duration::from_secs(60),
                )?
            }
        };
        if !out.status.success() {
            bail!(
                "[netns {}] postfix -c {etc} start failed: {}; log: {}",
                ns.name(),
                cmd::describe_output(&out),
                tail(&pf.log(), 20)
            );
        }
        pf.wait_started(ns, Duration::from_secs(20))?;
        Ok(pf)
    }
}

/// master.cf services other than the SMTP listener (Debian 3.7's, chroot n).
const MASTER_CF_SERVICES: &str = "\
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
";

/// A running Postfix instance. Dropping it stops it (`postfix stop`, then
/// SIGKILL for anything left in the master's session) and removes its
/// directory.
#[derive(Debug)]
pub struct Postfix {
    dir: PathBuf,
    ns_name: String,
    config: PostfixInstance,
    stopped: bool,
}

impl Postfix {
    /// Start a receiving MTA in `ns` that accepts mail for `domain` (any
    /// local part) on port 25 of every address in `ns`, from anywhere, and
    /// delivers it to the mbox read by [`Postfix::mailbox`].
    pub fn start_receiver(ns: &Netns, hostname: &str, domain: &str) -> Result<Postfix> {
        PostfixInstance::receiver(hostname, domain).start(ns)
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config_directory` (what `postfix -c` takes).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The mail spool directory (one mbox per local user).
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The namespace it runs in.
    pub fn netns_name(&self) -> &str {
        &self.ns_name
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &PostfixInstance {
        &self.config
    }

    /// The master's pid, from its pid file (None once it is gone).
    pub fn master_pid(&self) -> Option<i32> {
        master_pid(&self.dir).filter(|p| cleanup::pid_alive(*p))
    }

    /// Run `postfix -c DIR <args>` (from the host side: control commands
    /// only signal the master or touch the queue, which needs no namespace).
    pub fn postfix(&self, args: &[&str]) -> Result<Output> {
        let etc = self.config_dir().display().to_string();
        let mut argv = vec!["postfix", "-c", &etc];
        argv.extend_from_slice(args);
        cmd::run(&argv, Duration::from_secs(60))
    }

    /// Everything delivered so far: the mbox files of the spool, in name
    /// order, concatenated. Each message starts with a `From ` line.
    pub fn mailbox(&self) -> Result<String> {
        let spool = self.spool_dir();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&spool)
            .with_context(|| format!("reading {}", spool.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().map(|x| x != "lock").unwrap_or(true))
            .collect();
        names.sort();
        let mut all = String::new();
        for p in names {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
        Ok(all)
    }

    /// The delivered messages, split (each starting with its `From ` line).
    pub fn messages(&self) -> Result<Vec<String>> {
        Ok(split_mbox(&self.mailbox()?))
    }

    /// How many messages were delivered.
    pub fn message_count(&self) -> Result<usize> {
        Ok(count_mbox(&self.mailbox()?))
    }

    /// Wait (polling, bounded by `timeout`) until at least `n` messages were
    /// delivered; returns the mailbox. The error carries the log's tail.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mbox = self.mailbox()?;
            let have = count_mbox(&mbox);
            if have >= n {
                return Ok(mbox);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{have} of {n} messages delivered to {} within {timeout:?}; log tail:\n{}",
                    self.spool_dir().display(),
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The instance's log (maillog_file); empty if not written yet.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// Wait (bounded) until the log contains `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{needle:?} not in the log within {timeout:?}; log tail:\n{}",
                    tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_started(&self, ns: &Netns, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let port = self.config.smtpd_port();
        loop {
            let master_ok = self.master_pid().is_some();
            let listening = match port {
                None => true,
                Some(p) => ns
                    .try_run(&["ss", "-Hltn"], Duration::from_secs(10))
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                            l.split_whitespace()
                                .nth(3)
                                .map(|a| a.ends_with(&format!(":{p}")))
                                .unwrap_or(false)
                        })
                    })
                    .unwrap_or(false),
            };
            if master_ok && listening {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "postfix in netns {} not ready within {timeout:?} (master running: {master_ok}, \
                     port {port:?} listening: {listening}); log tail:\n{}",
                    ns.name(),
                    tail(&self.log(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stop the instance (idempotent): `postfix stop`, wait for the master
    /// to exit (≤ 5 s), then SIGKILL whatever is left of its session.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let res = if self.master_pid().is_some() {
            self.postfix(&["stop"]).map(|_| ())
        } else {
            Ok(())
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.master_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_instance_dir(&self.dir);
        res
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "mx6gate-tests: stopping postfix in {}: {e:#}",
                self.dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        cleanup::unregister_postfix(&self.dir);
    }
}

/// Set a file's modification time 60 s into the past.
fn backdate(p: &Path) -> Result<()> {
    let t = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t)))
        .with_context(|| format!("backdating {}", p.display()))
}

fn read_log(dir: &Path) -> String {
    std::fs::read(dir.join("maillog"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn master_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("queue/pid/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SIGKILL the master of the instance in `dir` and every process of its
/// session (Postfix's master is a session leader; its children share the
/// session). Checks the pid really is a Postfix master first.
pub(crate) fn kill_instance_dir(dir: &Path) {
    let Some(pid) = master_pid(dir) else { return };
    if !cleanup::pid_alive(pid) {
        return;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "master" {
        return; // pid reused by something else
    }
    for _round in 0..20 {
        let members = session_members(pid);
        if members.is_empty() {
            return;
        }
        for p in members {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes whose session id is `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if let Some(f) = cleanup::proc_stat_fields(&stat) {
                if f.first() != Some(&"Z")
                    && f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid)
                {
                    v.push(pid);
                }
            }
        }
    }
    v
}

/// Count the messages of an mbox (lines starting with `From `; Postfix
/// quotes such body lines as `>From `).
pub fn count_mbox(mbox: &str) -> usize {
    mbox.lines().filter(|l| l.starts_with("From ")).count()
}

/// Split an mbox into its messages.
pub fn split_mbox(mbox: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in mbox.split_inclusive('\n') {
        if l.starts_with("From ") || out.is_empty() {
            out.push(String::new());
        }
        out.last_mut().unwrap().push_str(l);
    }
    out.retain(|m| !m.trim().is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_or_append() {
        let i = PostfixInstance::receiver("mx.example.test", "example.test")
            .set("inet_interfaces", "loopback-only")
            .set("message_size_limit", "1000");
        let p = i.main_cf_params(Path::new("/x"));
        let get = |k: &str| {
            p.iter()
                .filter(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("inet_interfaces"), vec!["loopback-only".to_string()]);
        assert_eq!(get("message_size_limit"), vec!["1000".to_string()]);
        assert_eq!(get("queue_directory"), vec!["/x/queue".to_string()]);
        assert!(get("mydestination")[0].contains("example.test"));
    }

    #[test]
    fn master_cf_is_unchrooted_and_has_listener() {
        let m = PostfixInstance::receiver("h", "d").master_cf();
        assert!(m
            .lines()
            .any(|l| l.starts_with("25 ") && l.ends_with("smtpd")));
        for l in m
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        {
            assert_eq!(l.split_whitespace().nth(4), Some("n"), "chrooted: {l}");
        }
        let s = PostfixInstance::receiver("h", "d");
        assert_eq!(s.smtpd_port(), Some(25));
        let mut s2 = s.clone();
        s2.smtpd_listen = Some("[::1]:2525".into());
        assert_eq!(s2.smtpd_port(), Some(2525));
    }

    #[test]
    fn mbox_split_and_count() {
        let m = "From a@b  Sat\nX: 1\n\n>From quoted\nbody\n\nFrom c@d  Sun\nY: 2\n\nbody2\n";
        assert_eq!(count_mbox(m), 2);
        let parts = split_mbox(m);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].contains(">From quoted"));
        assert!(parts[1].starts_with("From c@d"));
    }
}
