//! The expansion walk: a domain's SPF record → the IPv6 prefixes it vouches
//! for, each with its origin, and the smallest TTL seen on the way.
//!
//! It walks what a receiver evaluating an IPv6 client that matches nothing
//! would walk (RFC 7208 §4.6, §5): every directive up to `all`, then
//! `redirect=` unless the record has `all` (§6.1); `include:` and
//! `redirect=` recurse. Only `+` (pass) directives contribute: `ip6:`, the
//! AAAA records of `a` and of `mx`'s hosts widened to their IPv6 CIDR
//! length, and `+all` as `::/0` (refused later like any too-short prefix).
//! `ip4:` and IPv4 lookups are skipped: IPv4 is never gated.
//!
//! Limits are counted as a receiver counts them (§4.6.4): every `include`,
//! `a`, `mx`, `ptr`, `exists` and `redirect` is one of the 10 DNS-querying
//! terms, whatever its qualifier and even when the walk cannot expand it
//! (`ptr`, `exists`), so a record that would be a permerror for receivers
//! is never half-trusted here; lookups that find nothing are void (2
//! allowed); an `mx` may name at most 10 hosts. A time limit bounds the
//! whole walk.
//!
//! The result tells a failure from a partial walk:
//! - `Err(SpfError)`: nothing usable — the domain's own record could not
//!   be read (no record, NXDOMAIN, invalid, DNS did not answer);
//! - `Ok(Expansion)` with `problems`: the walk started but lost a branch
//!   (a DNS failure below the top, an invalid included record, a loop) or
//!   stopped at a limit; `prefixes` is what it found;
//! - `Ok(Expansion)` without `problems`: complete. `skipped` lists the
//!   terms that by their nature add no prefix (`exists`, `ptr`, macros, an
//!   include of a domain without SPF): senders they vouch for are simply
//!   not trusted, which costs them an IPv4 retry, never a message.
use std::{collections::HashSet, fmt, future::Future, pin::Pin, time::Duration};

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use tokio::time::{timeout_at, Instant};

use super::{
    dns::{Answer, DnsResult, SpfDns},
    domain::normalize_domain,
    error::SpfError,
    record::{is_spf1, DomainSpec, Mechanism, Qualifier, Record},
};

/// RFC 7208 §4.6.4's limits, and the time the whole walk may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// DNS-querying terms (`include`, `a`, `mx`, `ptr`, `exists`,
    /// `redirect`): 10.
    pub dns_terms: u32,
    /// Lookups that found nothing (NXDOMAIN or no records): 2.
    pub void_lookups: u32,
    /// MX hosts one `mx` may name: 10.
    pub mx_hosts: usize,
    /// RFC 7208 §4.6.4 asks for at least 20 seconds.
    pub time_limit: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            dns_terms: 10,
            void_lookups: 2,
            mx_hosts: 10,
            time_limit: Duration::from_secs(20),
        }
    }
}

/// One prefix and where it came from: the record (`domain`) and the term
/// in it, and for `a`/`mx` the host whose AAAA record it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfPrefix {
    pub prefix: Ipv6Net,
    pub domain: String,
    pub term: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl fmt::Display for SpfPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} in the SPF record of {}",
            self.prefix, self.term, self.domain
        )?;
        if let Some(via) = &self.via {
            write!(f, ", AAAA of {via}")?;
        }
        f.write_str(")")
    }
}

/// Why a `+` term added no prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `exists:` asks about each connecting address; it lists none.
    Exists,
    /// `ptr` matches by the client's reverse DNS; it lists no address.
    Ptr,
    /// The target holds macros (`%{i}`, `%{s}`, …) that only a connection
    /// gives values to; `letters` are the macro letters used.
    Macro { letters: String },
    /// The include or redirect target publishes no SPF record (a void
    /// lookup; receivers would see a permerror if it were the only one).
    NoRecord { target: String },
}

/// A term that added no prefix, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub domain: String,
    pub term: String,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in the SPF record of {}: ", self.term, self.domain)?;
        match &self.reason {
            SkipReason::Exists => {
                f.write_str("\"exists\" tests each connecting address and lists none")
            }
            SkipReason::Ptr => f.write_str("\"ptr\" matches by reverse DNS and lists no address"),
            SkipReason::Macro { letters } if letters.is_empty() => {
                f.write_str("the target holds %-escapes that no DNS name can")
            }
            SkipReason::Macro { letters } => write!(
                f,
                "the target holds macros ({}) that only a connection gives values to",
                letters
                    .chars()
                    .map(|l| format!("%{{{l}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            SkipReason::NoRecord { target } => write!(f, "{target} publishes no SPF record"),
        }
    }
}

/// What an expansion found. See the module doc for how `problems` and
/// `skipped` differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    pub domain: String,
    /// Distinct prefixes in walk order; a prefix found twice keeps its
    /// first origin.
    pub prefixes: Vec<SpfPrefix>,
    /// The smallest TTL of every answer the walk used, negative answers
    /// included: when the result may change next.
    pub ttl: Duration,
    pub lookups: u32,
    pub void_lookups: u32,
    /// `ip4:` terms passed over.
    pub ipv4_terms: u32,
    pub skipped: Vec<Skipped>,
    /// Empty when the walk is complete.
    pub problems: Vec<SpfError>,
}

