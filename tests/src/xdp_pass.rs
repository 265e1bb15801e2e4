//! A two-instruction XDP_PASS program for the *sender's* veth end.
//!
//! XDP_TX frames (reset mode's RSTs) sent into a veth are only received by
//! the peer when the peer runs NAPI. An earlier note said GRO on at the
//! peer was enough; on 6.18 it was not: the frames were counted as
//! transmitted and never arrived, while with any XDP program on the peer
//! they arrived at once (DESIGN.md, "XDP on veth, in the tests"). Real
//! NICs have no such quirk.
//! Loaded with raw bpf(2) calls so the test utilities need no object file.
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Result};

use crate::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Keeps the program attached; dropping it detaches (the link's last fd).
pub struct XdpPass {
    _prog: OwnedFd,
    _link: OwnedFd,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    let call = |attr: &mut [u8; 128]| {
        let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    match call(attr) {
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, per user:
        // 64 KiB by default on 5.10, soon spent by the gates other tests
        // run as root. Raise it as aya does for the controller, and retry.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: a valid rlimit for setrlimit to read.
            if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
                return Err(e);
            }
            call(attr)
        }
        r => r,
    }
}

fn put(attr: &mut [u8; 128], off: usize, v: &[u8]) {
    attr[off..off + v.len()].copy_from_slice(v);
}

/// Attach XDP_PASS in native mode to `ifname` inside `ns`.
pub fn attach_xdp_pass(ns: &Netns, ifname: &str) -> Result<XdpPass> {
    let ifname = ifname.to_string();
    ns.enter(move || {
        // r0 = XDP_PASS (2); exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut attr, 4, &2u32.to_ne_bytes());
        put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 68, &BPF_XDP.to_ne_bytes()); // expected_attach_type
        let prog = bpf(BPF_PROG_LOAD, &mut attr)?;
        let c = std::ffi::CString::new(ifname.clone())?;
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}");
        }
        let mut attr = [0u8; 128];
        use std::os::fd::AsRawFd;
        put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 4, &ifindex.to_ne_bytes());
        put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
        put(&mut attr, 12, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
        let link = bpf(BPF_LINK_CREATE, &mut attr)
            .map_err(|e| anyhow::anyhow!("attaching XDP_PASS to {ifname}: {e}"))?;
        Ok(XdpPass {
            _prog: prog,
            _link: link,
        })
    })
}
