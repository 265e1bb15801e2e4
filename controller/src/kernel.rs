//! What the running kernel offers the gate, found by asking it (loading
//! tiny probe programs, creating a probe map), never inferred from the
//! version string: distribution kernels backport features, and a version
//! says nothing about how a kernel was configured.
//!
//! Two kinds of feature:
//! - [`requirements`]: without any of them the gate cannot work at all; `run`
//!   refuses to start and `doctor` fails, naming what is missing.
//! - [`Optional`]: newer ways to do a job that older kernels do another
//!   way. The controller probes them before each load and sets the eBPF
//!   object's load-time constants ([`mx6gate_common::load_consts`]); the
//!   verifier prunes the variant not chosen.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};

/// The oldest kernel the gate is tested on (Debian 11). Every feature it
/// needs arrived in 5.9; this is what operators are told to run.
pub const FLOOR: &str = "5.10";
/// Distributions whose stock kernels meet the floor, for messages.
pub const FLOOR_DISTROS: &str = "Debian 11, Ubuntu 22.04, RHEL 9 or later";

/// Tells the controller to act as if the kernel lacked the named optional
/// features (comma-separated: `coarse_clock`, `sk_lookup_ifindex`; `all`):
/// for tests and benchmarks of the older kernels' paths on a new kernel,
/// and for an operator who suspects one of them.
pub const DISABLE_ENV: &str = "MX6GATE_DISABLE_FEATURES";

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Yes,
    No,
    /// The probe itself could not run (no privilege, say): nothing is known.
    Unknown(String),
}

/// A feature the gate cannot do without.
#[derive(Clone, Debug)]
pub struct Requirement {
    /// What it is, in an operator's words.
    pub what: &'static str,
    /// The mainline release that brought it.
    pub since: &'static str,
    /// What the gate uses it for.
    pub why: &'static str,
    pub present: Probe,
}

/// Probes every feature the gate needs. Needs CAP_BPF (or root); without
/// it each comes back [`Probe::Unknown`].
pub fn requirements() -> Vec<Requirement> {
    requirements_with(|what| match what {
        XDP => program(ProgramType::Xdp),
        SK_LOOKUP => program(ProgramType::SkLookup),
        RING_BUFFERS => map(MapType::RingBuf),
        _ => probe_links(),
    })
}

const XDP: &str = "XDP programs";
const SK_LOOKUP: &str = "sk_lookup programs";
const RING_BUFFERS: &str = "BPF ring buffers";
const LINKS: &str = "BPF links for XDP and sk_lookup, and updating them in place";

/// The requirements, each answered by `probe(what)`: [`requirements`]
/// asks the kernel; tests answer for kernels that are not here.
pub fn requirements_with(probe: impl Fn(&str) -> Probe) -> Vec<Requirement> {
    [
        (XDP, "4.8", "the fast path on each protected interface"),
        (
            SK_LOOKUP,
            "5.9",
            "steering deferred connections to the responder, and the backstop for what XDP cannot parse",
        ),
        (RING_BUFFERS, "5.8", "reports of turned-away sources (`mx6gate top`)"),
        (
            LINKS,
            "5.9",
            "a gate that outlives the daemon and is upgraded without a moment off",
        ),
    ]
    .into_iter()
    .map(|(what, since, why)| Requirement {
        what,
        since,
        why,
        present: probe(what),
    })
    .collect()
}

/// The requirements that are known to be missing.
pub fn missing(reqs: &[Requirement]) -> Vec<&Requirement> {
    reqs.iter().filter(|r| r.present == Probe::No).collect()
}

/// Plain words for a kernel that lacks `missing` (non-empty): what is
/// missing, what that means, what to run instead.
pub fn below_floor(missing: &[&Requirement]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|r| format!("{} (Linux {}, for {})", r.what, r.since, r.why))
        .collect();
    format!(
        "this kernel (Linux {}) lacks what the gate needs: {}. mx6gate needs Linux {FLOOR} or \
         later ({FLOOR_DISTROS}); on this kernel it cannot load, and nothing is gated",
        release(),
        list.join("; ")
    )
}

/// Refuses, in plain words, a kernel that lacks a requirement. Probes that
/// could not run are not held against the kernel (the load itself will
/// tell).
pub fn check_requirements() -> anyhow::Result<()> {
    let reqs = requirements();
    let missing = missing(&reqs);
    if missing.is_empty() {
        return Ok(());
    }
    Err(BelowFloor(below_floor(&missing)).into())
}

/// The error for a kernel below the floor, in plain words (`run` exits
/// with its own status for it: restarting will not help).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BelowFloor(pub String);

/// Newer ways of doing a job, chosen at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Optional {
    /// bpf_ktime_get_coarse_ns (5.11): the clock of reports and rate
    /// limits at jiffy resolution, ~20 ns cheaper than the precise read.
    pub coarse_clock: bool,
    /// bpf_sk_lookup.ingress_ifindex (5.17): besides connections whose
    /// source is their destination, let the gateway's own connections to
    /// addresses on lo pass, told by their interface.
    pub sk_lookup_ifindex: bool,
}

