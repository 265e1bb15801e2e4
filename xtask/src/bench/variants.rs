//! Part 5: what the older kernels' ways of doing a job cost, on this
//! kernel, in the same run. The gate is loaded twice from the same object:
//! once with the optional features this kernel has (what it runs here),
//! once with the baseline every supported kernel has (what Debian 11's
//! 5.10 runs) — `Gate::load_with` sets the load-time constants, the
//! verifier keeps one branch of each. Both run the same inputs through
//! BPF_PROG_TEST_RUN, interleaved.
//!
//! - the clock (`bpf_ktime_get_coarse_ns`, 5.11, vs `bpf_ktime_get_ns`):
//!   XDP in drop mode on a stranger's SYN, the flood case (every SYN reads
//!   the clock for the report budget, nearly all are suppressed);
//! - the lo exemption in sk_lookup (`ingress_ifindex`, 5.17, vs comparing
//!   the addresses): a stranger's connection to an unprotected port (the
//!   test is nearly all that runs) and to port 25 in monitor mode (the
//!   whole path, report budget included).
use anyhow::{bail, Result};
use mx6gate::kernel::Optional;
use mx6gate_common::Mode;

use super::{
    frames::classes,
    gate::BenchGate,
    prefixes::{far_strangers, Rng, Table},
    stats::Stat,
    sys,
};

#[derive(Clone, Debug)]
pub struct VariantPoint {
    pub case: &'static str,
    /// What the probed features chose, e.g. "coarse clock".
    pub new_way: String,
    pub old_way: &'static str,
    /// ns per run, probed features.
    pub new: Stat,
    /// ns per run, the baseline.
    pub old: Stat,
}

/// The result, or why the part could not run here (a kernel that itself
/// lacks the newer features has nothing to compare).
pub fn measure(runs: usize, repeat: u32, table: &Table) -> Result<Vec<VariantPoint>> {
    let probed = Optional::probe();
    if probed == Optional::BASELINE {
        bail!("this kernel has neither the coarse clock nor sk_lookup's ingress_ifindex: nothing to compare");
    }
    let desired = super::prefixes::desired(&table.prefixes);
    let load = |f: Optional| -> Result<BenchGate> {
        let (mut g, _) = BenchGate::load_with(table.prefixes.len() + 64, Mode::Drop, Some(f))?;
        g.apply(&desired)?;
        Ok(g)
    };
    let mut new = load(probed)?;
    let mut old = load(Optional::BASELINE)?;
    let mut rng = Rng::new(0x5eed_0005);
    let stranger = far_strangers(table, 1, &mut rng)[0];
    let drop_class = classes()
        .into_iter()
        .find(|c| c.key == "drop")
        .expect("the drop class exists");
    let syn = drop_class.frame(stranger);
    let local = 0x2001_0db8_0000_0000_0000_0000_0000_0025u128;

    struct Case {
        name: &'static str,
        new_way: String,
        old_way: &'static str,
        mode: Mode,
        input: Input,
        /// The verdict both variants must give (else the figures time
        /// something else).
        verdict: u32,
    }
    const XDP_DROP: u32 = 1;
    const SK_PASS: u32 = 1;
    enum Input {
        Xdp(Vec<u8>),
        SkLookup([u8; SK_LOOKUP_CTX]),
    }
    let mut cases = Vec::new();
    if probed.coarse_clock {
        cases.push(Case {
            name: "XDP, stranger SYN :25, drop (report budget spent)",
            new_way: "coarse clock".into(),
            old_way: "precise clock",
            mode: Mode::Drop,
            input: Input::Xdp(syn.clone()),
            verdict: XDP_DROP,
        });
    }
    let lo_new = if probed.sk_lookup_ifindex {
        "lo by ingress_ifindex"
    } else {
        "lo by addresses"
    };
    let clock_new = if probed.coarse_clock {
        "coarse clock"
    } else {
        "precise clock"
    };
    cases.push(Case {
        name: "sk_lookup, stranger to an unprotected port (:80)",
        new_way: lo_new.into(),
        old_way: "lo by addresses",
        mode: Mode::Drop,
        input: Input::SkLookup(sk_lookup_ctx(stranger, local, 80)),
        verdict: SK_PASS,
    });
    cases.push(Case {
        name: "sk_lookup, stranger :25, monitor (report budget spent)",
        new_way: format!("{lo_new}, {clock_new}"),
        old_way: "lo by addresses, precise clock",
        mode: Mode::Monitor,
        input: Input::SkLookup(sk_lookup_ctx(stranger, local, 25)),
        verdict: SK_PASS,
    });

    let mut out = Vec::new();
    for c in cases {
        new.set_mode(c.mode)?;
        old.set_mode(c.mode)?;
        let mut samples = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (g, s) in [(&new, &mut samples.0), (&old, &mut samples.1)] {
                let r = match &c.input {
                    Input::Xdp(frame) => sys::test_run(g.prog()?, frame, repeat, None)?,
                    Input::SkLookup(ctx) => sys::test_run_ctx(g.sk_lookup_prog()?, ctx, repeat)?,
                };
                if r.retval != c.verdict {
                    bail!(
                        "{}: verdict {} where {} was expected",
                        c.name,
                        r.retval,
                        c.verdict
                    );
                }
                s.push(r.ns as f64);
            }
        }
        out.push(VariantPoint {
            case: c.name,
            new_way: c.new_way,
            old_way: c.old_way,
            new: Stat::of(&samples.0),
            old: Stat::of(&samples.1),
        });
    }
    Ok(out)
}

/// sizeof(struct bpf_sk_lookup).
const SK_LOOKUP_CTX: usize = 72;

/// A struct bpf_sk_lookup for a TCP/IPv6 connection from `remote` (port
/// 40000) to `local`:`port`, as BPF_PROG_TEST_RUN takes it (no socket, no
/// cookie, no interface: the kernel's test run leaves ingress_ifindex 0).
fn sk_lookup_ctx(remote: u128, local: u128, port: u16) -> [u8; SK_LOOKUP_CTX] {
    const AF_INET6: u32 = 10;
    const IPPROTO_TCP: u32 = 6;
    let mut c = [0u8; SK_LOOKUP_CTX];
    c[8..12].copy_from_slice(&AF_INET6.to_ne_bytes());
    c[12..16].copy_from_slice(&IPPROTO_TCP.to_ne_bytes());
    c[20..36].copy_from_slice(&remote.to_be_bytes());
    c[36..38].copy_from_slice(&40000u16.to_be_bytes());
    c[44..60].copy_from_slice(&local.to_be_bytes());
    c[60..64].copy_from_slice(&(port as u32).to_ne_bytes());
    c
}
