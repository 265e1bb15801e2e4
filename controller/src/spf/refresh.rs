//! Refresh safety, as pure functions: given the last good set of a domain
//! and a new expansion, what to enforce, and when to look again.
//!
//! The failure modes of the tools operators use today set the rules
//! (postwhite/spf-tools: a lookup failure produced an empty list, entries
//! were only ever added):
//! - a failed expansion changes nothing: the last good set stays (and the
//!   caller says so); so does one that lost branches only to DNS not
//!   answering (or the time limit): that says nothing about the records;
//! - a partial one, a set that becomes empty, or one that loses more than
//!   half of its prefixes is *held*: the last good set stays enforced and
//!   the candidate waits for the operator's confirmation
//!   (`mx6gate partner refresh NAME --accept`), or for the next refresh to
//!   replace it;
//! - prefixes that are far too wide, or can never be a sender's source,
//!   are refused from SPF as from the CLI;
//! - everything else is applied, and the change is a [`Diff`] to log.
use std::{collections::BTreeMap, fmt, time::Duration};

use ipnet::Ipv6Net;

use super::{
    error::SpfError,
    expand::{Expansion, SpfPrefix},
};

/// The shortest prefix SPF may bring in: the bound for prefixes given by
/// hand (`store::SHORTEST_PREFIX`, argued there; shorter needs an explicit
/// flag by hand). SPF has no such flag — a published range that wide is a
/// mistake or an attack, never a mail sender's network.
pub const MIN_PREFIX_LEN: u8 = crate::store::SHORTEST_PREFIX;

/// The refresh schedule: the records' TTL, clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Never sooner (a TTL of 0 or 1 must not make the daemon hammer DNS).
    pub floor: Duration,
    /// Never later (a week-long TTL still gets removals applied the same
    /// day).
    pub ceiling: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            floor: Duration::from_secs(5 * 60),
            ceiling: Duration::from_secs(6 * 3600),
        }
    }
}

/// When to expand again after a successful refresh whose smallest TTL was
/// `ttl`.
pub fn next_refresh(ttl: Duration, b: &Bounds) -> Duration {
    ttl.clamp(b.floor, b.ceiling.max(b.floor))
}

/// When to try again after `failures` failed refreshes in a row (1 for the
/// first): from the floor, doubling, up to the ceiling.
pub fn retry_after(failures: u32, b: &Bounds) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    b.floor
        .saturating_mul(1 << doublings)
        .min(b.ceiling.max(b.floor))
}

/// The thresholds of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_prefix_len: u8,
    /// A refresh that removes more than this share of the last good
    /// prefixes is held.
    pub max_removed_percent: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_prefix_len: MIN_PREFIX_LEN,
            max_removed_percent: 50,
        }
    }
}

/// Why `net` may not come in through SPF, if it may not.
pub fn refuse_reason(net: &Ipv6Net, min_len: u8) -> Option<String> {
    if net.prefix_len() < min_len {
        return Some(format!(
            "/{} is shorter than /{min_len}: no mail sender's network is that wide",
            net.prefix_len()
        ));
    }
    // Never a source address on the wire: the list prefixes given by hand
    // are checked against too.
    crate::store::never_a_sender(net).map(|why| format!("{why}: never a sender's source"))
}

/// A prefix SPF published and the gate refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub prefix: SpfPrefix,
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.prefix, self.reason)
    }
}

/// Split `prefixes` into those the gate takes and those it refuses.
pub fn screen(prefixes: Vec<SpfPrefix>, min_len: u8) -> (Vec<SpfPrefix>, Vec<Refused>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for p in prefixes {
        match refuse_reason(&p.prefix, min_len) {
            Some(reason) => refused.push(Refused { prefix: p, reason }),
            None => kept.push(p),
        }
    }
    (kept, refused)
}