impl Expansion {
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// The longest prefix that holds `addr`, with its origin (what `check
    /// ADDR` names; what `top --suggest` checks before proposing `--spf`).
    pub fn covering(&self, addr: std::net::Ipv6Addr) -> Option<&SpfPrefix> {
        covering(&self.prefixes, addr)
    }
}

/// The longest of `prefixes` that holds `addr`.
pub fn covering(prefixes: &[SpfPrefix], addr: std::net::Ipv6Addr) -> Option<&SpfPrefix> {
    prefixes
        .iter()
        .filter(|p| p.prefix.contains(&addr))
        .max_by_key(|p| p.prefix.prefix_len())
}

/// Expand `domain`'s SPF record over `dns` within `limits`.
pub async fn expand<D: SpfDns>(
    dns: &D,
    domain: &str,
    limits: &Limits,
) -> Result<Expansion, SpfError> {
    let domain = normalize_domain(domain).map_err(|reason| SpfError::BadDomain {
        domain: domain.to_string(),
        reason,
    })?;
    let mut walk = Walk {
        dns,
        limits,
        deadline: Instant::now() + limits.time_limit,
        lookups: 0,
        voids: 0,
        ipv4_terms: 0,
        ttl: None,
        prefixes: Vec::new(),
        seen: HashSet::new(),
        skipped: Vec::new(),
        problems: Vec::new(),
        stack: Vec::new(),
    };
    let record = match walk.fetch(&domain).await {
        Err(Stopped) => return Err(walk.problems.remove(0)),
        Ok(Fetched::Record(r)) => r,
        Ok(Fetched::Missing { nxdomain: true }) => return Err(SpfError::NoSuchDomain { domain }),
        Ok(Fetched::Missing { nxdomain: false }) => return Err(SpfError::NoRecord { domain }),
        Ok(Fetched::Failed(e)) => return Err(e),
    };
    let _ = walk.record(domain.clone(), record).await;
    Ok(Expansion {
        domain,
        prefixes: walk.prefixes,
        ttl: walk.ttl.unwrap_or(Duration::ZERO),
        lookups: walk.lookups,
        void_lookups: walk.voids,
        ipv4_terms: walk.ipv4_terms,
        skipped: walk.skipped,
        problems: walk.problems,
    })
}

/// The walk stopped (a limit or the time limit); the reason is in
/// `problems`.
#[derive(Debug)]
struct Stopped;

type Flow = Result<(), Stopped>;

enum Fetched {
    Record(Record),
    Missing { nxdomain: bool },
    Failed(SpfError),
}

struct Walk<'a, D> {
    dns: &'a D,
    limits: &'a Limits,
    deadline: Instant,
    lookups: u32,
    voids: u32,
    ipv4_terms: u32,
    ttl: Option<Duration>,
    prefixes: Vec<SpfPrefix>,
    seen: HashSet<Ipv6Net>,
    skipped: Vec<Skipped>,
    problems: Vec<SpfError>,
    /// The records being walked, outermost first (loop detection).
    stack: Vec<String>,
}

impl<'a, D: SpfDns> Walk<'a, D> {
    /// Run one DNS question within the time limit.
    async fn ask<T>(
        &mut self,
        q: impl Future<Output = DnsResult<T>>,
    ) -> Result<DnsResult<T>, Stopped> {
        match timeout_at(self.deadline, q).await {
            Ok(r) => {
                if let Ok(a) = &r {
                    let ttl = match a {
                        Answer::Found { ttl, .. } => Some(*ttl),
                        Answer::NoData { ttl } | Answer::NxDomain { ttl } => *ttl,
                    };
                    if let Some(t) = ttl {
                        self.ttl = Some(self.ttl.map_or(t, |m| m.min(t)));
                    }
                }
                Ok(r)
            }
            Err(_) => {
                self.problems.push(SpfError::TimeLimit {
                    limit: self.limits.time_limit,
                });
                Err(Stopped)
            }
        }
    }

