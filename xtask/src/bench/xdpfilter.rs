//! xdp-filter (Debian's xdp-tools) as a baseline, loaded from its own
//! object: `xdpfilt_dny_ip.o` is what `xdp-filter load -p deny -f ipv6`
//! (allow mode: drop what no rule matches, exact IPv6 addresses) would
//! load. Its object caps the address map at 10,000 entries and the CLI adds
//! one address per process; so the bench loads the object itself (aya,
//! honouring the object's own map definitions) with the address map's
//! max_entries raised to the table size, and fills the map with the same
//! flag xdp-filter's `ip -m src` sets. The program runs without libxdp's
//! dispatcher, which only makes it cheaper.
use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};
use aya::{programs::Xdp, Ebpf, EbpfLoader};

use super::{gate, sys};

pub const OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_ip.o";
const PROGRAM: &str = "xdpfilt_dny_ip";
const MAP: &str = "filter_ipv6";
/// xdp-filter's MAP_FLAG_SRC: match the address as a source.
const MAP_FLAG_SRC: u64 = 1;

pub struct XdpFilter {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        gate::remove_pin_tree(&self.pin_dir);
    }
}

pub fn available() -> bool {
    Path::new(OBJECT).exists()
}

impl XdpFilter {
    /// Load with room for `n` addresses and insert `addrs`.
    pub fn load(addrs: &[u128]) -> Result<XdpFilter> {
        let obj = std::fs::read(OBJECT).with_context(|| format!("reading {OBJECT}"))?;
        // Its maps are pinned by name: keep them in a private directory.
        let pin_dir = gate::pin_path("-xdpfilter");
        std::fs::create_dir_all(&pin_dir)?;
        let max = (addrs.len() as u32).max(16);
        let loaded = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .map_max_entries(MAP, max)
            .load(&obj);
        let ebpf = match loaded {
            Ok(e) => e,
            Err(e) => {
                gate::remove_pin_tree(&pin_dir);
                return Err(anyhow!(e).context(format!("loading {OBJECT} with aya")));
            }
        };
        let mut f = XdpFilter { ebpf, pin_dir };
        let prog: &mut Xdp = f
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("{OBJECT} has no program {PROGRAM}"))?
            .try_into()?;
        prog.load()
            .context("loading xdp-filter's program (verifier)")?;
        let map = f
            .ebpf
            .map(MAP)
            .ok_or_else(|| anyhow!("{OBJECT} has no map {MAP}"))?;
        // A per-CPU hash: one u64 per possible CPU per address, every one
        // holding the flag (as xdp-filter's CLI writes it).
        let (fd, copies) = match map {
            aya::maps::Map::PerCpuHashMap(m) => {
                (m.fd().as_fd(), aya::util::nr_cpus().map_err(|(_, e)| e)?)
            }
            aya::maps::Map::HashMap(m) => (m.fd().as_fd(), 1),
            _ => anyhow::bail!("{MAP} is not a hash map"),
        };
        let keys: Vec<u8> = addrs.iter().flat_map(|a| a.to_be_bytes()).collect();
        let values: Vec<u8> = addrs
            .iter()
            .flat_map(|_| std::iter::repeat_n(MAP_FLAG_SRC.to_ne_bytes(), copies).flatten())
            .collect();
        sys::map_update_all(fd, &keys, &values, addrs.len())
            .context("filling xdp-filter's filter_ipv6")?;
        Ok(f)
    }

    pub fn prog(&self) -> Result<BorrowedFd<'_>> {
        let p: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
            .try_into()?;
        Ok(p.fd()?.as_fd())
    }

    /// Kernel memory of its maps (fdinfo memlock), bytes.
    pub fn map_memory(&self) -> Result<u64> {
        let mut total = 0;
        for (_, m) in self.ebpf.maps() {
            let fd = match m {
                aya::maps::Map::HashMap(m)
                | aya::maps::Map::LruHashMap(m)
                | aya::maps::Map::PerCpuArray(m)
                | aya::maps::Map::PerCpuHashMap(m)
                | aya::maps::Map::Array(m) => m.fd().as_fd(),
                _ => continue,
            };
            total += sys::fd_memlock(fd)?;
        }
        Ok(total)
    }
}
