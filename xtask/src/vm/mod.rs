//! `cargo xtask test --kernel VERSION|all`: the privileged suites on
//! Debian's stock kernels, each booted under qemu with the host's root
//! shared read-only (so the guest runs this very build, and the tools the
//! suites call — ip, Postfix, swaks, systemd — are the host's).
//!
//! - `fetch` — the kernel packages, from Debian's archive into the cache;
//! - `initramfs` — busybox, the modules that mount the root, `init.sh`;
//! - `qemu` — boot one guest, with a deadline.
//!
//! The test binaries are built on the host; the guest runs them directly
//! (no cargo under emulation) and writes each suite's status to the job
//! share, from which the host prints the table.
mod fetch;
mod initramfs;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// A distribution kernel of the matrix.
pub struct Kernel {
    /// What `--kernel` takes: the upstream series.
    pub name: &'static str,
    pub distro: &'static str,
    /// The Debian suite whose `linux-image-amd64` it is.
    pub suite: &'static str,
    pub suites: Profile,
    /// Suites run on this kernel besides its profile's, and why.
    pub extra: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Every privileged suite (the package's target distribution).
    Full,
    /// Load and attach, the differential test of the XDP program, the
    /// invariants, sk_lookup steering and doctor: what differs between
    /// kernels.
    Core,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        distro: "Debian 11 (bullseye)",
        suite: "bullseye",
        suites: Profile::Core,
        // The packaged unit on a kernel that charges BPF memory to
        // RLIMIT_MEMLOCK (before 5.11): its LimitMEMLOCK= must let the
        // hardened daemon load the gate.
        extra: &["deb_package"],
    },
    Kernel {
        name: "6.1",
        distro: "Debian 12 (bookworm)",
        suite: "bookworm",
        suites: Profile::Full,
        extra: &[],
    },
    Kernel {
        name: "6.12",
        distro: "Debian 13 (trixie)",
        suite: "trixie",
        suites: Profile::Core,
        extra: &[],
    },
];

/// Also `doctor`: where the kernel's features are probed and explained;
/// and `unparsable_syns` (invariant 7): what the kernel does with SYNs XDP
/// cannot parse (fragments, long extension-header chains) differs by
/// kernel, and sk_lookup must backstop them on each; and `slash32_updates`:
/// the /32 table's update protocol rests on each kernel's RCU (membarrier
/// → synchronize_rcu) and on its XDP test runs under concurrent updates.
const CORE: &[&str] = &[
    "attach_modes",
    "xdp_differential",
    "slash32_updates",
    "gate_invariants",
    "steering",
    "doctor",
    "unparsable_syns",
];

/// Left out of the guests, kept in the host run: the two benchmark-harness
/// smoke tests (they test xtask, run cargo themselves and measure), the
/// package's lint (lintian, man pages) and the Prometheus rules' unit
/// tests (promtool on synthetic series): none of them touches the kernel,
/// and under emulation they would take much of the run. spf_partners too:
/// it tests the SPF policy path (DNS, state, reconcile) through a gate
/// whose kernel side the other suites already cover on every kernel.
const HOST_ONLY: &[&str] = &[
    "bench_smoke",
    "bench_responder_smoke",
    "package_lint",
    "prometheus_rules",
    "spf_partners",
];

pub struct Options {
    pub kernels: String,
    /// Suites to run instead of each kernel's profile.
    pub suites: Vec<String>,
    /// Passed to every test binary (a name filter, --test-threads …).
    pub test_args: Vec<String>,
    pub bin: PathBuf,
    pub deb: PathBuf,
}

fn kernels(spec: &str) -> Result<Vec<&'static Kernel>> {
    if spec == "all" {
        return Ok(KERNELS.iter().collect());
    }
    spec.split(',')
        .map(|n| {
            KERNELS.iter().find(|k| k.name == n).with_context(|| {
                let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                format!(
                    "unknown kernel {n:?}: choose from {} or all",
                    names.join(", ")
                )
            })
        })
        .collect()
}

fn check_tools() -> Result<()> {
    for tool in [
        "qemu-system-x86_64",
        "dpkg-deb",
        "depmod",
        "cpio",
        "apt-get",
    ] {
        if !mx6gate_tests::cmd::have_program(tool) {
            bail!("{tool} not found: run scripts/install-deps.sh");
        }
    }
    Ok(())
}