/// Prefixes a refresh adds and removes, each with its origin (new origin
/// for added ones, last known for removed ones), in prefix order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<SpfPrefix>,
    pub removed: Vec<SpfPrefix>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for Diff {
    /// `+2001:db8:1::/48 -2001:db8:2::/48`, or `no change`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let parts: Vec<String> = self
            .added
            .iter()
            .map(|p| format!("+{}", p.prefix))
            .chain(self.removed.iter().map(|p| format!("-{}", p.prefix)))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// What changes from `old` to `new` (compared by prefix only: an origin
/// that moves is no change to enforce).
pub fn diff(old: &[SpfPrefix], new: &[SpfPrefix]) -> Diff {
    let old_by: BTreeMap<Ipv6Net, &SpfPrefix> = old.iter().map(|p| (p.prefix, p)).collect();
    let new_by: BTreeMap<Ipv6Net, &SpfPrefix> = new.iter().map(|p| (p.prefix, p)).collect();
    Diff {
        added: new_by
            .iter()
            .filter(|(n, _)| !old_by.contains_key(n))
            .map(|(_, p)| (*p).clone())
            .collect(),
        removed: old_by
            .iter()
            .filter(|(n, _)| !new_by.contains_key(n))
            .map(|(_, p)| (*p).clone())
            .collect(),
    }
}

/// Why a candidate set is held rather than applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// Every prefix would go.
    Empty,
    /// More than the policy's share of the prefixes would go.
    Removes { removed: usize, of: usize },
    /// The walk lost part of the record; these are its problems.
    Partial { problems: Vec<SpfError> },
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldReason::Empty => f.write_str("the new set is empty"),
            HoldReason::Removes { removed, of } => {
                write!(f, "it removes {removed} of {of} prefixes")
            }
            HoldReason::Partial { problems } => {
                let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                write!(f, "the expansion is incomplete: {}", p.join("; "))
            }
        }
    }
}

/// What to do with one domain after an expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Enforce `prefixes` (the new last good set); `diff` is what changed
    /// (empty when nothing did: still a successful refresh).
    Apply {
        prefixes: Vec<SpfPrefix>,
        diff: Diff,
        refused: Vec<Refused>,
        /// The expansion's smallest TTL ([`next_refresh`]).
        ttl: Duration,
    },
    /// Keep enforcing the last good set; `candidate` waits for
    /// confirmation.
    Hold {
        candidate: Vec<SpfPrefix>,
        diff: Diff,
        refused: Vec<Refused>,
        reason: HoldReason,
        ttl: Duration,
    },
    /// The expansion failed: keep the last good set (if any), try again.
    Keep { error: SpfError },
}

