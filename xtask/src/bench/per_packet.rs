//! Part 1: per-packet cost through BPF_PROG_TEST_RUN.
//!
//! * Hot: one frame, `repeat` runs in one call; the kernel reports the mean
//!   per run. The same source every run, so the lookup's cache lines stay hot.
//! * Per call: one run per call (`repeat = 1`), the kernel's own timing of
//!   that single run, averaged over many calls. Used where a run changes the
//!   frame: the kernel does *not* restore the input between repetitions (a
//!   reset-mode run turns the SYN into a RST, so repetition 2 onwards would
//!   time a non-SYN; checked at start-up), and for cold.
//! * Cold: `repeat` runs in one call through the cold driver (`cold.rs`),
//!   which gives every run the next of many sources spread over the whole
//!   table: the program's code stays hot, the table's lines do not.
//!
//! Every program runs on the same frames: the gate, the floor (XDP_DROP),
//! xdp-filter and the plain-trie stand-in. Runs are interleaved (run 1 of
//! every class and program, then run 2…), so drift hits all alike.
use std::os::fd::BorrowedFd;

use anyhow::{bail, Context, Result};
use mx6gate_common::Mode;

use super::{
    cold::ColdDriver,
    frames::{classes, Class},
    gate::BenchGate,
    prefixes::{Rng, Table},
    stats::Stat,
    sys,
    trie::TrieStandin,
    xdpfilter::XdpFilter,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prog {
    Gate,
    Floor,
    XdpFilter,
    Trie,
}

impl Prog {
    pub const ALL: [Prog; 4] = [Prog::Gate, Prog::Floor, Prog::XdpFilter, Prog::Trie];
    pub fn name(self) -> &'static str {
        match self {
            Prog::Gate => "mx6gate",
            Prog::Floor => "XDP_DROP",
            Prog::XdpFilter => "xdp-filter",
            Prog::Trie => "plain trie",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Temp {
    /// `repeat` runs in one call.
    Hot,
    /// Same frame, one run per call.
    HotPerCall,
    /// A different source every run (the cold driver).
    Cold,
}

#[derive(Clone, Debug)]
pub struct Point {
    pub n: usize,
    pub class: &'static str,
    pub prog: Prog,
    pub temp: Temp,
    pub ns: Stat,
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub runs: usize,
    pub repeat: u32,
    /// Calls per hot per-call measurement.
    pub calls: usize,
    /// Distinct sources a cold run cycles through (a power of two).
    pub cold_sources: usize,
}

pub struct Subjects<'a> {
    pub gate: &'a mut BenchGate,
    pub floor: BorrowedFd<'a>,
    pub xdpfilter: Option<&'a XdpFilter>,
    pub trie: Option<&'a TrieStandin>,
}

impl Subjects<'_> {
    fn fd(&self, p: Prog) -> Result<Option<BorrowedFd<'_>>> {
        Ok(match p {
            Prog::Gate => Some(self.gate.prog()?),
            Prog::Floor => Some(self.floor),
            Prog::XdpFilter => self.xdpfilter.map(|x| x.prog()).transpose()?,
            Prog::Trie => self.trie.map(|t| t.prog()),
        })
    }

    fn applies(&self, c: &Class, p: Prog) -> bool {
        match p {
            Prog::Gate | Prog::Floor => true,
            Prog::XdpFilter => self.xdpfilter.is_some(),
            Prog::Trie => self.trie.is_some() && c.trie,
        }
    }
}

/// Whether the kernel restores the input frame between repetitions of one
/// BPF_PROG_TEST_RUN: run the gate in reset mode 100 times on one SYN and
/// see whether the reset counter moved by 100 or by 1.
pub fn input_restored(s: &mut Subjects<'_>, t: &Table) -> Result<bool> {
    let c = classes().into_iter().find(|c| c.key == "reset").unwrap();
    s.gate.set_mode(Mode::Reset)?;
    let f = c.frame(c.hot_source(t, &mut Rng::new(99)));
    let count = |s: &Subjects<'_>| -> Result<u64> {
        Ok(s.gate
            .maps
            .counters()?
            .into_iter()
            .find(|(k, _)| k.as_str() == "reset")
            .map(|(_, v)| v)
            .unwrap_or(0))
    };
    let before = count(s)?;
    sys::test_run(s.gate.prog()?, &f, 100, None)?;
    Ok(count(s)? - before >= 100)
}

/// Records in EXPLAINED while the defer classes run (random /64s, besides
/// the explained class's own sources): half the default capacity, so the
/// lookups walk a map as a busy gateway's would be.
pub const EXPLAINED_FILL: usize = 32768;

/// Mean of per-call kernel timings, dropping calls over 20 µs (an
/// interrupt landed in the timed window; a program run here takes < 5 µs).
fn per_call(fd: BorrowedFd<'_>, frames: &[&[u8]]) -> Result<f64> {
    let (mut sum, mut n) = (0u64, 0u64);
    for f in frames {
        let r = sys::test_run(fd, f, 1, None)?;
        if r.ns < 20_000 {
            sum += u64::from(r.ns);
            n += 1;
        }
    }
    if n == 0 {
        bail!("every call took over 20 µs");
    }
    Ok(sum as f64 / n as f64)
}