/// `cargo xtask vm KERNEL -- COMMAND…`: one shell command in a guest, for
/// looking into a failure by hand. Returns the command's exit status.
pub fn exec(kernel: &str, command: &[String]) -> Result<i32> {
    check_tools()?;
    let [k] = kernels(kernel)?[..] else {
        bail!("name one kernel");
    };
    let unpacked = fetch::kernel(k, &cache_dir())?;
    let initramfs = initramfs::build(&unpacked)?;
    let job = workspace_root()
        .join("target/vm")
        .join(format!("{}-exec", k.name));
    prepare_job(&job, &unpacked)?;
    let line: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    fs::write(
        job.join("run.sh"),
        format!(
            "#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
             cd {}
{}
echo $? > /mx6gate-job/status
",
            shell_quote(&std::env::current_dir()?.display().to_string()),
            line.join(" ")
        ),
    )?;
    match boot(&job, &unpacked, &initramfs, Duration::from_secs(30 * 60))? {
        qemu::Ended::Exited => Ok(fs::read_to_string(job.join("status"))?.trim().parse()?),
        qemu::Ended::NoStatus => bail!(
            "the guest stopped early (see {}/console.log)",
            job.display()
        ),
        qemu::Ended::TimedOut => bail!("the guest ran out of time"),
    }
}

pub fn test(o: &Options) -> Result<()> {
    let kernels = kernels(&o.kernels)?;
    check_tools()?;
    let binaries = test_binaries()?;
    let cache = cache_dir();
    let mut rows = Vec::new();
    let mut failed = false;
    for k in kernels {
        let suites = chosen_suites(k, &o.suites, &binaries)?;
        let started = Instant::now();
        let unpacked = fetch::kernel(k, &cache)
            .with_context(|| format!("fetching Debian {}'s kernel", k.suite))?;
        let initramfs = initramfs::build(&unpacked)?;
        println!(
            "== {} {}: linux-image-{} {} — {} suite(s), prepared in {:.0?}",
            k.name,
            k.distro,
            unpacked.release,
            unpacked.package_version,
            suites.len(),
            started.elapsed()
        );
        let job = workspace_root().join("target/vm").join(k.name);
        let results = run_guest(k, &unpacked, &initramfs, &job, &suites, o)?;
        for (suite, outcome) in &results {
            failed |= !matches!(outcome, Outcome::Passed(_));
            rows.push((k, unpacked.release.clone(), suite.clone(), outcome.clone()));
        }
        println!("== {} done in {:.0?}", k.name, started.elapsed());
    }
    println!("\nkernel  release                 suite                 result");
    for (k, rel, suite, outcome) in &rows {
        println!("{:<7} {:<23} {:<21} {}", k.name, rel, suite, outcome);
    }
    if failed {
        bail!("suites failed on a matrix kernel (logs in target/vm/<kernel>/console.log)");
    }
    Ok(())
}

#[derive(Clone)]
enum Outcome {
    Passed(u64),
    Failed(i32, u64),
    /// The guest ended before the suite reported (timeout, crash).
    NotRun(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Passed(s) => write!(f, "ok ({s} s)"),
            Outcome::Failed(rc, s) => write!(f, "FAILED (exit {rc}, {s} s)"),
            Outcome::NotRun(why) => write!(f, "NOT RUN ({why})"),
        }
    }
}

/// Where kernels and initramfs images are kept between runs.
fn cache_dir() -> PathBuf {
    std::env::var_os("MX6GATE_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/kernels"))
}