    /// The SPF record of `name`.
    async fn fetch(&mut self, name: &str) -> Result<Fetched, Stopped> {
        let dns = self.dns;
        let records = match self.ask(dns.txt(name)).await? {
            Ok(Answer::Found { records, .. }) => records,
            Ok(Answer::NoData { .. }) => return Ok(Fetched::Missing { nxdomain: false }),
            Ok(Answer::NxDomain { .. }) => return Ok(Fetched::Missing { nxdomain: true }),
            Err(f) => {
                return Ok(Fetched::Failed(SpfError::Dns {
                    name: name.to_string(),
                    rtype: "TXT",
                    reason: f.0,
                }))
            }
        };
        let spf: Vec<&String> = records.iter().filter(|t| is_spf1(t)).collect();
        Ok(match spf.as_slice() {
            [] => Fetched::Missing { nxdomain: false },
            [one] => match one.parse::<Record>() {
                Ok(r) => Fetched::Record(r),
                Err(error) => Fetched::Failed(SpfError::Syntax {
                    domain: name.to_string(),
                    error,
                }),
            },
            many => Fetched::Failed(SpfError::MultipleRecords {
                domain: name.to_string(),
                count: many.len(),
            }),
        })
    }

    fn count_lookup(&mut self, domain: &str, term: &str) -> Flow {
        self.lookups += 1;
        if self.lookups > self.limits.dns_terms {
            self.problems.push(SpfError::TooManyLookups {
                limit: self.limits.dns_terms,
                domain: domain.to_string(),
                term: term.to_string(),
            });
            return Err(Stopped);
        }
        Ok(())
    }

    fn count_void(&mut self, domain: &str, term: &str) -> Flow {
        self.voids += 1;
        if self.voids > self.limits.void_lookups {
            self.problems.push(SpfError::TooManyVoidLookups {
                limit: self.limits.void_lookups,
                domain: domain.to_string(),
                term: term.to_string(),
            });
            return Err(Stopped);
        }
        Ok(())
    }

    fn add(&mut self, prefix: Ipv6Net, domain: &str, term: &str, via: Option<&str>) {
        if self.seen.insert(prefix) {
            self.prefixes.push(SpfPrefix {
                prefix,
                domain: domain.to_string(),
                term: term.to_string(),
                via: via.map(str::to_string),
            });
        }
    }

    fn skip(&mut self, domain: &str, term: &str, reason: SkipReason) {
        self.skipped.push(Skipped {
            domain: domain.to_string(),
            term: term.to_string(),
            reason,
        });
    }