/// Check every program gives each class the verdict it should, on the hot
/// frame and on the first 64 sources of the cold driver; a table that did
/// not load right must not produce figures.
fn verify(s: &mut Subjects<'_>, c: &Class, frame: &[u8], cold: Option<&ColdDriver>) -> Result<()> {
    s.gate.set_mode(c.mode)?;
    let partner = c.src == super::frames::Src::Partner;
    let mut checks: Vec<(Prog, u32)> = vec![(Prog::Gate, c.expected_gate())];
    if c.xdpfilter_same && s.applies(c, Prog::XdpFilter) {
        checks.push((Prog::XdpFilter, if partner { 2 } else { 1 }));
    }
    if s.applies(c, Prog::Trie) {
        checks.push((Prog::Trie, if partner { 2 } else { 1 }));
    }
    for (p, want) in checks {
        let fd = s.fd(p)?.expect("applies");
        let mut out = vec![0u8; frame.len() + 256];
        let got = sys::test_run(fd, frame, 1, Some(&mut out))?.retval;
        if got != want {
            bail!(
                "class {:?}: {} returned {got}, expected {want} (allowlist not loaded as meant?)",
                c.key,
                p.name()
            );
        }
        if let Some(d) = cold {
            d.target(fd)?;
            for k in 0..64 {
                let got = sys::test_run(d.prog(), frame, 1, None)?.retval;
                if got != want {
                    bail!(
                        "class {:?}, cold source #{k}: {} returned {got}, expected {want}",
                        c.key,
                        p.name()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Measure every class at one table size.
pub fn measure(
    n: usize,
    table: &Table,
    s: &mut Subjects<'_>,
    set: &Settings,
    restored: bool,
) -> Result<Vec<Point>> {
    let mut rng = Rng::new(0x5eed ^ n as u64);
    let cls = classes();
    let hot: Vec<Vec<u8>> = cls
        .iter()
        .map(|c| c.frame(c.hot_source(table, &mut rng)))
        .collect();
    // One cold driver per cold class, cycling sources spread over the table.
    let cold: Vec<Option<ColdDriver>> = cls
        .iter()
        .map(|c| {
            c.cold
                .then(|| {
                    ColdDriver::new(
                        &c.cold_sources(table, set.cold_sources, &mut rng),
                        c.src_offset(),
                    )
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    // Defer mode's explanation records: a background of random sources,
    // and the explained class's hot source (it runs hot per call only).
    let background: Vec<u128> = (0..EXPLAINED_FILL)
        .map(|_| (0x2000u128 << 112) | (rng.next_u128() >> 3))
        .filter(|a| !table.contains(*a))
        .collect();
    s.gate
        .explain(&background)
        .context("recording the background explanations")?;
    for (i, c) in cls.iter().enumerate() {
        if c.explained {
            let off = c.src_offset() as usize;
            let src = u128::from_be_bytes(hot[i][off..off + 16].try_into()?);
            s.gate
                .explain(&[src])
                .with_context(|| format!("recording class {:?}'s source as explained", c.key))?;
        }
    }
    for (i, c) in cls.iter().enumerate() {
        verify(s, c, &hot[i], cold[i].as_ref())
            .with_context(|| format!("verifying verdicts at {n} prefixes"))?;
    }
    // samples[(class, prog, temp)]
    let mut samples: std::collections::BTreeMap<(usize, Prog, u8), Vec<f64>> = Default::default();
    let temp_id = |t: Temp| t as u8;
    for _run in 0..set.runs {
        for (i, c) in cls.iter().enumerate() {
            s.gate.set_mode(c.mode)?;
            // A run that rewrites the frame cannot be repeated in one call.
            let per_call_hot = c.rewrites() && !restored;
            for p in Prog::ALL {
                if !s.applies(c, p) {
                    continue;
                }
                let fd = s.fd(p)?.expect("applies");
                let (t, ns) = if per_call_hot {
                    let frames: Vec<&[u8]> = vec![hot[i].as_slice(); set.calls];
                    (Temp::HotPerCall, per_call(fd, &frames)?)
                } else {
                    (
                        Temp::Hot,
                        f64::from(sys::test_run(fd, &hot[i], set.repeat, None)?.ns),
                    )
                };
                samples.entry((i, p, temp_id(t))).or_default().push(ns);
                if let Some(d) = &cold[i] {
                    d.target(fd)?;
                    let ns = f64::from(sys::test_run(d.prog(), &hot[i], set.repeat, None)?.ns);
                    samples
                        .entry((i, p, temp_id(Temp::Cold)))
                        .or_default()
                        .push(ns);
                }
            }
        }
    }
    let temps = [Temp::Hot, Temp::HotPerCall, Temp::Cold];
    Ok(samples
        .into_iter()
        .map(|((i, prog, t), v)| Point {
            n,
            class: cls[i].key,
            prog,
            temp: temps[t as usize],
            ns: Stat::of(&v),
        })
        .collect())
}
