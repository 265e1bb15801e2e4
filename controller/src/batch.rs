//! BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH for the allowlist's hash
//! maps: one syscall per few thousand entries instead of one per entry,
//! which is what makes loading a million prefixes a matter of seconds.
//! aya 0.14 has no batch operations.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Result};
use aya::{maps::MapData, Pod};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const CHUNK: usize = 16 * 1024;

/// union bpf_attr's `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn call(cmd: libc::c_long, attr: &mut BatchAttr, what: &str, n: usize) -> Result<()> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        bail!(
            "{what}: {} of {n} entries done: {}",
            attr.count,
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Insert or overwrite `entries`.
pub fn update<K: Pod, V: Pod>(map: &MapData, entries: &[(K, V)], what: &str) -> Result<()> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        call(BPF_MAP_UPDATE_BATCH, &mut attr, what, chunk.len())?;
    }
    Ok(())
}

/// Delete `keys`; every one must exist.
pub fn delete<K: Pod>(map: &MapData, keys: &[K], what: &str) -> Result<()> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    for chunk in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        call(BPF_MAP_DELETE_BATCH, &mut attr, what, chunk.len())?;
    }
    Ok(())
}
