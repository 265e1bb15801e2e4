//! The three DNS questions the SPF walk asks (TXT, AAAA, MX), with the
//! answers' TTLs, over the project's resolver (hickory-resolver).
//!
//! The walk is written against [`SpfDns`] so its rules (limits, loops,
//! qualifiers) are unit-tested over an in-memory zone; the suite
//! `tests/tests/spf_expand.rs` runs it over [`HickoryDns`] against a real
//! authoritative server.
//!
//! "No such record" and "the server did not answer" are kept apart: the
//! first is a fact about the domain (a void lookup, RFC 7208 §4.6.4), the
//! second says nothing about it, and the refresh keeps the last good set.
//! hickory reports SERVFAIL and REFUSED as "no records found" with that
//! response code; only NOERROR and NXDOMAIN are read as answers here.
use std::{
    future::Future,
    net::{Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::{
        op::ResponseCode,
        rr::{RData, RecordType},
        ProtoErrorKind,
    },
    Name, ResolveError, TokioResolver,
};

/// What DNS said about one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// At least one record; `ttl` is the smallest TTL in the answer (CNAMEs
    /// on the way included).
    Found { records: Vec<T>, ttl: Duration },
    /// The name exists, without records of this type (NOERROR, no answer).
    /// `ttl` is the negative TTL (from the SOA), when the server sent one.
    NoData { ttl: Option<Duration> },
    /// The name does not exist (NXDOMAIN).
    NxDomain { ttl: Option<Duration> },
}

/// The question got no answer: timeout, SERVFAIL, REFUSED, no server
/// reachable. Says nothing about the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFailure(pub String);

pub type DnsResult<T> = Result<Answer<T>, DnsFailure>;

/// The lookups the walk needs. `name` is a normalized domain name (no
/// trailing dot); implementations query it as a fully qualified name.
pub trait SpfDns: Sync {
    /// TXT records, each one's strings joined (RFC 7208 §3.3).
    fn txt(&self, name: &str) -> impl Future<Output = DnsResult<String>> + Send;
    /// AAAA records.
    fn aaaa(&self, name: &str) -> impl Future<Output = DnsResult<Ipv6Addr>> + Send;
    /// MX exchange names, lowercased, no trailing dot (`""` for a null MX).
    fn mx(&self, name: &str) -> impl Future<Output = DnsResult<String>> + Send;
    /// PTR names of `addr` (its ip6.arpa name), lowercased, no trailing
    /// dot: for `top --suggest`, never for the walk.
    fn ptr(&self, addr: Ipv6Addr) -> impl Future<Output = DnsResult<String>> + Send;
}

/// `2001:db8::1` → `1.0.0.0.….8.b.d.0.1.0.0.2.ip6.arpa` (RFC 3596).
pub fn reverse_name(addr: Ipv6Addr) -> String {
    let mut labels: Vec<String> = addr
        .octets()
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|n| format!("{n:x}"))
        .collect();
    labels.reverse();
    format!("{}.ip6.arpa", labels.join("."))
}

/// [`SpfDns`] over a hickory resolver.
#[derive(Clone)]
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl HickoryDns {
    /// The system's resolvers (/etc/resolv.conf), as the MTA would use.
    pub fn from_system_conf() -> Result<HickoryDns, DnsFailure> {
        let mut b = TokioResolver::builder_tokio()
            .map_err(|e| DnsFailure(format!("reading the resolver configuration: {e}")))?;
        tune(b.options_mut());
        Ok(HickoryDns {
            resolver: b.build(),
        })
    }

    /// Resolvers at `servers` (plain DNS, UDP then TCP on truncation), each
    /// query given up after `timeout`.
    pub fn with_nameservers(servers: &[SocketAddr], timeout: Duration) -> HickoryDns {
        let mut group = NameServerConfigGroup::new();
        for s in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[s.ip()],
                s.port(),
                true,
            ));
        }
        let config = ResolverConfig::from_parts(None, vec![], group);
        let mut b = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        let opts = b.options_mut();
        tune(opts);
        opts.timeout = timeout;
        HickoryDns {
            resolver: b.build(),
        }
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer<RData>, DnsFailure> {
        let fqdn = Name::from_ascii(format!("{name}."))
            .map_err(|e| DnsFailure(format!("{name:?} is not a DNS name: {e}")))?;
        match self.resolver.lookup(fqdn, rtype).await {
            Ok(lookup) => {
                let ttl = lookup.record_iter().map(|r| r.ttl()).min().unwrap_or(0);
                let records: Vec<RData> = lookup
                    .record_iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data().clone())
                    .collect();
                if records.is_empty() {
                    // Only CNAMEs on the way: the name has no such record.
                    Ok(Answer::NoData {
                        ttl: Some(Duration::from_secs(ttl.into())),
                    })
                } else {
                    Ok(Answer::Found {
                        records,
                        ttl: Duration::from_secs(ttl.into()),
                    })
                }
            }
            Err(e) => negative(&e).ok_or_else(|| DnsFailure(describe(&e))),
        }
    }
}

