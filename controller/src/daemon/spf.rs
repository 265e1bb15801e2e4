//! The daemon's SPF refresh task: every domain a partner names is expanded
//! again when its records' TTL runs out (within `[spf] refresh_floor` and
//! `refresh_ceiling`), failures retried with backoff, each result recorded
//! in the SPF state (`partners::record_refresh`: held when it shrinks
//! sharply, kept when DNS fails) and, when the enforced set changed, the
//! sync worker asked to reconcile — the same path as any store change.
//!
//! A tokio task on the daemon's runtime: DNS is async, each walk bounded by
//! its time limit, and the state lock is taken on a blocking thread, so a
//! slow DNS server or a CLI holding the lock delays only this task.
use std::{collections::BTreeMap, sync::mpsc, time::Duration};

use chrono::Utc;
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use super::worker::Request;
use crate::{
    partners::{self, Refreshed},
    spf::{
        refresh::{next_refresh, retry_after},
        Decision, SpfConfig, SpfState,
    },
    state::StateDir,
};

/// How often the task looks at the schedule and at the domains the worker published.
const TICK: Duration = Duration::from_millis(500);

/// What the task needs; `config` follows reloads.
pub struct RefreshTask {
    /// The SPF domains of the store the worker last applied, with their
    /// partners (the worker drops the state of domains no longer named).
    pub owners: watch::Receiver<BTreeMap<String, String>>,
    pub state: StateDir,
    pub config: watch::Receiver<SpfConfig>,
    pub worker: mpsc::Sender<Request>,
    pub metrics: crate::metrics::SpfMetrics,
}

struct Due {
    at: Instant,
}

impl RefreshTask {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let mut domains: BTreeMap<String, String> = BTreeMap::new();
        // The store applied at start counts as a change.
        self.owners.mark_changed();
        let mut schedule: BTreeMap<String, Due> = BTreeMap::new();
        let mut cfg = self.config.borrow().clone();
        let mut dns = resolver(&cfg);
        loop {
            if self.config.has_changed().unwrap_or(false) {
                cfg = self.config.borrow_and_update().clone();
                dns = resolver(&cfg);
            }
            if self.owners.has_changed().unwrap_or(false) {
                let d = self.owners.borrow_and_update().clone();
                if d.keys().ne(domains.keys()) {
                    info!(domains = ?d.keys().collect::<Vec<_>>(), "spf: domains to refresh");
                }
                domains = d;
                schedule.retain(|k, _| domains.contains_key(k));
                self.metrics.retain(&domains.keys().cloned().collect());
            }
            // New domains: due by their stored TTL, or now.
            let state = self.load_state().await;
            for d in domains.keys() {
                if let Some(s) = &state {
                    self.metrics.observe(d, s);
                }
                schedule.entry(d.clone()).or_insert_with(|| Due {
                    at: state
                        .as_ref()
                        .and_then(|s| s.due(d, &cfg.bounds))
                        .map_or_else(Instant::now, |t| {
                            let left = (t - Utc::now()).to_std().unwrap_or_default();
                            Instant::now() + left
                        }),
                });
            }
            let due: Vec<String> = schedule
                .iter()
                .filter(|(_, d)| d.at <= Instant::now())
                .map(|(k, _)| k.clone())
                .collect();
            for domain in due {
                let Some(dns) = &dns else { break };
                let limit = crate::spf::Limits::default().time_limit + Duration::from_secs(5);
                let result = match tokio::time::timeout(
                    limit,
                    partners::expand_domain(dns, &domain),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(crate::spf::SpfError::TimeLimit { limit }),
                };
                let st = self.state.clone();
                let d2 = domain.clone();
                let recorded =
                    tokio::task::spawn_blocking(move || partners::record_refresh(&st, &d2, result))
                        .await;
                let r = match recorded {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        warn!(
                            domain,
                            error = format!("{e:#}"),
                            "spf: cannot record the refresh; retrying"
                        );
                        if let Some(s) = schedule.get_mut(&domain) {
                            s.at = Instant::now() + cfg.bounds.floor;
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
                let partner = domains.get(&domain).cloned().unwrap_or_default();
                let wait = log(&partner, &r, &cfg);
                if r.failures > 0 {
                    self.metrics.failed(&domain);
                }
                if r.changes_enforcement() {
                    let _ = self.worker.send(Request::Resync);
                }
                schedule.insert(
                    domain,
                    Due {
                        at: Instant::now() + wait,
                    },
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn load_state(&self) -> Option<SpfState> {
        let path = self.state.path.clone();
        tokio::task::spawn_blocking(move || SpfState::load(&path).ok())
            .await
            .ok()
            .flatten()
    }
}

fn resolver(cfg: &SpfConfig) -> Option<crate::spf::HickoryDns> {
    match cfg.resolver() {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(
                error = e.0,
                "spf: no resolver; SPF domains are not refreshed (the enforced sets stay)"
            );
            None
        }
    }
}

fn nets(v: &[crate::spf::SpfPrefix]) -> Vec<String> {
    v.iter().map(|p| p.prefix.to_string()).collect()
}

/// Log one refresh; returns when to look again.
fn log(partner: &str, r: &Refreshed, cfg: &SpfConfig) -> Duration {
    let domain = r.domain.as_str();
    match &r.decision {
        Decision::Apply {
            prefixes,
            diff,
            refused,
            ttl,
        } => {
            for x in refused {
                warn!(domain, partner, refused = %x, "spf: prefix refused");
            }
            let next = next_refresh(*ttl, &cfg.bounds);
            if diff.is_empty() {
                info!(
                    domain,
                    partner,
                    prefixes = prefixes.len(),
                    next_in_s = next.as_secs(),
                    "spf: refreshed, no change"
                );
            } else {
                info!(
                    domain,
                    partner,
                    added = ?nets(&diff.added),
                    removed = ?nets(&diff.removed),
                    prefixes = prefixes.len(),
                    next_in_s = next.as_secs(),
                    "spf: set changed"
                );
            }
            next
        }
        Decision::Hold {
            diff, reason, ttl, ..
        } => {
            let next = next_refresh(*ttl, &cfg.bounds);
            warn!(
                domain,
                partner,
                reason = %reason,
                would_add = ?nets(&diff.added),
                would_remove = ?nets(&diff.removed),
                "spf: new set held for confirmation; the last good set stays enforced (`mx6gate partner refresh {partner} --accept` applies it)"
            );
            next
        }
        Decision::Keep { error } => {
            let next = retry_after(r.failures.max(1), &cfg.bounds);
            warn!(
                domain,
                partner,
                error = %error,
                failures = r.failures,
                retry_in_s = next.as_secs(),
                "spf: refresh failed; the last good set stays enforced"
            );
            next
        }
    }
}
