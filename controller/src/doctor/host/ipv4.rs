//! IPv4 on the protected interfaces: where turned-away senders go.
use super::*;
pub(super) fn ipv4(interfaces: &[String], enforcing: bool, out: &mut Vec<Finding>) {
    let addrs = match iface::ipv4_addresses() {
        Ok(a) => a,
        Err(e) => {
            out.push(Finding::new(
                "ipv4",
                Severity::Warn,
                format!("could not list addresses: {e:#}"),
            ));
            return;
        }
    };
    if interfaces.is_empty() {
        out.push(
            Finding::new("interfaces", Severity::Warn, "no interface is configured")
                .fix("set `interfaces = [\"eth0\"]` in the config (or `mx6gate run --iface eth0`)"),
        );
    }
    let missing = iface::without_ipv4(interfaces, &addrs);
    for name in interfaces {
        let check = format!("ipv4:{name}");
        if missing.contains(name) {
            out.push(
                Finding::new(
                    &check,
                    if enforcing { Severity::Fail } else { Severity::Warn },
                    format!("{name} has no IPv4 address a sender could reach"),
                )
                .detail(
                    "Deferring IPv6 only helps when the sender can retry over IPv4. With no IPv4 here, a \
                     non-partner's mail waits in its queue and bounces after days unless another MX takes it.",
                )
                .fix(format!(
                    "give {name} an IPv4 address (and publish it in the MX host's A record), or keep `mx6gate mode monitor`"
                )),
            );
            continue;
        }
        let v: Vec<Ipv4Addr> = addrs.get(name).cloned().unwrap_or_default();
        let public: Vec<String> = v
            .iter()
            .filter(|a| iface::reach(**a) == iface::Reach::Public)
            .map(ToString::to_string)
            .collect();
        if public.is_empty() {
            let list: Vec<String> = v.iter().map(ToString::to_string).collect();
            out.push(
                Finding::new(&check, Severity::Info, format!("{name}: private IPv4 only ({})", list.join(", ")))
                    .detail("Fine behind NAT or a load balancer that forwards port 25 from the public address in the MX's A record."),
            );
        } else {
            out.push(Finding::new(
                &check,
                Severity::Ok,
                format!("{name}: IPv4 {}", public.join(", ")),
            ));
        }
    }
}