/// Options for SPF lookups: no /etc/hosts (SPF is about published DNS),
/// TCP when UDP fails, one question at a time per lookup.
fn tune(opts: &mut ResolverOpts) {
    opts.use_hosts_file = ResolveHosts::Never;
    opts.try_tcp_on_error = true;
    // TTLs must reach the refresh schedule as published: the cache returns
    // what remains of them, never more.
    opts.positive_min_ttl = None;
    opts.negative_min_ttl = None;
    opts.edns0 = true;
}

/// A NOERROR or NXDOMAIN answer without records, read from hickory's error.
fn negative<T>(e: &ResolveError) -> Option<Answer<T>> {
    let proto = e.proto()?;
    let ProtoErrorKind::NoRecordsFound {
        response_code,
        negative_ttl,
        ..
    } = proto.kind()
    else {
        return None;
    };
    let ttl = negative_ttl.map(|t| Duration::from_secs(t.into()));
    match response_code {
        ResponseCode::NoError => Some(Answer::NoData { ttl }),
        ResponseCode::NXDomain => Some(Answer::NxDomain { ttl }),
        _ => None,
    }
}

fn describe(e: &ResolveError) -> String {
    if let Some(proto) = e.proto() {
        if let ProtoErrorKind::NoRecordsFound { response_code, .. } = proto.kind() {
            return format!("the server answered {response_code}");
        }
        if matches!(proto.kind(), ProtoErrorKind::Timeout) {
            return "no answer (timed out)".into();
        }
    }
    e.to_string()
}

fn map<T>(a: Answer<RData>, f: impl Fn(RData) -> Option<T>) -> Answer<T> {
    match a {
        Answer::Found { records, ttl } => {
            let records: Vec<T> = records.into_iter().filter_map(f).collect();
            if records.is_empty() {
                Answer::NoData { ttl: Some(ttl) }
            } else {
                Answer::Found { records, ttl }
            }
        }
        Answer::NoData { ttl } => Answer::NoData { ttl },
        Answer::NxDomain { ttl } => Answer::NxDomain { ttl },
    }
}

impl SpfDns for HickoryDns {
    async fn txt(&self, name: &str) -> DnsResult<String> {
        let a = self.lookup(name, RecordType::TXT).await?;
        Ok(map(a, |r| match r {
            RData::TXT(t) => Some(
                t.txt_data()
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        }))
    }

    async fn aaaa(&self, name: &str) -> DnsResult<Ipv6Addr> {
        let a = self.lookup(name, RecordType::AAAA).await?;
        Ok(map(a, |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        }))
    }

    async fn ptr(&self, addr: Ipv6Addr) -> DnsResult<String> {
        let a = self.lookup(&reverse_name(addr), RecordType::PTR).await?;
        Ok(map(a, |r| match r {
            RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        }))
    }

    async fn mx(&self, name: &str) -> DnsResult<String> {
        let a = self.lookup(name, RecordType::MX).await?;
        Ok(map(a, |r| match r {
            RData::MX(mx) => Some(
                mx.exchange()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
            ),
            _ => None,
        }))
    }
}
