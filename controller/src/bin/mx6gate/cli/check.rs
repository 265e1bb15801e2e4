//! `mx6gate check ADDR`: which partner and prefix match, and what the gate
//! would do with an SMTP connection from ADDR right now. `--json` prints
//! the same as one object (schema `mx6gate.check/1`, see json.rs).
use std::{net::IpAddr, path::Path};

use anyhow::{bail, Result};
use mx6gate::{
    config::Config,
    explain::{self, Standing},
    maps::GateMaps,
    reconcile,
    store::{today_utc, Store},
};
use mx6gate_common::{xdp::decide, Mode};
use serde::Serialize;

use super::{json, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An IPv6 (or IPv4) source address.
    pub addr: String,
    /// Print the answer as JSON (schema "mx6gate.check/1").
    #[arg(long)]
    pub json: bool,
}

/// The answer, whichever way it is printed.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub address: String,
    /// "ipv6", or "ipv4" (never gated).
    pub family: &'static str,
    /// The mode in force (null for IPv4).
    pub mode: Option<&'static str>,
    /// The partner prefix that holds the address, if any (expired or not).
    pub partner: Option<PartnerMatch>,
    /// What the next connection from the address to a protected port
    /// meets: "allowed", "monitored", "deferred" (the responder's banner),
    /// "escalated" (defer mode, source explained within the window: a
    /// reset), "reset", "dropped", or "not_gated" (IPv4).
    pub verdict: &'static str,
    /// Defer mode, non-partner: the source's explanation within the
    /// window, or null (none, or another mode).
    pub explained: Option<Explanation>,
    pub ports: Vec<u16>,
    /// Whether a gate is loaded (otherwise nothing is enforced now).
    pub gate_loaded: bool,
    /// Whether the loaded allowlist agrees with the store on this address
    /// (null when no gate is loaded, or for IPv4).
    pub maps_agree: Option<bool>,
    /// The verdict line of the text output (defer mode says more).
    #[serde(skip)]
    pub verdict_text: Option<String>,
    /// Why the partner store is refused, per refused file (text output;
    /// the JSON shape shows the consequence in `maps_agree`).
    #[serde(skip)]
    pub store_refused: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The /64 (or /128, `explain_by`) the record is kept for.
    pub prefix: String,
    pub ago_seconds: u64,
    /// Left of the window.
    pub left_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct PartnerMatch {
    pub name: String,
    pub prefix: String,
    /// false once its expiry date has passed: treated as a stranger.
    pub active: bool,
    pub expires: Option<String>,
    /// When the prefix comes from a partner's SPF domain: which domain,
    /// and the record and term that list it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spf: Option<SpfMatch>,
}

