//! An MTA listener on each protected port, for IPv6 and IPv4.
use super::*;
/// Senders the gate turns away retry over IPv4, and partners come over
/// IPv6: each protected port needs a listener for both.
pub(super) fn listeners(ports: &[u16], out: &mut Vec<Finding>) {
    let read = |p: &str, v6| std::fs::read_to_string(p).map(|t| parse_proc_listeners(&t, v6));
    let (v4, v6) = match (read("/proc/net/tcp", false), read("/proc/net/tcp6", true)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            out.push(Finding::new(
                "listeners",
                Severity::Warn,
                format!("could not read /proc/net/tcp*: {e}"),
            ));
            return;
        }
    };
    for &port in ports {
        let check = format!("listen:{port}");
        let on4 = v4.iter().any(|l| l.port == port);
        let wild6 = v6
            .iter()
            .any(|l| l.port == port && l.addr == std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let on6 = v6.iter().any(|l| l.port == port);
        // A wildcard IPv6 socket takes IPv4 too unless it is v6-only, which
        // /proc does not show: try it.
        let dual = !on4
            && wild6
            && TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(1),
            )
            .is_ok();
        match (on4 || dual, on6) {
            (true, true) => out.push(Finding::new(
                &check,
                Severity::Ok,
                format!("port {port}: listening on IPv4 and IPv6"),
            )),
            (false, on6) => out.push(
                Finding::new(
                    &check,
                    Severity::Fail,
                    if on6 {
                        format!("port {port}: nothing listens on IPv4")
                    } else {
                        format!("port {port}: nothing listens, on IPv4 or IPv6")
                    },
                )
                    .detail(
                        "Senders the gate turns away over IPv6 retry over IPv4 — and would find nothing here. \
                         (This looks at the namespace doctor runs in: run it where the MTA runs.)",
                    )
                    .fix(format!(
                        "make the MTA listen on IPv4 port {port} (Postfix: inet_protocols = all; Exim: local_interfaces)"
                    )),
            ),
            (true, false) => out.push(
                Finding::new(&check, Severity::Warn, format!("port {port}: nothing listens on IPv6"))
                    .detail("Partners' IPv6 connections are refused by the kernel; they fall back to IPv4 themselves.")
                    .fix(format!("make the MTA listen on IPv6 port {port} too, or drop the AAAA records")),
            ),
        }
    }
}