/// The integration test binaries of mx6gate-tests, built for the host
/// (release, as `cargo xtask test` runs them): suite name → executable.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--release", "-p", "mx6gate-tests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "test"));
        if msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true && is_test_target
        {
            if let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
            {
                v.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    v.sort();
    Ok(v)
}

fn chosen_suites(
    k: &Kernel,
    asked: &[String],
    binaries: &[(String, PathBuf)],
) -> Result<Vec<(String, PathBuf)>> {
    let find = |name: &str| {
        binaries
            .iter()
            .find(|(n, _)| n == name)
            .cloned()
            .with_context(|| format!("no test suite {name:?} in tests/tests/"))
    };
    if !asked.is_empty() {
        return asked.iter().map(|s| find(s)).collect();
    }
    match k.suites {
        Profile::Core => CORE.iter().chain(k.extra).map(|s| find(s)).collect(),
        Profile::Full => Ok(binaries
            .iter()
            .filter(|(n, _)| !HOST_ONLY.contains(&n.as_str()))
            .cloned()
            .collect()),
    }
}

fn run_guest(
    k: &Kernel,
    unpacked: &fetch::Unpacked,
    initramfs: &Path,
    job: &Path,
    suites: &[(String, PathBuf)],
    o: &Options,
) -> Result<Vec<(String, Outcome)>> {
    prepare_job(job, unpacked)?;
    fs::write(job.join("run.sh"), job_script(suites, o)?)?;
    let deadline = match (k.suites, o.suites.is_empty()) {
        (Profile::Full, true) => Duration::from_secs(45 * 60),
        _ => Duration::from_secs(25 * 60),
    };
    let ended = boot(job, unpacked, initramfs, deadline)?;
    let reported = fs::read_to_string(job.join("results")).unwrap_or_default();
    let why = match ended {
        qemu::Ended::Exited => "the guest skipped it",
        qemu::Ended::NoStatus => "the guest stopped early",
        qemu::Ended::TimedOut => "the guest ran out of time",
    };
    Ok(suites
        .iter()
        .map(|(name, _)| {
            let outcome = reported
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    Some((
                        w.next()?,
                        w.next()?.parse::<i32>().ok()?,
                        w.next()?.parse().ok()?,
                    ))
                })
                .find(|(n, _, _)| n == name)
                .map(|(_, rc, secs)| match rc {
                    0 => Outcome::Passed(secs),
                    rc => Outcome::Failed(rc, secs),
                })
                .unwrap_or(Outcome::NotRun(why));
            (name.clone(), outcome)
        })
        .collect())
}

/// A fresh job directory with the guest's settings (guest.conf, read by
/// init.sh).
fn prepare_job(job: &Path, unpacked: &fetch::Unpacked) -> Result<()> {
    if job.exists() {
        fs::remove_dir_all(job)?;
    }
    fs::create_dir_all(job)?;
    fs::write(
        job.join("guest.conf"),
        format!(
            "KERNEL_RELEASE={}\nMODULES={}\n",
            unpacked.release,
            unpacked.modules().canonicalize()?.display()
        ),
    )?;
    Ok(())
}

fn boot(
    job: &Path,
    unpacked: &fetch::Unpacked,
    initramfs: &Path,
    deadline: Duration,
) -> Result<qemu::Ended> {
    qemu::boot(&qemu::Guest {
        vmlinuz: &unpacked.vmlinuz(),
        initramfs,
        job_dir: job,
        log: job.join("console.log"),
        memory_mib: 4096,
        cpus: 2,
        deadline,
    })
}

/// The script the guest runs, chrooted into the host's root: every suite
/// with the environment `cargo xtask test` gives it.
fn job_script(suites: &[(String, PathBuf)], o: &Options) -> Result<String> {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let args: Vec<String> = o.test_args.iter().map(|a| shell_quote(a)).collect();
    let mut s = String::from(
        "#!/bin/sh\n\
         # Written by `cargo xtask test --kernel`; run by the guest's init.\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root RUST_BACKTRACE=1 MX6GATE_REQUIRE_PRIV=1\n",
    );
    s += &format!(
        "export MX6GATE_BIN={} MX6GATE_DEB={}\n",
        q(&o.bin),
        q(&o.deb)
    );
    // The guest's writes stay in its memory: man-db's index rebuild after
    // a package install (the deb suite) only costs a minute of emulation.
    s += "rm -f /var/lib/man-db/auto-update\n";
    s += &format!("cd {}\n", q(&workspace_root().join("tests")));
    s += "echo \"== guest: Linux $(uname -r), $(nproc) CPUs\"\n";
    s += ": > /mx6gate-job/results\nfail=0\n";
    for (name, exe) in suites {
        s += &format!(
            "echo \"=== suite {name}\"\nt0=$(date +%s)\n{} {}\nrc=$?\n\
             echo \"{name} $rc $(( $(date +%s) - t0 ))\" >> /mx6gate-job/results\n\
             [ $rc = 0 ] || fail=1\n",
            q(exe),
            args.join(" ")
        );
    }
    s += "exit $fail\n";
    Ok(s)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
