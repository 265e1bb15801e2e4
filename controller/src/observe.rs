//! One view of the gate: what is pinned, attached, enforced and counted,
//! read from the kernel, the state dir and the store without changing
//! any of them. `mx6gate status` renders a [`GateView`] as text and as
//! `mx6gate.status/1` JSON; doctor and the metrics collector share its
//! pieces ([`attachments`], [`crate::gate::is_bpffs`],
//! [`crate::config::DownPolicy::consequence`]) so that the three never
//! disagree about, say, which interfaces are protected.
//!
//! Diagnosis keeps working whatever is broken: a refused partner store or
//! a garbled mode file is a field of the view, not an error; only a gate
//! whose maps cannot be read is.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Result;
use aya::programs::links::{FdLink, PinnedLink};
use ipnet::Ipv6Net;
use serde::{ser::SerializeMap, Serialize, Serializer};

use crate::{
    context::Ctx,
    gate::{AttachRecord, PinLayout},
    maps::GateMaps,
    pinlock, reconcile,
    store::{today_utc, Store},
};

/// One XDP attachment: a pinned link, or an interface only configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub interface: String,
    /// "native", "generic", "unknown" (attached, but the attach record
    /// does not say how: adopted from an older mx6gate), or "none" when
    /// configured but not attached.
    pub xdp_mode: String,
    pub attached: bool,
}

/// The interfaces the gate protects: those it is attached to (in the pin
/// directory's order), then those configured but not attached.
pub fn attachments(layout: &PinLayout, state_dir: &Path, configured: &[String]) -> Vec<Attachment> {
    let record = AttachRecord::load(state_dir);
    let attached = layout.attached_interfaces();
    let mut out: Vec<Attachment> = attached
        .iter()
        .map(|iface| Attachment {
            interface: iface.clone(),
            xdp_mode: record
                .interfaces
                .get(iface)
                .map_or_else(|| "unknown".to_string(), |r| r.mode.clone()),
            attached: true,
        })
        .collect();
    for iface in configured.iter().filter(|i| !attached.contains(i)) {
        out.push(Attachment {
            interface: iface.clone(),
            xdp_mode: "none".into(),
            attached: false,
        });
    }
    out
}

/// A pinned link's kernel ids (what `bpftool link`/`prog` show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkIds {
    pub link: u32,
    pub prog: u32,
}

