//! Cold runs: one BPF_PROG_TEST_RUN runs one frame `repeat` times, so to
//! spread the sources over the table the bench runs a small driver program
//! (`insns::cold_driver`) that rewrites the frame's source before every
//! repetition — the next of `k` sources, cycled — and tail-calls the
//! program under test. The kernel's mean per repetition then covers the
//! driver (a map lookup, a 16-byte copy, a tail call) plus the program on a
//! different source each time; the floor is measured through the same
//! driver (tail-calling XDP_DROP), so the driver's own cost cancels in the
//! comparisons.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};

use super::{insns, sys};

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;

pub struct ColdDriver {
    prog: OwnedFd,
    counter: OwnedFd,
    progs: OwnedFd,
    _sources: OwnedFd,
}

impl ColdDriver {
    /// A driver cycling `sources` (their count must be a power of two),
    /// writing each at byte `src_off` of the frame.
    pub fn new(sources: &[u128], src_off: i16) -> Result<ColdDriver> {
        let k = sources.len() as u32;
        let counter = sys::map_create("mx6b_ctr", BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0)?;
        let src = sys::map_create("mx6b_src", BPF_MAP_TYPE_ARRAY, 4, 16, k, 0)?;
        let progs = sys::map_create("mx6b_progs", BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1, 0)?;
        let keys: Vec<u8> = (0..k).flat_map(|i| i.to_ne_bytes()).collect();
        let values: Vec<u8> = sources.iter().flat_map(|a| a.to_be_bytes()).collect();
        sys::map_update_all(src.as_fd(), &keys, &values, sources.len())
            .context("filling the sources")?;
        let prog = sys::load_xdp(
            "mx6b_cold",
            &insns::cold_driver(
                counter.as_raw_fd(),
                src.as_raw_fd(),
                progs.as_raw_fd(),
                k,
                src_off,
            ),
        )?;
        Ok(ColdDriver {
            prog,
            counter,
            progs,
            _sources: src,
        })
    }

    /// Make `target` the program the driver tail-calls, from source 0.
    pub fn target(&self, target: BorrowedFd<'_>) -> Result<()> {
        let fd = target.as_raw_fd() as u32;
        sys::map_update(self.progs.as_fd(), &0u32.to_ne_bytes(), &fd.to_ne_bytes()).context(
            "putting the program under test in the driver's prog array (tail-call compatible?)",
        )?;
        sys::map_update(
            self.counter.as_fd(),
            &0u32.to_ne_bytes(),
            &0u64.to_ne_bytes(),
        )
    }

    pub fn prog(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}
