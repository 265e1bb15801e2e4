//! The daemon's metrics endpoint read over real HTTP from inside a
//! namespace, parsed into `name{labels}` → value.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::Netns;

/// One HTTP request from inside `ns`: (status code, body).
pub fn http(ns: &Netns, addr: &str, request_line: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = format!("{request_line}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.take(16 << 20).read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    })
}

pub type Samples = BTreeMap<String, f64>;

/// GET /metrics, parsed: `name{labels}` → value.
pub fn scrape_at(ns: &Netns, addr: &str) -> Samples {
    let (status, body) =
        http(ns, addr, "GET /metrics HTTP/1.1").unwrap_or_else(|e| panic!("scraping {addr}: {e}"));
    assert_eq!(status, 200, "GET /metrics: {body}");
    parse(&body)
}

/// Prometheus text exposition → samples (strict: a bad or duplicate
/// line fails the test).
pub fn parse(body: &str) -> Samples {
    let mut m = Samples::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let v: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(m.insert(k.to_string(), v).is_none(), "duplicate {k}");
    }
    m
}