    /// The name a term points at, or None (recorded) when it has macros or
    /// is not a name.
    fn target(&mut self, domain: &str, term: &str, spec: Option<&DomainSpec>) -> Option<String> {
        let Some(spec) = spec else {
            return Some(domain.to_string());
        };
        let Some(literal) = spec.literal() else {
            self.skip(
                domain,
                term,
                SkipReason::Macro {
                    letters: spec.macro_letters(),
                },
            );
            return None;
        };
        match normalize_domain(literal) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.problems.push(SpfError::BadTarget {
                    domain: domain.to_string(),
                    term: term.to_string(),
                    reason,
                });
                None
            }
        }
    }

    /// Walk the record of `domain` (already fetched).
    fn record<'w>(
        &'w mut self,
        domain: String,
        record: Record,
    ) -> Pin<Box<dyn Future<Output = Flow> + Send + 'w>>
    where
        'a: 'w,
    {
        Box::pin(async move {
            self.stack.push(domain.clone());
            let flow = self.terms(&domain, &record).await;
            self.stack.pop();
            flow
        })
    }

    async fn terms(&mut self, domain: &str, record: &Record) -> Flow {
        for d in record.evaluated() {
            let term = d.text.as_str();
            let pass = d.qualifier == Qualifier::Pass;
            if d.mechanism.queries_dns() {
                self.count_lookup(domain, term)?;
            }
            if !pass {
                // Not followed; a receiver's lookup is counted above.
                continue;
            }
            match &d.mechanism {
                Mechanism::All => self.add(Ipv6Net::default(), domain, term, None),
                Mechanism::Ip4(_) => self.ipv4_terms += 1,
                Mechanism::Ip6(net) => self.add(*net, domain, term, None),
                Mechanism::Ptr(_) => self.skip(domain, term, SkipReason::Ptr),
                Mechanism::Exists(_) => self.skip(domain, term, SkipReason::Exists),
                Mechanism::Include(spec) => self.descend(domain, term, spec).await?,
                Mechanism::A {
                    domain: spec,
                    cidr6,
                } => {
                    if let Some(host) = self.target(domain, term, spec.as_ref()) {
                        if !self.host(domain, term, &host, *cidr6).await? {
                            self.count_void(domain, term)?;
                        }
                    }
                }
                Mechanism::Mx {
                    domain: spec,
                    cidr6,
                } => {
                    if let Some(name) = self.target(domain, term, spec.as_ref()) {
                        self.mx(domain, term, &name, *cidr6).await?;
                    }
                }
            }
        }
        if let Some((spec, term)) = record.effective_redirect() {
            self.count_lookup(domain, term)?;
            self.descend(domain, term, spec).await?;
        }
        Ok(())
    }

    /// `include:` or `redirect=`: walk the target's record.
    async fn descend(&mut self, domain: &str, term: &str, spec: &DomainSpec) -> Flow {
        let Some(target) = self.target(domain, term, Some(spec)) else {
            return Ok(());
        };
        if self.stack.contains(&target) {
            let mut chain = self.stack.clone();
            chain.push(target);
            self.problems.push(SpfError::Loop { chain });
            return Ok(());
        }
        match self.fetch(&target).await? {
            Fetched::Record(r) => self.record(target, r).await,
            Fetched::Missing { .. } => {
                self.skip(domain, term, SkipReason::NoRecord { target });
                self.count_void(domain, term)
            }
            Fetched::Failed(e) => {
                self.problems.push(e);
                Ok(())
            }
        }
    }

    /// The AAAA records of `host` as `/cidr6` prefixes. Returns whether the
    /// lookup found records (false: void).
    async fn host(
        &mut self,
        domain: &str,
        term: &str,
        host: &str,
        cidr6: u8,
    ) -> Result<bool, Stopped> {
        let dns = self.dns;
        match self.ask(dns.aaaa(host)).await? {
            Ok(Answer::Found { records, .. }) => {
                for addr in records {
                    let net = Ipv6Net::new(addr, cidr6)
                        .expect("parser bounds cidr6")
                        .trunc();
                    self.add(net, domain, term, Some(host));
                }
                Ok(true)
            }
            Ok(Answer::NoData { .. } | Answer::NxDomain { .. }) => Ok(false),
            Err(f) => {
                self.problems.push(SpfError::Dns {
                    name: host.to_string(),
                    rtype: "AAAA",
                    reason: f.0,
                });
                Ok(true)
            }
        }
    }

    async fn mx(&mut self, domain: &str, term: &str, name: &str, cidr6: u8) -> Flow {
        let dns = self.dns;
        let hosts = match self.ask(dns.mx(name)).await? {
            Ok(Answer::Found { records, .. }) => records,
            Ok(Answer::NoData { .. } | Answer::NxDomain { .. }) => {
                return self.count_void(domain, term);
            }
            Err(f) => {
                self.problems.push(SpfError::Dns {
                    name: name.to_string(),
                    rtype: "MX",
                    reason: f.0,
                });
                return Ok(());
            }
        };
        if hosts.len() > self.limits.mx_hosts {
            self.problems.push(SpfError::TooManyMxHosts {
                limit: self.limits.mx_hosts,
                count: hosts.len(),
                domain: domain.to_string(),
                term: term.to_string(),
            });
            return Err(Stopped);
        }
        // A null MX ("." , RFC 7505) names no host.
        for host in hosts.iter().filter(|h| !h.is_empty()) {
            // An MX host without AAAA is common (IPv4-only) and not void:
            // the void limit counts the mechanism's own lookup.
            self.host(domain, term, host, cidr6).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{HashMap, HashSet},
        net::Ipv6Addr,
    };

    use super::*;
    use crate::spf::dns::DnsFailure;

    /// An in-memory zone: names with TXT, AAAA and MX records, names that
    /// fail (SERVFAIL-like), names that answer only after a delay.
    #[derive(Default)]
    struct Zone {
        txt: HashMap<String, Vec<String>>,
        aaaa: HashMap<String, Vec<Ipv6Addr>>,
        mx: HashMap<String, Vec<String>>,
        /// By the address's text form.
        ptr: HashMap<String, Vec<String>>,
        ttl: HashMap<String, u64>,
        failing: HashSet<String>,
        slow: HashMap<String, Duration>,
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl Zone {
        fn txt(mut self, name: &str, txt: &str) -> Zone {
            self.txt.entry(name.into()).or_default().push(txt.into());
            self
        }
        fn aaaa(mut self, name: &str, addrs: &[&str]) -> Zone {
            self.aaaa.insert(
                name.into(),
                addrs.iter().map(|a| a.parse().unwrap()).collect(),
            );
            self
        }
        fn ptr(mut self, addr: &str, name: &str) -> Zone {
            self.ptr.entry(addr.into()).or_default().push(name.into());
            self
        }
        fn mx(mut self, name: &str, hosts: &[&str]) -> Zone {
            self.mx
                .insert(name.into(), hosts.iter().map(|h| h.to_string()).collect());
            self
        }
        fn ttl(mut self, name: &str, ttl: u64) -> Zone {
            self.ttl.insert(name.into(), ttl);
            self
        }
        fn failing(mut self, name: &str) -> Zone {
            self.failing.insert(name.into());
            self
        }
        fn slow(mut self, name: &str, d: Duration) -> Zone {
            self.slow.insert(name.into(), d);
            self
        }
        fn exists(&self, name: &str) -> bool {
            self.txt.contains_key(name)
                || self.aaaa.contains_key(name)
                || self.mx.contains_key(name)
        }
        async fn answer<T: Clone>(
            &self,
            name: &str,
            rtype: &str,
            map: &HashMap<String, Vec<T>>,
        ) -> DnsResult<T> {
            self.asked.lock().unwrap().push(format!("{name} {rtype}"));
            if let Some(d) = self.slow.get(name) {
                tokio::time::sleep(*d).await;
            }
            if self.failing.contains(name) {
                return Err(DnsFailure("the server answered SERVFAIL".into()));
            }
            let ttl = Duration::from_secs(*self.ttl.get(name).unwrap_or(&3600));
            match map.get(name) {
                Some(r) => Ok(Answer::Found {
                    records: r.clone(),
                    ttl,
                }),
                None if self.exists(name) => Ok(Answer::NoData { ttl: Some(ttl) }),
                None => Ok(Answer::NxDomain { ttl: Some(ttl) }),
            }
        }
    }

    impl SpfDns for Zone {
        async fn txt(&self, name: &str) -> DnsResult<String> {
            self.answer(name, "TXT", &self.txt).await
        }
        async fn aaaa(&self, name: &str) -> DnsResult<Ipv6Addr> {
            self.answer(name, "AAAA", &self.aaaa).await
        }
        async fn mx(&self, name: &str) -> DnsResult<String> {
            self.answer(name, "MX", &self.mx).await
        }
        async fn ptr(&self, addr: Ipv6Addr) -> DnsResult<String> {
            self.answer(&addr.to_string(), "PTR", &self.ptr).await
        }
    }

    async fn run(zone: &Zone, domain: &str) -> Result<Expansion, SpfError> {
        expand(zone, domain, &Limits::default()).await
    }

    fn nets(e: &Expansion) -> Vec<String> {
        e.prefixes.iter().map(|p| p.prefix.to_string()).collect()
    }

    #[tokio::test]
    async fn top_suggest_finds_the_ptr_parent_whose_spf_covers_the_source() {
        let z = Zone::default()
            .ptr("2001:db8:1::25", "mail-1.out.example.test")
            .ptr("2001:db8:2::25", "mail-2.out.example.test")
            .txt("out.example.test", "v=spf1 ip6:2001:db8:9::/48 -all")
            .txt("example.test", "v=spf1 include:_spf.example.test -all")
            .txt("_spf.example.test", "v=spf1 ip6:2001:db8:1::/48 -all");
        let limit = Duration::from_secs(5);
        let c = crate::spf::suggest::spf_covering(&z, "2001:db8:1::25".parse().unwrap(), limit)
            .await
            .unwrap();
        assert_eq!(c.domain, "example.test");
        assert_eq!(c.ptr, "mail-1.out.example.test");
        assert_eq!(c.prefix.domain, "_spf.example.test");
        // Its PTR parents publish SPF, but none covers it: nothing.
        assert!(
            crate::spf::suggest::spf_covering(&z, "2001:db8:2::25".parse().unwrap(), limit)
                .await
                .is_none()
        );
        // No PTR at all: nothing.
        assert!(
            crate::spf::suggest::spf_covering(&z, "2001:db8:3::25".parse().unwrap(), limit)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn only_pass_ip6_terms_count() {
        let z = Zone::default().txt(
            "example.test",
            "v=spf1 ip6:2001:db8:1::/48 -ip6:2001:db8:2::/48 ~ip6:2001:db8:3::/48 ?ip6:2001:db8:4::/48 +ip6:2001:db8:5::/48 ip4:198.51.100.0/24 -all",
        );
        let e = run(&z, "Example.Test.").await.unwrap();
        assert_eq!(e.domain, "example.test");
        assert_eq!(nets(&e), ["2001:db8:1::/48", "2001:db8:5::/48"]);
        assert_eq!(e.prefixes[1].term, "+ip6:2001:db8:5::/48");
        assert_eq!(e.prefixes[1].domain, "example.test");
        assert_eq!(e.ipv4_terms, 1);
        assert_eq!(e.lookups, 0);
        assert!(e.is_complete() && e.skipped.is_empty());
    }

    #[tokio::test]
    async fn nested_includes_keep_their_origin_and_the_smallest_ttl() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 include:_spf.example.test ip6:2001:db8:1::/48 ~all",
            )
            .ttl("example.test", 3600)
            .txt(
                "_spf.example.test",
                "v=spf1 include:_net.example.test ip6:2001:db8:2::/48 ~all",
            )
            .ttl("_spf.example.test", 600)
            .txt(
                "_net.example.test",
                "v=spf1 ip6:2001:db8:3::/48 ip6:2001:db8:1::/48 -all",
            )
            .ttl("_net.example.test", 1200);
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(
            nets(&e),
            ["2001:db8:3::/48", "2001:db8:1::/48", "2001:db8:2::/48"]
        );
        // Found twice: the first origin stays.
        assert_eq!(e.prefixes[1].domain, "_net.example.test");
        assert_eq!(e.ttl, Duration::from_secs(600));
        let hit = e.covering("2001:db8:2::25".parse().unwrap()).unwrap();
        assert_eq!(
            (hit.domain.as_str(), hit.term.as_str()),
            ("_spf.example.test", "ip6:2001:db8:2::/48")
        );
        assert_eq!(e.covering("2001:db8:9::1".parse().unwrap()), None);
        assert_eq!(e.lookups, 2);
        assert!(e.is_complete());
    }

    #[tokio::test]
    async fn redirect_is_followed_unless_all_is_present() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 ip6:2001:db8:1::/48 redirect=_spf.example.test",
            )
            .txt("_spf.example.test", "v=spf1 ip6:2001:db8:2::/48 -all")
            .txt(
                "withall.example.test",
                "v=spf1 ip6:2001:db8:3::/48 ?all redirect=_spf.example.test",
            );
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(nets(&e), ["2001:db8:1::/48", "2001:db8:2::/48"]);
        assert_eq!(e.prefixes[1].domain, "_spf.example.test");
        assert_eq!(e.lookups, 1);
        let e = run(&z, "withall.example.test").await.unwrap();
        assert_eq!(nets(&e), ["2001:db8:3::/48"]);
        assert_eq!(e.lookups, 0);
        let asked = z.asked.lock().unwrap();
        assert_eq!(
            asked
                .iter()
                .filter(|q| *q == "_spf.example.test TXT")
                .count(),
            1,
            "the second domain's redirect is never followed: {asked:?}"
        );
    }

    #[tokio::test]
    async fn terms_after_all_are_never_reached() {
        let z = Zone::default().txt(
            "example.test",
            "v=spf1 ip6:2001:db8:1::/48 -all ip6:2001:db8:2::/48 include:never.example.test",
        );
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(nets(&e), ["2001:db8:1::/48"]);
        assert_eq!(e.lookups, 0);
    }

    #[tokio::test]
    async fn a_and_mx_resolve_to_aaaa_with_their_cidr() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 a a:out.example.test//64 mx//56 mx:other.example.test -all",
            )
            .aaaa("example.test", &["2001:db8:a::1"])
            .aaaa("out.example.test", &["2001:db8:b::1", "2001:db8:b:1::1"])
            .mx(
                "example.test",
                &[
                    "mx1.example.test",
                    "mx2.example.test",
                    "v4only.example.test",
                ],
            )
            .aaaa("mx1.example.test", &["2001:db8:c::25"])
            .aaaa("mx2.example.test", &["2001:db8:d::25"])
            .txt("v4only.example.test", "not an address")
            .mx("other.example.test", &["mx1.example.test"]);
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(
            nets(&e),
            [
                "2001:db8:a::1/128",
                "2001:db8:b::/64",
                "2001:db8:b:1::/64",
                "2001:db8:c::/56",
                "2001:db8:d::/56",
                "2001:db8:c::25/128",
            ]
        );
        assert_eq!(e.prefixes[1].via.as_deref(), Some("out.example.test"));
        assert_eq!(e.prefixes[3].via.as_deref(), Some("mx1.example.test"));
        assert_eq!(e.prefixes[3].term, "mx//56");
        assert_eq!(e.lookups, 4);
        // An MX host without AAAA is not a void lookup.
        assert_eq!(e.void_lookups, 0);
        assert!(e.is_complete());
    }

    #[test]
    fn covering_prefers_the_longest_prefix() {
        let p = |net: &str, term: &str| SpfPrefix {
            prefix: net.parse().unwrap(),
            domain: "example.test".into(),
            term: term.into(),
            via: None,
        };
        let v = [
            p("2001:db8::/32", "wide"),
            p("2001:db8:1::/48", "narrow"),
            p("2001:db9::/32", "other"),
        ];
        assert_eq!(
            covering(&v, "2001:db8:1::1".parse().unwrap()).unwrap().term,
            "narrow"
        );
        assert_eq!(
            covering(&v, "2001:db8:2::1".parse().unwrap()).unwrap().term,
            "wide"
        );
        assert!(covering(&v, "2001:dba::1".parse().unwrap()).is_none());
    }

    #[tokio::test]
    async fn null_mx_names_no_host() {
        let z = Zone::default()
            .txt("example.test", "v=spf1 mx -all")
            .mx("example.test", &[""]);
        let e = run(&z, "example.test").await.unwrap();
        assert!(e.prefixes.is_empty() && e.is_complete());
    }

    #[tokio::test]
    async fn what_cannot_be_expanded_is_reported_by_name() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 exists:%{i}._spf.example.test ptr include:%{d2}.example.test a:%{h}.example.test -exists:x.example.test ip6:2001:db8::/32 -all",
            );
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(nets(&e), ["2001:db8::/32"]);
        let skipped: Vec<(String, SkipReason)> = e
            .skipped
            .iter()
            .map(|s| (s.term.clone(), s.reason.clone()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("exists:%{i}._spf.example.test".into(), SkipReason::Exists),
                ("ptr".into(), SkipReason::Ptr),
                (
                    "include:%{d2}.example.test".into(),
                    SkipReason::Macro {
                        letters: "d".into()
                    }
                ),
                (
                    "a:%{h}.example.test".into(),
                    SkipReason::Macro {
                        letters: "h".into()
                    }
                ),
            ]
        );
        // Each counts as a receiver counts it, expanded or not.
        assert_eq!(e.lookups, 5);
        assert!(e.is_complete(), "skips are not problems");
        let text = e.skipped[2].to_string();
        assert!(
            text.contains("include:%{d2}.example.test") && text.contains("%{d}"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_loop_is_named_and_the_rest_kept() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 include:a.example.test ip6:2001:db8:1::/48 -all",
            )
            .txt(
                "a.example.test",
                "v=spf1 include:b.example.test ip6:2001:db8:2::/48 -all",
            )
            .txt(
                "b.example.test",
                "v=spf1 include:example.test ip6:2001:db8:3::/48 -all",
            );
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(
            nets(&e),
            ["2001:db8:3::/48", "2001:db8:2::/48", "2001:db8:1::/48"]
        );
        assert_eq!(
            e.problems,
            [SpfError::Loop {
                chain: vec![
                    "example.test".into(),
                    "a.example.test".into(),
                    "b.example.test".into(),
                    "example.test".into()
                ]
            }]
        );
        assert!(e.problems[0]
            .to_string()
            .contains("example.test → a.example.test"));
    }

    #[tokio::test]
    async fn the_eleventh_lookup_stops_the_walk() {
        let mut z = Zone::default();
        let mut top = String::from("v=spf1");
        for i in 0..11 {
            top.push_str(&format!(" include:i{i}.example.test"));
            z = z.txt(
                &format!("i{i}.example.test"),
                &format!("v=spf1 ip6:2001:db8:{i:x}::/48 -all"),
            );
        }
        z = z.txt("example.test", &format!("{top} -all"));
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(e.prefixes.len(), 10);
        assert_eq!(
            e.problems,
            [SpfError::TooManyLookups {
                limit: 10,
                domain: "example.test".into(),
                term: "include:i10.example.test".into()
            }]
        );
        assert!(!z
            .asked
            .lock()
            .unwrap()
            .contains(&"i10.example.test TXT".to_string()));
        // Exactly 10 is fine.
        let z = z.txt(
            "ten.example.test",
            &top.replace(" include:i10.example.test", ""),
        );
        let e = run(&z, "ten.example.test").await.unwrap();
        assert!(e.is_complete() && e.lookups == 10, "{:?}", e.problems);
    }

    #[tokio::test]
    async fn nested_lookups_count_too() {
        let z = Zone::default()
            .txt("example.test", "v=spf1 include:n.example.test a a a a a -all")
            .aaaa("example.test", &["2001:db8::1"])
            .txt("n.example.test", "v=spf1 a:example.test a:example.test a:example.test a:example.test a:example.test -all");
        let e = run(&z, "example.test").await.unwrap();
        assert!(
            matches!(e.problems[..], [SpfError::TooManyLookups { .. }]),
            "{:?}",
            e.problems
        );
        assert_eq!(e.lookups, 11);
    }

    #[tokio::test]
    async fn the_third_void_lookup_stops_the_walk() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 a:gone1.example.test include:gone2.example.test mx:gone3.example.test ip6:2001:db8::/32 -all",
            );
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(e.void_lookups, 3);
        assert_eq!(
            e.problems,
            [SpfError::TooManyVoidLookups {
                limit: 2,
                domain: "example.test".into(),
                term: "mx:gone3.example.test".into()
            }]
        );
        assert!(e.prefixes.is_empty(), "stopped before the ip6 term");
        // Two are allowed; the include without a record is reported.
        let z = Zone::default().txt(
            "example.test",
            "v=spf1 a:gone1.example.test include:gone2.example.test ip6:2001:db8::/32 -all",
        );
        let e = run(&z, "example.test").await.unwrap();
        assert!(e.is_complete());
        assert_eq!(nets(&e), ["2001:db8::/32"]);
        assert_eq!(
            e.skipped[0].reason,
            SkipReason::NoRecord {
                target: "gone2.example.test".into()
            }
        );
    }

    #[tokio::test]
    async fn an_mx_with_more_than_ten_hosts_is_refused() {
        let hosts: Vec<String> = (0..11).map(|i| format!("mx{i}.example.test")).collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut z = Zone::default()
            .txt("example.test", "v=spf1 mx ip6:2001:db8::/32 -all")
            .mx("example.test", &refs);
        for h in &hosts {
            z = z.aaaa(h, &["2001:db8::25"]);
        }
        let e = run(&z, "example.test").await.unwrap();
        assert!(matches!(
            e.problems[..],
            [SpfError::TooManyMxHosts {
                count: 11,
                limit: 10,
                ..
            }]
        ));
        assert!(e.prefixes.is_empty());
        assert!(!z.asked.lock().unwrap().iter().any(|q| q.ends_with("AAAA")));
    }

    #[tokio::test]
    async fn the_top_record_must_be_readable() {
        let z = Zone::default()
            .txt("norecord.example.test", "google-site-verification=x")
            .aaaa("nodata.example.test", &["2001:db8::1"])
            .txt("two.example.test", "v=spf1 -all")
            .txt("two.example.test", "v=spf1 ip6:2001:db8::/32 -all")
            .txt("bad.example.test", "v=spf1 ip6:2001:db8::/200 -all")
            .failing("down.example.test");
        let err = |d| {
            let z = &z;
            async move { run(z, d).await.unwrap_err() }
        };
        assert_eq!(
            err("norecord.example.test").await,
            SpfError::NoRecord {
                domain: "norecord.example.test".into()
            }
        );
        assert_eq!(
            err("nodata.example.test").await,
            SpfError::NoRecord {
                domain: "nodata.example.test".into()
            }
        );
        assert_eq!(
            err("missing.example.test").await,
            SpfError::NoSuchDomain {
                domain: "missing.example.test".into()
            }
        );
        assert!(matches!(
            err("two.example.test").await,
            SpfError::MultipleRecords { count: 2, .. }
        ));
        let e = err("bad.example.test").await;
        assert!(
            e.to_string().contains("bad.example.test")
                && e.to_string().contains("ip6:2001:db8::/200"),
            "{e}"
        );
        let e = err("down.example.test").await;
        assert!(
            e.is_transient() && e.to_string().contains("down.example.test TXT"),
            "{e}"
        );
        let e = err("not a domain").await;
        assert!(
            matches!(e, SpfError::BadDomain { .. }) && e.to_string().contains("not a domain"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failure_below_the_top_makes_a_partial_result() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 include:down.example.test include:bad.example.test a:host.example.test ip6:2001:db8:1::/48 -all",
            )
            .failing("down.example.test")
            .txt("bad.example.test", "v=spf1 ip6:nonsense -all")
            .failing("host.example.test");
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(nets(&e), ["2001:db8:1::/48"], "the rest is still walked");
        assert!(!e.is_complete());
        let msgs: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("down.example.test TXT"), "{msgs:?}");
        assert!(
            msgs[1].contains("bad.example.test") && msgs[1].contains("ip6:nonsense"),
            "{msgs:?}"
        );
        assert!(msgs[2].contains("host.example.test AAAA"), "{msgs:?}");
    }

    #[tokio::test]
    async fn plus_all_is_the_whole_address_space() {
        let z = Zone::default().txt("example.test", "v=spf1 +all");
        let e = run(&z, "example.test").await.unwrap();
        assert_eq!(nets(&e), ["::/0"]);
        assert_eq!(e.prefixes[0].term, "+all");
    }

    #[tokio::test]
    async fn the_time_limit_bounds_the_walk() {
        let z = Zone::default()
            .txt(
                "example.test",
                "v=spf1 ip6:2001:db8:1::/48 include:slow.example.test ip6:2001:db8:2::/48 -all",
            )
            .txt("slow.example.test", "v=spf1 ip6:2001:db8:3::/48 -all")
            .slow("slow.example.test", Duration::from_secs(30));
        let limits = Limits {
            time_limit: Duration::from_millis(200),
            ..Limits::default()
        };
        let started = std::time::Instant::now();
        let e = expand(&z, "example.test", &limits).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(nets(&e), ["2001:db8:1::/48"]);
        assert_eq!(
            e.problems,
            [SpfError::TimeLimit {
                limit: limits.time_limit
            }]
        );
        // Before the top record: an error.
        let z = Zone::default()
            .txt("example.test", "v=spf1 -all")
            .slow("example.test", Duration::from_secs(30));
        let e = expand(&z, "example.test", &limits).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
