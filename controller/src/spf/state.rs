//! The last good set of every SPF domain, and any candidate held for
//! confirmation, persisted in `<state_dir>/spf-last-good.toml` so that a
//! restart without DNS keeps enforcing what was enforced.
//!
//! Written atomically (fsutil::write_atomic: temp file, fsync, rename,
//! fsync of the directory). A file that cannot be read or parsed is an
//! error naming it — never read as "no domains", which would be the empty
//! allowlist this module exists to prevent.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::{
    domain::normalize_domain,
    expand::SpfPrefix,
    refresh::{diff, Decision, Diff},
};
use crate::fsutil;

pub const STATE_FILE: &str = "spf-last-good.toml";

/// Every domain's state, by normalized domain name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpfState {
    #[serde(default)]
    pub domain: BTreeMap<String, DomainState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainState {
    /// What is enforced for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<GoodSet>,
    /// A candidate waiting for `--accept` (or the next refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldSet>,
    /// Refreshes failing since the last one that got an answer (the
    /// enforced set is kept meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<Failing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failing {
    /// The first failure of this run of failures.
    pub since: DateTime<Utc>,
    /// Failures in a row.
    pub count: u32,
    /// The last failure's reason.
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodSet {
    /// When a complete expansion last confirmed this set.
    pub refreshed: DateTime<Utc>,
    /// That expansion's smallest TTL, in seconds.
    pub ttl: u64,
    #[serde(default)]
    pub prefixes: Vec<SpfPrefix>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldSet {
    /// When this candidate (these prefixes) was first held.
    pub since: DateTime<Utc>,
    pub reason: String,
    pub ttl: u64,
    #[serde(default)]
    pub prefixes: Vec<SpfPrefix>,
}

fn prefix_set(v: &[SpfPrefix]) -> BTreeSet<Ipv6Net> {
    v.iter().map(|p| p.prefix).collect()
}

impl SpfState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Read the state; a missing file is the empty state (first start).
    pub fn load(state_dir: &Path) -> Result<SpfState> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(SpfState::default()),
            Err(e) => bail!("{}: cannot read: {e}", path.display()),
        };
        let state: SpfState =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        for name in state.domain.keys() {
            match normalize_domain(name) {
                Ok(n) if n == *name => {}
                Ok(n) => bail!(
                    "{}: domain {name:?} is not in normal form ({n:?})",
                    path.display()
                ),
                Err(reason) => bail!("{}: domain {name:?}: {reason}", path.display()),
            }
        }
        Ok(state)
    }

    /// Write the state atomically.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| anyhow!("serializing the SPF state: {e}"))?;
        fsutil::write_atomic(&Self::path(state_dir), text.as_bytes())
    }

    /// The prefixes enforced for `domain` (none when it has no last good
    /// set).
    pub fn enforced(&self, domain: &str) -> &[SpfPrefix] {
        self.domain
            .get(domain)
            .and_then(|d| d.last_good.as_ref())
            .map_or(&[], |g| &g.prefixes)
    }

    /// Record a refresh decision for `domain` at `now`. Returns whether the
    /// state changed (and so must be saved).
    pub fn record(&mut self, domain: &str, decision: &Decision, now: DateTime<Utc>) -> bool {
        let before = self.domain.get(domain).cloned();
        match decision {
            Decision::Apply { prefixes, ttl, .. } => {
                let d = self.domain.entry(domain.to_string()).or_default();
                d.last_good = Some(GoodSet {
                    refreshed: now,
                    ttl: ttl.as_secs(),
                    prefixes: prefixes.clone(),
                });
                d.held = None;
            }
            Decision::Hold {
                candidate,
                reason,
                ttl,
                ..
            } => {
                let d = self.domain.entry(domain.to_string()).or_default();
                let since = match &d.held {
                    Some(h) if prefix_set(&h.prefixes) == prefix_set(candidate) => h.since,
                    _ => now,
                };
                d.held = Some(HeldSet {
                    since,
                    reason: reason.to_string(),
                    ttl: ttl.as_secs(),
                    prefixes: candidate.clone(),
                });
            }
            Decision::Keep { .. } => {}
        }
        if !matches!(decision, Decision::Keep { .. }) {
            if let Some(d) = self.domain.get_mut(domain) {
                d.failing = None;
            }
        }
        self.domain.get(domain) != before.as_ref()
    }

    /// A refresh of `domain` failed at `now` (`error`): counted, the
    /// enforced set kept. Returns the failures in a row, this one included.
    pub fn note_failure(&mut self, domain: &str, error: &str, now: DateTime<Utc>) -> u32 {
        let d = self.domain.entry(domain.to_string()).or_default();
        let f = d.failing.get_or_insert(Failing {
            since: now,
            count: 0,
            error: String::new(),
        });
        f.count = f.count.saturating_add(1);
        f.error = error.to_string();
        f.count
    }

    /// The operator confirms the held candidate of `domain`: it becomes the
    /// last good set. Returns what that changes.
    pub fn accept(&mut self, domain: &str, now: DateTime<Utc>) -> Result<Diff, String> {
        let d = self
            .domain
            .get_mut(domain)
            .ok_or_else(|| format!("no SPF state for {domain}"))?;
        let held = d
            .held
            .take()
            .ok_or_else(|| format!("{domain} has no held SPF set to accept"))?;
        let old = d.last_good.as_ref().map_or(&[][..], |g| &g.prefixes);
        let change = diff(old, &held.prefixes);
        d.last_good = Some(GoodSet {
            refreshed: now,
            ttl: held.ttl,
            prefixes: held.prefixes,
        });
        Ok(change)
    }

    /// Forget the domains no partner names any more. Returns whether any
    /// went.
    pub fn retain_domains(&mut self, keep: &BTreeSet<String>) -> bool {
        let n = self.domain.len();
        self.domain.retain(|name, _| keep.contains(name));
        self.domain.len() != n
    }

    /// When the domain's last good set expires by its TTL (for the refresh
    /// schedule after a restart).
    pub fn due(&self, domain: &str, bounds: &super::refresh::Bounds) -> Option<DateTime<Utc>> {
        let g = self.domain.get(domain)?.last_good.as_ref()?;
        let wait = super::refresh::next_refresh(Duration::from_secs(g.ttl), bounds);
        Some(g.refreshed + chrono::Duration::from_std(wait).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spf::refresh::{Bounds, HoldReason};

    fn p(net: &str) -> SpfPrefix {
        SpfPrefix {
            prefix: net.parse().unwrap(),
            domain: "_spf.example.test".into(),
            term: format!("ip6:{net}"),
            via: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn apply(nets: &[&str]) -> Decision {
        Decision::Apply {
            prefixes: nets.iter().map(|n| p(n)).collect(),
            diff: Diff::default(),
            refused: vec![],
            ttl: Duration::from_secs(300),
        }
    }

    fn hold(nets: &[&str]) -> Decision {
        Decision::Hold {
            candidate: nets.iter().map(|n| p(n)).collect(),
            diff: Diff::default(),
            refused: vec![],
            reason: HoldReason::Empty,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SpfState::load(dir.path()).unwrap(), SpfState::default());
        let mut s = SpfState::default();
        assert!(s.record(
            "example.test",
            &apply(&["2001:db8:1::/48", "2001:db8:2::/48"]),
            at("2026-12-01T10:00:00Z")
        ));
        let mut mx = p("2001:db8:25::/64");
        mx.term = "mx//64".into();
        mx.via = Some("mx1.example.test".into());
        s.domain
            .get_mut("example.test")
            .unwrap()
            .last_good
            .as_mut()
            .unwrap()
            .prefixes
            .push(mx);
        assert!(s.record("example.test", &hold(&[]), at("2026-12-01T11:00:00Z")));
        s.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(SpfState::path(dir.path())).unwrap();
        assert!(
            text.contains("[domain.\"example.test\".last_good]"),
            "{text}"
        );
        assert!(text.contains("via = \"mx1.example.test\""), "{text}");
        assert_eq!(SpfState::load(dir.path()).unwrap(), s);
        // Nothing else in the directory (no temp file left behind).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = SpfState::path(dir.path());
        for bad in [
            "domain = 3\n",
            "[domain.\"example.test\".last_good]\nrefreshed = \"yesterday\"\nttl = 1\n",
            "[domain.\"example.test\".last_good]\nrefreshed = 2026-12-01T10:00:00Z\nttl = 1\n[[domain.\"example.test\".last_good.prefixes]]\nprefix = \"2001:db8::/129\"\ndomain = \"x.test\"\nterm = \"ip6\"\n",
            "[domain.\"Example.Test\"]\n",
            "[domain.\"not a domain\"]\n",
            "surprise = true\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = SpfState::load(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{bad:?}: {e}");
        }
    }

    #[test]
    fn decisions_update_the_state() {
        let mut s = SpfState::default();
        let t0 = at("2026-12-01T10:00:00Z");
        s.record("example.test", &apply(&["2001:db8:1::/48"]), t0);
        assert_eq!(s.enforced("example.test").len(), 1);
        assert_eq!(s.enforced("other.test").len(), 0);
        // A held candidate leaves the enforced set alone; the same candidate
        // again keeps its first time.
        assert!(s.record("example.test", &hold(&[]), at("2026-12-01T11:00:00Z")));
        assert!(!s.record("example.test", &hold(&[]), at("2026-12-01T12:00:00Z")));
        let d = &s.domain["example.test"];
        assert_eq!(d.held.as_ref().unwrap().since, at("2026-12-01T11:00:00Z"));
        assert_eq!(s.enforced("example.test").len(), 1);
        // A failure changes nothing.
        let keep = Decision::Keep {
            error: crate::spf::SpfError::NoRecord {
                domain: "example.test".into(),
            },
        };
        assert!(!s.record("example.test", &keep, at("2026-12-01T13:00:00Z")));
        // Applying clears the held candidate.
        s.record(
            "example.test",
            &apply(&["2001:db8:2::/48"]),
            at("2026-12-01T14:00:00Z"),
        );
        assert!(s.domain["example.test"].held.is_none());
        assert_eq!(
            s.enforced("example.test")[0].prefix.to_string(),
            "2001:db8:2::/48"
        );
    }

    #[test]
    fn accepting_makes_the_held_set_the_last_good_one() {
        let mut s = SpfState::default();
        let t0 = at("2026-12-01T10:00:00Z");
        s.record(
            "example.test",
            &apply(&["2001:db8:1::/48", "2001:db8:2::/48"]),
            t0,
        );
        assert!(s
            .accept("example.test", t0)
            .unwrap_err()
            .contains("no held"));
        assert!(s
            .accept("other.test", t0)
            .unwrap_err()
            .contains("other.test"));
        s.record("example.test", &hold(&["2001:db8:2::/48"]), t0);
        let change = s
            .accept("example.test", at("2026-12-01T10:05:00Z"))
            .unwrap();
        assert_eq!(change.to_string(), "-2001:db8:1::/48");
        let g = s.domain["example.test"].last_good.as_ref().unwrap();
        assert_eq!(g.refreshed, at("2026-12-01T10:05:00Z"));
        assert_eq!(g.ttl, 60);
        assert!(s.domain["example.test"].held.is_none());
    }

    #[test]
    fn due_follows_the_stored_ttl_within_bounds() {
        let mut s = SpfState::default();
        s.record(
            "example.test",
            &apply(&["2001:db8:1::/48"]),
            at("2026-12-01T10:00:00Z"),
        );
        let b = Bounds {
            floor: Duration::from_secs(600),
            ceiling: Duration::from_secs(3600),
        };
        assert_eq!(s.due("example.test", &b), Some(at("2026-12-01T10:10:00Z")));
        assert_eq!(s.due("other.test", &b), None);
    }

    #[test]
    fn forgets_domains_no_partner_names() {
        let mut s = SpfState::default();
        let t = at("2026-12-01T10:00:00Z");
        s.record("a.test", &apply(&["2001:db8:1::/48"]), t);
        s.record("b.test", &apply(&["2001:db8:2::/48"]), t);
        assert!(s.retain_domains(&["a.test".to_string()].into()));
        assert!(!s.retain_domains(&["a.test".to_string()].into()));
        assert_eq!(s.domain.keys().collect::<Vec<_>>(), ["a.test"]);
    }
}
