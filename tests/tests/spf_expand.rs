//! The SPF engine (`mx6gate::spf`) against a real authoritative DNS server
//! (Knot, in a namespace) serving test zones under example.test, through
//! the project's resolver: the walk, its limits, the errors, TTLs, and the
//! refresh safety rules with a server that changes its records or stops
//! answering.
use std::{net::SocketAddr, time::Duration};

use chrono::Utc;
use mx6gate::spf::{
    decide, expand, Decision, Expansion, HickoryDns, HoldReason, Limits, Policy, SkipReason,
    SpfError, SpfState,
};
use mx6gate_tests::{
    authdns::{AuthDns, Zone, NEGATIVE_TTL},
    require_root, Netns,
};

/// Expand `domain` from inside `ns`, asking `server` (a fresh resolver,
/// so no cache carries over between calls).
fn expand_in(
    ns: &Netns,
    server: SocketAddr,
    domain: &str,
    limits: &Limits,
) -> Result<Expansion, SpfError> {
    let domain = domain.to_string();
    let limits = limits.clone();
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let dns = HickoryDns::with_nameservers(&[server], Duration::from_secs(2));
            expand(&dns, &domain, &limits).await
        })
    })
}

fn nets(e: &Expansion) -> Vec<String> {
    e.prefixes.iter().map(|p| p.prefix.to_string()).collect()
}

/// A record long enough to need several TXT strings and an answer larger
/// than UDP carries (hickory offers EDNS 1232 bytes): 70 ip6 terms, ~1.6 kB,
/// so the answer comes truncated and the resolver must ask again over TCP.
fn long_record() -> (String, Vec<String>) {
    let nets: Vec<String> = (0..70).map(|i| format!("2001:db8:9{i:02x}::/48")).collect();
    let record = format!(
        "v=spf1 {} -all",
        nets.iter()
            .map(|n| format!("ip6:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Zone-file strings are at most 255 bytes: split, to be joined again
    // by the reader (RFC 7208 §3.3).
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap()))
        .collect();
    (strings.join(" "), nets)
}

fn walk_zone() -> Zone {
    let (long, _) = long_record();
    let mut r = String::from(
        r#"
nested 3600 TXT "v=spf1 include:_spf.nested.example.test ip6:2001:db8:10::/48 ~all"
_spf.nested 600 TXT "v=spf1 include:_net.nested.example.test ip6:2001:db8:11::/48 ~all"
_net.nested 1200 TXT "v=spf1 ip6:2001:db8:12::/48 -ip6:2001:db8:14::/48 ip6:2001:db8:13::/56 ip4:198.51.100.0/24 -all"
nested 3600 TXT "google-site-verification=unrelated"

redirect TXT "v=spf1 ip6:2001:db8:20::/48 redirect=_spf.redirect.example.test"
_spf.redirect TXT "v=spf1 ip6:2001:db8:21::/48 -all"
redirectall TXT "v=spf1 ip6:2001:db8:22::/48 ?all redirect=_spf.redirect.example.test"

hosts TXT "v=spf1 a a:out.hosts.example.test//64 mx//56 -all"
hosts AAAA 2001:db8:30::1
hosts A 198.51.100.30
out.hosts AAAA 2001:db8:31::1
out.hosts AAAA 2001:db8:31:1::1
hosts MX 10 mx1.hosts.example.test.
hosts MX 20 mx2.hosts.example.test.
hosts MX 30 v4.hosts.example.test.
mx1.hosts AAAA 2001:db8:32::25
mx2.hosts AAAA 2001:db8:33::25
v4.hosts A 198.51.100.33

alias TXT "v=spf1 include:_spf.alias.example.test -all"
_spf.alias 120 CNAME _spf.nested.example.test.
"#,
    );
    r.push_str(&format!("long TXT {long}\n"));
    Zone::new("example.test", &r)
}

#[test]
fn walks_includes_redirects_and_hosts() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spfwalk").unwrap();
    let dns = AuthDns::start(&ns, &[walk_zone()]).unwrap();
    let at = dns.addr();
    let limits = Limits::default();

    // Nested includes: every level's + ip6 terms, with their origins; the
    // unrelated TXT record is passed over; ip4 and - terms add nothing.
    let e = expand_in(&ns, at, "nested.example.test", &limits).unwrap();
    assert_eq!(
        nets(&e),
        [
            "2001:db8:12::/48",
            "2001:db8:13::/56",
            "2001:db8:11::/48",
            "2001:db8:10::/48"
        ],
        "{e:#?}"
    );
    assert_eq!(e.prefixes[0].domain, "_net.nested.example.test");
    assert_eq!(e.prefixes[0].term, "ip6:2001:db8:12::/48");
    assert_eq!(e.prefixes[3].domain, "nested.example.test");
    assert_eq!(e.ipv4_terms, 1);
    assert_eq!(e.lookups, 2);
    assert_eq!(
        e.ttl,
        Duration::from_secs(600),
        "the smallest TTL on the way"
    );
    assert!(e.is_complete() && e.skipped.is_empty(), "{e:#?}");

    // redirect= is followed; ignored when the record has all.
    let e = expand_in(&ns, at, "redirect.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:20::/48", "2001:db8:21::/48"]);
    assert_eq!(e.prefixes[1].term, "ip6:2001:db8:21::/48");
    assert_eq!(e.prefixes[1].domain, "_spf.redirect.example.test");
    let e = expand_in(&ns, at, "redirectall.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:22::/48"]);
    assert_eq!(e.lookups, 0);

    // a and mx: AAAA records only, widened to their IPv6 CIDR lengths; an
    // IPv4-only MX host adds nothing.
    let e = expand_in(&ns, at, "hosts.example.test", &limits).unwrap();
    assert_eq!(
        nets(&e),
        [
            "2001:db8:30::1/128",
            "2001:db8:31::/64",
            "2001:db8:31:1::/64",
            "2001:db8:32::/56",
            "2001:db8:33::/56",
        ],
        "{e:#?}"
    );
    assert_eq!(e.prefixes[3].term, "mx//56");
    assert_eq!(e.prefixes[3].via.as_deref(), Some("mx1.hosts.example.test"));
    assert_eq!(e.prefixes[1].via.as_deref(), Some("out.hosts.example.test"));
    assert!(e.is_complete(), "{e:#?}");

    // An include through a CNAME: followed, and the CNAME's TTL counts.
    let e = expand_in(&ns, at, "alias.example.test", &limits).unwrap();
    assert!(nets(&e).contains(&"2001:db8:12::/48".to_string()), "{e:#?}");
    assert_eq!(e.ttl, Duration::from_secs(120));

    // A record of several strings, too long for a plain UDP answer.
    let e = expand_in(&ns, at, "long.example.test", &limits).unwrap();
    assert_eq!(nets(&e), long_record().1, "{e:#?}");
}

