//! The XDP program against the reference classifier, in the kernel:
//! BPF_PROG_TEST_RUN on a hand-written corpus and on 100,000 generated
//! packets. Verdict, counter and output bytes must match on every packet, and
//! every RST the program emits must be a valid TCP segment. In defer mode
//! each packet also meets every state of its source's explanation record
//! (none, explained, the explained connection's retransmit, after the
//! grace, expired, from the future), written into the kernel's EXPLAINED
//! map before the run.
use std::net::Ipv6Addr;

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use ipnet::Ipv6Net;
use mx6gate::{config::Config, gate::Gate, maps::GateMaps};
use mx6gate_common::{
    classify::{classify, Action, Explanations, Verdict},
    explain::{DeferConfig, Explained, Repeat},
    proto::*,
    Counter, GateConfig, Mode, XDP_PROGRAM,
};
use mx6gate_tests::packets::*;
use proptest::{
    prelude::*,
    test_runner::{Config as PtConfig, TestRunner},
};

const PORTS: [u16; 2] = [25, 587];

const SEC: u64 = 1_000_000_000;
/// Short window and grace so every state fits in a fresh VM's uptime;
/// the record ages below keep seconds away from both boundaries (the
/// programs' coarse clock is a jiffy behind the test's).
const WINDOW_NS: u64 = 20 * SEC;
const GRACE_NS: u64 = 8 * SEC;
/// The oldest record a state needs (Expired): the uptime the test waits for.
const OLDEST_NS: u64 = 30 * SEC;

/// The source's explanation record, relative to the packet's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    None,
    /// 2 s old, another source port: a new attempt (reset in defer mode).
    Explained,
    /// 2 s old, the packet's own ports: the explained connection's retransmit.
    Retransmit,
    /// The packet's ports, but past the grace: a new attempt.
    AfterGrace,
    /// Past the window: the banner again.
    Expired,
    /// Stamped half a second ahead (another clock read): just made.
    JustAhead,
    /// Stamped in the future: ignored.
    Future,
}

const RECORDS: [Record; 7] = [
    Record::None,
    Record::Explained,
    Record::Retransmit,
    Record::AfterGrace,
    Record::Expired,
    Record::JustAhead,
    Record::Future,
];

/// Source address and ports of an IPv6 TCP packet as the classifier parses it.
fn endpoints(pkt: &[u8]) -> Option<([u8; 16], u16, u16)> {
    match mx6gate_common::classify::locate_tcp(pkt) {
        mx6gate_common::classify::L4::Tcp { ip, tcp } => Some((
            pkt[ip + 8..ip + 24].try_into().unwrap(),
            u16::from_be_bytes([pkt[tcp], pkt[tcp + 1]]),
            u16::from_be_bytes([pkt[tcp + 2], pkt[tcp + 3]]),
        )),
        _ => None,
    }
}

impl Record {
    fn at(self, now: u64, sport: u16, dport: u16) -> Option<Explained> {
        let rec = |age_ns: u64, sport: u16| Explained {
            at_ns: now - age_ns,
            sport,
            dport,
            _pad: 0,
        };
        match self {
            Record::None => None,
            Record::Explained => Some(rec(2 * SEC, sport ^ 0x8000)),
            Record::Retransmit => Some(rec(2 * SEC, sport)),
            Record::AfterGrace => Some(rec(12 * SEC, sport)),
            Record::Expired => Some(rec(OLDEST_NS, sport)),
            Record::JustAhead => Some(Explained {
                at_ns: now + SEC / 2,
                ..rec(0, sport ^ 0x8000)
            }),
            Record::Future => Some(Explained {
                at_ns: now + 100 * SEC,
                ..rec(0, sport ^ 0x8000)
            }),
        }
    }
}

/// The product's own load path (Gate::load, pinned maps, allowlist sync)
/// under a private pin path, so the differential tests cover the allowlist
/// layout and its sync too, not just the packet parser.
struct Harness {
    gate: Gate,
    maps: GateMaps,
    cfg: Config,
    _dir: tempfile::TempDir,
    partners: Vec<(Ipv6Net, u32)>,
    mode: Option<Mode>,
    defer: DeferConfig,
}

