//! What the gate would do with a connection from one address, right now:
//! `mx6gate check ADDR`'s answer as a value — which partner and prefix
//! hold it (by hand or from an SPF domain's enforced set), the verdict by
//! the XDP program's own mapping (`mx6gate_common::xdp::decide`), in
//! defer mode the source's explanation record, and whether the loaded
//! allowlist agrees with the store. The binary renders it as text or as
//! `mx6gate.check/1`.
use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use anyhow::{bail, Result};
use mx6gate_common::{explain::Repeat, xdp::decide, Mode};
use serde::Serialize;

use crate::{
    config::Config,
    context::Ctx,
    explain::{self, Standing},
    maps::GateMaps,
    reconcile,
    store::{today_utc, Store},
};

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
    /// Defer mode, non-partner: the source's standing in full (the text
    /// output says more than the JSON shape).
    #[serde(skip)]
    pub defer: Option<DeferAnswer>,
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

/// Defer mode for a non-partner: the banner, or the reset if its source
/// was explained within the window (what the loaded gate holds for it,
/// else what the config will make of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferAnswer {
    /// The source's record key: its /64 (or the address, explain_by 128).
    pub net: String,
    pub window: Duration,
    pub repeat: Repeat,
    pub standing: Standing,
}

impl DeferAnswer {
    /// Whether the next connection gets the reset rather than the banner.
    pub fn escalates(&self) -> bool {
        matches!(
            self.standing,
            Standing::Explained {
                escalates: true,
                ..
            }
        )
    }
}

/// `addr`'s answer: one clear error if it is not an IP address.
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
                gate_loaded: crate::gate::PinLayout::new(&ctx.cfg.pin_path).is_loaded(),
                maps_agree: None,
                defer: None,
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
    let spf_state = crate::spf::SpfState::load(&ctx.state.path).unwrap_or_default();
    for p in store.partners.values() {
        for d in &p.spf {
            if let Some(sp) = crate::spf::covering(spf_state.enforced(d), ip6) {
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
    let (mut defer, mut explained) = (None, None);
    let verdict = if allowed {
        "allowed"
    } else {
        let escalate = if mode == Mode::Defer {
            let d = defer_answer(&ctx.cfg, maps.as_ref(), ip6)?;
            explained = explanation(&d);
            let escalates = d.escalates();
            defer = Some(d);
            escalates
        } else {
            false
        };
        // The XDP program's own mapping; its counter names are the verdicts.
        decide(mode, escalate).counter.as_str()
    };
    let maps_agree = match &maps {
        None => None,
        Some(m) => Some(crate::allowlist::lookup(m, ip6)?.is_some() == allowed),
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
        defer,
        store_refused,
    })
}

fn defer_answer(cfg: &Config, maps: Option<&GateMaps>, ip6: Ipv6Addr) -> Result<DeferAnswer> {
    let settings = &cfg.defer;
    let (x, rec) = match maps {
        Some(m) if m.explain.is_some() => {
            let x = m.read_defer()?;
            (x, m.explained(&x.key(&ip6.octets()))?)
        }
        // No gate (or one pinned before explain-then-reset, until the
        // daemon's next start): what the config will make of it.
        _ => (settings.kernel(), None),
    };
    let by = if x.explain_by == 128 { 128 } else { 64 };
    let net = ipnet::Ipv6Net::new(ip6, by)
        .map(|n| n.trunc().to_string())
        .unwrap_or_else(|_| ip6.to_string());
    Ok(DeferAnswer {
        net,
        window: settings.explain_window,
        repeat: settings.repeat,
        standing: explain::standing(&x, rec.as_ref(), explain::monotonic_now_ns()),
    })
}

fn explanation(d: &DeferAnswer) -> Option<Explanation> {
    match d.standing {
        Standing::Explained { ago, left, .. } => Some(Explanation {
            prefix: d.net.clone(),
            ago_seconds: ago.as_secs(),
            left_seconds: left.as_secs(),
        }),
        _ => None,
    }
}
