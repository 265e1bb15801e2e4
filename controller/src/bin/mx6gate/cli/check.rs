//! `mx6gate check ADDR`: prints the library's answer (`mx6gate::check`:
//! which partner and prefix match, and what the gate would do with an
//! SMTP connection from ADDR right now) as text, or with `--json` as one
//! object (schema `mx6gate.check/1`, see json.rs).
use std::path::Path;

use anyhow::Result;
use mx6gate::{
    check::{check, DeferAnswer, Outcome},
    explain::{self, Standing},
};
use mx6gate_common::explain::Repeat;

use super::{json, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An IPv6 (or IPv4) source address.
    pub addr: String,
    /// Print the answer as JSON (schema "mx6gate.check/1").
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: &Path, args: Args) -> Result<()> {
    let ctx = Ctx::load(config)?;
    let outcome = check(&ctx, &args.addr)?;
    if args.json {
        return json::print(json::CHECK, &outcome);
    }
    print!("{}", render(&outcome));
    Ok(())
}

/// The text `mx6gate check` prints.
pub fn render(o: &Outcome) -> String {
    if o.family == "ipv4" {
        if let Some(v4) = o
            .address
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .and_then(|a| a.to_ipv4_mapped())
        {
            return format!(
                "{}: the IPv4-mapped form of {v4}; IPv4 is never gated, connections pass to the MTA\n",
                o.address
            );
        }
        return format!(
            "{}: IPv4 is never gated; connections pass to the MTA\n",
            o.address
        );
    }
    let mut out = String::new();
    for r in &o.store_refused {
        out.push_str(&format!(
            "note: the partner store is refused ({r}); the gate enforces its last good allowlist\n"
        ));
    }
    out.push_str(&match &o.partner {
        Some(p) if p.active => match &p.spf {
            None => format!("{}: partner {} via {}\n", o.address, p.name, p.prefix),
            Some(m) => format!(
                "{}: partner {} via {} from spf:{} ({:?} in the SPF record of {}{})\n",
                o.address,
                p.name,
                p.prefix,
                m.domain,
                m.term,
                m.record,
                m.via
                    .as_deref()
                    .map(|v| format!(", AAAA of {v}"))
                    .unwrap_or_default()
            ),
        },
        Some(p) => format!(
            "{}: partner {} via {}, but it expired on {}: treated as a stranger\n",
            o.address,
            p.name,
            p.prefix,
            p.expires.as_deref().unwrap_or_default()
        ),
        None => format!("{}: not in any partner prefix\n", o.address),
    });
    let ports: Vec<String> = o.ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    let verdict = match o.verdict {
        _ if o.defer.is_some() => o.defer.as_ref().map(|d| defer_text(d, &ports)).unwrap_or_default(),
        "allowed" => format!("allowed: connections to port(s) {ports} reach the MTA in every mode"),
        "monitored" => "mode monitor: passes to the MTA, counted as \"monitored\" (would be turned away once enforcing)".to_string(),
        "deferred" => format!("mode defer: connections to port(s) {ports} get the responder's 4xx banner, the sender retries over IPv4"),
        "reset" => format!("mode reset: SYNs to port(s) {ports} are answered with a TCP RST (connection refused), the sender retries over IPv4"),
        _ => format!("mode drop: SYNs to port(s) {ports} are dropped; the sender waits for its TCP timeout, then retries over IPv4"),
    };
    out.push_str(&format!("  {verdict}\n"));
    match o.maps_agree {
        None => out.push_str("  (no gate loaded: nothing is enforced right now)\n"),
        Some(true) => {}
        Some(false) => out.push_str(&format!(
            "  WARNING: the loaded allowlist says {}, and that is what the gate does now; it is out of step with the store{}\n",
            if o.verdict == "allowed" {
                "not allowed"
            } else {
                "allowed"
            },
            if o.store_refused.is_empty() {
                " (`mx6gate sync` brings it in step)"
            } else {
                " (refused, see above)"
            }
        )),
    }
    out
}

