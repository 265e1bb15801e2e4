//! `doctor --domain D`: where does D's mail go, and can a sender the gate
//! turns away over IPv6 still deliver over IPv4?
//!
//! Resolution (through the system resolver configuration, /etc/resolv.conf)
//! is kept apart from the assessment so the rules are unit-tested on their
//! own and the resolver against a real DNS server.
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_resolver::{
    proto::{op::ResponseCode, ProtoErrorKind},
    ResolveError, TokioResolver,
};
use mx6gate_common::Mode;

use super::{Finding, Severity};

/// What the gate does to a non-partner, as far as the MX set is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gating {
    pub mode: Mode,
    /// Defer mode resets repeats of explained sources (`[defer] repeat`).
    pub escalates: bool,
}

impl Gating {
    /// Whether non-partners are turned away (any mode but monitor).
    pub fn enforcing(&self) -> bool {
        self.mode != Mode::Monitor
    }
}

/// One MX host and what it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    pub name: String,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// Why its addresses could not be read, if they could not.
    pub error: Option<String>,
}

impl MxHost {
    fn families(&self) -> String {
        match (self.a.is_empty(), self.aaaa.is_empty()) {
            (false, false) => "A and AAAA".into(),
            (false, true) => "A only".into(),
            (true, false) => "AAAA only".into(),
            (true, true) => "no addresses".into(),
        }
    }
}

/// What DNS says about a mail domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxSet {
    /// NXDOMAIN.
    NoSuchDomain,
    /// A single MX "." (RFC 7505): the domain takes no mail.
    NullMx,
    /// MX records, by preference (lowest first).
    Explicit(Vec<MxHost>),
    /// No MX records: senders use the domain's own addresses (RFC 5321 §5.1).
    Implicit(MxHost),
    /// The lookup itself failed (timeout, SERVFAIL, no resolver).
    Unresolved(String),
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A NOERROR answer without records of the type asked for. hickory
/// reports SERVFAIL and REFUSED through the same error kind: those are a
/// failed lookup, never "the domain has no MX" (which would send the
/// check to the implicit MX and give advice about the wrong hosts).
fn no_records(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NoError,
            ..
        })
    )
}

async fn host(r: &TokioResolver, preference: u16, name: &str) -> MxHost {
    let mut h = MxHost {
        preference,
        name: name.trim_end_matches('.').to_string(),
        a: Vec::new(),
        aaaa: Vec::new(),
        error: None,
    };
    let (v4, v6) = tokio::join!(r.ipv4_lookup(fqdn(name)), r.ipv6_lookup(fqdn(name)));
    match v4 {
        Ok(l) => h.a = l.iter().map(|a| a.0).collect(),
        Err(e) if no_records(&e) => {}
        Err(e) => h.error = Some(e.to_string()),
    }
    match v6 {
        Ok(l) => h.aaaa = l.iter().map(|a| a.0).collect(),
        Err(e) if no_records(&e) => {}
        Err(e) => {
            h.error.get_or_insert(e.to_string());
        }
    }
    h.a.sort();
    h.aaaa.sort();
    h
}

/// Look `domain` up through the system resolver configuration.
pub async fn resolve(domain: &str) -> MxSet {
    let r = match TokioResolver::builder_tokio() {
        Ok(b) => b.build(),
        Err(e) => return MxSet::Unresolved(format!("reading the resolver configuration: {e}")),
    };
    match r.mx_lookup(fqdn(domain)).await {
        Ok(mx) => {
            let mut recs: Vec<(u16, String)> = mx
                .iter()
                .map(|m| (m.preference(), m.exchange().to_ascii()))
                .collect();
            recs.sort();
            if recs.len() == 1 && (recs[0].1 == "." || recs[0].1.is_empty()) {
                return MxSet::NullMx;
            }
            let mut hosts = Vec::new();
            for (pref, name) in recs {
                hosts.push(host(&r, pref, &name).await);
            }
            MxSet::Explicit(hosts)
        }
        Err(e) if e.is_nx_domain() => MxSet::NoSuchDomain,
        Err(e) if no_records(&e) => MxSet::Implicit(host(&r, 0, domain).await),
        Err(e) => MxSet::Unresolved(e.to_string()),
    }
}

