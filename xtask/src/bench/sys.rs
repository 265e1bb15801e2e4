//! The few bpf(2) commands the bench needs beyond aya: loading programs from
//! raw instructions (the baselines and the traffic generator), running any
//! program through BPF_PROG_TEST_RUN (one code path for every program
//! measured, so the figures compare like with like), plain maps for the
//! baselines, programs by id, XDP links, and map memory from fdinfo.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{bail, Context, Result};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_CREATE: libc::c_long = 28;

pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// union bpf_attr, large enough for every command used here.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable bpf_attr-sized buffer.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the kernel returned a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Load an XDP program from raw instructions (8 bytes each).
pub fn load_xdp(name: &str, insns: &[u64]) -> Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .u32(68, BPF_XDP);
    let n = name.as_bytes();
    a.0[48..48 + n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
    bpf_fd(BPF_PROG_LOAD, &mut a).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        anyhow::anyhow!(
            "loading XDP program {name}: {e}\nverifier log:\n{}",
            String::from_utf8_lossy(&log[..end])
        )
    })
}

/// What one BPF_PROG_TEST_RUN call reported.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub retval: u32,
    /// The kernel's mean time per repetition, ns.
    pub ns: u32,
}

/// BPF_PROG_TEST_RUN on `data` `repeat` times (the kernel reports the mean
/// time per repetition). `out` receives the output frame if given.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    out: Option<&mut [u8]>,
) -> Result<Run> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u32(32, repeat);
    if let Some(o) = out {
        a.u32(12, o.len() as u32).u64(24, o.as_mut_ptr() as u64);
    }
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN")?;
    Ok(Run {
        retval: a.get_u32(4),
        ns: a.get_u32(36),
    })
}

/// BPF_PROG_TEST_RUN of a program that takes a context and no packet
/// (sk_lookup: `ctx` is a struct bpf_sk_lookup), `repeat` times.
pub fn test_run_ctx(prog: BorrowedFd<'_>, ctx: &[u8], repeat: u32) -> Result<Run> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(32, repeat)
        .u32(40, ctx.len() as u32)
        .u64(48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN (context)")?;
    Ok(Run {
        retval: a.get_u32(4),
        ns: a.get_u32(36),
    })
}

/// BPF_PROG_TEST_RUN in live-frames mode: the program runs `repeat` times on
/// real xdp_frames built from `data`, and what it redirects is really sent.
/// Runs in the calling thread's network namespace.
pub fn test_run_live(prog: BorrowedFd<'_>, data: &[u8], repeat: u32, batch: u32) -> Result<()> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u32(32, repeat)
        .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
        .u32(72, batch);
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN (live frames)")?;
    Ok(())
}

/// A map of the bench's own (never one of the product's).
pub fn map_create(
    name: &str,
    ty: u32,
    key: u32,
    value: u32,
    max: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, ty)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .u32(16, flags);
    let n = name.as_bytes();
    a.0[28..28 + n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
    bpf_fd(BPF_MAP_CREATE, &mut a).with_context(|| format!("creating map {name} ({max} entries)"))
}

pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).context("BPF_MAP_UPDATE_ELEM")?;
    Ok(())
}

/// Insert `keys`/`values` (packed, `n` entries) with BPF_MAP_UPDATE_BATCH
/// when the map type has it, else one BPF_MAP_UPDATE_ELEM per entry.
pub fn map_update_all(map: BorrowedFd<'_>, keys: &[u8], values: &[u8], n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (ks, vs) = (keys.len() / n, values.len() / n);
    const CHUNK: usize = 16 * 1024;
    let mut done = 0;
    while done < n {
        let c = CHUNK.min(n - done);
        let mut a = Attr::new();
        a.u64(16, keys[done * ks..].as_ptr() as u64)
            .u64(24, values[done * vs..].as_ptr() as u64)
            .u32(32, c as u32)
            .u32(36, map.as_raw_fd() as u32);
        match bpf(BPF_MAP_UPDATE_BATCH, &mut a) {
            Ok(_) => done += c,
            // ENOTSUPP (524): the map type has no batch ops.
            Err(e)
                if done == 0
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | 524 | libc::EOPNOTSUPP)
                    ) =>
            {
                for i in 0..n {
                    map_update(
                        map,
                        &keys[i * ks..(i + 1) * ks],
                        &values[i * vs..(i + 1) * vs],
                    )?;
                }
                return Ok(());
            }
            Err(e) => bail!("BPF_MAP_UPDATE_BATCH: {e} after {done} of {n}"),
        }
    }
    Ok(())
}

/// BPF_OBJ_GET: an fd for a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut a = Attr::new();
    a.u64(0, c.as_ptr() as u64);
    bpf_fd(BPF_OBJ_GET, &mut a).with_context(|| format!("BPF_OBJ_GET {}", path.display()))
}

/// Attach `prog` in native (driver) mode to `ifindex` through a bpf_link;
/// dropping the returned fd detaches. The ifindex is resolved in the
/// calling thread's network namespace.
pub fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE);
    bpf_fd(BPF_LINK_CREATE, &mut a)
        .with_context(|| format!("attaching XDP (native) to ifindex {ifindex}"))
}

/// Kernel memory charged to a BPF object fd (`memlock:` in fdinfo), bytes.
pub fn fd_memlock(fd: BorrowedFd<'_>) -> Result<u64> {
    let p = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("memlock:").map(|v| v.trim().parse::<u64>()))
        .with_context(|| format!("no memlock in {p}"))?
        .context("parsing memlock")
}

/// The interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// Pin the calling thread to one CPU.
pub fn pin_thread(cpu: usize) -> Result<()> {
    pin_pid(0, cpu)
}

/// Pin a task (thread or kthread; 0 = the calling thread) to one CPU.
pub fn pin_pid(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({pid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Run a task (thread or kthread) SCHED_FIFO at `prio`, so other work on
/// its CPU cannot delay it.
pub fn set_fifo(pid: i32, prio: i32) -> Result<()> {
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: plain syscall with a valid sched_param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &p) } != 0 {
        bail!(
            "sched_setscheduler({pid}, SCHED_FIFO {prio}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Give the calling thread the highest CFS weight (nice -20) without making
/// it real-time (it must not starve the rest of its CPU).
pub fn nice_thread(nice: i32) -> Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            bail!(
                "setpriority({tid}, {nice}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
