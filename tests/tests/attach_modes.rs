//! XDP attach modes and adoption: generic mode enforces like native and is
//! reported as such; a restart keeps the same bpf_links and swaps the
//! programs under them (BPF_LINK_UPDATE) rather than re-attaching.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use mx6gate_tests::{
    connect_from, gate::GateUnderTest, require_root, Listener, Topology, STRANGER_SRC,
};

fn line<'a>(status: &'a str, prefix: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{status}"))
}

#[test]
fn generic_mode_enforces_and_is_reported() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate =
        GateUnderTest::new(&topo.gw, &topo.gw_if, "drop", "xdp_mode = \"generic\"\n").unwrap();
    gate.start().unwrap();
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        line(&status, "interface:").contains("xdp generic"),
        "{status}"
    );
    let out = topo
        .gw
        .run_stdout(&["ip", "-d", "link", "show", "dev", &topo.gw_if])
        .unwrap();
    assert!(
        out.contains("xdpgeneric"),
        "the kernel reports generic XDP: {out}"
    );
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let r = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_millis(800),
    );
    assert!(r.is_timed_out(), "generic XDP drops too, got {}", r.kind());
}

#[test]
fn restart_swaps_programs_under_the_same_links() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", "").unwrap();
    gate.start().unwrap();
    let ids = |g: &GateUnderTest| {
        let s = g.ok(&["status"]).unwrap();
        let field = |l: &str, key: &str| -> u32 {
            let w: Vec<&str> = l
                .split_whitespace()
                .map(|x| x.trim_start_matches('('))
                .collect();
            let i = w.iter().position(|x| *x == key).unwrap();
            w[i + 1].trim_end_matches(')').parse().unwrap()
        };
        let xdp = line(&s, "interface:").to_string();
        let sk = line(&s, "sk_lookup:").to_string();
        (
            field(&xdp, "link"),
            field(&xdp, "prog"),
            field(&sk, "link"),
            field(&sk, "prog"),
        )
    };
    let (xl, xp, sl, sp) = ids(&gate);
    assert!(gate.log().contains("XDP attached"), "first start attaches");
    gate.stop().unwrap();
    gate.start().unwrap();
    let (xl2, xp2, sl2, sp2) = ids(&gate);
    assert_eq!(
        (xl2, sl2),
        (xl, sl),
        "the pinned links are adopted, not replaced:\n{}",
        gate.log()
    );
    assert_ne!(
        (xp2, sp2),
        (xp, sp),
        "the new controller's programs run under them"
    );
    assert!(
        gate.log().contains("adopted pinned XDP link"),
        "{}",
        gate.log()
    );
}
