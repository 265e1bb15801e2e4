//! Three tiny XDP programs written as raw instructions, so the baselines
//! need no object file and no compiler:
//!
//! * [`xdp_drop`] — `return XDP_DROP`: the floor every figure is divided by.
//! * [`trie_standin`] — the "plain LPM trie" gate: Ethernet/IPv6/TCP SYN to
//!   port 25 (no VLAN tags, no extension headers), one lookup of the source
//!   in a kernel LPM trie, drop on a miss. What the gate would cost if the
//!   allowlist were the trie alone, minus counters and parsing breadth: a
//!   lower bound for a trie-based gate.
//! * [`cold_driver`] — feeds the program under test a different source on
//!   every repetition of one test run (see there).
//! * [`redirect_gen`] — the traffic generator for the wire test: randomises
//!   the low 80 bits of the IPv6 source (so every SYN comes from a different
//!   address and /64 of one /48) and `bpf_redirect`s the frame to an
//!   interface.
use std::collections::HashMap;

use mx6gate_common::proto::{ETH_HLEN, IPV6_HLEN};

// Registers.
pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const R10: u8 = 10;

pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_GET_PRANDOM_U32: i32 = 7;
const HELPER_TAIL_CALL: i32 = 12;
const HELPER_REDIRECT: i32 = 23;

/// A minimal assembler with forward labels for jumps.
#[derive(Default)]
pub struct Asm {
    insns: Vec<u64>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

fn enc(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

impl Asm {
    fn push(&mut self, i: u64) -> &mut Self {
        self.insns.push(i);
        self
    }
    pub fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(enc(0xb7, dst, 0, 0, imm))
    }
    pub fn mov_reg(&mut self, dst: u8, src: u8) -> &mut Self {
        self.push(enc(0xbf, dst, src, 0, 0))
    }
    pub fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(enc(0x07, dst, 0, 0, imm))
    }
    pub fn and_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(enc(0x57, dst, 0, 0, imm))
    }
    /// dst = *(u8 *)(src + off)
    pub fn ldx_b(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(enc(0x71, dst, src, off, 0))
    }
    /// dst = *(u16 *)(src + off)
    pub fn ldx_h(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(enc(0x69, dst, src, off, 0))
    }
    /// dst = *(u32 *)(src + off)
    pub fn ldx_w(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(enc(0x61, dst, src, off, 0))
    }
    /// dst = *(u64 *)(src + off)
    pub fn ldx_dw(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(enc(0x79, dst, src, off, 0))
    }
    /// *(u64 *)(dst + off) = src
    pub fn stx_dw(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.push(enc(0x7b, dst, src, off, 0))
    }
    /// *(u16 *)(dst + off) = src
    pub fn stx_h(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.push(enc(0x6b, dst, src, off, 0))
    }
    /// *(u32 *)(dst + off) = src
    pub fn stx_w(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.push(enc(0x63, dst, src, off, 0))
    }
    /// *(u32 *)(dst + off) = imm
    pub fn st_w(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(enc(0x62, dst, 0, off, imm))
    }
    /// dst = map (by fd): the two-slot ld_imm64 with BPF_PSEUDO_MAP_FD.
    pub fn ld_map_fd(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.push(enc(0x18, dst, 1, 0, fd)).push(0)
    }
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(enc(0x85, 0, 0, 0, helper))
    }
    pub fn exit(&mut self) -> &mut Self {
        self.push(enc(0x95, 0, 0, 0, 0))
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(enc(code, dst, src, 0, imm))
    }
    /// if dst > src goto label (unsigned)
    pub fn jgt_reg(&mut self, dst: u8, src: u8, to: &'static str) -> &mut Self {
        self.jump(0x2d, dst, src, 0, to)
    }
    /// if dst != imm goto label
    pub fn jne_imm(&mut self, dst: u8, imm: i32, to: &'static str) -> &mut Self {
        self.jump(0x55, dst, 0, imm, to)
    }
    /// if dst == imm goto label
    pub fn jeq_imm(&mut self, dst: u8, imm: i32, to: &'static str) -> &mut Self {
        self.jump(0x15, dst, 0, imm, to)
    }
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.insns.len());
        self
    }
    pub fn finish(mut self) -> Vec<u64> {
        for (at, name) in std::mem::take(&mut self.fixups) {
            let target = self.labels[name] as i64;
            let off = (target - at as i64 - 1) as i16;
            self.insns[at] = (self.insns[at] & !(0xffffu64 << 16)) | (u64::from(off as u16) << 16);
        }
        self.insns
    }
}

/// `return XDP_DROP`.
pub fn xdp_drop() -> Vec<u64> {
    let mut a = Asm::default();
    a.mov_imm(R0, XDP_DROP).exit();
    a.finish()
}

/// Offsets in an untagged Ethernet/IPv6/TCP frame.
const IP6: i16 = ETH_HLEN as i16;
const TCP: i16 = (ETH_HLEN + IPV6_HLEN) as i16;