impl Optional {
    /// What the object's own constants select: what every supported
    /// kernel runs.
    pub const BASELINE: Optional = Optional {
        coarse_clock: false,
        sk_lookup_ifindex: false,
    };

    /// Probes the running kernel, then applies [`DISABLE_ENV`]. A probe
    /// that cannot run counts as "no": the baseline works everywhere.
    pub fn probe() -> Optional {
        let mut o = Optional {
            coarse_clock: helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_ktime_get_coarse_ns)
                == Probe::Yes,
            sk_lookup_ifindex: sk_lookup_ifindex() == Probe::Yes,
        };
        if let Ok(v) = std::env::var(DISABLE_ENV) {
            for name in v.split(',').map(str::trim) {
                match name {
                    "coarse_clock" => o.coarse_clock = false,
                    "sk_lookup_ifindex" => o.sk_lookup_ifindex = false,
                    "all" => o = Optional::BASELINE,
                    _ => {}
                }
            }
        }
        o
    }

    /// The load-time constants of the eBPF object, by name.
    pub fn load_consts(&self) -> [(&'static str, u8); 2] {
        use mx6gate_common::load_consts::*;
        [
            (COARSE_CLOCK, self.coarse_clock as u8),
            (SK_LOOKUP_IFINDEX, self.sk_lookup_ifindex as u8),
        ]
    }

    /// One line per feature for the operator: what was chosen and, where
    /// the kernel lacks the newer way, what does the job instead.
    pub fn describe(&self) -> Vec<String> {
        vec![
            if self.coarse_clock {
                "coarse clock (5.11): yes".into()
            } else {
                "coarse clock (5.11): no — the precise clock instead (~20 ns more per reported SYN)"
                    .into()
            },
            if self.sk_lookup_ifindex {
                "sk_lookup ingress_ifindex (5.17): yes — the gateway's own connections pass when \
                 their source is their destination or they come over lo"
                    .into()
            } else {
                "sk_lookup ingress_ifindex (5.17): no — the gateway's own connections pass when \
                 their source is their destination; one to an address on lo from another of the \
                 host's addresses is gated like a remote one"
                    .into()
            },
        ]
    }
}

/// The kernel release (`uname -r`).
pub fn release() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn program(t: ProgramType) -> Probe {
    match is_program_supported(t) {
        Ok(true) => Probe::Yes,
        Ok(false) => Probe::No,
        Err(e) => Probe::Unknown(format!("{e}")),
    }
}

fn map(t: MapType) -> Probe {
    match is_map_supported(t) {
        Ok(true) => Probe::Yes,
        Ok(false) => Probe::No,
        Err(e) => Probe::Unknown(format!("{e}")),
    }
}

fn helper(t: ProgramType, h: BpfHelper) -> Probe {
    match is_helper_supported(t, h) {
        Ok(true) => Probe::Yes,
        Ok(false) => Probe::No,
        Err(e) => Probe::Unknown(format!("{e}")),
    }
}

// ---- raw probes aya has no call for ----

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 2;
/// Offset of `ingress_ifindex` in struct bpf_sk_lookup.
const SK_LOOKUP_INGRESS_IFINDEX: i16 = 64;

/// bpf(2) with a `union bpf_attr` of 128 bytes, zero beyond what is set.
fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: attr is valid for the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A bpf(2) command that returns a new descriptor.
fn bpf_fd(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<OwnedFd> {
    let fd = sys_bpf(cmd, attr)?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One BPF instruction: opcode, dst and src registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst | (src << 4)) as u64) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}
const MOV64_IMM: u8 = 0xb7;
const LDX_W: u8 = 0x61;
const EXIT: u8 = 0x95;

/// BPF_PROG_LOAD of `insns`; the verifier's log on failure.
fn load(prog_type: u32, attach_type: u32, insns: &[u64]) -> Result<OwnedFd, (io::Error, String)> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u64; 16];
    // struct { u32 prog_type, insn_cnt; u64 insns, license; u32 log_level,
    // log_size; u64 log_buf; u32 kern_version, prog_flags; char
    // prog_name[16]; u32 prog_ifindex, expected_attach_type; }
    attr[0] = prog_type as u64 | (insns.len() as u64) << 32;
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | (log.len() as u64) << 32;
    attr[4] = log.as_mut_ptr() as u64;
    attr[8] = (attach_type as u64) << 32;
    bpf_fd(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        (e, String::from_utf8_lossy(&log[..end]).trim().to_string())
    })
}

fn unknown(e: &io::Error) -> Probe {
    Probe::Unknown(format!("the probe could not run: {e}"))
}