/// Decide what `result` changes, given the domain's last good set (`None`
/// the first time).
pub fn decide(
    last_good: Option<&[SpfPrefix]>,
    result: Result<Expansion, SpfError>,
    policy: &Policy,
) -> Decision {
    let expansion = match result {
        Ok(e) => e,
        Err(error) => return Decision::Keep { error },
    };
    // A walk that lost branches only because DNS did not answer (or time
    // ran out) says nothing about the records: a failure to retry, not a
    // candidate to hold — accepting it would drop what DNS failed to give.
    if let Some(first) = expansion.problems.first() {
        if expansion.problems.iter().all(SpfError::is_transient) {
            return Decision::Keep {
                error: first.clone(),
            };
        }
    }
    let ttl = expansion.ttl;
    let (candidate, refused) = screen(expansion.prefixes, policy.min_prefix_len);
    let old = last_good.unwrap_or(&[]);
    let d = diff(old, &candidate);
    let hold = |reason| Decision::Hold {
        candidate: candidate.clone(),
        diff: d.clone(),
        refused: refused.clone(),
        reason,
        ttl,
    };
    if !expansion.problems.is_empty() {
        return hold(HoldReason::Partial {
            problems: expansion.problems,
        });
    }
    if let Some(old) = last_good.filter(|o| !o.is_empty()) {
        if candidate.is_empty() {
            return hold(HoldReason::Empty);
        }
        let removed = d.removed.len();
        if removed as u64 * 100 > old.len() as u64 * u64::from(policy.max_removed_percent) {
            return hold(HoldReason::Removes {
                removed,
                of: old.len(),
            });
        }
    }
    Decision::Apply {
        prefixes: candidate,
        diff: d,
        refused,
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(net: &str) -> SpfPrefix {
        SpfPrefix {
            prefix: net.parse().unwrap(),
            domain: "_spf.example.test".into(),
            term: format!("ip6:{net}"),
            via: None,
        }
    }

    fn set(nets: &[&str]) -> Vec<SpfPrefix> {
        nets.iter().map(|n| p(n)).collect()
    }

    fn expansion(nets: &[&str]) -> Expansion {
        Expansion {
            domain: "example.test".into(),
            prefixes: set(nets),
            ttl: Duration::from_secs(300),
            lookups: 1,
            void_lookups: 0,
            ipv4_terms: 0,
            skipped: vec![],
            problems: vec![],
        }
    }

    fn nets(v: &[SpfPrefix]) -> Vec<String> {
        v.iter().map(|p| p.prefix.to_string()).collect()
    }

    const FOUR: [&str; 4] = [
        "2001:db8:1::/48",
        "2001:db8:2::/48",
        "2001:db8:3::/48",
        "2001:db8:4::/48",
    ];

    #[test]
    fn schedule_follows_the_ttl_within_bounds() {
        let b = Bounds {
            floor: Duration::from_secs(300),
            ceiling: Duration::from_secs(3600),
        };
        assert_eq!(
            next_refresh(Duration::from_secs(0), &b),
            Duration::from_secs(300)
        );
        assert_eq!(
            next_refresh(Duration::from_secs(900), &b),
            Duration::from_secs(900)
        );
        assert_eq!(
            next_refresh(Duration::from_secs(86400), &b),
            Duration::from_secs(3600)
        );
        assert_eq!(retry_after(1, &b), Duration::from_secs(300));
        assert_eq!(retry_after(2, &b), Duration::from_secs(600));
        assert_eq!(retry_after(3, &b), Duration::from_secs(1200));
        assert_eq!(retry_after(5, &b), Duration::from_secs(3600));
        assert_eq!(retry_after(u32::MAX, &b), Duration::from_secs(3600));
        assert_eq!(retry_after(0, &b), Duration::from_secs(300));
        // A ceiling set below the floor never schedules below the floor.
        let odd = Bounds {
            floor: Duration::from_secs(60),
            ceiling: Duration::from_secs(10),
        };
        assert_eq!(next_refresh(Duration::ZERO, &odd), Duration::from_secs(60));
        assert_eq!(retry_after(3, &odd), Duration::from_secs(60));
    }

    #[test]
    fn too_wide_and_never_source_prefixes_are_refused() {
        for (net, why) in [
            ("::/0", "shorter than /16"),
            ("2000::/3", "shorter than /16"),
            ("2001::/15", "shorter than /16"),
            ("fe80::/64", "link-local"),
            ("ff02::1/128", "multicast"),
            ("::1/128", "loopback"),
            ("::/128", "unspecified"),
            ("::ffff:198.51.100.0/120", "IPv4-mapped"),
        ] {
            let r = refuse_reason(&net.parse().unwrap(), MIN_PREFIX_LEN)
                .unwrap_or_else(|| panic!("{net} accepted"));
            assert!(r.contains(why), "{net}: {r}");
        }
        for net in [
            "2001:db8::/16",
            "2001:4860:4000::/36",
            "2001:db8::25/128",
            "fd00:1::/48",
        ] {
            assert_eq!(
                refuse_reason(&net.parse().unwrap(), MIN_PREFIX_LEN),
                None,
                "{net}"
            );
        }
        let (kept, refused) = screen(set(&["2001:db8::/32", "::/0"]), MIN_PREFIX_LEN);
        assert_eq!(nets(&kept), ["2001:db8::/32"]);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].to_string().contains("::/0"));
    }

    #[test]
    fn diff_by_prefix() {
        let d = diff(
            &set(&FOUR[..3]),
            &set(&["2001:db8:3::/48", "2001:db8:1::/48", "2001:db8:9::/48"]),
        );
        assert_eq!(nets(&d.added), ["2001:db8:9::/48"]);
        assert_eq!(nets(&d.removed), ["2001:db8:2::/48"]);
        assert_eq!(d.to_string(), "+2001:db8:9::/48 -2001:db8:2::/48");
        // An origin that moves is no change.
        let mut moved = p("2001:db8:1::/48");
        moved.domain = "_other.example.test".into();
        let d = diff(&set(&["2001:db8:1::/48"]), &[moved]);
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no change");
    }

    #[test]
    fn first_expansion_is_applied() {
        match decide(None, Ok(expansion(&FOUR)), &Policy::default()) {
            Decision::Apply {
                prefixes,
                diff,
                refused,
                ..
            } => {
                assert_eq!(nets(&prefixes), FOUR);
                assert_eq!(diff.added.len(), 4);
                assert!(refused.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Empty the first time: nothing to protect, applied (the caller
        // tells the operator the domain lists no IPv6).
        assert!(matches!(
            decide(None, Ok(expansion(&[])), &Policy::default()),
            Decision::Apply { .. }
        ));
    }

    #[test]
    fn growth_and_small_changes_are_applied() {
        let old = set(&FOUR);
        let grown = [FOUR.as_slice(), &["2001:db8:5::/48"]].concat();
        match decide(Some(&old), Ok(expansion(&grown)), &Policy::default()) {
            Decision::Apply { diff, .. } => assert_eq!(diff.to_string(), "+2001:db8:5::/48"),
            other => panic!("{other:?}"),
        }
        // Half removed is not more than half.
        match decide(Some(&old), Ok(expansion(&FOUR[..2])), &Policy::default()) {
            Decision::Apply { diff, .. } => assert_eq!(diff.removed.len(), 2),
            other => panic!("{other:?}"),
        }
        match decide(Some(&old), Ok(expansion(&FOUR)), &Policy::default()) {
            Decision::Apply { diff, .. } => assert!(diff.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sharp_shrink_is_held() {
        let old = set(&FOUR);
        match decide(Some(&old), Ok(expansion(&FOUR[..1])), &Policy::default()) {
            Decision::Hold {
                candidate,
                diff,
                reason,
                ..
            } => {
                assert_eq!(nets(&candidate), [FOUR[0]]);
                assert_eq!(diff.removed.len(), 3);
                assert_eq!(reason, HoldReason::Removes { removed: 3, of: 4 });
                assert_eq!(reason.to_string(), "it removes 3 of 4 prefixes");
            }
            other => panic!("{other:?}"),
        }
        // A wholesale renumbering removes everything, even if as many come.
        let renumbered = [
            "2001:db8:a::/48",
            "2001:db8:b::/48",
            "2001:db8:c::/48",
            "2001:db8:d::/48",
        ];
        assert!(matches!(
            decide(Some(&old), Ok(expansion(&renumbered)), &Policy::default()),
            Decision::Hold {
                reason: HoldReason::Removes { removed: 4, of: 4 },
                ..
            }
        ));
        // The threshold is the policy's.
        let lax = Policy {
            max_removed_percent: 80,
            ..Policy::default()
        };
        assert!(matches!(
            decide(Some(&old), Ok(expansion(&FOUR[..1])), &lax),
            Decision::Apply { .. }
        ));
    }

    #[test]
    fn an_empty_set_is_held() {
        let old = set(&FOUR[..1]);
        match decide(Some(&old), Ok(expansion(&[])), &Policy::default()) {
            Decision::Hold {
                candidate, reason, ..
            } => {
                assert!(candidate.is_empty());
                assert_eq!(reason, HoldReason::Empty);
            }
            other => panic!("{other:?}"),
        }
        // Refusal can empty it too: still held, never applied.
        match decide(Some(&old), Ok(expansion(&["::/0"])), &Policy::default()) {
            Decision::Hold {
                refused, reason, ..
            } => {
                assert_eq!(reason, HoldReason::Empty);
                assert_eq!(refused.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // Nothing before, nothing now: no change.
        assert!(matches!(
            decide(Some(&[]), Ok(expansion(&[])), &Policy::default()),
            Decision::Apply { .. }
        ));
    }

    #[test]
    fn a_partial_expansion_is_held_and_a_failed_one_kept() {
        let old = set(&FOUR);
        let mut partial = expansion(&FOUR[..3]);
        partial.problems.push(SpfError::Loop {
            chain: vec!["_net.example.test".into(), "_net.example.test".into()],
        });
        for last in [None, Some(old.as_slice())] {
            match decide(last, Ok(partial.clone()), &Policy::default()) {
                Decision::Hold { reason, .. } => {
                    assert!(reason.to_string().contains("_net.example.test"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = SpfError::NoRecord {
            domain: "example.test".into(),
        };
        assert_eq!(
            decide(Some(&old), Err(err.clone()), &Policy::default()),
            Decision::Keep { error: err }
        );
        // A branch lost only because DNS did not answer: a failure (kept,
        // retried), never a candidate to hold and perhaps accept.
        let dns = SpfError::Dns {
            name: "_net.example.test".into(),
            rtype: "TXT",
            reason: "no answer (timed out)".into(),
        };
        let mut lost = expansion(&FOUR[..3]);
        lost.problems.push(dns.clone());
        assert_eq!(
            decide(Some(&old), Ok(lost.clone()), &Policy::default()),
            Decision::Keep { error: dns }
        );
        // With a fact about the records among the problems: held.
        lost.problems.push(partial.problems[0].clone());
        assert!(matches!(
            decide(Some(&old), Ok(lost), &Policy::default()),
            Decision::Hold { .. }
        ));
    }

    #[test]
    fn refused_prefixes_never_reach_the_set() {
        match decide(
            None,
            Ok(expansion(&["2001:db8::/32", "8000::/1", "fe80::/64"])),
            &Policy::default(),
        ) {
            Decision::Apply {
                prefixes, refused, ..
            } => {
                assert_eq!(nets(&prefixes), ["2001:db8::/32"]);
                assert_eq!(refused.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