/// Defer mode's verdict line: the banner, or the reset for a source
/// explained within the window.
fn defer_text(d: &DeferAnswer, ports: &str) -> String {
    let net = &d.net;
    let window = explain::human(d.window);
    let banner = format!("connections to port(s) {ports} get the responder's 4xx banner, the sender retries over IPv4");
    let then = match d.repeat {
        Repeat::Reset => format!(
            "further connections from it within {window} get a TCP RST (connection refused), which every sender falls back on"
        ),
        Repeat::Defer => {
            format!("further connections within {window} get the banner again (repeat = \"defer\")")
        }
    };
    match d.standing {
        Standing::Off => format!("mode defer: {banner}"),
        Standing::Unexplained { expired_ago } => {
            let before = match expired_ago {
                Some(d) => format!(
                    " (its last explanation's window ended {} ago)",
                    explain::ago(d)
                ),
                None => String::new(),
            };
            format!(
                "mode defer: {net} is not explained{before}: the next connection gets the banner and explains it; {then}"
            )
        }
        Standing::Explained {
            ago,
            left,
            sport,
            escalates,
        } => {
            let now = if escalates {
                "new connections get a TCP RST (connection refused) and the sender retries over IPv4 at once".to_string()
            } else {
                "new connections get the banner again (repeat = \"defer\")".to_string()
            };
            format!(
                "mode defer: {net} was explained {} ago (the banner went to its port {sport}); for the {} left of the window {now}",
                explain::ago(ago),
                explain::ago(left)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use mx6gate::check::PartnerMatch;

    use super::*;

    fn outcome(partner: Option<PartnerMatch>, verdict: &'static str) -> Outcome {
        Outcome {
            address: "2001:db8:1::25".into(),
            family: "ipv6",
            mode: Some("defer"),
            partner,
            verdict,
            explained: None,
            ports: vec![25],
            gate_loaded: true,
            maps_agree: Some(true),
            defer: None,
            store_refused: Vec::new(),
        }
    }

    #[test]
    fn text_names_a_refused_store_and_the_ipv4_mapped_form() {
        let mut o = outcome(None, "deferred");
        o.store_refused = vec!["/p/zz.toml: TOML parse error".into()];
        o.maps_agree = Some(false);
        let t = render(&o);
        assert!(
            t.starts_with("note: the partner store is refused (/p/zz.toml"),
            "{t}"
        );
        assert!(t.contains("(refused, see above)"), "{t}");
        // Not in the JSON shape (its consequence is maps_agree).
        let v = serde_json::to_value(&o).unwrap();
        assert!(v.get("store_refused").is_none(), "{v}");
        let o = Outcome {
            address: "::ffff:198.51.100.2".into(),
            family: "ipv4",
            ..outcome(None, "not_gated")
        };
        assert!(
            render(&o).contains("IPv4-mapped form of 198.51.100.2"),
            "{}",
            render(&o)
        );
    }

    /// The documented shape (README, "Machine-readable output"): a change
    /// here is a change of mx6gate.check/1.
    #[test]
    fn json_shape_v1() {
        let p = PartnerMatch {
            name: "example-isp".into(),
            prefix: "2001:db8:1::/48".into(),
            active: true,
            expires: None,
            spf: None,
        };
        let t = json::to_string(json::CHECK, &outcome(Some(p), "allowed")).unwrap();
        let mut keys = json::tests::keys(&t);
        keys.sort();
        assert_eq!(
            keys,
            [
                "address",
                "explained",
                "family",
                "gate_loaded",
                "maps_agree",
                "mode",
                "partner",
                "ports",
                "schema",
                "verdict"
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["schema"], "mx6gate.check/1");
        let mut pk: Vec<&String> = v["partner"].as_object().unwrap().keys().collect();
        pk.sort();
        assert_eq!(pk, ["active", "expires", "name", "prefix"]);
        // No partner: null, not a missing key.
        let t = json::to_string(json::CHECK, &outcome(None, "deferred")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert!(v["partner"].is_null() && v.get("partner").is_some());
    }

    #[test]
    fn text_as_before() {
        let mut o = outcome(None, "deferred");
        o.maps_agree = Some(false);
        assert_eq!(
            render(&o),
            "2001:db8:1::25: not in any partner prefix\n  mode defer: connections to port(s) 25 get the responder's 4xx banner, the sender retries over IPv4\n  WARNING: the loaded allowlist says allowed, and that is what the gate does now; it is out of step with the store (`mx6gate sync` brings it in step)\n"
        );
    }
}