fn limits_zone() -> Zone {
    let mut r = String::from(
        r#"
loop TXT "v=spf1 include:a.loop.example.test ip6:2001:db8:40::/48 -all"
a.loop TXT "v=spf1 include:loop.example.test ip6:2001:db8:41::/48 -all"

void TXT "v=spf1 a:gone1.example.test include:gone2.example.test mx:gone3.example.test ip6:2001:db8:60::/48 -all"
twovoid TXT "v=spf1 a:gone1.example.test include:gone2.example.test ip6:2001:db8:61::/48 -all"

macros TXT "v=spf1 exists:%{i}._spf.macros.example.test ptr include:%{d}._spf.example.test ip6:2001:db8:70::/48 -all"
plusall TXT "v=spf1 ip6:2001:db8:71::/48 +all"

bigmx TXT "v=spf1 mx ip6:2001:db8:72::/48 -all"
"#,
    );
    let mut many = String::from("v=spf1");
    for i in 1..=11 {
        many.push_str(&format!(" include:i{i}.many.example.test"));
        r.push_str(&format!(
            "i{i}.many TXT \"v=spf1 ip6:2001:db8:5{i:x}::/48 -all\"\n"
        ));
    }
    r.push_str(&format!("many TXT \"{many} -all\"\n"));
    let ten = many.replace(" include:i11.many.example.test", "");
    r.push_str(&format!("ten TXT \"{ten} -all\"\n"));
    for i in 1..=11 {
        r.push_str(&format!(
            "bigmx MX {i} m{i}.bigmx.example.test.\nm{i}.bigmx AAAA 2001:db8:73::{i:x}\n"
        ));
    }
    Zone::new("example.test", &r)
}

