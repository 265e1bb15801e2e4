//! Why an expansion failed, or what it lost on the way. Every message names
//! the domain and, where there is one, the term.
use std::{fmt, time::Duration};

use super::record::RecordError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfError {
    /// What the operator gave is not a domain name.
    BadDomain { domain: String, reason: String },
    /// NXDOMAIN for the domain whose record was asked for.
    NoSuchDomain { domain: String },
    /// The domain has no TXT record starting with `v=spf1`.
    NoRecord { domain: String },
    /// More than one `v=spf1` record (RFC 7208 §4.5: permerror).
    MultipleRecords { domain: String, count: usize },
    /// The record is not valid SPF.
    Syntax { domain: String, error: RecordError },
    /// A term's target is not a name DNS can be asked about.
    BadTarget {
        domain: String,
        term: String,
        reason: String,
    },
    /// A question DNS did not answer (timeout, SERVFAIL, …).
    Dns {
        name: String,
        rtype: &'static str,
        reason: String,
    },
    /// An include or redirect leads back to a record being walked.
    Loop { chain: Vec<String> },
    /// More than the 10 DNS-querying terms RFC 7208 §4.6.4 allows.
    TooManyLookups {
        limit: u32,
        domain: String,
        term: String,
    },
    /// More than the 2 void lookups RFC 7208 §4.6.4 allows.
    TooManyVoidLookups {
        limit: u32,
        domain: String,
        term: String,
    },
    /// An `mx` whose domain has more MX hosts than the 10 address lookups
    /// RFC 7208 §4.6.4 allows.
    TooManyMxHosts {
        limit: usize,
        count: usize,
        domain: String,
        term: String,
    },
    /// The walk ran out of its time limit.
    TimeLimit { limit: Duration },
}

impl SpfError {
    /// Whether trying again later may give another answer without anyone
    /// changing DNS (a server that did not answer, a slow walk), as opposed
    /// to a fact about the published records.
    pub fn is_transient(&self) -> bool {
        matches!(self, SpfError::Dns { .. } | SpfError::TimeLimit { .. })
    }
}

impl fmt::Display for SpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpfError::BadDomain { domain, reason } => {
                write!(f, "{domain:?} is not a domain name: {reason}")
            }
            SpfError::NoSuchDomain { domain } => {
                write!(f, "{domain} does not exist in DNS (NXDOMAIN)")
            }
            SpfError::NoRecord { domain } => write!(
                f,
                "{domain} publishes no SPF record (no TXT record starting with \"v=spf1\")"
            ),
            SpfError::MultipleRecords { domain, count } => write!(
                f,
                "{domain} publishes {count} SPF records; RFC 7208 allows one (receivers see a permerror)"
            ),
            SpfError::Syntax { domain, error } => {
                write!(f, "the SPF record of {domain} is not valid: {error}")
            }
            SpfError::BadTarget {
                domain,
                term,
                reason,
            } => write!(
                f,
                "term {term:?} in the SPF record of {domain} names no usable domain: {reason}"
            ),
            SpfError::Dns {
                name,
                rtype,
                reason,
            } => write!(f, "DNS lookup of {name} {rtype} failed: {reason}"),
            SpfError::Loop { chain } => write!(f, "SPF include loop: {}", chain.join(" → ")),
            SpfError::TooManyLookups {
                limit,
                domain,
                term,
            } => write!(
                f,
                "more than {limit} DNS-querying terms (RFC 7208 §4.6.4), at {term:?} in the SPF record of {domain}; receivers see a permerror"
            ),
            SpfError::TooManyVoidLookups {
                limit,
                domain,
                term,
            } => write!(
                f,
                "more than {limit} lookups that found nothing (RFC 7208 §4.6.4), at {term:?} in the SPF record of {domain}; receivers see a permerror"
            ),
            SpfError::TooManyMxHosts {
                limit,
                count,
                domain,
                term,
            } => write!(
                f,
                "{term:?} in the SPF record of {domain} names {count} MX hosts; RFC 7208 §4.6.4 allows {limit}"
            ),
            SpfError::TimeLimit { limit } => {
                write!(f, "the SPF walk took longer than {}s and was stopped", limit.as_secs_f64())
            }
        }
    }
}

impl std::error::Error for SpfError {}
