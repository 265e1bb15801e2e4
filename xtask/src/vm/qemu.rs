//! Boots one guest under qemu and waits for it, with a deadline.
//!
//! TCG only: nested KVM does not work on the machines this runs on
//! (guests stall right after the kernel decompressor), so every guest
//! instruction is emulated — the suites run several times slower than on
//! the host.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub struct Guest<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Shared read-write as `job`; holds guest.conf and run.sh.
    pub job_dir: &'a Path,
    /// Everything the console prints goes here too.
    pub log: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub deadline: Duration,
}

/// How the guest ended.
pub enum Ended {
    /// The job's script ran to its end (each suite's status is in the
    /// job's results).
    Exited,
    /// The guest stopped without the script's status (a kernel panic, a
    /// failed mount): the log says why.
    NoStatus,
    TimedOut,
}

pub fn boot(g: &Guest<'_>) -> Result<Ended> {
    let exit_file = g.job_dir.join("exit");
    fs::remove_file(&exit_file).ok();
    let share = |path: &Path, tag: &str, ro: bool| {
        format!(
            "local,path={},mount_tag={tag},security_model=none,multidevs=remap{}",
            path.display(),
            if ro { ",readonly=on" } else { "" }
        )
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    // thread=single: with one host thread per vCPU (thread=multi), 6.12
    // oopsed once on an int3 in bpf_dispatcher_xdp_func: the dispatcher is
    // live-patched (text_poke_bp) when an XDP program is swapped, and a
    // vCPU ran the patched code's stale translation. Round-robin vCPUs on
    // one thread see every code write at once; the guest keeps 2 CPUs.
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"])
        .args(["-m", &g.memory_mib.to_string(), "-smp", &g.cpus.to_string()])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(g.vmlinuz)
        .arg("-initrd")
        .arg(g.initramfs)
        // mitigations=off: TCG pays for every speculation barrier in full.
        // tsc=reliable: 5.10 finds the emulated CPUs' TSCs unsynchronised
        // and falls back to the HPET, each clock read an emulated MMIO
        // access — its suites ran 2-3× slower than 6.1's for that alone.
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off tsc=reliable rdinit=/init",
        ])
        .args(["-device", "virtio-rng-pci"])
        .args(["-virtfs", &share(Path::new("/"), "hostroot", true)])
        .args(["-virtfs", &share(g.job_dir, "job", false)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    let mut log = fs::File::create(&g.log)?;
    // Console lines, as they come: to the log and to our output.
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n').map_while(|l| l.ok()) {
            if tx
                .send(
                    String::from_utf8_lossy(&l)
                        .trim_end_matches('\r')
                        .to_string(),
                )
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if tx2.send(format!("qemu: {l}")).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let timed_out = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                println!("{line}");
                writeln!(log, "{line}")?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if child.try_wait()?.is_some() {
            // Drain what is still buffered.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                println!("{line}");
                writeln!(log, "{line}")?;
            }
            break false;
        }
        if started.elapsed() > g.deadline {
            break true;
        }
    };
    if timed_out {
        child.kill().ok();
        child.wait().ok();
        return Ok(Ended::TimedOut);
    }
    let status = child.wait()?;
    match fs::read_to_string(&exit_file) {
        Ok(_) => Ok(Ended::Exited),
        Err(_) if status.success() => Ok(Ended::NoStatus),
        Err(_) => bail!("qemu failed: {status} (see {})", g.log.display()),
    }
}