#[derive(Debug, Serialize)]
pub struct SpfMatch {
    /// The domain the partner names (`--spf DOMAIN`).
    pub domain: String,
    /// The record the term is in (the domain itself or an include).
    pub record: String,
    pub term: String,
    /// For `a`/`mx`: the host whose AAAA record it is.
    pub via: Option<String>,
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

pub fn check(ctx: &Ctx, addr: &str) -> Result<Outcome> {
    let ip: IpAddr = match addr.parse() {
        Ok(ip) => ip,
        Err(_) => bail!("{addr:?} is not an IP address"),
    };
    let ports = ctx.cfg.ports.clone();
    // An IPv4-mapped address is how an IPv4 peer looks on a dual-stack
    // socket: IPv4 on the wire, never gated.
    let ip6 = match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => v6,
        _ => {
            return Ok(Outcome {
                address: ip.to_string(),
                family: "ipv4",
                mode: None,
                partner: None,
                verdict: "not_gated",
                explained: None,
                ports,
                gate_loaded: mx6gate::gate::PinLayout::new(&ctx.cfg.pin_path).is_loaded(),
                maps_agree: None,
                verdict_text: None,
                store_refused: Vec::new(),
            })
        }
    };
    let mode = reconcile::effective_mode(&ctx.cfg, &ctx.state)?;
    // A refused store still answers from what reads cleanly; the maps
    // (what the gate enforces) have the last word below.
    let (store, refused) = Store::load_lenient(&ctx.cfg.partners_dir);
    let store_refused: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
    let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
    let mut partner = store.lookup(ip6).map(|(p, net)| {
        (
            net.prefix_len(),
            PartnerMatch {
                name: p.name.clone(),
                prefix: net.to_string(),
                active: p.is_active(today_utc()),
                expires: p.expires.map(|d| d.to_string()),
                spf: None,
            },
        )
    });
    // The partners' enforced SPF sets too (what the policy allows); the
    // longest prefix wins, as in the kernel's trie.
    let spf_state = mx6gate::spf::SpfState::load(&ctx.state.path).unwrap_or_default();
    for p in store.partners.values() {
        for d in &p.spf {
            if let Some(sp) = mx6gate::spf::covering(spf_state.enforced(d), ip6) {
                if partner
                    .as_ref()
                    .is_none_or(|(len, _)| sp.prefix.prefix_len() > *len)
                {
                    partner = Some((
                        sp.prefix.prefix_len(),
                        PartnerMatch {
                            name: p.name.clone(),
                            prefix: sp.prefix.to_string(),
                            active: p.is_active(today_utc()),
                            expires: p.expires.map(|d| d.to_string()),
                            spf: Some(SpfMatch {
                                domain: d.clone(),
                                record: sp.domain.clone(),
                                term: sp.term.clone(),
                                via: sp.via.clone(),
                            }),
                        },
                    ));
                }
            }
        }
    }
    let partner = partner.map(|(_, m)| m);
    let allowed = partner.as_ref().is_some_and(|p| p.active);
    let (mut verdict_text, mut explained) = (None, None);
    let verdict = if allowed {
        "allowed"
    } else {
        let escalate = if mode == Mode::Defer {
            let d = defer_verdict(&ctx.cfg, maps.as_ref(), ip6, &ports)?;
            verdict_text = Some(d.text);
            explained = d.explained;
            d.escalates
        } else {
            false
        };
        // The XDP program's own mapping; its counter names are the verdicts.
        decide(mode, escalate).counter.as_str()
    };
    let maps_agree = match &maps {
        None => None,
        Some(m) => Some(mx6gate::allowlist::lookup(m, ip6)?.is_some() == allowed),
    };
    Ok(Outcome {
        address: ip6.to_string(),
        family: "ipv6",
        mode: Some(mode.as_str()),
        partner,
        verdict,
        explained,
        ports,
        gate_loaded: maps.is_some(),
        maps_agree,
        verdict_text,
        store_refused,
    })
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
        _ if o.verdict_text.is_some() => o.verdict_text.clone().unwrap_or_default(),
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

/// Defer mode for a non-partner: the banner, or the reset if its source
/// was explained within the window (what the loaded gate holds for it).
struct DeferVerdict {
    text: String,
    escalates: bool,
    explained: Option<Explanation>,
}

fn defer_verdict(
    cfg: &Config,
    maps: Option<&GateMaps>,
    ip6: std::net::Ipv6Addr,
    ports: &[u16],
) -> Result<DeferVerdict> {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    let settings = &cfg.defer;
    let window = explain::human(settings.explain_window);
    let banner = format!("connections to port(s) {ports} get the responder's 4xx banner, the sender retries over IPv4");
    let then = match settings.repeat {
        mx6gate_common::explain::Repeat::Reset => format!(
            "further connections from it within {window} get a TCP RST (connection refused), which every sender falls back on"
        ),
        mx6gate_common::explain::Repeat::Defer => {
            format!("further connections within {window} get the banner again (repeat = \"defer\")")
        }
    };
    let (x, rec) = match maps {
        Some(m) if m.explain.is_some() => {
            let x = m.read_defer()?;
            (x, m.explained(&x.key(&ip6.octets()))?)
        }
        // No gate (or one pinned before explain-then-reset, until the
        // daemon's next start): what the config will make of it.
        _ => {
            let x = settings.kernel();
            (x, None)
        }
    };
    let by = if x.explain_by == 128 { 128 } else { 64 };
    let net = ipnet::Ipv6Net::new(ip6, by)
        .map(|n| n.trunc().to_string())
        .unwrap_or_else(|_| ip6.to_string());
    let (mut escalated, mut explained) = (false, None);
    let text = match explain::standing(&x, rec.as_ref(), explain::monotonic_now_ns()) {
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
            escalated = escalates;
            explained = Some(Explanation {
                prefix: net.clone(),
                ago_seconds: ago.as_secs(),
                left_seconds: left.as_secs(),
            });
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
    };
    Ok(DeferVerdict {
        text,
        escalates: escalated,
        explained,
    })
}

#[cfg(test)]
mod tests {
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
            verdict_text: None,
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
