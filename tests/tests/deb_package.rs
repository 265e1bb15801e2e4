//! The Debian package end to end (issue 5 parts 3 and 4): install the .deb
//! that `cargo xtask deb` built, run the packaged unit under a real systemd
//! against a veth in a namespace lab, exercise start/reload/stop/restart and
//! Restart=on-failure, then purge and check nothing is left attached,
//! pinned or installed.
//!
//! PID 1 of this machine (and CI's) is not systemd, so `systemctl` cannot
//! talk to the host's init. The test boots the installed systemd as PID 1 of
//! its own PID/mount/UTS/cgroup namespace (`mx6gate_tests::systemd`), with a
//! minimal target, and runs `dpkg` inside it too, so the maintainer scripts
//! see a running systemd exactly as on a real host. The unit file, its
//! ExecStart, Type=notify, ExecReload and all its hardening are the
//! package's; a drop-in only adds NetworkNamespacePath= (the lab's gateway
//! namespace), DefaultDependencies=no (this systemd must not pull in
//! sysinit.target: no udev, sysctl or module loading against the host's
//! kernel) and a log file (there is no journald in there). The lab config
//! replaces the package's conffile, as an admin's edit would, with its own
//! pin path.
//!
//! The machine's own /etc, /var and /usr are never changed: the systemd
//! instance has private copies of them (overlays, see
//! `mx6gate_tests::systemd`), so `dpkg` installs into and purges from those
//! copies and its database copy. What the machine already holds (an
//! mx6gate install, /etc/mx6gate, a /var/lib/mx6gate left by an earlier
//! `mx6gate run`) is hidden in the copy first, so the test neither refuses
//! because of it nor touches it. Files are checked through the instance's
//! view of them (`/proc/PID/root/...`).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mx6gate_tests::{systemd::SystemdInstance, *};

const UNIT: &str = "mx6gate.service";
const LOG: &str = "/run/mx6gate-lab.log";

/// The .deb under test: $MX6GATE_DEB (set by `cargo xtask test`), else the
/// newest one `cargo xtask deb` left in target/debian.
fn deb_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MX6GATE_DEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no .deb in {}: run `cargo xtask deb`", dir.display()))
}

