//! The packet classes of the per-packet bench, built with the test suite's
//! own frame builders (`mx6gate_tests::packets`).
use mx6gate_common::{
    proto::{ETH_P_8021Q, TCP_ACK},
    Mode,
};
use mx6gate_tests::packets::{ipv4_syn, neighbour_solicitation, tcp_frame, Ext, Tcp};

use super::prefixes::{far_strangers, near_strangers, partner_sources, Rng, Table, HOT_LEN};

/// Which sources a class is sent from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// Not an IPv6 SYN: no source lookup at all.
    None,
    Partner,
    /// A stranger sharing no /32 with any partner.
    Far,
    /// A stranger inside a partner's /32.
    Near,
}

#[derive(Clone, Debug)]
pub struct Class {
    pub key: &'static str,
    pub label: &'static str,
    pub mode: Mode,
    /// Non-SMTP classes must stay within +5 ns of the floor; SMTP (SYN to
    /// 25) classes within 2×/3× of it.
    pub smtp: bool,
    /// xdp-filter in allow mode gives this class the same verdict.
    pub xdpfilter_same: bool,
    /// Measured hot and cold (table-wide sources) too.
    pub cold: bool,
    /// Also run through the plain-LPM-trie stand-in (untagged, no
    /// extension headers).
    pub trie: bool,
    /// Defer mode: the class's sources are explained within the window
    /// (the bench records them in EXPLAINED first), so XDP resets them.
    pub explained: bool,
    pub src: Src,
    tags: &'static [u16],
    exts: &'static [Ext],
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ipv4,
    Ns,
    Ack,
    Syn,
}

const NO_TAGS: &[u16] = &[];
const NO_EXTS: &[Ext] = &[];
const TWO_EXTS: &[Ext] = &[Ext::HopByHop(0), Ext::DestOpts(0)];
const ONE_TAG: &[u16] = &[ETH_P_8021Q];

#[allow(clippy::too_many_arguments)]
const fn class(
    key: &'static str,
    label: &'static str,
    mode: Mode,
    smtp: bool,
    xdpfilter_same: bool,
    cold: bool,
    trie: bool,
    src: Src,
    tags: &'static [u16],
    exts: &'static [Ext],
    kind: Kind,
) -> Class {
    Class {
        key,
        label,
        mode,
        smtp,
        xdpfilter_same,
        cold,
        trie,
        explained: false,
        src,
        tags,
        exts,
        kind,
    }
}

