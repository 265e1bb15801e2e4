//! "Who is being turned away": the programs' rate-limited reports of
//! non-partner SYNs, and `mx6gate top` against the real daemon.
//!
//! - the kernel's token bucket, through BPF_PROG_TEST_RUN: a flood is
//!   reported up to its budget, the rest counted as suppressed, partners
//!   and XDP's monitor-mode passes never reported;
//! - end to end in a namespace lab: real TCP connects from several /48s
//!   and /64s plus a partner, `top --by 48|64 --json`, `--suggest` fed
//!   back through `partner add`, `--resolve` against a private hosts
//!   file, reports written while the daemon was down read by the next one.
use std::{
    net::{IpAddr, Ipv6Addr},
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    maps::{Map, MapData, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
};
use mx6gate::{
    config::Config,
    gate::{Gate, PinLayout},
    maps::GateMaps,
};
use mx6gate_common::{
    map_names,
    report::{Program, ReportAction, SynEvent, BURST, EVENT_COST_NS},
    Counter, GateConfig, Mode, XDP_PROGRAM,
};
use mx6gate_tests::{
    cmd, connect_from,
    gate::{mx6gate_bin, GateUnderTest},
    packets::*,
    require_root, Listener, Topology, PARTNER_NET, PARTNER_SRC, SENDER_V6,
};
use serde_json::Value;

/// A gate loaded through the product's own path under a private pin path.
struct Loaded {
    gate: Gate,
    maps: GateMaps,
    cfg: Config,
    _dir: tempfile::TempDir,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        mx6gate::gate::detach(&self.cfg.pin_path, &self.cfg.state_dir).ok();
    }
}

fn load() -> Loaded {
    mx6gate_tests::ensure_bpffs().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        pin_path: format!("/sys/fs/bpf/mx6t-{}-reports", std::process::id()).into(),
        state_dir: dir.path().join("state"),
        partners_dir: dir.path().join("partners.d"),
        ports: vec![25],
        ..Config::default()
    };
    let gate = Gate::load(&cfg).expect("the verifier accepts both programs");
    let maps = GateMaps::open(&cfg.pin_path).unwrap();
    Loaded {
        gate,
        maps,
        cfg,
        _dir: dir,
    }
}

impl Loaded {
    fn set_mode(&mut self, mode: Mode) {
        let flags = self.maps.read_config().unwrap().flags;
        let mut g = GateConfig::new(mode, &[25]);
        g.flags = flags;
        self.maps.write_config(&g).unwrap();
    }

    fn reports(&self) -> (u64, u64) {
        let c = self.maps.report_counters().unwrap();
        assert_eq!(c[0].0, Counter::ReportSent);
        assert_eq!(c[1].0, Counter::ReportSuppressed);
        (c[0].1, c[1].1)
    }

    /// Run the XDP program `repeat` times on `pkt`; its verdict.
    fn run(&self, pkt: &[u8], repeat: u32) -> u32 {
        self.run_timed(pkt, repeat).0
    }

