//! What a connection from the sender must meet, asserted: it connects and
//! is greeted, it is dropped (no answer), it is refused fast (XDP's RST),
//! or what an enforcing mode does to a stranger; and that an established
//! connection still carries data. The time bounds are generous (a slow,
//! shared machine), and a drop is told from a timeout only by waiting.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::{connect_from, read_banner, tcp::command, ConnectOutcome, Topology, STRANGER_SRC};

/// How long a SYN that must be dropped is given to (not) connect.
pub const DROPPED: Duration = Duration::from_millis(1000);
/// Upper bound for a connection that must succeed.
pub const CONNECTS: Duration = Duration::from_secs(2);
/// A RST from XDP must arrive at least this fast.
pub const REFUSED_FAST: Duration = Duration::from_millis(500);
/// Reply timeout on an established connection.
pub const REPLY: Duration = Duration::from_secs(2);

pub fn connect(topo: &Topology, src: IpAddr, dst: SocketAddr, timeout: Duration) -> ConnectOutcome {
    connect_from(&topo.sender, src, dst, timeout)
}

/// `src` → `dst` connects and the server greets.
pub fn expect_connects(topo: &Topology, src: IpAddr, dst: SocketAddr, what: &str) {
    let s = connect(topo, src, dst, CONNECTS).expect_connected(what);
    let banner = read_banner(&s, REPLY).unwrap_or_else(|e| panic!("{what}: no banner: {e:#}"));
    assert!(banner.starts_with("220"), "{what}: banner {banner:?}");
}

/// `src` → `dst` gets no answer at all within [`DROPPED`].
pub fn expect_dropped(topo: &Topology, src: IpAddr, dst: SocketAddr, what: &str) {
    let o = connect(topo, src, dst, DROPPED);
    assert!(
        o.is_timed_out(),
        "{what}: expected the SYN to be dropped, got {o}"
    );
}

/// `src` → `dst` is refused (RST) within [`REFUSED_FAST`].
pub fn expect_refused_fast(topo: &Topology, src: IpAddr, dst: SocketAddr, what: &str) {
    let t = Instant::now();
    let o = connect(topo, src, dst, DROPPED);
    let took = t.elapsed();
    assert!(
        o.is_refused(),
        "{what}: expected connection refused, got {o}"
    );
    assert!(took < REFUSED_FAST, "{what}: refused only after {took:?}");
}

pub fn expect_enforced(topo: &Topology, mode: &str, what: &str) {
    match mode {
        "drop" => expect_dropped(topo, IpAddr::V6(STRANGER_SRC), Topology::gw_v6(25), what),
        "reset" => expect_refused_fast(topo, IpAddr::V6(STRANGER_SRC), Topology::gw_v6(25), what),
        m => panic!("not an enforcing mode: {m}"),
    }
}

/// An established connection to a [`crate::Listener`] still carries data both ways.
pub fn alive(s: &std::net::TcpStream, what: &str) {
    let r = command(s, "NOOP", REPLY)
        .unwrap_or_else(|e| panic!("{what}: established connection broken: {e:#}"));
    assert!(r.starts_with("502"), "{what}: reply {r:?}");
}