/// The findings for `domain` under what the gate does now.
pub fn assess(domain: &str, set: &MxSet, gating: Gating) -> Vec<Finding> {
    let enforcing = gating.enforcing();
    let id = |what: &str| format!("mx:{domain}:{what}");
    let hosts: Vec<MxHost> = match set {
        MxSet::NoSuchDomain => {
            return vec![Finding::new(id("exists"), Severity::Fail, format!("{domain} does not exist in DNS (NXDOMAIN)"))
                .detail("Senders bounce mail for it at once; the gate is not the problem here.")
                .fix(format!("check the spelling of {domain}, or publish its zone"))]
        }
        MxSet::NullMx => {
            return vec![Finding::new(
                id("records"),
                Severity::Info,
                format!("{domain} publishes a null MX (RFC 7505): it receives no mail"),
            )
            .detail("Nothing to check: senders do not try to deliver to it.")]
        }
        MxSet::Unresolved(e) => {
            return vec![Finding::new(id("lookup"), Severity::Warn, format!("could not look up the MX records of {domain}: {e}"))
                .detail("The system resolver (/etc/resolv.conf) did not answer; nothing about this domain could be checked.")
                .fix("check /etc/resolv.conf and that its nameservers answer from this host, then run doctor again")]
        }
        MxSet::Implicit(h) => vec![h.clone()],
        MxSet::Explicit(h) => h.clone(),
    };
    let mut out = Vec::new();
    let listing: Vec<String> = hosts
        .iter()
        .map(|h| format!("{} {} ({})", h.preference, h.name, h.families()))
        .collect();
    out.push(match set {
        MxSet::Implicit(_) => Finding::new(
            id("records"),
            Severity::Info,
            format!("{domain} has no MX records; senders use its own addresses ({})", hosts[0].families()),
        )
        .detail("RFC 5321 §5.1: with no MX, the domain name itself is the mail host (an implicit MX of preference 0)."),
        _ => Finding::new(id("records"), Severity::Ok, format!("MX set: {}", listing.join(", "))),
    });

    for h in &hosts {
        if h.a.is_empty() && h.aaaa.is_empty() {
            let why = h.error.as_deref().unwrap_or("no A or AAAA records");
            out.push(
                Finding::new(
                    id(&format!("host:{}", h.name)),
                    Severity::Warn,
                    format!("MX host {} does not resolve: {why}", h.name),
                )
                .detail("Senders skip it and try the next MX; it takes no mail.")
                .fix(format!(
                    "publish A (and, later, AAAA) records for {} or remove the MX record",
                    h.name
                )),
            );
        }
    }

    let best = hosts.iter().map(|h| h.preference).min().unwrap_or(0);
    let primary: Vec<&MxHost> = hosts.iter().filter(|h| h.preference == best).collect();
    let names = |v: &[&MxHost]| {
        v.iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let with_a: Vec<&MxHost> = hosts.iter().filter(|h| !h.a.is_empty()).collect();
    if primary.iter().any(|h| !h.a.is_empty()) {
        out.push(Finding::new(
            id("primary-ipv4"),
            Severity::Ok,
            format!(
                "the most preferred MX ({}) has an IPv4 address",
                names(&primary)
            ),
        ));
    } else {
        out.push(
            Finding::new(
                id("primary-ipv4"),
                Severity::Fail,
                format!("the most preferred MX ({}) has no IPv4 address", names(&primary)),
            )
            .detail(
                "A sender the gate turns away over IPv6 retries over IPv4 — but this host has none, so it must fall \
                 back to a less preferred MX (if any has IPv4) or keep the mail queued until it bounces. IPv4-only \
                 senders cannot use this host at all.",
            )
            .fix(format!(
                "publish an A record for {} (the gateway's IPv4 address), or make an MX with IPv4 the most preferred",
                names(&primary)
            )),
        );
    }
    if with_a.is_empty() {
        out.push(
            Finding::new(id("any-ipv4"), Severity::Fail, "no MX host has an IPv4 address")
                .detail(
                    "Every sender the gate turns away over IPv6 has nowhere to retry: its mail waits in queues and \
                     bounces after days. Deferring IPv6 only works when the sender can fall back to IPv4.",
                )
                .fix("publish A records for the MX hosts before enforcing; until then keep `mx6gate mode monitor`"),
        );
    }

    let v6: Vec<&MxHost> = hosts.iter().filter(|h| !h.aaaa.is_empty()).collect();
    if v6.is_empty() {
        out.push(Finding::new(
            id("ipv6"),
            Severity::Ok,
            "no MX host advertises IPv6 (AAAA): senders reach it over IPv6 only by address",
        ));
    } else if !enforcing {
        out.push(
            Finding::new(id("ipv6"), Severity::Info, format!("MX hosts advertising IPv6: {}", names(&v6)))
                .detail(
                    "The gate is in monitor mode: nothing is turned away yet. `mx6gate top` lists who would be, \
                     before you enforce.",
                ),
        );
    } else {
        for h in v6 {
            let (sev, detail) = if h.a.is_empty() {
                (
                    Severity::Warn,
                    format!(
                        "{} is IPv6-only while the gate enforces: non-partner senders that reach it are turned away \
                         and must go on to another MX; IPv4-only senders never use it.",
                        h.name
                    ),
                )
            } else if h.preference == best {
                (
                    Severity::Info,
                    format!(
                        "Non-partner senders reaching {} over IPv6 are turned away and retry over its IPv4 address \
                         (Postfix and Exim in the same attempt); partners keep IPv6. While rolling out, advertise \
                         IPv6 first on a less preferred MX and keep this one IPv4-only.",
                        h.name
                    ),
                )
            } else {
                (
                    Severity::Info,
                    format!(
                        "Non-partner senders reaching {} over IPv6 are turned away and retry over IPv4 or the next \
                         MX; partners keep IPv6.",
                        h.name
                    ),
                )
            };
            let mut f = Finding::new(
                id(&format!("ipv6:{}", h.name)),
                sev,
                format!(
                    "{} (preference {}) advertises IPv6 while the gate enforces",
                    h.name, h.preference
                ),
            )
            .detail(detail);
            if sev == Severity::Warn {
                f = f.fix(format!(
                    "publish an A record for {} as well, or remove its AAAA until it has one",
                    h.name
                ));
            }
            out.push(f);
            if !h.a.is_empty() && gating.mode == Mode::Defer {
                out.push(one_name(domain, h, gating.escalates));
            }
        }
    }
    out
}

/// Defer mode and an MX host name carrying both the AAAA and the A
/// records: sendmail takes the 4xx banner as a failure of the whole host
/// name and does not try its IPv4 address (the sendmail case).
fn one_name(domain: &str, h: &MxHost, escalates: bool) -> Finding {
    let id = format!("mx:{domain}:one-name:{}", h.name);
    let summary = format!(
        "{} carries both the AAAA and the A records, and the gate defers",
        h.name
    );
    let sendmail = format!(
        "sendmail (and MTAs that behave like it) take the 4xx banner as a failure of the whole host name {}: they \
         keep the message queued without trying its IPv4 address, and try IPv6 again at the next queue run.",
        h.name
    );
    if escalates {
        Finding::new(id, Severity::Info, summary).detail(format!(
            "{sendmail} Escalation is on ([defer] repeat = \"reset\"): that next attempt gets a reset, on which \
             every sender goes to IPv4, so the mail is delayed by one queue interval, not lost. To spare even that, \
             publish IPv4 under a separate MX host name, or use `mx6gate mode reset`."
        ))
    } else {
        Finding::new(id, Severity::Warn, summary)
            .detail(format!(
                "{sendmail} With [defer] repeat = \"defer\" every attempt meets the banner again, so such a sender's \
                 mail stays queued until it bounces (5 days by default)."
            ))
            .fix(format!(
                "turn escalation on ([defer] repeat = \"reset\", the default: the first connection gets the banner, \
                 later ones a reset), or use `mx6gate mode reset`, or publish {}'s IPv4 address under a separate MX \
                 host name (an A-only host; sendmail goes on to the next MX host on a 4xx)",
                h.name
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pref: u16, name: &str, a: &[&str], aaaa: &[&str]) -> MxHost {
        MxHost {
            preference: pref,
            name: name.into(),
            a: a.iter().map(|s| s.parse().unwrap()).collect(),
            aaaa: aaaa.iter().map(|s| s.parse().unwrap()).collect(),
            error: None,
        }
    }

    const DEFER: Gating = Gating {
        mode: Mode::Defer,
        escalates: true,
    };
    const MONITOR: Gating = Gating {
        mode: Mode::Monitor,
        escalates: true,
    };

    fn sev(f: &[Finding], check: &str) -> Option<Severity> {
        f.iter().find(|x| x.check == check).map(|x| x.severity)
    }

    #[test]
    fn dual_stack_primary_is_fine() {
        let set = MxSet::Explicit(vec![
            h(10, "mx1.example.test", &["198.51.100.1"], &["2001:db8::1"]),
            h(20, "mx2.example.test", &["198.51.100.2"], &[]),
        ]);
        let f = assess("example.test", &set, DEFER);
        assert_eq!(sev(&f, "mx:example.test:primary-ipv4"), Some(Severity::Ok));
        assert_eq!(sev(&f, "mx:example.test:any-ipv4"), None);
        assert_eq!(
            sev(&f, "mx:example.test:ipv6:mx1.example.test"),
            Some(Severity::Info)
        );
        assert_eq!(super::super::exit_code(&f), 0);
    }

    #[test]
    fn one_name_with_both_families_warns_without_escalation() {
        let set = MxSet::Explicit(vec![
            h(10, "mx1.example.test", &["198.51.100.1"], &["2001:db8::1"]),
            h(20, "mx6.example.test", &[], &["2001:db8::6"]),
        ]);
        let id = "mx:example.test:one-name:mx1.example.test";
        let f = assess("example.test", &set, DEFER);
        assert_eq!(sev(&f, id), Some(Severity::Info));
        assert_eq!(sev(&f, "mx:example.test:one-name:mx6.example.test"), None);
        let f = assess(
            "example.test",
            &set,
            Gating {
                mode: Mode::Defer,
                escalates: false,
            },
        );
        assert_eq!(sev(&f, id), Some(Severity::Warn));
        let w = f.iter().find(|x| x.check == id).unwrap();
        assert!(w.detail.contains("sendmail"), "{w:?}");
        let fix = w.fix.as_deref().unwrap();
        for what in ["repeat = \"reset\"", "mode reset", "separate MX host name"] {
            assert!(fix.contains(what), "{fix}");
        }
        // Reset mode is understood by every sender: nothing to say.
        for mode in [Mode::Reset, Mode::Drop, Mode::Monitor] {
            let f = assess(
                "example.test",
                &set,
                Gating {
                    mode,
                    escalates: false,
                },
            );
            assert_eq!(sev(&f, id), None, "{mode:?}");
        }
    }

    #[test]
    fn ipv6_only_primary_fails() {
        let set = MxSet::Explicit(vec![
            h(10, "mx6.example.test", &[], &["2001:db8::6"]),
            h(20, "mx4.example.test", &["198.51.100.4"], &[]),
        ]);
        let f = assess("example.test", &set, DEFER);
        assert_eq!(
            sev(&f, "mx:example.test:primary-ipv4"),
            Some(Severity::Fail)
        );
        assert_eq!(sev(&f, "mx:example.test:any-ipv4"), None);
        assert_eq!(
            sev(&f, "mx:example.test:ipv6:mx6.example.test"),
            Some(Severity::Warn)
        );
    }

    #[test]
    fn no_ipv4_anywhere_fails_twice() {
        let set = MxSet::Explicit(vec![h(10, "mx6.example.test", &[], &["2001:db8::6"])]);
        let f = assess("example.test", &set, MONITOR);
        assert_eq!(
            sev(&f, "mx:example.test:primary-ipv4"),
            Some(Severity::Fail)
        );
        assert_eq!(sev(&f, "mx:example.test:any-ipv4"), Some(Severity::Fail));
        // Monitor mode: the AAAA is only noted.
        assert_eq!(sev(&f, "mx:example.test:ipv6"), Some(Severity::Info));
    }

    #[test]
    fn implicit_null_and_missing() {
        let f = assess(
            "a.test",
            &MxSet::Implicit(h(0, "a.test", &["198.51.100.9"], &[])),
            DEFER,
        );
        assert_eq!(sev(&f, "mx:a.test:records"), Some(Severity::Info));
        assert_eq!(sev(&f, "mx:a.test:primary-ipv4"), Some(Severity::Ok));
        assert_eq!(sev(&f, "mx:a.test:ipv6"), Some(Severity::Ok));
        let f = assess("n.test", &MxSet::NullMx, DEFER);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        let f = assess("x.test", &MxSet::NoSuchDomain, DEFER);
        assert_eq!(sev(&f, "mx:x.test:exists"), Some(Severity::Fail));
        let f = assess("y.test", &MxSet::Unresolved("timed out".into()), DEFER);
        assert_eq!(sev(&f, "mx:y.test:lookup"), Some(Severity::Warn));
    }

    #[test]
    fn unresolvable_host_warns() {
        let set = MxSet::Explicit(vec![
            h(10, "gone.example.test", &[], &[]),
            h(20, "mx.example.test", &["198.51.100.3"], &[]),
        ]);
        let f = assess("example.test", &set, DEFER);
        assert_eq!(
            sev(&f, "mx:example.test:host:gone.example.test"),
            Some(Severity::Warn)
        );
        assert_eq!(
            sev(&f, "mx:example.test:primary-ipv4"),
            Some(Severity::Fail)
        );
    }
}