#[test]
fn enforces_the_rfc_limits_and_reports_what_it_cannot_expand() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spflim").unwrap();
    let dns = AuthDns::start(&ns, &[limits_zone()]).unwrap();
    let at = dns.addr();
    let limits = Limits::default();

    // A loop is named; what the records hold is kept; it is a partial walk.
    let e = expand_in(&ns, at, "loop.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:41::/48", "2001:db8:40::/48"]);
    assert_eq!(
        e.problems,
        [SpfError::Loop {
            chain: vec![
                "loop.example.test".into(),
                "a.loop.example.test".into(),
                "loop.example.test".into()
            ]
        }]
    );

    // More than 10 DNS-querying terms: the 11th is named and not asked.
    let e = expand_in(&ns, at, "many.example.test", &limits).unwrap();
    assert_eq!(e.prefixes.len(), 10);
    assert_eq!(
        e.problems,
        [SpfError::TooManyLookups {
            limit: 10,
            domain: "many.example.test".into(),
            term: "include:i11.many.example.test".into()
        }]
    );
    let e = expand_in(&ns, at, "ten.example.test", &limits).unwrap();
    assert!(e.is_complete() && e.prefixes.len() == 10, "{e:#?}");

    // A third void lookup (NXDOMAIN for an a, an include and an mx) stops
    // the walk; two are allowed, and the include without a record is named.
    let e = expand_in(&ns, at, "void.example.test", &limits).unwrap();
    assert!(
        matches!(&e.problems[..], [SpfError::TooManyVoidLookups { term, .. }] if term == "mx:gone3.example.test"),
        "{e:#?}"
    );
    let e = expand_in(&ns, at, "twovoid.example.test", &limits).unwrap();
    assert!(e.is_complete(), "{e:#?}");
    assert_eq!(nets(&e), ["2001:db8:61::/48"]);
    assert_eq!(e.void_lookups, 2);
    assert_eq!(
        e.skipped[0].reason,
        SkipReason::NoRecord {
            target: "gone2.example.test".into()
        }
    );
    assert_eq!(
        e.ttl,
        Duration::from_secs(NEGATIVE_TTL.into()),
        "negative answers' TTL counts"
    );

    // exists, ptr and macros are reported by name, not guessed.
    let e = expand_in(&ns, at, "macros.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:70::/48"]);
    let skipped: Vec<String> = e.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped[0].contains("exists:%{i}._spf.macros.example.test"),
        "{skipped:?}"
    );
    assert!(skipped[1].contains("\"ptr\""), "{skipped:?}");
    assert!(skipped[2].contains("%{d}"), "{skipped:?}");
    assert!(e.is_complete());

    // +all is the whole address space, and refused as such.
    let e = expand_in(&ns, at, "plusall.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:71::/48", "::/0"]);
    match decide(None, Ok(e), &Policy::default()) {
        Decision::Apply {
            prefixes, refused, ..
        } => {
            assert_eq!(prefixes.len(), 1);
            assert_eq!(refused.len(), 1);
            assert!(refused[0].to_string().contains("::/0"), "{}", refused[0]);
        }
        other => panic!("{other:?}"),
    }

    // An mx naming 11 hosts is refused before any host is asked.
    let e = expand_in(&ns, at, "bigmx.example.test", &limits).unwrap();
    assert!(
        matches!(e.problems[..], [SpfError::TooManyMxHosts { count: 11, .. }]),
        "{e:#?}"
    );
}