impl Drop for Harness {
    fn drop(&mut self) {
        mx6gate::gate::detach(&self.cfg.pin_path, &self.cfg.state_dir).ok();
    }
}

impl Harness {
    fn new() -> Option<Harness> {
        if !mx6gate_tests::require_root() {
            return None;
        }
        mx6gate_tests::ensure_bpffs().unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            pin_path: format!(
                "/sys/fs/bpf/mx6t-{}-diff{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
            .into(),
            state_dir: dir.path().join("state"),
            partners_dir: dir.path().join("partners.d"),
            ports: PORTS.to_vec(),
            ..Config::default()
        };
        let gate = Gate::load(&cfg).expect("load the object; the verifier accepts both programs");
        let mut maps = GateMaps::open(&cfg.pin_path).unwrap();
        let partners: Vec<(Ipv6Net, u32)> = partner_prefixes();
        mx6gate::reconcile::apply_allow(&mut maps, &partners.iter().copied().collect()).unwrap();
        // Every record state needs the clock to be OLDEST_NS past boot.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while mx6gate::explain::monotonic_now_ns() < OLDEST_NS + SEC {
            assert!(
                std::time::Instant::now() < deadline,
                "the monotonic clock stands still"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let mut h = Harness {
            gate,
            maps,
            cfg,
            _dir: dir,
            partners,
            mode: None,
            defer: DeferConfig::default(),
        };
        h.set_defer(64, Repeat::Reset);
        Some(h)
    }

    fn set_defer(&mut self, explain_by: u32, repeat: Repeat) {
        let x = DeferConfig {
            window_ns: WINDOW_NS,
            grace_ns: GRACE_NS,
            explain_by,
            repeat: repeat as u32,
        };
        if x != self.defer {
            assert!(
                self.maps.write_defer(&x).unwrap(),
                "the gate has a DEFER map"
            );
            self.defer = x;
        }
    }

    /// Put `record` (relative to `now`) under the key of `pkt`'s source in
    /// the kernel's EXPLAINED map; returns the record and its key.
    fn put_record(
        &mut self,
        pkt: &[u8],
        record: Record,
        now: u64,
    ) -> Option<([u8; 16], Explained)> {
        let (src, sport, dport) = endpoints(pkt)?;
        let rec = record.at(now, sport, dport)?;
        let key = self.defer.key(&src);
        let x = self.maps.explain.as_mut().unwrap();
        x.explained.insert(key, rec, 0).unwrap();
        Some((key, rec))
    }

    fn clear_record(&mut self, key: &[u8; 16]) {
        let x = self.maps.explain.as_mut().unwrap();
        x.explained.remove(key).unwrap();
    }

    fn set_mode(&mut self, mode: Mode) {
        if self.mode == Some(mode) {
            return;
        }
        // Keep the allowlist's layout flags; only mode and ports are ours.
        let flags = self.maps.read_config().unwrap().flags;
        let mut g = GateConfig::new(mode, &PORTS);
        g.flags = flags;
        self.maps.write_config(&g).unwrap();
        self.mode = Some(mode);
    }

    fn lookup(&self, a: &[u8; 16]) -> Option<u32> {
        let addr = Ipv6Addr::from(*a);
        self.partners
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, id)| *id)
    }

    fn counters(&self) -> Vec<u64> {
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    /// Run the program once; (return value, output frame).
    fn run(&self, pkt: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let prog: &Xdp = self
            .gate
            .ebpf
            .program(XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; pkt.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Compare program and reference on one packet in `mode`. With
    /// `per_packet_counters`, also check that exactly the reference's
    /// counter moved.
    fn check(
        &mut self,
        pkt: &[u8],
        mode: Mode,
        per_packet_counters: bool,
    ) -> Result<Verdict, String> {
        self.check_with(pkt, mode, Record::None, per_packet_counters)
    }

    /// As `check`, with the packet's source standing at `record`.
    fn check_with(
        &mut self,
        pkt: &[u8],
        mode: Mode,
        record: Record,
        per_packet_counters: bool,
    ) -> Result<Verdict, String> {
        self.set_mode(mode);
        let before = per_packet_counters.then(|| self.counters());
        let now = mx6gate::explain::monotonic_now_ns();
        let put = self.put_record(pkt, record, now);
        let explanations = Explanations {
            cfg: self.defer,
            now_ns: now,
            lookup: |k: &[u8; 16]| put.filter(|(key, _)| key == k).map(|(_, r)| r),
        };
        let mut expect = pkt.to_vec();
        let v = classify(
            &mut expect,
            &GateConfig::new(mode, &PORTS),
            |a| self.lookup(a),
            &explanations,
        );
        expect.truncate(v.len);
        let ran = self.run(pkt);
        if let Some((key, _)) = put {
            self.clear_record(&key);
        }
        let (ret, out) = ran.map_err(|e| format!("test_run failed: {e}"))?;
        let mode = format!("{mode:?}, record {record:?}, {:?}", self.defer);
        let want_ret = match v.action {
            Action::Pass => 2,
            Action::Drop => 1,
            Action::Tx => 3,
        };
        if ret != want_ret {
            return Err(format!(
                "{mode}: program returned {ret}, reference says {v:?}\npacket: {}",
                hex(pkt)
            ));
        }
        if out != expect {
            return Err(format!(
                "{mode}: output differs\n got: {}\nwant: {}\n  in: {}",
                hex(&out),
                hex(&expect),
                hex(pkt)
            ));
        }
        if v.action == Action::Tx {
            assert_valid_rst(pkt, &out)?;
        }
        if let Some(before) = before {
            let after = self.counters();
            for (i, c) in Counter::ALL.iter().enumerate() {
                let want = before[i] + u64::from(*c == v.counter);
                if after[i] != want {
                    return Err(format!(
                        "{mode}: counter {} is {} want {} (reference counter {:?})\npacket: {}",
                        c.as_str(),
                        after[i],
                        want,
                        v.counter,
                        hex(pkt)
                    ));
                }
            }
        }
        Ok(v)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Independent check of an emitted RST against the SYN it answers.
fn assert_valid_rst(syn: &[u8], rst: &[u8]) -> Result<(), String> {
    let ip = l3_offset(rst).ok_or("RST has no IPv6 header")?;
    let sip = l3_offset(syn).unwrap();
    if rst.len() != ip + IPV6_HLEN + TCP_HLEN {
        return Err(format!("RST length {} not eth+ipv6+tcp", rst.len()));
    }
    if rst[0..6] != syn[6..12] || rst[6..12] != syn[0..6] {
        return Err("MACs not swapped".into());
    }
    if rst[ip] >> 4 != 6 || u16::from_be_bytes([rst[ip + 4], rst[ip + 5]]) != 20 || rst[ip + 6] != 6
    {
        return Err("bad IPv6 header on RST".into());
    }
    if rst[ip + 8..ip + 24] != syn[sip + 24..sip + 40]
        || rst[ip + 24..ip + 40] != syn[sip + 8..sip + 24]
    {
        return Err("addresses not swapped".into());
    }
    let t = ip + IPV6_HLEN;
    let st = match mx6gate_common::classify::locate_tcp(syn) {
        mx6gate_common::classify::L4::Tcp { tcp, .. } => tcp,
        _ => return Err("SYN has no TCP header".into()),
    };
    if rst[t..t + 2] != syn[st + 2..st + 4] || rst[t + 2..t + 4] != syn[st..st + 2] {
        return Err("ports not swapped".into());
    }
    let seq = u32::from_be_bytes(syn[st + 4..st + 8].try_into().unwrap());
    let ack = u32::from_be_bytes(rst[t + 8..t + 12].try_into().unwrap());
    if ack != seq.wrapping_add(1) {
        return Err(format!("ack {ack} != seq+1 {}", seq.wrapping_add(1)));
    }
    if rst[t + 12] >> 4 != 5 || rst[t + 13] != TCP_RST | TCP_ACK {
        return Err("RST must be RST|ACK with no options".into());
    }
    let src: [u8; 16] = rst[ip + 8..ip + 24].try_into().unwrap();
    let dst: [u8; 16] = rst[ip + 24..ip + 40].try_into().unwrap();
    if tcp6_checksum(&src, &dst, &rst[t..t + TCP_HLEN]) != 0 {
        return Err("RST checksum does not verify".into());
    }
    Ok(())
}

#[test]
fn corpus_matches_reference_in_every_mode() {
    let Some(mut h) = Harness::new() else { return };
    let corpus = corpus();
    assert!(corpus.len() > 30);
    let mut seen = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (name, pkt) in &corpus {
        for mode in Mode::ALL {
            // Whole packet, then every truncation the kernel accepts; in
            // defer mode with its source explained (the reset path).
            let record = if mode == Mode::Defer {
                Record::Explained
            } else {
                Record::None
            };
            let v = h
                .check_with(pkt, mode, record, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            seen.insert(v.counter.as_str());
            for cut in ETH_HLEN..pkt.len() {
                h.check_with(&pkt[..cut], mode, record, true)
                    .unwrap_or_else(|e| panic!("{name} cut at {cut}: {e}"));
                checked += 1;
            }
        }
        // Defer mode meets every record state, by /64 and by /128, with
        // escalation on and off.
        for (by, repeat) in [
            (64, Repeat::Reset),
            (128, Repeat::Reset),
            (64, Repeat::Defer),
        ] {
            h.set_defer(by, repeat);
            for record in RECORDS {
                let v = h
                    .check_with(pkt, Mode::Defer, record, true)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                seen.insert(v.counter.as_str());
            }
        }
        h.set_defer(64, Repeat::Reset);
    }
    // The corpus must reach every outcome, or it is not covering the program.
    for c in Counter::ALL {
        assert!(
            seen.contains(c.as_str()),
            "no corpus packet reached {}",
            c.as_str()
        );
    }
    eprintln!(
        "{} packets × 4 modes, {checked} truncations checked",
        corpus.len()
    );
}

#[test]
fn generated_packets_match_reference() {
    let Some(h) = Harness::new() else { return };
    let cases: u32 = std::env::var("MX6GATE_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let before = h.counters();
    let reports_before: u64 = h
        .maps
        .report_counters()
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    // TestRunner wants an Fn closure: the harness and tallies go in cells.
    let h = std::cell::RefCell::new(h);
    let want = std::cell::RefCell::new(vec![0u64; Counter::ALL.len()]);
    let tx = std::cell::Cell::new(0u64);
    let defers = [
        (64, Repeat::Reset),
        (128, Repeat::Reset),
        (64, Repeat::Defer),
    ];
    let strategy = (arb_frame(), 0..4u32, 0..RECORDS.len(), 0..defers.len());
    let result = runner.run(&strategy, |(pkt, mode, record, defer)| {
        let mut h = h.borrow_mut();
        let (by, repeat) = defers[defer];
        h.set_defer(by, repeat);
        let v = h
            .check_with(&pkt, Mode::from_u32(mode), RECORDS[record], false)
            .map_err(TestCaseError::fail)?;
        want.borrow_mut()[v.counter as usize] += 1;
        tx.set(tx.get() + u64::from(v.action == Action::Tx));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Counters checked in aggregate here (per packet in the corpus test).
    let after = h.borrow().counters();
    let want = want.into_inner();
    let tx = tx.get();
    for (i, c) in Counter::ALL.iter().enumerate() {
        assert_eq!(after[i] - before[i], want[i], "counter {}", c.as_str());
    }
    // XDP reports exactly its final non-partner verdicts (sent or
    // suppressed), nothing else.
    let reports: u64 = h
        .borrow()
        .maps
        .report_counters()
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        reports - reports_before,
        want[Counter::Dropped as usize]
            + want[Counter::Reset as usize]
            + want[Counter::Escalated as usize],
        "reports sent + suppressed"
    );
    eprintln!("{cases} generated packets; outcomes {want:?}; {tx} RSTs validated");
    assert!(
        want.iter().all(|n| *n > 0),
        "generator must reach every outcome: {want:?}"
    );
}

use mx6gate_common::allow::EDGE_TOPS;

fn edge_net() -> impl Strategy<Value = Ipv6Net> {
    (
        prop::sample::select(EDGE_TOPS.to_vec()),
        prop_oneof![
            1 => prop::sample::select(vec![0u8, 1, 2, 3, 4, 12]),
            30 => prop::sample::select(vec![
                20u8, 22, 27, 28, 29, 31, 32, 33, 47, 48, 48, 63, 64, 64, 65, 127, 128, 128,
            ]),
        ],
        any::<u128>(),
    )
        .prop_map(|(top, len, rnd)| {
            // Few distinct low parts, so prefixes nest and share /32s.
            let a = (u128::from(top) << 96) | ((rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff);
            Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()
        })
}

fn edge_source() -> impl Strategy<Value = [u8; 16]> {
    (
        prop::sample::select(EDGE_TOPS.to_vec()),
        any::<u128>(),
        any::<bool>(),
    )
        .prop_map(|(top, rnd, near)| {
            let low = if near {
                (rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff
            } else {
                rnd >> 32
            };
            ((u128::from(top) << 96) | low).to_be_bytes()
        })
}

/// The allowlist layout in the kernel, not just its plan: a series of
/// allowlists full of the layout's edge cases (cell and /32 boundaries,
/// /0–/31, several prefixes per /32, /128s, outside 2000::/3), each applied
/// with the product's sync — the incremental path against the previous
/// one, and every few steps the full read-back path — then SYNs from
/// sources around them run through the XDP program in drop mode and
/// compared with the reference's longest-prefix match, and the
/// controller's own replay of the lookup (`allowlist::lookup`, used by
/// `mx6gate check`) held to the same answer.
#[test]
fn allowlist_layout_matches_reference_across_updates() {
    let Some(h) = Harness::new() else { return };
    let state = mx6gate::state::StateDir::new(&h.cfg.state_dir);
    std::fs::create_dir_all(&h.cfg.state_dir).unwrap();
    let mut runner = TestRunner::new(PtConfig {
        cases: 60,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let h = std::cell::RefCell::new(h);
    let step = std::cell::Cell::new(0u32);
    let set = prop::collection::btree_map(edge_net(), 0u32..6, 0..20);
    let result = runner.run(
        &(set, prop::collection::vec(edge_source(), 64)),
        |(set, sources)| {
            let mut h = h.borrow_mut();
            let n = step.get();
            step.set(n + 1);
            if n % 5 == 4 {
                mx6gate::reconcile::apply_allow(&mut h.maps, &set)
            } else {
                mx6gate::reconcile::apply_allow_tracked(&mut h.maps, &state, &set)
            }
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            if n % 5 == 4 {
                // The full path left the snapshot stale: drop it.
                std::fs::remove_file(mx6gate::reconcile::snapshot_path(&state)).ok();
            }
            h.partners = set.iter().map(|(n, id)| (*n, *id)).collect();
            let probes = sources.into_iter().chain(
                set.keys()
                    .flat_map(|n| [n.network().octets(), n.broadcast().octets()]),
            );
            for src in probes {
                let pkt = tcp_frame(&[], src, &[], &Tcp::syn(25));
                h.check(&pkt, Mode::Drop, false)
                    .map_err(TestCaseError::fail)?;
                let replay = mx6gate::allowlist::lookup(&h.maps, Ipv6Addr::from(src))
                    .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
                prop_assert_eq!(replay, h.lookup(&src), "replay for {}", Ipv6Addr::from(src));
            }
            let held = mx6gate::allowlist::entries(&h.maps)
                .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            prop_assert_eq!(held, set);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// BPF_MAP_CREATE of a hash map, pinned at `path` (what an older build
/// would have left there).
fn pin_hash(path: &std::path::Path, key: u32, value: u32) {
    pin_hash_sized(path, key, value, 16)
}

fn pin_hash_sized(path: &std::path::Path, key: u32, value: u32, entries: u32) {
    use std::os::unix::ffi::OsStrExt;
    // union bpf_attr, map_create: map_type, key_size, value_size, max_entries, map_flags
    let mut attr = [0u32; 32];
    attr[0] = 1; // BPF_MAP_TYPE_HASH
    attr[1] = key;
    attr[2] = value;
    attr[3] = entries;
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128u32) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // obj: pathname (u64), bpf_fd
    let mut attr = [0u32; 32];
    let ptr = p.as_ptr() as u64;
    attr[0] = ptr as u32;
    attr[1] = (ptr >> 32) as u32;
    attr[2] = fd as u32;
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_mut_ptr(), 128u32) };
    assert!(rc == 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd as i32) };
}

/// A gate pinned by a build with an older allowlist layout (SLASH32 with
/// 24-byte values, no OCCUPIED) is refused with a message saying what to
/// do, and left as it was — never adopted and misread.
#[test]
fn gate_pinned_with_an_older_layout_is_refused() {
    let Some(h) = Harness::new() else { return };
    let maps = h.cfg.pin_path.join("maps");
    // Before the /32 table: an old SLASH32 hash instead, with the old
    // 24-byte value.
    std::fs::remove_file(maps.join("SLASH32_TABLE")).unwrap();
    pin_hash(&maps.join("SLASH32"), 4, 24);
    let e = match Gate::load(&h.cfg) {
        Ok(_) => panic!("a SLASH32 with 24-byte values was adopted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("incompatible") && e.contains("SLASH32") && e.contains("mx6gate detach"),
        "{e}"
    );
    assert!(maps.join("SLASH32").exists(), "the old pins must stay");
    assert!(
        !maps.join("SLASH32_TABLE").exists(),
        "nothing is created in a refused gate"
    );
    // No OCCUPIED at all (the build before it).
    std::fs::remove_file(maps.join("SLASH32")).unwrap();
    pin_hash(
        &maps.join("SLASH32"),
        4,
        std::mem::size_of::<mx6gate_common::allow::Slash32>() as u32,
    );
    std::fs::remove_file(maps.join("OCCUPIED")).unwrap();
    let e = match Gate::load(&h.cfg) {
        Ok(_) => panic!("a gate without OCCUPIED was adopted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("OCCUPIED") && e.contains("mx6gate detach"),
        "{e}"
    );
    assert!(
        !maps.join("OCCUPIED").exists() && !maps.join("SLASH32_TABLE").exists(),
        "nothing is created in an adopted gate"
    );
}

/// A gate pinned by the release before the /32 table (its /32 level a
/// SLASH32 hash of the same values) is adopted: the load copies the hash
/// into the new table before its programs run, and removes the old pin;
/// the partners pass through the new program at once, strangers do not.
#[test]
fn gate_pinned_before_the_slash32_table_is_upgraded_in_place() {
    let Some(mut h) = Harness::new() else { return };
    let maps = h.cfg.pin_path.join("maps");
    let held = mx6gate_tests::pinned::table_image(&h.cfg.pin_path);
    assert!(!held.is_empty(), "the harness's partners have /32 entries");
    // What the previous release pinned: the hash, no table.
    std::fs::remove_file(maps.join("SLASH32_TABLE")).unwrap();
    pin_hash_sized(
        &maps.join("SLASH32"),
        4,
        std::mem::size_of::<mx6gate_common::allow::Slash32>() as u32,
        held.len() as u32 + 16,
    );
    {
        let data = aya::maps::MapData::from_pin(maps.join("SLASH32")).unwrap();
        let mut old: aya::maps::HashMap<_, [u8; 4], mx6gate_common::allow::Slash32> =
            aya::maps::Map::from_map_data(data)
                .unwrap()
                .try_into()
                .unwrap();
        for (k, v) in &held {
            old.insert(k, v, 0).unwrap();
        }
    }
    // Until a daemon of this release loads over it, the CLI says what to do.
    let e = format!(
        "{:#}",
        GateMaps::open(&h.cfg.pin_path).err().expect("refused")
    );
    assert!(
        e.contains("pinned by an earlier mx6gate") && e.contains("restart the daemon"),
        "{e}"
    );
    let gate = Gate::load(&h.cfg).expect("the older gate is adopted");
    assert!(!maps.join("SLASH32").exists(), "the old hash's pin is gone");
    assert_eq!(mx6gate_tests::pinned::table_image(&h.cfg.pin_path), held);
    h.gate = gate;
    h.maps = GateMaps::open(&h.cfg.pin_path).unwrap();
    for (n, _) in h.partners.clone() {
        for src in [n.network().octets(), n.broadcast().octets()] {
            let pkt = tcp_frame(&[], src, &[], &Tcp::syn(25));
            h.check(&pkt, Mode::Drop, false).unwrap();
        }
    }
    let stranger = tcp_frame(
        &[],
        Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x25).octets(),
        &[],
        &Tcp::syn(25),
    );
    h.check(&stranger, Mode::Drop, false).unwrap();
}
