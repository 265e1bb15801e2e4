//! The "plain LPM trie" comparison: the same prefixes in one kernel LPM
//! trie (a map of the bench's own) and the raw-instruction stand-in program
//! that looks SYN sources up in it (see `insns::trie_standin`).
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Result;
use ipnet::Ipv6Net;

use super::{insns, sys};

pub struct TrieStandin {
    prog: OwnedFd,
    map: OwnedFd,
    /// Time to insert every prefix (one BPF_MAP_UPDATE_ELEM each, or batched
    /// where the kernel offers it).
    pub fill: Duration,
}

impl TrieStandin {
    pub fn load(prefixes: &[Ipv6Net]) -> Result<TrieStandin> {
        let max = (prefixes.len() as u32).max(16);
        let map = sys::map_create(
            "mx6b_trie",
            sys::BPF_MAP_TYPE_LPM_TRIE,
            20,
            4,
            max,
            sys::BPF_F_NO_PREALLOC,
        )?;
        let mut keys = Vec::with_capacity(prefixes.len() * 20);
        let mut values = Vec::with_capacity(prefixes.len() * 4);
        for (i, p) in prefixes.iter().enumerate() {
            keys.extend_from_slice(&u32::from(p.prefix_len()).to_ne_bytes());
            keys.extend_from_slice(&p.network().octets());
            values.extend_from_slice(&(i as u32 + 1).to_ne_bytes());
        }
        let t = Instant::now();
        sys::map_update_all(map.as_fd(), &keys, &values, prefixes.len())?;
        let fill = t.elapsed();
        let prog = sys::load_xdp("mx6b_trie", &insns::trie_standin(map.as_raw_fd()))?;
        Ok(TrieStandin { prog, map, fill })
    }

    pub fn prog(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    pub fn map_memory(&self) -> Result<u64> {
        sys::fd_memlock(self.map.as_fd())
    }
}
