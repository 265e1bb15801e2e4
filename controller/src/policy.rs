//! The allowlist policy, in one function: what the gate lets in is every
//! active partner's manual prefixes ∪ the *enforced* SPF set of every
//! domain it names (the last good set, never a held candidate). Every path
//! that reconciles — the daemon's sync worker, a CLI edit with or without
//! a daemon, `mx6gate sync`, a restart — goes through [`allowed`], so a
//! CLI edit can never drop what SPF brought in.
//!
//! A prefix claimed twice counts once: a manual prefix wins over an SPF
//! one (the operator said it by hand), and among SPF sets the partner
//! first by name wins (stable across runs).
use std::collections::{btree_map::Entry, BTreeMap};

use chrono::{DateTime, NaiveDate, Utc};
use ipnet::Ipv6Net;

use crate::{
    spf::{SpfPrefix, SpfState},
    store::Store,
};

/// Why a prefix is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given by hand (`partner add NAME PREFIX`, a store file's `prefixes`).
    Manual,
    /// From the SPF record of `domain` (what the partner names); `source`
    /// is the record and term it came from.
    Spf {
        domain: String,
        source: SpfPrefix,
        refreshed: DateTime<Utc>,
    },
}

impl Origin {
    /// `manual`, or `spf:google.com`.
    pub fn label(&self) -> String {
        match self {
            Origin::Manual => "manual".into(),
            Origin::Spf { domain, .. } => format!("spf:{domain}"),
        }
    }
}

/// One prefix of the allowlist, its partner and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub net: Ipv6Net,
    pub partner: String,
    pub origin: Origin,
}

/// The allowlist for `store` and the SPF `state` on `today`, sorted by
/// prefix, each prefix once.
pub fn allowed(store: &Store, state: &SpfState, today: NaiveDate) -> Vec<Allowed> {
    let mut out: BTreeMap<Ipv6Net, Allowed> = BTreeMap::new();
    let active = || store.partners.values().filter(|p| p.is_active(today));
    for p in active() {
        for net in &p.prefixes {
            out.insert(
                *net,
                Allowed {
                    net: *net,
                    partner: p.name.clone(),
                    origin: Origin::Manual,
                },
            );
        }
    }
    for p in active() {
        for domain in &p.spf {
            let Some(good) = state.domain.get(domain).and_then(|d| d.last_good.as_ref()) else {
                continue;
            };
            for sp in &good.prefixes {
                if let Entry::Vacant(v) = out.entry(sp.prefix) {
                    v.insert(Allowed {
                        net: sp.prefix,
                        partner: p.name.clone(),
                        origin: Origin::Spf {
                            domain: domain.clone(),
                            source: sp.clone(),
                            refreshed: good.refreshed,
                        },
                    });
                }
            }
        }
    }
    out.into_values().collect()
}

/// The longest allowed prefix holding `addr` (what `check ADDR` names).
pub fn covering(allowed: &[Allowed], addr: std::net::Ipv6Addr) -> Option<&Allowed> {
    allowed
        .iter()
        .filter(|a| a.net.contains(&addr))
        .max_by_key(|a| a.net.prefix_len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spf::{Decision, Diff};

    fn sp(net: &str) -> SpfPrefix {
        SpfPrefix {
            prefix: net.parse().unwrap(),
            domain: "_spf.example.test".into(),
            term: format!("ip6:{net}"),
            via: None,
        }
    }

    #[test]
    fn manual_and_enforced_spf_sets_never_held_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.toml"),
            "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8:1::/48\"]\nspf = [\"a.example.test\"]\n\
             [[partner]]\nname = \"b\"\nspf = [\"b.example.test\", \"held.example.test\"]\n",
        )
        .unwrap();
        let store = Store::load(dir.path()).unwrap();
        let mut st = SpfState::default();
        let now = Utc::now();
        let apply = |nets: &[&str]| Decision::Apply {
            prefixes: nets.iter().map(|n| sp(n)).collect(),
            diff: Diff::default(),
            refused: vec![],
            ttl: Duration::from_secs(60),
        };
        // a's SPF repeats its manual prefix: manual wins.
        st.record(
            "a.example.test",
            &apply(&["2001:db8:1::/48", "2001:db8:a::/48"]),
            now,
        );
        // b's set overlaps a's: a (first by name) keeps it.
        st.record(
            "b.example.test",
            &apply(&["2001:db8:a::/48", "2001:db8:b::/48"]),
            now,
        );
        st.record(
            "held.example.test",
            &Decision::Hold {
                candidate: vec![sp("2001:db8:f::/48")],
                diff: Diff::default(),
                refused: vec![],
                reason: crate::spf::HoldReason::Empty,
                ttl: Duration::from_secs(60),
            },
            now,
        );
        let got: Vec<(String, String, String)> = allowed(&store, &st, now.date_naive())
            .into_iter()
            .map(|a| (a.net.to_string(), a.partner, a.origin.label()))
            .collect();
        let want = [
            ("2001:db8:1::/48", "a", "manual"),
            ("2001:db8:a::/48", "a", "spf:a.example.test"),
            ("2001:db8:b::/48", "b", "spf:b.example.test"),
        ];
        assert_eq!(
            got,
            want.map(|(n, p, o)| (n.to_string(), p.to_string(), o.to_string()))
        );
    }
}