#[test]
fn refuses_bad_records_with_a_clear_error() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spfbad").unwrap();
    let zone = Zone::new(
        "example.test",
        r#"
syntax TXT "v=spf1 ip6:2001:db8::/129 -all"
two TXT "v=spf1 -all"
two TXT "v=spf1 ip6:2001:db8:1::/48 -all"
norecord TXT "v=spf10 not this one"
norecord AAAA 2001:db8::1
nestedbad TXT "v=spf1 include:syntax.example.test ip6:2001:db8:2::/48 -all"
elsewhere TXT "v=spf1 include:other.test ip6:2001:db8:3::/48 -all"
"#,
    );
    let dns = AuthDns::start(&ns, &[zone]).unwrap();
    let at = dns.addr();
    let limits = Limits::default();
    let err = |d: &str| expand_in(&ns, at, d, &limits).unwrap_err();

    let e = err("syntax.example.test");
    assert!(matches!(e, SpfError::Syntax { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("syntax.example.test") && msg.contains("ip6:2001:db8::/129"),
        "{msg}"
    );

    assert!(matches!(
        err("two.example.test"),
        SpfError::MultipleRecords { count: 2, .. }
    ));
    assert_eq!(
        err("norecord.example.test"),
        SpfError::NoRecord {
            domain: "norecord.example.test".into()
        }
    );
    assert_eq!(
        err("missing.example.test"),
        SpfError::NoSuchDomain {
            domain: "missing.example.test".into()
        }
    );
    let e = err("not_a domain");
    assert!(
        matches!(e, SpfError::BadDomain { .. }) && e.to_string().contains("not_a domain"),
        "{e}"
    );

    // A server that refuses (other.test is outside its zone: REFUSED) says
    // nothing about the records — a failure, never "no SPF record".
    let e = err("other.test");
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("other.test TXT") && e.to_string().contains("Refused"),
        "{e}"
    );
    let e = expand_in(&ns, at, "elsewhere.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:3::/48"]);
    assert!(
        matches!(&e.problems[..], [SpfError::Dns { name, .. }] if name == "other.test"),
        "{e:#?}"
    );
    assert!(e.skipped.is_empty() && e.void_lookups == 0, "{e:#?}");

    // Below the top, a bad record loses its branch: partial, and named.
    let e = expand_in(&ns, at, "nestedbad.example.test", &limits).unwrap();
    assert_eq!(nets(&e), ["2001:db8:2::/48"]);
    assert!(
        matches!(&e.problems[..], [SpfError::Syntax { domain, .. }] if domain == "syntax.example.test"),
        "{e:#?}"
    );
}

fn ttl_zone(top_ttl: u32, include_ttl: u32) -> Zone {
    Zone::new(
        "example.test",
        &format!(
            "ttl {top_ttl} TXT \"v=spf1 include:_spf.ttl.example.test -all\"\n\
             _spf.ttl {include_ttl} TXT \"v=spf1 ip6:2001:db8:90::/48 -all\"\n"
        ),
    )
}

#[test]
fn ttl_changes_reach_the_refresh_schedule() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spfttl").unwrap();
    let mut dns = AuthDns::start(&ns, &[ttl_zone(3600, 900)]).unwrap();
    let at = dns.addr();
    let limits = Limits::default();
    let e = expand_in(&ns, at, "ttl.example.test", &limits).unwrap();
    assert_eq!(e.ttl, Duration::from_secs(900));
    let bounds = mx6gate::spf::Bounds::default();
    assert_eq!(
        mx6gate::spf::refresh::next_refresh(e.ttl, &bounds),
        Duration::from_secs(900)
    );

    dns.set_zone(&ttl_zone(120, 900)).unwrap();
    let e = expand_in(&ns, at, "ttl.example.test", &limits).unwrap();
    assert_eq!(e.ttl, Duration::from_secs(120));
    // Below the floor: the floor.
    assert_eq!(
        mx6gate::spf::refresh::next_refresh(e.ttl, &bounds),
        bounds.floor
    );

    dns.set_zone(&ttl_zone(86400, 7 * 86400)).unwrap();
    let e = expand_in(&ns, at, "ttl.example.test", &limits).unwrap();
    assert_eq!(e.ttl, Duration::from_secs(86400));
    assert_eq!(
        mx6gate::spf::refresh::next_refresh(e.ttl, &bounds),
        bounds.ceiling
    );
}

/// One refresh of `domain` as the daemon will run it: expand, decide
/// against the persisted last good set, record and save.
fn refresh(
    ns: &Netns,
    at: SocketAddr,
    state_dir: &std::path::Path,
    domain: &str,
    limits: &Limits,
) -> Decision {
    let mut state = SpfState::load(state_dir).unwrap();
    let result = expand_in(ns, at, domain, limits);
    let last = state
        .domain
        .get(domain)
        .and_then(|d| d.last_good.as_ref())
        .map(|g| g.prefixes.clone());
    let decision = decide(last.as_deref(), result, &Policy::default());
    if state.record(domain, &decision, Utc::now()) {
        state.save(state_dir).unwrap();
    }
    decision
}

fn enforced(state_dir: &std::path::Path, domain: &str) -> Vec<String> {
    SpfState::load(state_dir)
        .unwrap()
        .enforced(domain)
        .iter()
        .map(|p| p.prefix.to_string())
        .collect()
}

fn shrink_zone(spf: &str) -> Zone {
    Zone::new("example.test", &format!("shrink 60 TXT \"{spf}\"\n"))
}

const THREE: &str = "v=spf1 ip6:2001:db8:80::/48 ip6:2001:db8:81::/48 ip6:2001:db8:82::/48 -all";