/// Whether sk_lookup programs may read `ingress_ifindex`: the verifier of
/// older kernels refuses the context access.
pub fn sk_lookup_ifindex() -> Probe {
    let prog = [
        insn(LDX_W, 2, 1, SK_LOOKUP_INGRESS_IFINDEX, 0),
        insn(MOV64_IMM, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ];
    match load(BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP, &prog) {
        Ok(_) => Probe::Yes,
        Err((_, log)) if log.contains("invalid bpf_context access") => Probe::No,
        // No sk_lookup at all: the requirement says so.
        Err((e, _)) if e.raw_os_error() == Some(libc::EINVAL) => Probe::No,
        Err((e, _)) => unknown(&e),
    }
}

/// Creates an XDP link (on lo, generic mode) and an sk_lookup link in a
/// network namespace of its own, made for the probe and gone with it,
/// updates each in place, and lets them go: nothing the host uses is
/// touched. Needs CAP_SYS_ADMIN for the namespace; where that is denied
/// (the hardened systemd unit) the answer is [`Probe::Unknown`].
fn probe_links() -> Probe {
    std::thread::spawn(|| {
        // Only this thread moves to the new namespace.
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return unknown(&io::Error::last_os_error());
        }
        let xdp = [insn(MOV64_IMM, 0, 0, 0, 2), insn(EXIT, 0, 0, 0, 0)];
        let sk = [insn(MOV64_IMM, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)];
        let xdp_prog = match load(BPF_PROG_TYPE_XDP, 0, &xdp) {
            Ok(fd) => fd,
            Err((e, _)) => return unknown(&e),
        };
        let sk_prog = match load(BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP, &sk) {
            Ok(fd) => fd,
            // No sk_lookup programs: no sk_lookup links either.
            Err((e, _)) if e.raw_os_error() == Some(libc::EINVAL) => return Probe::No,
            Err((e, _)) => return unknown(&e),
        };
        let netns = match std::fs::File::open("/proc/thread-self/ns/net") {
            Ok(f) => f,
            Err(e) => return unknown(&e),
        };
        const LO: u32 = 1;
        for (prog, target, attach_type, flags) in [
            (&xdp_prog, LO, BPF_XDP, XDP_FLAGS_SKB_MODE),
            (&sk_prog, netns.as_raw_fd() as u32, BPF_SK_LOOKUP, 0),
        ] {
            // struct { u32 prog_fd, target_fd, attach_type, flags; } link_create
            let mut attr = [0u64; 16];
            attr[0] = prog.as_raw_fd() as u64 | (target as u64) << 32;
            attr[1] = attach_type as u64 | (flags as u64) << 32;
            let link = match bpf_fd(BPF_LINK_CREATE, &mut attr) {
                Ok(l) => l,
                // What kernels without the link type answer.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Probe::No,
                Err(e) => return unknown(&e),
            };
            // struct { u32 link_fd, new_prog_fd, flags, old_prog_fd; } link_update
            let mut attr = [0u64; 16];
            attr[0] = link.as_raw_fd() as u64 | (prog.as_raw_fd() as u64) << 32;
            match sys_bpf(BPF_LINK_UPDATE, &mut attr) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Probe::No,
                Err(e) => return unknown(&e),
            }
        }
        Probe::Yes
    })
    .join()
    .unwrap_or_else(|_| Probe::Unknown("the probe thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_names_what_is_missing_and_what_to_run() {
        let reqs = requirements_with(|what| {
            if what == SK_LOOKUP {
                Probe::No
            } else {
                Probe::Yes
            }
        });
        let m = missing(&reqs);
        assert_eq!(m.len(), 1);
        let msg = below_floor(&m);
        assert!(
            msg.contains("lacks what the gate needs: sk_lookup programs (Linux 5.9, for steering"),
            "{msg}"
        );
        assert!(
            msg.contains("needs Linux 5.10 or later (Debian 11, Ubuntu 22.04, RHEL 9 or later)"),
            "{msg}"
        );
        assert!(msg.ends_with("nothing is gated"), "{msg}");
    }

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r2 = *(u32 *)(r1 + 64): opcode 0x61, dst 2, src 1, off 64.
        assert_eq!(insn(LDX_W, 2, 1, 64, 0), 0x0000_0000_0040_1261);
        // r0 = 1: opcode 0xb7, imm 1 in the high word.
        assert_eq!(insn(MOV64_IMM, 0, 0, 0, 1), 0x0000_0001_0000_00b7);
    }

    /// The machine the unit tests run on is at or above the floor: no
    /// requirement probes as missing (unprivileged runs cannot probe).
    #[test]
    fn this_machine_meets_the_floor() {
        let reqs = requirements();
        assert!(missing(&reqs).is_empty(), "{reqs:#?}");
    }

    #[test]
    fn load_consts_follow_the_features() {
        let o = Optional {
            coarse_clock: true,
            sk_lookup_ifindex: false,
        };
        assert_eq!(
            o.load_consts(),
            [
                (mx6gate_common::load_consts::COARSE_CLOCK, 1),
                (mx6gate_common::load_consts::SK_LOOKUP_IFINDEX, 0)
            ]
        );
        assert_eq!(Optional::BASELINE.load_consts().map(|(_, v)| v), [0, 0]);
    }
}