fn link_ids(pin: &Path) -> Result<LinkIds, String> {
    PinnedLink::from_pin(pin)
        .map(FdLink::from)
        .and_then(|l| l.info())
        .map(|i| LinkIds {
            link: i.id(),
            prog: i.program_id(),
        })
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceView {
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The XDP link's ids when attached (None: not attached, or unreadable
    /// and then `link_error` says why).
    pub link: Option<LinkIds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkLookupView {
    pub attached: bool,
    pub link: Option<LinkIds>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeView {
    /// The mode in force (`mx6gate mode`'s, else the config's); None when
    /// the mode file is unreadable (then `error`).
    pub effective: Option<&'static str>,
    /// The config file's mode.
    pub config: &'static str,
    /// Set by `mx6gate mode` to something other than the config's.
    pub overridden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeferView {
    pub explain_by: u8,
    pub explain_window_seconds: u64,
    /// "reset" or "defer": what a source explained within the window gets.
    pub repeat: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponderView {
    /// Served by a running daemon (the daemon owns the responder).
    pub up: bool,
    pub listen: SocketAddr,
    pub code: u16,
    pub enhanced_code: String,
    pub greeting: &'static str,
    /// "pass" or "refuse": what defer mode does while it is down.
    pub down_policy: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub partners_dir: PathBuf,
    /// Why (part of) the store is refused; the gate then keeps its last
    /// good allowlist.
    pub refused: Vec<String>,
    /// Entries skipped with a reason (not regular files).
    pub skipped: Vec<String>,
    /// Partner files read.
    pub files: usize,
    pub partners_active: usize,
    pub partners_expired: usize,
    /// Distinct prefixes of the active partners.
    pub prefixes: usize,
}

/// Counter name → value, in the programs' order (a JSON object).
#[derive(Debug, Clone, Default)]
pub struct Counts(pub Vec<(&'static str, u64)>);

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// XDP: packets (SYNs to a protected port by action, and the rest).
    pub xdp: Counts,
    /// sk_lookup: connections.
    pub sk_lookup: Counts,
    /// Non-partner SYN reports to the daemon.
    pub report: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedView {
    /// Sources within the explain window now.
    pub live: u64,
    /// Records in the map, and its capacity.
    pub entries: u64,
    pub capacity: u32,
    /// Sources recorded since load.
    pub recorded: u64,
}

/// The config asks for map sizes the loaded maps do not have (they keep
/// theirs until a detach and a restart).
#[derive(Debug, Clone, Serialize)]
pub struct PendingSizes {
    pub allow_entries: u32,
    pub max_partners: u32,
}

/// The loaded maps, against the store.
#[derive(Debug, Clone, Serialize)]
pub struct MapsView {
    pub prefixes: usize,
    pub capacity: u32,
    pub partner_capacity: u32,
    /// Store prefixes not in the maps, and map prefixes not in the store.
    pub missing: usize,
    pub extra: usize,
    /// The maps disagree with a store read whole (`mx6gate sync` heals).
    pub mismatch: bool,
    /// The store holds no file while the maps hold prefixes: kept as a
    /// vanished store, not read as "no partners".
    pub vacant: bool,
    pub pending_sizes: Option<PendingSizes>,
    pub counters: Counters,
    /// None for a gate pinned by an mx6gate from before the records.
    pub explained: Option<ExplainedView>,
}

/// Everything `mx6gate status` shows, observed once.
#[derive(Debug, Clone, Serialize)]
pub struct GateView {
    pub config: PathBuf,
    /// The config's own warnings (valid, but probably not meant).
    pub warnings: Vec<String>,
    pub loaded: bool,
    pub pin_path: PathBuf,
    /// The daemon of this state dir, if one runs.
    pub daemon_pid: Option<i32>,
    /// Another daemon (another config or state dir) holds this gate:
    /// `{pid}` (pid null when /proc/locks does not say).
    pub foreign_owner: Option<ForeignOwner>,
    pub mode: ModeView,
    pub ports: Vec<u16>,
    pub defer: DeferView,
    pub responder: ResponderView,
    /// The metrics endpoint while the daemon runs (None: disabled or no
    /// daemon).
    pub metrics: Option<SocketAddr>,
    pub interfaces: Vec<InterfaceView>,
    pub sk_lookup: SkLookupView,
    /// Protected interfaces without IPv4: senders turned away would be
    /// stranded.
    pub stranding_warning: Option<String>,
    pub store: StoreView,
    /// None when no gate is loaded.
    pub maps: Option<MapsView>,
    /// Partners by domain: each SPF domain's enforced, held and failing
    /// state.
    pub spf: SpfView,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForeignOwner {
    pub pid: Option<i32>,
}

impl GateView {
    pub fn observe(ctx: &Ctx) -> Result<GateView> {
        let cfg = &ctx.cfg;
        let layout = PinLayout::new(&cfg.pin_path);
        let maps = GateMaps::open_if_loaded(&cfg.pin_path)?;
        let running = ctx.state.running_daemon();
        let foreign_owner = match pinlock::holder(&cfg.pin_path) {
            Ok(Some(h)) if running.is_none() || h.pid.is_some_and(|p| Some(p) != running) => {
                Some(ForeignOwner { pid: h.pid })
            }
            _ => None,
        };
        let mode = match reconcile::effective_mode(cfg, &ctx.state) {
            Ok(m) => ModeView {
                effective: Some(m.as_str()),
                config: cfg.mode.as_str(),
                overridden: ctx
                    .state
                    .mode_override()
                    .ok()
                    .flatten()
                    .is_some_and(|o| o != cfg.mode),
                error: None,
            },
            Err(e) => ModeView {
                effective: None,
                config: cfg.mode.as_str(),
                overridden: false,
                error: Some(format!("{e:#}")),
            },
        };
        let d = &cfg.defer;
        let r = &cfg.responder;
        let interfaces: Vec<InterfaceView> = attachments(&layout, &ctx.state.path, &cfg.interfaces)
            .into_iter()
            .map(|a| {
                let (link, link_error) = if a.attached {
                    match link_ids(&layout.xdp_link(&a.interface)) {
                        Ok(ids) => (Some(ids), None),
                        Err(e) => (None, Some(e)),
                    }
                } else {
                    (None, None)
                };
                InterfaceView {
                    attachment: a,
                    link,
                    link_error,
                }
            })
            .collect();
        let sk_link = link_ids(&layout.sk_lookup_link()).ok();
        // Configured ∪ attached: an interface attached by an older config
        // is protected too.
        let protected: Vec<String> = interfaces
            .iter()
            .map(|i| i.attachment.interface.clone())
            .collect();
        let stranding_warning = crate::iface::ipv4_addresses().ok().and_then(|addrs| {
            crate::iface::stranding_warning(&crate::iface::without_ipv4(&protected, &addrs))
        });

        let (store, refused) = Store::load_lenient(&cfg.partners_dir);
        let today = today_utc();
        let active = store
            .partners
            .values()
            .filter(|p| p.is_active(today))
            .count();
        // What the policy asks for: manual ∪ enforced SPF sets.
        let spf_state = crate::spf::SpfState::load(&ctx.state.path);
        let wanted: BTreeSet<Ipv6Net> = crate::policy::allowed(
            &store,
            spf_state.as_ref().unwrap_or(&Default::default()),
            today,
        )
        .into_iter()
        .map(|a| a.net)
        .collect();
        let spf = SpfView::observe(&store, spf_state);
        let maps_view = match &maps {
            None => None,
            Some(maps) => {
                let in_map: BTreeSet<Ipv6Net> =
                    crate::allowlist::entries(maps)?.into_keys().collect();
                let vacant = refused.is_empty() && store.files == 0 && !in_map.is_empty();
                let explained = match &maps.explain {
                    Some(x) => {
                        let (entries, live) =
                            x.count(&maps.read_defer()?, crate::explain::monotonic_now_ns())?;
                        Some(ExplainedView {
                            live,
                            entries,
                            capacity: x.explained_capacity,
                            recorded: maps.counter(mx6gate_common::Counter::Explained)?,
                        })
                    }
                    None => None,
                };
                let pending = maps.allow_capacity != cfg.maps.allow_entries
                    || maps.partner_capacity != cfg.maps.max_partners;
                Some(MapsView {
                    prefixes: in_map.len(),
                    capacity: maps.allow_capacity,
                    partner_capacity: maps.partner_capacity,
                    missing: wanted.difference(&in_map).count(),
                    extra: in_map.difference(&wanted).count(),
                    mismatch: refused.is_empty() && !vacant && in_map != wanted,
                    vacant,
                    pending_sizes: pending.then_some(PendingSizes {
                        allow_entries: cfg.maps.allow_entries,
                        max_partners: cfg.maps.max_partners,
                    }),
                    counters: Counters {
                        xdp: Counts(
                            maps.counters()?
                                .into_iter()
                                .map(|(c, n)| (c.as_str(), n))
                                .collect(),
                        ),
                        sk_lookup: Counts(
                            maps.sk_counters()?
                                .into_iter()
                                .map(|(c, n)| (c.as_str(), n))
                                .collect(),
                        ),
                        report: Counts(
                            maps.report_counters()?
                                .into_iter()
                                .map(|(c, n)| (c.as_str(), n))
                                .collect(),
                        ),
                    },
                    explained,
                })
            }
        };
        Ok(GateView {
            config: ctx.config_path.clone(),
            warnings: cfg.warnings(),
            loaded: maps.is_some(),
            pin_path: cfg.pin_path.clone(),
            daemon_pid: running,
            foreign_owner,
            mode,
            ports: cfg.ports.clone(),
            defer: DeferView {
                explain_by: d.explain_by,
                explain_window_seconds: d.explain_window.as_secs(),
                repeat: d.repeat.as_str(),
            },
            responder: ResponderView {
                up: running.is_some(),
                listen: SocketAddr::V6(r.listen),
                code: r.code,
                enhanced_code: r.enhanced_code.clone(),
                greeting: r.greeting.as_str(),
                down_policy: r.down_policy.as_str(),
            },
            metrics: running.and(cfg.metrics.listen),
            interfaces,
            sk_lookup: SkLookupView {
                attached: sk_link.is_some(),
                link: sk_link,
            },
            stranding_warning,
            store: StoreView {
                partners_dir: cfg.partners_dir.clone(),
                refused: refused.iter().map(ToString::to_string).collect(),
                skipped: store.skipped.clone(),
                files: store.files,
                partners_active: active,
                partners_expired: store.partners.len() - active,
                prefixes: wanted.len(),
            },
            maps: maps_view,
            spf,
        })
    }
}

/// One partner as `partner list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerView {
    pub name: String,
    /// Objects, so that where a prefix came from can be added beside it.
    pub prefixes: Vec<PrefixView>,
    pub note: Option<String>,
    /// The last day allowed (UTC), or null: never expires.
    pub expires: Option<chrono::NaiveDate>,
    /// false once expired: then treated as a stranger.
    pub active: bool,
    /// SYNs let in since the partner got its counter slot; null without a
    /// loaded gate, a slot, or when unreadable.
    pub hits: Option<u64>,
    /// The counter could not be read (a loaded gate, a slot).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hits_unreadable: bool,
    /// The SPF domains the partner names (empty: none).
    pub spf: Vec<SpfDomainView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefixView {
    pub prefix: Ipv6Net,
    /// "manual", or "spf:DOMAIN" (the domain the partner names).
    pub origin: String,
    /// For SPF prefixes: the record (domain) and term that listed it, the
    /// host whose AAAA it is (`a`/`mx`), and when the set was last
    /// confirmed by a complete expansion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<chrono::DateTime<chrono::Utc>>,
}

/// One SPF domain's state, as `status` and `partner list` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SpfDomainView {
    pub domain: String,
    pub partner: String,
    /// Prefixes enforced (the last good set), and when a complete
    /// expansion last confirmed them (null: never expanded).
    pub prefixes: usize,
    pub ipv6: bool,
    pub refreshed: Option<chrono::DateTime<chrono::Utc>>,
    pub ttl: Option<u64>,
    /// A candidate held for `partner refresh NAME --accept`.
    pub held: Option<HeldView>,
    /// Refreshes failing in a row (the last good set is kept meanwhile).
    pub failing: Option<crate::spf::state::Failing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldView {
    pub since: chrono::DateTime<chrono::Utc>,
    pub reason: String,
    /// What accepting would add and remove.
    pub added: Vec<Ipv6Net>,
    pub removed: Vec<Ipv6Net>,
}

/// Every SPF domain the store names.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SpfView {
    /// The SPF state file could not be read: the gate keeps what it has.
    pub error: Option<String>,
    pub domains: Vec<SpfDomainView>,
}

impl SpfView {
    pub fn observe(store: &Store, state: Result<crate::spf::SpfState>) -> SpfView {
        let (state, error) = match state {
            Ok(s) => (s, None),
            Err(e) => (Default::default(), Some(format!("{e:#}"))),
        };
        let mut domains = Vec::new();
        for p in store.partners.values() {
            for d in &p.spf {
                let ds = state.domain.get(d);
                let good = ds.and_then(|s| s.last_good.as_ref());
                let enforced = good.map_or(&[][..], |g| &g.prefixes);
                let held = ds.and_then(|s| s.held.as_ref()).map(|h| {
                    let diff = crate::spf::refresh::diff(enforced, &h.prefixes);
                    HeldView {
                        since: h.since,
                        reason: h.reason.clone(),
                        added: diff.added.iter().map(|p| p.prefix).collect(),
                        removed: diff.removed.iter().map(|p| p.prefix).collect(),
                    }
                });
                domains.push(SpfDomainView {
                    domain: d.clone(),
                    partner: p.name.clone(),
                    prefixes: enforced.len(),
                    ipv6: !enforced.is_empty(),
                    refreshed: good.map(|g| g.refreshed),
                    ttl: good.map(|g| g.ttl),
                    held,
                    failing: ds.and_then(|s| s.failing.clone()),
                });
            }
        }
        SpfView { error, domains }
    }
}

/// The partner store as read (leniently: a refused file is named, the
/// readable ones listed), with each partner's hits from the loaded gate.
#[derive(Debug, Clone, Serialize)]
pub struct PartnersView {
    pub partners_dir: PathBuf,
    pub refused: Vec<String>,
    pub skipped: Vec<String>,
    pub gate_loaded: bool,
    pub partners: Vec<PartnerView>,
}

impl PartnersView {
    pub fn observe(ctx: &Ctx) -> Result<PartnersView> {
        let (store, refused) = Store::load_lenient(&ctx.cfg.partners_dir);
        let maps = GateMaps::open_if_loaded(&ctx.cfg.pin_path)?;
        let ids = ctx.state.load_ids().unwrap_or_default();
        let today = today_utc();
        let spf_state = crate::spf::SpfState::load(&ctx.state.path);
        let state = spf_state.as_ref().cloned().unwrap_or_default();
        let spf = SpfView::observe(&store, spf_state);
        let partners = store
            .partners
            .values()
            .map(|p| {
                let mut prefixes: Vec<PrefixView> = p
                    .prefixes
                    .iter()
                    .map(|&prefix| PrefixView {
                        prefix,
                        origin: "manual".into(),
                        record: None,
                        term: None,
                        via: None,
                        refreshed: None,
                    })
                    .collect();
                for d in &p.spf {
                    if let Some(g) = state.domain.get(d).and_then(|s| s.last_good.as_ref()) {
                        prefixes.extend(g.prefixes.iter().map(|sp| PrefixView {
                            prefix: sp.prefix,
                            origin: format!("spf:{d}"),
                            record: Some(sp.domain.clone()),
                            term: Some(sp.term.clone()),
                            via: sp.via.clone(),
                            refreshed: Some(g.refreshed),
                        }));
                    }
                }
                let (hits, hits_unreadable) = match (&maps, ids.get(&p.name)) {
                    (Some(m), Some(id)) => match m.partner_hits(id) {
                        Ok(h) => (Some(h), false),
                        Err(_) => (None, true),
                    },
                    _ => (None, false),
                };
                PartnerView {
                    name: p.name.clone(),
                    prefixes,
                    spf: spf
                        .domains
                        .iter()
                        .filter(|d| d.partner == p.name)
                        .cloned()
                        .collect(),
                    note: p.note.clone(),
                    expires: p.expires,
                    active: p.is_active(today),
                    hits,
                    hits_unreadable,
                }
            })
            .collect();
        Ok(PartnersView {
            partners_dir: ctx.cfg.partners_dir.clone(),
            refused: refused.iter().map(ToString::to_string).collect(),
            skipped: store.skipped.clone(),
            gate_loaded: maps.is_some(),
            partners,
        })
    }
}
