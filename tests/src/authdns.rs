//! A real authoritative DNS server — Debian's Knot DNS (`knotd`) — inside a
//! namespace, serving test zones on 127.0.0.1:53 of that namespace only.
//!
//! Unlike [`crate::dns::Dnsmasq`] it serves real zone files: a TTL per
//! record, an SOA (so NXDOMAIN and NODATA carry a negative TTL), and zones
//! that can be replaced while it runs ([`AuthDns::set_zone`] bumps the
//! serial and waits until the new one is served). [`AuthDns::pause`]
//! stops the process (SIGSTOP): queries reach its socket and are never
//! answered, as with a server that hangs.
//!
//! Everything lives in a temporary directory (config, zone files, control
//! socket); the server runs as root in the foreground and is killed on
//! drop (or with the namespace).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cmd, Netns};

/// Where the server listens, inside its namespace.
pub const LISTEN: &str = "127.0.0.1:53";
/// TTL of records that do not give one.
pub const DEFAULT_TTL: u32 = 300;
/// The SOA's negative-caching TTL (RFC 2308): NXDOMAIN/NODATA answers'.
pub const NEGATIVE_TTL: u32 = 30;

/// One zone: its origin (`example.test`) and its records in zone-file
/// syntax, relative to the origin (`_spf TXT "v=spf1 …"`,
/// `mx1 60 AAAA 2001:db8::25`). The SOA and NS are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub origin: String,
    pub records: String,
}

impl Zone {
    pub fn new(origin: &str, records: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_string(),
            records: records.to_string(),
        }
    }
}

pub struct AuthDns {
    child: Child,
    dir: tempfile::TempDir,
    serials: BTreeMap<String, u32>,
    paused: bool,
}

impl AuthDns {
    /// Start knotd in `ns` with `zones`; returns once every zone is served.
    pub fn start(ns: &Netns, zones: &[Zone]) -> Result<AuthDns> {
        if !cmd::have_program("knotd") || !cmd::have_program("knotc") {
            bail!("Knot DNS is not installed (apt-get install knot; scripts/install-deps.sh does)");
        }
        let dir = tempfile::Builder::new().prefix("mx6t-knot").tempdir()?;
        let mut serials = BTreeMap::new();
        for z in zones {
            write_zone(dir.path(), z, 1)?;
            serials.insert(z.origin.clone(), 1);
        }
        std::fs::write(dir.path().join("knot.conf"), config(dir.path(), zones))?;
        let log = std::fs::File::create(dir.path().join("knotd.log"))?;
        let conf = conf_path(dir.path());
        let mut c = ns.command(&["knotd", "-c", conf.to_str().expect("utf-8 temp path")]);
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = ns.spawn_command(c).context("starting knotd")?;
        let d = AuthDns {
            child,
            dir,
            serials,
            paused: false,
        };
        let origins: Vec<String> = d.serials.keys().cloned().collect();
        for origin in origins {
            d.wait_serial(&origin, 1)?;
        }
        Ok(d)
    }

    /// The server's address inside its namespace.
    pub fn addr(&self) -> SocketAddr {
        LISTEN.parse().expect("constant")
    }

    /// Replace a zone's records (a new serial) and wait until the server
    /// answers from them.
    pub fn set_zone(&mut self, zone: &Zone) -> Result<()> {
        let Some(serial) = self.serials.get(&zone.origin).copied() else {
            bail!("{} is not one of this server's zones", zone.origin);
        };
        let serial = serial + 1;
        write_zone(self.dir.path(), zone, serial)?;
        self.knotc(&["-b", "zone-reload", &zone.origin])?;
        self.serials.insert(zone.origin.clone(), serial);
        self.wait_serial(&zone.origin, serial)
    }

    /// Stop answering (SIGSTOP): queries are received and never answered.
    /// Returns once every thread of the server is stopped (a signal takes
    /// effect when each thread next runs, not when kill(2) returns).
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.all_threads_stopped()? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "knotd (pid {}) did not stop within 10 s of SIGSTOP",
            self.child.id()
        )
    }

    /// Whether /proc shows every thread in state T (stopped).
    fn all_threads_stopped(&self) -> Result<bool> {
        let tasks = PathBuf::from(format!("/proc/{}/task", self.child.id()));
        let mut any = false;
        for t in
            std::fs::read_dir(&tasks).with_context(|| format!("reading {}", tasks.display()))?
        {
            let stat = std::fs::read_to_string(t?.path().join("stat")).unwrap_or_default();
            // "PID (comm) STATE …": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            match state {
                Some("T") | Some("t") => any = true,
                None => {} // the thread just exited
                Some(_) => return Ok(false),
            }
        }
        Ok(any)
    }

    /// Answer again (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// knotd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    fn signal(&self, sig: i32) -> Result<()> {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        if rc != 0 {
            bail!("signal {sig} to knotd: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn knotc(&self, args: &[&str]) -> Result<String> {
        let conf = conf_path(self.dir.path());
        let mut argv = vec![
            "knotc",
            "-c",
            conf.to_str().expect("utf-8 temp path"),
            "-t",
            "10",
        ];
        argv.extend_from_slice(args);
        let out = cmd::try_run(&argv, Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "`{}` failed: {}\nknotd log:\n{}",
                cmd::describe(&argv),
                cmd::describe_output(&out),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Wait (≤ 20 s) until the zone's SOA serial is `serial`.
    fn wait_serial(&self, origin: &str, serial: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(out) = self.knotc(&["zone-read", origin, "@", "SOA"]) {
                // "[example.test.] example.test. 300 SOA ns. host. SERIAL …"
                let served = out
                    .split_whitespace()
                    .skip_while(|w| *w != "SOA")
                    .nth(3)
                    .and_then(|s| s.parse::<u32>().ok());
                if served == Some(serial) {
                    return Ok(());
                }
                last = out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "knotd did not serve {origin} serial {serial} within 20 s (last: {last:?})\nknotd log:\n{}",
            self.log()
        )
    }
}

impl Drop for AuthDns {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.signal(libc::SIGCONT);
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn conf_path(dir: &Path) -> PathBuf {
    dir.join("knot.conf")
}

fn config(dir: &Path, zones: &[Zone]) -> String {
    let d = dir.display();
    let listen = LISTEN.replace(':', "@");
    let mut c = format!(
        r#"server:
    rundir: "{d}"
    listen: {listen}
    # Few threads: the machine is shared, the zones are tiny.
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
control:
    listen: "{d}/knot.sock"
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    # Serve the files as written: no journal, no DNSSEC, no write-back.
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
"#
    );
    for z in zones {
        let _ = writeln!(c, "  - domain: {}", z.origin);
    }
    c
}

fn write_zone(dir: &Path, z: &Zone, serial: u32) -> Result<()> {
    let o = &z.origin;
    let text = format!(
        "$ORIGIN {o}.\n$TTL {DEFAULT_TTL}\n\
         @ SOA ns.{o}. hostmaster.{o}. {serial} 3600 600 86400 {NEGATIVE_TTL}\n\
         @ NS ns.{o}.\n\
         ns AAAA 2001:db8:53::53\n\
         {}\n",
        z.records
    );
    std::fs::write(dir.join(format!("{o}.zone")), text)?;
    Ok(())
}
