//! For `mx6gate top --suggest`: does a turned-away source's sender publish
//! SPF that covers it? Checked by expanding, never assumed from a name.
//!
//! The domains tried are the PTR name's parents, nearest first, at most
//! [`MAX_CANDIDATES`], stopping before the public suffix — kept simple
//! (no public-suffix list): the last label, or the last two when the
//! top label has two letters and the one before it at most three
//! (`co.uk`, `com.au`). `mail-yw1.google.com` → `google.com`;
//! `x.outbound.protection.outlook.com` → `outbound.protection.outlook.com`,
//! `protection.outlook.com`, `outlook.com`.
use std::{net::Ipv6Addr, time::Duration};

use super::{
    dns::{Answer, SpfDns},
    expand::{expand, Limits, SpfPrefix},
};

/// Parent domains tried per PTR name.
pub const MAX_CANDIDATES: usize = 3;

/// The domains to try for PTR name `ptr`, nearest first.
pub fn candidate_domains(ptr: &str) -> Vec<String> {
    let name = ptr.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Vec::new();
    }
    let n = labels.len();
    let suffix = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        2
    } else {
        1
    };
    // Parents of the host name with at least one label before the suffix.
    (1..n)
        .filter(|&i| n - i > suffix)
        .map(|i| labels[i..].join("."))
        .take(MAX_CANDIDATES)
        .collect()
}

/// A domain whose SPF covers a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub ptr: String,
    pub domain: String,
    pub prefix: SpfPrefix,
}

/// The first PTR-parent domain of `addr` whose SPF expansion covers it,
/// each walk within `walk_limit`.
pub async fn spf_covering<D: SpfDns>(
    dns: &D,
    addr: Ipv6Addr,
    walk_limit: Duration,
) -> Option<Covered> {
    let Ok(Answer::Found { records, .. }) = dns.ptr(addr).await else {
        return None;
    };
    let ptr = records.into_iter().next()?;
    let limits = Limits {
        time_limit: walk_limit,
        ..Limits::default()
    };
    for domain in candidate_domains(&ptr) {
        if let Ok(e) = expand(dns, &domain, &limits).await {
            if let Some(p) = e.covering(addr) {
                return Some(Covered {
                    ptr,
                    domain,
                    prefix: p.clone(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_walk_up_and_stop_before_the_public_suffix() {
        assert_eq!(candidate_domains("mail-yw1.google.com."), ["google.com"]);
        assert_eq!(
            candidate_domains("a.outbound.protection.outlook.com"),
            [
                "outbound.protection.outlook.com",
                "protection.outlook.com",
                "outlook.com"
            ]
        );
        assert_eq!(
            candidate_domains("a.b.c.d.example.com"),
            ["b.c.d.example.com", "c.d.example.com", "d.example.com"]
        );
        assert_eq!(candidate_domains("mx.example.co.uk"), ["example.co.uk"]);
        assert!(candidate_domains("example.com").is_empty());
        assert!(candidate_domains("example.co.uk").is_empty());
        assert!(candidate_domains("bad..name").is_empty());
    }
}