/// mx6gate's state in the instance's copy of the dpkg database.
fn dpkg_status(sd: &SystemdInstance) -> String {
    let out = sd
        .try_run(&["dpkg-query", "-W", "-f=${db:Status-Status}", "mx6gate"])
        .expect("dpkg-query");
    // Unknown to dpkg at all (never installed, or purged and forgotten).
    if !out.status.success() {
        return "not-installed".into();
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a machine with mx6gate installed or run before may hold.
const MACHINE_TRACES: [&str; 4] = [
    "/etc/mx6gate",
    "/var/lib/mx6gate",
    "/usr/sbin/mx6gate",
    "/lib/systemd/system/mx6gate.service",
];

/// Everything the test sets up, torn down in order even when it fails:
/// purge the package (stopping the service and detaching the gate), remove
/// whatever pins remain, kill the systemd instance (its copies of /etc,
/// /var and /usr go with it), remove the namespaces.
struct Lab {
    sd: SystemdInstance,
    topo: Topology,
    pin_path: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if dpkg_status(&self.sd) != "not-installed" {
            let _ = self.sd.try_run(&["dpkg", "--purge", "mx6gate"]);
        }
        if self.pin_path.exists() {
            mx6gate_tests::gate::remove_pins(&self.pin_path);
        }
    }
}

impl Lab {
    fn log(&self) -> String {
        std::fs::read_to_string(self.sd.path(LOG)).unwrap_or_default()
    }

    /// `p` as the instance (and the installed package) sees it.
    fn exists(&self, p: &str) -> bool {
        self.sd.path(p).symlink_metadata().is_ok()
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.sd.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// `systemctl ARGS` that must succeed; panics with the service log.
    fn systemctl(&self, args: &[&str]) {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        if let Err(e) = self.sd.run(&argv) {
            panic!("{e:#}\nservice log:\n{}", self.log());
        }
    }

    fn show(&self, prop: &str) -> String {
        self.sd.show(UNIT, prop).unwrap()
    }

    /// `mx6gate ARGS` inside the systemd instance and the gateway netns,
    /// like an admin's shell on the gateway.
    fn mx6gate(&self, args: &[&str]) -> String {
        let net = format!("--net={}", self.topo.gw.path().display());
        let mut argv = vec!["nsenter", net.as_str(), "--", "mx6gate"];
        argv.extend_from_slice(args);
        self.sd.run(&argv).unwrap()
    }

    /// The XDP program id attached to the gateway's veth, if any.
    fn xdp_prog(&self) -> Option<String> {
        let out = self
            .topo
            .gw
            .run_stdout(&["ip", "-d", "link", "show", "dev", &self.topo.gw_if])
            .unwrap();
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "prog/xdp" {
                // "prog/xdp id 42 ..."
                words.next();
                return words.next().map(str::to_string);
            }
        }
        None
    }

    /// Poll (≤ 20 s) until `f` holds; panics with `what` and the log.
    fn wait_for(&self, what: &str, f: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; service log:\n{}", self.log());
    }
}

#[test]
fn deb_installs_runs_under_systemd_and_purges_clean() {
    if !require_root() {
        return;
    }
    assert!(
        SystemdInstance::available(),
        "this test needs systemd installed (/lib/systemd/systemd) and unshare"
    );
    let deb = deb_path();
    // What the machine holds, to check at the end that none of it changed.
    let machine_before: Vec<(&str, Option<std::fs::Metadata>)> = MACHINE_TRACES
        .iter()
        .chain(&["/var/lib/dpkg/status"])
        .map(|p| (*p, std::fs::symlink_metadata(p).ok()))
        .collect();

    let topo = Topology::new().unwrap();
    let pin_path = PathBuf::from(format!(
        "/sys/fs/bpf/{}-deb",
        mx6gate_tests::own_prefix().trim_end_matches('-')
    ));
    let dropin = format!(
        "# test only, see tests/tests/deb_package.rs\n\
         [Unit]\n\
         DefaultDependencies=no\n\
         [Service]\n\
         NetworkNamespacePath={}\n\
         StandardOutput=append:{LOG}\n\
         StandardError=append:{LOG}\n",
        topo.gw.path().display()
    );
    let sd = SystemdInstance::boot(&[("mx6gate.service.d/lab.conf", &dropin)]).unwrap();
    let lab = Lab { sd, topo, pin_path };
    // The private copy starts as a machine without mx6gate.
    let hidden = lab.sd.hide("mx6gate", &MACHINE_TRACES).unwrap();
    if !hidden.is_empty() {
        eprintln!("hidden from the test's copy of the system (the machine keeps them): {hidden:?}");
    }
    assert_eq!(dpkg_status(&lab.sd), "not-installed");
    for p in MACHINE_TRACES {
        assert!(!lab.exists(p), "{p} still visible in the private copy");
    }

    // --- install: postinst makes the unit known, starts nothing.
    let deb_s = deb.to_str().unwrap();
    lab.sd.run(&["dpkg", "-i", deb_s]).unwrap();
    assert_eq!(dpkg_status(&lab.sd), "installed");
    // Into the copy only: the machine's /usr is as it was.
    assert_eq!(
        Path::new("/usr/sbin/mx6gate").exists(),
        machine_before[2].1.is_some(),
        "dpkg -i in the test changed the machine's /usr"
    );
    assert_eq!(
        lab.show("LoadState"),
        "loaded",
        "postinst ran daemon-reload"
    );
    assert_eq!(
        lab.show("UnitFileState"),
        "disabled",
        "a fresh install is not enabled"
    );
    assert_eq!(
        lab.show("ActiveState"),
        "inactive",
        "a fresh install is not started"
    );
    for f in [
        "/lib/systemd/system/mx6gate.service",
        "/etc/mx6gate/partners.d",
        "/usr/share/man/man8/mx6gate.8.gz",
        "/usr/share/man/man8/mx6gate-run.8.gz",
        "/usr/share/man/man8/mx6gate-partner-add.8.gz",
        "/usr/share/man/man5/mx6gate.toml.5.gz",
        "/usr/share/mx6gate/prometheus/mx6gate.rules.yml",
        "/usr/share/mx6gate/grafana/mx6gate.json",
        "/usr/share/doc/mx6gate/examples/mx6gate.toml",
        "/usr/share/bash-completion/completions/mx6gate",
        "/usr/share/zsh/vendor-completions/_mx6gate",
        "/usr/share/fish/vendor_completions.d/mx6gate.fish",
        "/usr/share/doc/mx6gate/copyright",
    ] {
        assert!(lab.exists(f), "{f} not installed");
    }
    let conffile = lab.read("/etc/mx6gate/mx6gate.toml");
    assert!(
        conffile.contains("\ninterfaces = []\n") && conffile.contains("\nmode = \"monitor\"\n")
    );

    // The installed unit with the drop-in applied passes systemd's checks
    // (only missing `man` may be reported on machines without man-db).
    let verify = lab
        .sd
        .try_run(&["systemd-analyze", "verify", UNIT])
        .unwrap();
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .filter(|l| !l.contains("Command 'man "))
        .map(str::to_string)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
    let security = lab
        .sd
        .run(&[
            "systemd-analyze",
            "security",
            "--offline=yes",
            "/lib/systemd/system/mx6gate.service",
        ])
        .unwrap();
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    eprintln!("systemd-analyze security: {overall}");
    let score: f64 = overall
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("an exposure score");
    assert!(score < 5.0, "hardening regressed: {overall}");

    // --- the shipped config names no interface: the service refuses to
    // start (EX_CONFIG) and does not restart in a loop; nothing attaches.
    let start = lab.sd.try_run(&["systemctl", "start", UNIT]).unwrap();
    assert!(
        !start.status.success(),
        "the unconfigured package must not start"
    );
    assert_eq!(lab.show("ExecMainStatus"), "78");
    // "failed", not "auto-restart": RestartPreventExitStatus=78 held.
    assert_eq!(lab.show("SubState"), "failed");
    assert_eq!(lab.show("NRestarts"), "0");
    assert!(
        lab.log().contains("no interfaces to protect"),
        "{}",
        lab.log()
    );
    assert_eq!(lab.xdp_prog(), None);
    lab.sd.run(&["systemctl", "reset-failed", UNIT]).unwrap();

    // --- the admin's config: the lab veth, a private pin path.
    std::fs::write(
        lab.sd.path("/etc/mx6gate/mx6gate.toml"),
        format!(
            "interfaces = [\"{}\"]\nmode = \"monitor\"\npin_path = \"{}\"\n",
            lab.topo.gw_if,
            lab.pin_path.display()
        ),
    )
    .unwrap();
    lab.systemctl(&["start", UNIT]);
    // Type=notify: `start` returned after READY=1, so all of this holds now.
    assert_eq!(lab.show("ActiveState"), "active", "{}", lab.log());
    assert_eq!(lab.show("SubState"), "running");
    let status_text = lab.show("StatusText");
    assert!(
        status_text.contains("mode monitor") && status_text.contains(&lab.topo.gw_if),
        "STATUS= {status_text:?}"
    );
    let pid1 = lab.show("MainPID");
    let prog = lab.xdp_prog().expect("XDP attached to the lab veth");
    let status = lab.mx6gate(&["status"]);
    assert!(status.contains("gate:        loaded"), "{status}");
    assert!(
        status.contains(&format!("daemon:      running (pid {pid1})")),
        "{status}"
    );
    assert!(status.contains(&lab.topo.gw_if), "{status}");

    // --- reload (SIGHUP via ExecReload): same process, new partner applied.
    lab.mx6gate(&["partner", "add", "lab-partner", PARTNER_NET]);
    lab.systemctl(&["reload", UNIT]);
    assert_eq!(lab.show("MainPID"), pid1, "reload keeps the process");
    lab.wait_for("the reload to finish", |l| l.log().contains("reloaded"));
    lab.wait_for("STATUS= to count the partner", |l| {
        l.show("StatusText").contains("1 partners")
    });

    // --- the hardened service really gates: in defer mode (set with the
    // CLI) a stranger gets the responder's 421 through sk_lookup, the
    // partner reaches the MTA.
    let _mta = Listener::start(&lab.topo.gw, "[::]:25".parse().unwrap()).unwrap();
    lab.mx6gate(&["mode", "defer"]);
    let gw25 = SocketAddr::new(IpAddr::V6(GW_V6), 25);
    let banner = |src: Ipv6Addr| {
        let s = connect_from(
            &lab.topo.sender,
            IpAddr::V6(src),
            gw25,
            Duration::from_secs(2),
        )
        .expect_connected("connect to the gateway's port 25");
        read_banner(&s, Duration::from_secs(2)).unwrap()
    };
    let b = banner(STRANGER_SRC);
    assert!(b.starts_with("421 4.7.0"), "stranger in defer mode: {b:?}");
    let b = banner(PARTNER_SRC);
    assert!(b.starts_with("220 test"), "partner in defer mode: {b:?}");
    lab.mx6gate(&["mode", "monitor"]);

    // --- stop: the daemon goes, the gate stays pinned and attached
    // (invariant 4); start adopts it.
    lab.systemctl(&["stop", UNIT]);
    assert_eq!(lab.show("ActiveState"), "inactive");
    assert!(lab.pin_path.join("links").exists(), "pins gone after stop");
    assert!(lab.xdp_prog().is_some(), "XDP detached by a stop");
    assert!(lab.mx6gate(&["status"]).contains("gate:        loaded"));
    lab.systemctl(&["restart", UNIT]);
    let pid2 = lab.show("MainPID");
    assert_ne!(pid2, pid1);
    assert!(lab.log().contains("adopted=true"), "{}", lab.log());
    assert!(lab.xdp_prog().is_some());

    // --- Restart=on-failure: a crash brings it back, the gate enforcing
    // throughout.
    lab.sd
        .run(&["systemctl", "kill", "--signal=SIGKILL", UNIT])
        .unwrap();
    lab.wait_for("systemd to restart the crashed daemon", |l| {
        l.show("NRestarts") == "1" && l.show("ActiveState") == "active" && l.show("MainPID") != pid2
    });
    assert!(lab.xdp_prog().is_some());
    eprintln!(
        "XDP prog id at first start {prog}, after the restarts {:?}",
        lab.xdp_prog()
    );

    // --- upgrade (the same package again, as `apt upgrade` would run it):
    // postinst restarts the running daemon into the new binary, the gate
    // stays attached, the admin's conffile edit stays.
    let pid3 = lab.show("MainPID");
    lab.sd.run(&["dpkg", "-i", deb_s]).unwrap();
    assert_eq!(lab.show("ActiveState"), "active", "{}", lab.log());
    assert_ne!(
        lab.show("MainPID"),
        pid3,
        "postinst did not restart the daemon"
    );
    assert!(lab.xdp_prog().is_some(), "XDP detached by an upgrade");
    assert!(lab
        .read("/etc/mx6gate/mx6gate.toml")
        .contains(&lab.topo.gw_if));

    // --- purge: prerm stops the service and detaches the gate; postrm
    // removes config and state.
    lab.sd.run(&["dpkg", "--purge", "mx6gate"]).unwrap();
    assert_eq!(dpkg_status(&lab.sd), "not-installed");
    assert_ne!(lab.show("ActiveState"), "active");
    assert_eq!(lab.show("LoadState"), "not-found", "the unit file is gone");
    assert_eq!(lab.xdp_prog(), None, "XDP still attached after purge");
    assert!(
        !lab.pin_path.exists(),
        "pins left at {}",
        lab.pin_path.display()
    );
    for p in [
        "/etc/mx6gate",
        "/var/lib/mx6gate",
        "/usr/sbin/mx6gate",
        "/lib/systemd/system/mx6gate.service",
        "/usr/share/man/man8/mx6gate.8.gz",
        "/usr/share/mx6gate",
    ] {
        assert!(!lab.exists(p), "{p} left after purge");
    }

    // --- the machine itself: nothing of it changed (same files, same
    // inodes and times, the same dpkg database).
    drop(lab);
    for (p, before) in machine_before {
        let now = std::fs::symlink_metadata(p).ok();
        let same = match (&before, &now) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                use std::os::unix::fs::MetadataExt;
                (a.ino(), a.mtime(), a.mtime_nsec(), a.size())
                    == (b.ino(), b.mtime(), b.mtime_nsec(), b.size())
            }
            _ => false,
        };
        assert!(
            same,
            "the machine's {p} changed: before {before:?}, now {now:?}"
        );
    }
}