    /// … and the kernel's mean time per run.
    fn run_timed(&self, pkt: &[u8], repeat: u32) -> (u32, Duration) {
        let prog: &Xdp = self
            .gate
            .ebpf
            .program(XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        // Counted exactly below: an EINTR midway must not happen.
        mx6gate_tests::signals::blocked(|| {
            prog.test_run(TestRunOptions {
                data_in: Some(pkt),
                repeat,
                ..Default::default()
            })
        })
        .map(|r| (r.return_value, r.duration))
        .expect("test_run")
    }
}

#[test]
fn kernel_rate_limit_reports_up_to_the_budget_and_counts_the_rest() {
    if !require_root() {
        return;
    }
    let mut l = load();
    let partners = partner_prefixes();
    mx6gate::reconcile::apply_allow(&mut l.maps, &partners.iter().copied().collect()).unwrap();
    // Outside every prefix of partner_prefixes().
    let stranger = v6("2001:db8:7::25");
    let syn = tcp_frame(&[], stranger, &[], &Tcp::syn(25));
    let partner_src = partners[0].0.network().octets();
    let partner_syn = tcp_frame(&[], partner_src, &[], &Tcp::syn(25));

    // Monitor mode: XDP passes non-partner SYNs on for sk_lookup to
    // report, so it reports nothing itself; partners never.
    l.set_mode(Mode::Monitor);
    assert_eq!(l.run(&syn, 50), 2, "XDP_PASS in monitor mode");
    l.set_mode(Mode::Drop);
    assert_eq!(l.run(&partner_syn, 50), 2, "partner passes");
    assert_eq!(l.reports(), (0, 0), "nothing reported yet");

    // A flood in drop mode: far more SYNs than the budget.
    const FLOOD: u32 = 20_000;
    let t = Instant::now();
    assert_eq!(l.run(&syn, FLOOD), 1, "XDP_DROP");
    let elapsed_ns = t.elapsed().as_nanos() as u64;
    let (sent, suppressed) = l.reports();
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    // The buckets start full; each CPU then earns one event per
    // EVENT_COST_NS, and the run lasted at most elapsed_ns.
    let ceiling = cpus * (BURST + elapsed_ns / EVENT_COST_NS + 1);
    eprintln!("{FLOOD} SYNs in {elapsed_ns} ns: {sent} reported, {suppressed} suppressed (ceiling {ceiling})");
    assert_eq!(
        sent + suppressed,
        u64::from(FLOOD),
        "every SYN is reported or counted"
    );
    assert!(sent >= BURST, "a fresh bucket lets a burst through: {sent}");
    assert!(sent <= ceiling, "reported {sent} > budget {ceiling}");
    assert!(suppressed > 0);
    // For the record (not asserted): a flooded SYN's cost with the report
    // suppressed, against the same SYN in monitor mode (XDP reports
    // nothing there).
    let (_, flooded) = l.run_timed(&syn, FLOOD);
    l.set_mode(Mode::Monitor);
    let (_, monitor) = l.run_timed(&syn, FLOOD);
    l.set_mode(Mode::Drop);
    eprintln!(
        "mean per run: drop + suppressed report {flooded:?}, monitor (no report) {monitor:?}"
    );
    let (sent, suppressed2) = l.reports();
    assert_eq!(
        sent + suppressed2,
        2 * u64::from(FLOOD),
        "monitor-mode runs report nothing"
    );

    // What was reported is in the pinned ring buffer, intact.
    let path = PinLayout::new(&l.cfg.pin_path).map(map_names::REPORTS);
    let mut ring =
        RingBuf::try_from(Map::from_map_data(MapData::from_pin(&path).unwrap()).unwrap()).unwrap();
    let mut read = 0u64;
    for _ in 0..1_000_000 {
        let Some(item) = ring.next() else { break };
        let e = SynEvent::from_bytes(&item).expect("a SynEvent");
        assert_eq!(Ipv6Addr::from(e.src), Ipv6Addr::from(stranger));
        assert_eq!((e.sport, e.dport), (41000, 25));
        assert_eq!(ReportAction::from_u8(e.action), Some(ReportAction::Drop));
        assert_eq!(Program::from_u8(e.program), Some(Program::Xdp));
        assert!(e.ktime_ns > 0);
        read += 1;
    }
    assert_eq!(read, sent, "one ring record per report sent");

    // The flood over, a quiet spell refills the bucket: reports resume.
    std::thread::sleep(Duration::from_millis(200));
    l.set_mode(Mode::Reset);
    l.run(&syn, 1);
    let (sent2, _) = l.reports();
    assert_eq!(sent2, sent + 1, "reports resume after the flood");
}

/// Sources on the sender side, each in the /48 and /64 the test expects.
const STRANGERS: [(&str, u32); 5] = [
    ("2001:db8:2::25", 3),
    ("2001:db8:2::26", 1),
    ("2001:db8:2:1::25", 1),
    ("2001:db8:3::25", 3),
    ("2001:db8:4:5::25", 1),
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn top_json(g: &GateUnderTest, args: &[&str]) -> Value {
    let mut a = vec!["top", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&g.ok(&a).unwrap()).unwrap()
}

fn rows(v: &Value) -> Vec<(String, u64)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Start the daemon and wait until `top` answers (it binds the control
/// socket just after logging "gate running").
fn start(g: &mut GateUnderTest) {
    g.start().unwrap();
    for _ in 0..250 {
        if g.cli(&["top"]).unwrap().status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("`mx6gate top` did not answer within 5 s:\n{}", g.log());
}

/// Poll `top --json ARGS` until `done` holds (bounded: 10 s).
fn wait_top(g: &GateUnderTest, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = top_json(g, args);
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn total(v: &Value) -> u64 {
    rows(v).iter().map(|(_, n)| n).sum()
}

/// Split a line the way a POSIX shell would for the words `top --suggest`
/// prints (plain words and single-quoted strings).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[test]
fn top_lists_non_partner_prefixes_from_real_connections() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    // Reset mode's XDP_TX frames reach the sender only with an XDP
    // program on its veth (see mx6gate_tests::xdp_pass).
    let _pass = mx6gate_tests::xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    for (src, _) in STRANGERS {
        if !src.starts_with("2001:db8:2::25") {
            mx6gate_tests::add_addr(&topo.sender, &topo.sender_if, &format!("{src}/128")).unwrap();
        }
    }
    for net in ["2001:db8:3::/48", "2001:db8:4::/48"] {
        mx6gate_tests::add_route(&topo.gw, net, &SENDER_V6.to_string()).unwrap();
    }
    let mta = Listener::start(&topo.gw, Topology::gw_v6(25)).unwrap();
    let mut g = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", "").unwrap();
    g.ok(&["partner", "add", "partner-one", PARTNER_NET])
        .unwrap();

    // No daemon yet: a clear error, not a hang or an empty list.
    let out = g.cli(&["top"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no mx6gate daemon is running"), "{err}");

    start(&mut g);
    let empty = top_json(&g, &[]);
    assert_eq!(rows(&empty), []);

    let connect = |src: &str| {
        connect_from(
            &topo.sender,
            ip(src),
            Topology::gw_v6(25),
            Duration::from_secs(5),
        )
        .expect_connected(src);
    };
    let mut expected = 0;
    for (src, n) in STRANGERS {
        for _ in 0..n {
            connect(src);
            expected += 1;
        }
    }
    for _ in 0..4 {
        connect(&PARTNER_SRC.to_string());
    }
    assert!(mta.wait_for_accepted(expected as usize + 4, Duration::from_secs(5)));

    // By /48: counts and order; the partner's /48 is absent.
    let by48 = wait_top(&g, &["--by", "48"], |v| total(v) >= expected);
    assert_eq!(
        rows(&by48),
        [
            ("2001:db8:2::/48".to_string(), 5),
            ("2001:db8:3::/48".to_string(), 3),
            ("2001:db8:4::/48".to_string(), 1)
        ],
        "{by48}\n{}\n{}",
        g.ok(&["status"]).unwrap(),
        topo.gw.run_stdout(&["ss", "-tan"]).unwrap()
    );
    let first = &by48["rows"][0];
    assert_eq!(first["actions"], serde_json::json!(["monitor"]));
    assert_eq!(first["programs"], serde_json::json!(["sk_lookup"]));
    assert_eq!(first["last_source"], "2001:db8:2:1::25");
    assert!(first["first_seen"].as_u64() <= first["last_seen"].as_u64());
    assert_eq!(by48["stats"]["events"], expected);
    assert_eq!(by48["stats"]["malformed"], 0);
    assert_eq!(by48["stats"]["reports_suppressed"], 0);

    // By /64: the /48 splits.
    let by64 = top_json(&g, &["--by", "64"]);
    let r64 = rows(&by64);
    assert_eq!(
        r64[..2],
        [
            ("2001:db8:2::/64".to_string(), 4),
            ("2001:db8:3::/64".to_string(), 3)
        ],
        "{by64}"
    );
    let mut tail: Vec<_> = r64[2..].to_vec();
    tail.sort();
    assert_eq!(
        tail,
        [
            ("2001:db8:2:1::/64".to_string(), 1),
            ("2001:db8:4:5::/64".to_string(), 1)
        ]
    );
    assert!(!r64.iter().any(|(p, _)| p.starts_with("2001:db8:1:")));

    // The table says the same, in the same order; --limit cuts it.
    let table = g.ok(&["top", "--by", "64", "--window", "1h"]).unwrap();
    eprintln!("{table}");
    let pos = |p: &str| {
        table
            .find(&format!("{p} "))
            .unwrap_or_else(|| panic!("{p} missing:\n{table}"))
    };
    assert!(pos("2001:db8:2::/64") < pos("2001:db8:3::/64"), "{table}");
    assert!(!table.contains("2001:db8:1::"), "{table}");
    assert_eq!(rows(&top_json(&g, &["--limit", "1"])).len(), 1);

    // Bad input names the bad item and changes nothing.
    for (args, needle) in [
        (&["top", "--by", "56"][..], "56"),
        (&["top", "--window", "3d"][..], "3d"),
        (&["top", "--limit", "0"][..], "--limit 0"),
    ] {
        let out = g.cli(args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }

    // --suggest: commented `partner add` lines for the prefixes over
    // --min-count; one fed back through the CLI is accepted.
    let out = g.ok(&["top", "--suggest", "--min-count", "3"]).unwrap();
    eprintln!("{out}");
    let cmds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("#mx6gate "))
        .collect();
    assert_eq!(cmds.len(), 2, "{out}");
    assert!(out
        .lines()
        .all(|l| l.is_empty() || l.starts_with('#') || !l.contains("partner add")));
    let words = shell_words(cmds[0]);
    assert_eq!(words[0], "--config");
    assert_eq!(words[2..4], ["partner", "add"], "{words:?}");
    assert_eq!(words[4], "net-2001-db8-2-48");
    assert_eq!(words[5], "2001:db8:2::/48");
    assert_eq!(words[6], "--note");
    assert!(words[7].contains("5 attempts in 10m"), "{words:?}");
    let run = cmd::output_with_timeout(
        {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", topo.gw.path().display()))
                .arg("--")
                .arg(mx6gate_bin())
                .args(&words);
            c
        },
        "suggested partner add",
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(run.status.success(), "{}", cmd::describe_output(&run));
    let list = g.ok(&["partner", "list"]).unwrap();
    assert!(
        list.contains("net-2001-db8-2-48") && list.contains("2001:db8:2::/48"),
        "{list}"
    );
    // Now a partner: marked in the list, no longer suggested, and let in.
    let v = top_json(&g, &["--suggest"]);
    assert_eq!(v["rows"][0]["now_partner"], "net-2001-db8-2-48", "{v}");
    let sugg: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(sugg, ["2001:db8:3::/48", "2001:db8:4::/48"]);
    assert!(g
        .ok(&["check", "2001:db8:2::25"])
        .unwrap()
        .contains("net-2001-db8-2-48"));

    // --resolve through the system resolver, kept inside the test: a
    // private hosts file and nsswitch in a private mount namespace.
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(
        etc.path().join("hosts"),
        "2001:db8:3::25 mx1.mail.stranger-three.example\n",
    )
    .unwrap();
    std::fs::write(etc.path().join("nsswitch.conf"), "hosts: files\n").unwrap();
    let out = cmd::output_with_timeout(
        {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(r#"mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf && shift && exec nsenter --net="$1" -- "$2" --config "$3" top --resolve --suggest --min-count 3"#)
                .arg("sh")
                .arg(etc.path())
                .arg(topo.gw.path())
                .arg(mx6gate_bin())
                .arg(&g.config);
            c
        },
        "mx6gate top --resolve",
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", cmd::describe_output(&out));
    eprintln!("{text}");
    assert!(text.contains("mx1.mail.stranger-three.example"), "{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("#mx6gate "))
        .unwrap_or_else(|| panic!("no suggestion:\n{text}"));
    let words = shell_words(line);
    assert_eq!(
        words[4..6],
        ["stranger-three.example", "2001:db8:3::/48"],
        "{text}"
    );
    assert!(
        words[7].contains("PTR mx1.mail.stranger-three.example"),
        "{words:?}"
    );

    // Enforcing, daemon down: XDP's reports wait in the pinned ring
    // buffer, and the next daemon reads them with their own times.
    g.ok(&["mode", "reset"]).unwrap();
    let sent_before = top_json(&g, &[])["stats"]["reports_sent"].as_u64().unwrap();
    g.stop().unwrap();
    let out = g.cli(&["top"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mx6gate daemon is running"));
    let before_restart = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for _ in 0..2 {
        let o = connect_from(
            &topo.sender,
            ip("2001:db8:4:5::25"),
            Topology::gw_v6(25),
            Duration::from_secs(5),
        );
        assert!(o.is_refused(), "reset mode refuses: {o}");
    }
    // Long enough that dating by the read would show.
    std::thread::sleep(Duration::from_millis(2100));
    start(&mut g);
    let v = wait_top(&g, &["--by", "64"], |v| total(v) >= 2);
    assert_eq!(rows(&v), [("2001:db8:4:5::/64".to_string(), 2)], "{v}");
    let r = &v["rows"][0];
    assert_eq!(r["actions"], serde_json::json!(["reset"]));
    assert_eq!(r["programs"], serde_json::json!(["xdp"]));
    assert!(
        r["last_seen"].as_u64().unwrap() <= before_restart + 1,
        "dated by the kernel, not by the read: {r}"
    );

    // Drop mode: the client retransmits its SYN; XDP reports every SYN,
    // the daemon counts one attempt and the rest as repeats.
    g.ok(&["mode", "drop"]).unwrap();
    let o = connect_from(
        &topo.sender,
        ip("2001:db8:3::25"),
        Topology::gw_v6(25),
        Duration::from_millis(2500),
    );
    assert!(o.is_timed_out(), "drop mode: {o}");
    let v = wait_top(&g, &["--by", "64"], |v| {
        v["stats"]["repeats"].as_u64() >= Some(1)
    });
    assert_eq!(
        rows(&v),
        [
            ("2001:db8:4:5::/64".to_string(), 2),
            ("2001:db8:3::/64".to_string(), 1)
        ],
        "{v}"
    );
    assert_eq!(v["rows"][1]["actions"], serde_json::json!(["drop"]));
    assert!(v["stats"]["repeats"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        v["stats"]["events"].as_u64().unwrap() + v["stats"]["repeats"].as_u64().unwrap(),
        v["stats"]["reports_sent"].as_u64().unwrap() - sent_before,
        "every report read is an attempt or a repeat: {v}"
    );

    // status shows the reporting counters.
    let status = g.ok(&["status"]).unwrap();
    assert!(
        status.contains("reports_sent") && status.contains("reports_suppressed"),
        "{status}"
    );
    drop(mta);
}