pub fn classes() -> Vec<Class> {
    use Mode::*;
    vec![
        class(
            "ipv4",
            "IPv4 TCP SYN :25",
            Drop,
            false,
            false,
            false,
            false,
            Src::None,
            NO_TAGS,
            NO_EXTS,
            Kind::Ipv4,
        ),
        class(
            "ns",
            "ICMPv6 neighbour solicitation",
            Drop,
            false,
            false,
            false,
            false,
            Src::None,
            NO_TAGS,
            NO_EXTS,
            Kind::Ns,
        ),
        class(
            "ack",
            "IPv6 TCP ACK :25 (non-SYN)",
            Drop,
            false,
            false,
            false,
            false,
            Src::Far,
            NO_TAGS,
            NO_EXTS,
            Kind::Ack,
        ),
        class(
            "partner",
            "SYN :25 from a partner",
            Drop,
            true,
            true,
            true,
            true,
            Src::Partner,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        class(
            "monitor",
            "SYN :25 stranger, monitor",
            Monitor,
            true,
            false,
            false,
            false,
            Src::Far,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        // Defer mode with escalation on (the default): the source's
        // explanation record is looked up (EXPLAINED, an LRU hash, holding
        // EXPLAINED_FILL records), a miss for these…
        class(
            "defer",
            "SYN :25 stranger, defer, not explained (EXPLAINED miss)",
            Defer,
            true,
            false,
            true,
            false,
            Src::Far,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        // … a hit for these, and the reset (XDP_TX) as in reset mode.
        Class {
            explained: true,
            ..class(
                "explained",
                "SYN :25 stranger explained, defer → RST (EXPLAINED hit, XDP_TX)",
                Defer,
                true,
                false,
                false,
                false,
                Src::Far,
                NO_TAGS,
                NO_EXTS,
                Kind::Syn,
            )
        },
        class(
            "reset",
            "SYN :25 stranger, reset (RST via XDP_TX)",
            Reset,
            true,
            false,
            false,
            false,
            Src::Far,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        class(
            "drop",
            "SYN :25 stranger, drop",
            Drop,
            true,
            true,
            true,
            true,
            Src::Far,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        class(
            "near",
            "SYN :25 stranger in a partner's /32, drop",
            Drop,
            true,
            true,
            true,
            true,
            Src::Near,
            NO_TAGS,
            NO_EXTS,
            Kind::Syn,
        ),
        class(
            "vlan",
            "SYN :25 in one VLAN tag (stranger near, drop)",
            Drop,
            true,
            true,
            false,
            false,
            Src::Near,
            ONE_TAG,
            NO_EXTS,
            Kind::Syn,
        ),
        class(
            "ext2",
            "SYN :25 behind HbH+DestOpts (stranger near, drop)",
            Drop,
            true,
            true,
            false,
            false,
            Src::Near,
            NO_TAGS,
            TWO_EXTS,
            Kind::Syn,
        ),
    ]
}

impl Class {
    /// One source for the hot runs: partners and near strangers at a /48
    /// (`HOT_LEN`), the most common length, so that the hot figures at
    /// different sizes describe the same lookup.
    pub fn hot_source(&self, t: &Table, rng: &mut Rng) -> u128 {
        self.pick(t, 1, Some(HOT_LEN), rng)[0]
    }

    /// `k` sources for the cold runs, over every length in the table.
    pub fn cold_sources(&self, t: &Table, k: usize, rng: &mut Rng) -> Vec<u128> {
        self.pick(t, k, None, rng)
    }

    fn pick(&self, t: &Table, k: usize, len: Option<u8>, rng: &mut Rng) -> Vec<u128> {
        match self.src {
            Src::None => vec![0; k],
            Src::Partner => partner_sources(t, k, len, rng),
            Src::Far => far_strangers(t, k, rng),
            Src::Near => near_strangers(t, k, len, rng),
        }
    }

    pub fn frame(&self, src: u128) -> Vec<u8> {
        let s = src.to_be_bytes();
        match self.kind {
            Kind::Ipv4 => ipv4_syn(25),
            Kind::Ns => neighbour_solicitation(),
            Kind::Ack => tcp_frame(
                self.tags,
                s,
                self.exts,
                &Tcp {
                    flags: TCP_ACK,
                    seq: 0x2000_0000,
                    options: vec![],
                    ..Tcp::syn(25)
                },
            ),
            Kind::Syn => tcp_frame(self.tags, s, self.exts, &Tcp::syn(25)),
        }
    }

    /// Byte offset of the IPv6 source in this class's frames.
    pub fn src_offset(&self) -> i16 {
        (mx6gate_common::proto::ETH_HLEN + 4 * self.tags.len() + 8) as i16
    }

    /// What the gate must answer (XDP action) for this class.
    pub fn expected_gate(&self) -> u32 {
        const DROP: u32 = 1;
        const PASS: u32 = 2;
        const TX: u32 = 3;
        if !self.smtp || self.src == Src::Partner {
            return PASS;
        }
        match self.mode {
            Mode::Defer if self.explained => TX,
            Mode::Monitor | Mode::Defer => PASS,
            Mode::Reset => TX,
            Mode::Drop => DROP,
        }
    }

    /// Whether a run turns the frame into a RST in place (so a repeated
    /// run would time a non-SYN).
    pub fn rewrites(&self) -> bool {
        self.expected_gate() == 3
    }
}