/// See the module docs. `trie_fd` is an LPM trie with 20-byte keys
/// (prefix length, IPv6 address).
pub fn trie_standin(trie_fd: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.ldx_w(R2, R1, 0) // data
        .ldx_w(R3, R1, 4) // data_end
        .mov_reg(R4, R2)
        .add_imm(R4, i32::from(TCP) + 20)
        .jgt_reg(R4, R3, "pass")
        .ldx_h(R5, R2, 12) // ethertype, as loaded little-endian
        .jne_imm(R5, 0xdd86, "pass")
        .ldx_b(R5, R2, IP6 + 6) // next header
        .jne_imm(R5, 6, "pass")
        .ldx_h(R5, R2, TCP + 2) // destination port
        .jne_imm(R5, 0x1900, "pass") // 25, big-endian
        .ldx_b(R5, R2, TCP + 13) // flags
        .and_imm(R5, 0x12)
        .jne_imm(R5, 0x02, "pass") // SYN without ACK
        .st_w(R10, -24, 128) // key: prefix length 128, then the source
        .ldx_w(R5, R2, IP6 + 8)
        .stx_w(R10, -20, R5)
        .ldx_w(R5, R2, IP6 + 12)
        .stx_w(R10, -16, R5)
        .ldx_w(R5, R2, IP6 + 16)
        .stx_w(R10, -12, R5)
        .ldx_w(R5, R2, IP6 + 20)
        .stx_w(R10, -8, R5)
        .ld_map_fd(R1, trie_fd)
        .mov_reg(R2, R10)
        .add_imm(R2, -24)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jne_imm(R0, 0, "pass")
        .mov_imm(R0, XDP_DROP)
        .exit()
        .label("pass")
        .mov_imm(R0, XDP_PASS)
        .exit();
    a.finish()
}

/// The cold driver: before every run, write the next of `k` sources (an
/// array map, 16 bytes each; `k` a power of two) into the frame's IPv6
/// source at `src_off`, then tail-call the program under test (slot 0 of a
/// prog array). One BPF_PROG_TEST_RUN with a large repeat thus runs the
/// program on a different source every time, with its code hot and the
/// table cold.
pub fn cold_driver(
    counter_fd: i32,
    sources_fd: i32,
    progs_fd: i32,
    k: u32,
    src_off: i16,
) -> Vec<u64> {
    assert!(k.is_power_of_two());
    let mut a = Asm::default();
    a.mov_reg(R6, R1)
        .st_w(R10, -4, 0)
        .ld_map_fd(R1, counter_fd)
        .mov_reg(R2, R10)
        .add_imm(R2, -4)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jeq_imm(R0, 0, "run")
        .ldx_dw(R7, R0, 0)
        .mov_reg(R8, R7)
        .add_imm(R8, 1)
        .stx_dw(R0, 0, R8)
        .and_imm(R7, (k - 1) as i32)
        .stx_w(R10, -8, R7)
        .ld_map_fd(R1, sources_fd)
        .mov_reg(R2, R10)
        .add_imm(R2, -8)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jeq_imm(R0, 0, "run")
        .ldx_w(R2, R6, 0)
        .ldx_w(R3, R6, 4)
        .mov_reg(R4, R2)
        .add_imm(R4, i32::from(src_off) + 16)
        .jgt_reg(R4, R3, "run")
        .ldx_dw(R5, R0, 0)
        .stx_dw(R2, src_off, R5)
        .ldx_dw(R5, R0, 8)
        .stx_dw(R2, src_off + 8, R5)
        .label("run")
        .mov_reg(R1, R6)
        .ld_map_fd(R2, progs_fd)
        .mov_imm(R3, 0)
        .call(HELPER_TAIL_CALL)
        .mov_imm(R0, 0) // XDP_ABORTED: the tail call failed
        .exit();
    a.finish()
}

/// See the module docs.
pub fn redirect_gen(ifindex: u32) -> Vec<u64> {
    let mut a = Asm::default();
    a.mov_reg(R6, R1)
        .call(HELPER_GET_PRANDOM_U32)
        .mov_reg(R7, R0)
        .call(HELPER_GET_PRANDOM_U32)
        .mov_reg(R8, R0)
        .call(HELPER_GET_PRANDOM_U32)
        .ldx_w(R2, R6, 0)
        .ldx_w(R3, R6, 4)
        .mov_reg(R4, R2)
        .add_imm(R4, i32::from(TCP))
        .jgt_reg(R4, R3, "send")
        .stx_h(R2, IP6 + 14, R0) // source bytes 6..8
        .stx_w(R2, IP6 + 16, R7) // source bytes 8..12
        .stx_w(R2, IP6 + 20, R8) // source bytes 12..16
        .label("send")
        .mov_imm(R1, ifindex as i32)
        .mov_imm(R2, 0)
        .call(HELPER_REDIRECT)
        .exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(i: u64) -> i16 {
        (i >> 16) as u16 as i16
    }

    #[test]
    fn labels_resolve_relative_to_the_next_instruction() {
        let mut a = Asm::default();
        a.jne_imm(R0, 1, "x")
            .ld_map_fd(R1, 7)
            .mov_imm(R0, 2)
            .label("x")
            .exit();
        let v = a.finish();
        assert_eq!(v.len(), 5);
        assert_eq!(off(v[0]), 3); // over the two-slot ld_imm64 and the mov
        assert_eq!(v[1] & 0xff, 0x18);
        assert_eq!((v[1] >> 12) & 0xf, 1, "BPF_PSEUDO_MAP_FD");
        assert_eq!(v[1] >> 32, 7);
    }

    #[test]
    fn programs_end_in_exit() {
        for p in [
            xdp_drop(),
            trie_standin(3),
            redirect_gen(2),
            cold_driver(3, 4, 5, 256, 22),
        ] {
            assert_eq!(p.last().unwrap() & 0xff, 0x95);
        }
    }
}