#[test]
fn a_server_that_stops_answering_keeps_the_last_good_set() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spfstop").unwrap();
    let mut dns = AuthDns::start(&ns, &[shrink_zone(THREE)]).unwrap();
    let at = dns.addr();
    let state_dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        time_limit: Duration::from_secs(20),
        ..Limits::default()
    };
    let d = "shrink.example.test";
    assert!(matches!(
        refresh(&ns, at, state_dir.path(), d, &limits),
        Decision::Apply { .. }
    ));
    let before = std::fs::read(SpfState::path(state_dir.path())).unwrap();
    assert_eq!(enforced(state_dir.path(), d).len(), 3);

    dns.pause().unwrap();
    match refresh(&ns, at, state_dir.path(), d, &limits) {
        Decision::Keep { error } => assert!(error.is_transient(), "{error}"),
        other => panic!("a server that does not answer must change nothing: {other:?}"),
    }
    // Nothing was written; a restart (a fresh load) enforces the same.
    assert_eq!(
        std::fs::read(SpfState::path(state_dir.path())).unwrap(),
        before
    );
    assert_eq!(enforced(state_dir.path(), d).len(), 3);

    // The walk's own time limit bounds a hung server too.
    let short = Limits {
        time_limit: Duration::from_secs(1),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let e = expand_in(&ns, at, d, &short).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    dns.resume().unwrap();
    match refresh(&ns, at, state_dir.path(), d, &limits) {
        Decision::Apply { diff, .. } => assert!(diff.is_empty(), "{diff}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_record_that_shrinks_to_nothing_is_held_not_applied() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("spfshrink").unwrap();
    let mut dns = AuthDns::start(&ns, &[shrink_zone(THREE)]).unwrap();
    let at = dns.addr();
    let state_dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let d = "shrink.example.test";
    assert!(matches!(
        refresh(&ns, at, state_dir.path(), d, &limits),
        Decision::Apply { .. }
    ));

    // One prefix goes: applied, and the diff names it.
    dns.set_zone(&shrink_zone(
        "v=spf1 ip6:2001:db8:80::/48 ip6:2001:db8:81::/48 -all",
    ))
    .unwrap();
    match refresh(&ns, at, state_dir.path(), d, &limits) {
        Decision::Apply { diff, .. } => assert_eq!(diff.to_string(), "-2001:db8:82::/48"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        enforced(state_dir.path(), d),
        ["2001:db8:80::/48", "2001:db8:81::/48"]
    );

    // The record shrinks to nothing: held, the last good set stays.
    dns.set_zone(&shrink_zone("v=spf1 -all")).unwrap();
    match refresh(&ns, at, state_dir.path(), d, &limits) {
        Decision::Hold {
            reason, candidate, ..
        } => {
            assert_eq!(reason, HoldReason::Empty);
            assert!(candidate.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        enforced(state_dir.path(), d),
        ["2001:db8:80::/48", "2001:db8:81::/48"]
    );
    let state = SpfState::load(state_dir.path()).unwrap();
    assert!(
        state.domain[d].held.is_some(),
        "the candidate is kept for --accept"
    );

    // The record comes back: applied, the held candidate dropped.
    dns.set_zone(&shrink_zone(THREE)).unwrap();
    assert!(matches!(
        refresh(&ns, at, state_dir.path(), d, &limits),
        Decision::Apply { .. }
    ));
    let state = SpfState::load(state_dir.path()).unwrap();
    assert!(state.domain[d].held.is_none());
    assert_eq!(enforced(state_dir.path(), d).len(), 3);

    // It loses two of three: held; the operator accepts.
    dns.set_zone(&shrink_zone("v=spf1 ip6:2001:db8:80::/48 -all"))
        .unwrap();
    assert!(matches!(
        refresh(&ns, at, state_dir.path(), d, &limits),
        Decision::Hold {
            reason: HoldReason::Removes { removed: 2, of: 3 },
            ..
        }
    ));
    assert_eq!(enforced(state_dir.path(), d).len(), 3);
    let mut state = SpfState::load(state_dir.path()).unwrap();
    let change = state.accept(d, Utc::now()).unwrap();
    state.save(state_dir.path()).unwrap();
    assert_eq!(change.to_string(), "-2001:db8:81::/48 -2001:db8:82::/48");
    assert_eq!(enforced(state_dir.path(), d), ["2001:db8:80::/48"]);
}
