//! One view of the gate: what is pinned, attached, enforced and counted,
//! read from the kernel, the state dir and the store without changing
//! any of them. `mx6gate status` renders a [`GateView`] as text and as
//! `mx6gate.status/1` JSON. Its kernel half, [`PinnedView`] (links,
//! counters, what the CONFIG map enforces, the maps' fill), is what the
//! metrics collector renders on every scrape, read by the same code;
//! doctor shares the other pieces ([`attachments`],
//! [`crate::gate::is_bpffs`], [`crate::config::DownPolicy::consequence`]),
//! so that the three never disagree about, say, which interfaces are
//! protected or what a counter says.
//!
//! Diagnosis keeps working whatever is broken: a refused partner store or
//! a garbled mode file is a field of the view, not an error; only a gate
//! whose maps cannot be read is.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::programs::links::{FdLink, PinnedLink};
use ipnet::Ipv6Net;
use mx6gate_common::{map_names, Counter, Mode};
use serde::{ser::SerializeMap, Serialize, Serializer};

use crate::{
    context::Ctx,
    gate::{AttachRecord, PinLayout},
    maps::{ExplainMaps, GateMaps},
    pinlock, reconcile,
    state::StateDir,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceView {
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The XDP link's ids when attached (None: not attached, or unreadable
    /// and then `link_error` says why).
    pub link: Option<LinkIds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// XDP: packets (SYNs to a protected port by action, and the rest).
    pub xdp: Counts,
    /// sk_lookup: connections.
    pub sk_lookup: Counts,
    /// Non-partner SYN reports to the daemon.
    pub report: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedView {
    /// Sources within the explain window now.
    pub live: u64,
    /// Records in the map, and its capacity.
    pub entries: u64,
    pub capacity: u32,
    /// Sources recorded since load.
    pub recorded: u64,
}

impl Counters {
    /// Every counter the programs keep, summed over CPUs.
    pub fn read(maps: &GateMaps) -> Result<Counters> {
        let named =
            |v: Vec<(Counter, u64)>| Counts(v.into_iter().map(|(c, n)| (c.as_str(), n)).collect());
        Ok(Counters {
            xdp: named(maps.counters()?),
            sk_lookup: named(maps.sk_counters()?),
            report: named(maps.report_counters()?),
        })
    }

    /// (program, counters) in the programs' order: xdp, sk_lookup, then
    /// the reports.
    pub fn by_program(&self) -> [(&'static str, &Counts); 3] {
        [
            ("xdp", &self.xdp),
            ("sk_lookup", &self.sk_lookup),
            ("report", &self.report),
        ]
    }
}

impl ExplainedView {
    fn read(
        maps: &GateMaps,
        x: &ExplainMaps,
        (entries, live): (u64, u64),
    ) -> Result<ExplainedView> {
        Ok(ExplainedView {
            live,
            entries,
            capacity: x.explained_capacity,
            recorded: maps.counter(Counter::Explained)?,
        })
    }
}

/// What the programs enforce, from the CONFIG map: the mode and the
/// down policy the daemon or the last changing command wrote (the mode
/// file and the config say what they should be: [`ModeView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnforcedView {
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
    /// "pass" or "refuse".
    pub responder_down_policy: &'static str,
}

fn mode_name<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// Entries and capacity of one sized map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// The allowlist as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AllowFill {
    /// Prefixes the programs match (each counted once, whichever map
    /// holds it).
    pub prefixes: u64,
    pub maps: Vec<MapFill>,
}

/// Longest the counts of [`ScrapeCache`] are reused.
const FILL_MAX_AGE: Duration = Duration::from_secs(60);

/// What a reader that comes back every few seconds (the metrics
/// collector) keeps between reads: counting the allowlist maps walks
/// every key, and counting EXPLAINED reads every record.
#[derive(Debug, Default)]
pub struct ScrapeCache {
    /// The allowlist counts only change when the controller bumps
    /// CONFIG.allow_generation, so they are kept per generation, and for
    /// at most FILL_MAX_AGE (the generation does not see edits made
    /// around the controller, e.g. with bpftool).
    fill: Mutex<Option<(u32, Instant, AllowFill)>>,
    /// EXPLAINED's (entries, live), at most once per FILL_MAX_AGE.
    explained: Mutex<Option<(Instant, (u64, u64))>>,
}

/// How much of the maps a reader wants.
#[derive(Debug, Clone, Copy)]
pub enum Depth<'a> {
    /// What `status` shows: counters, the CONFIG entry, EXPLAINED
    /// counted now; neither the per-map fill nor the partner hits (the
    /// partner ids file is the partner list's business: a garbled one
    /// must not stop `status`).
    Status,
    /// Everything, with the reader's caches: the metrics collector.
    Scrape(&'a ScrapeCache),
}

/// The maps of a loaded gate, as the kernel holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedMaps {
    pub counters: Counters,
    pub enforced: EnforcedView,
    pub explained: Option<ExplainedView>,
    /// (partner name, SYNs let in) for each partner with a counter slot;
    /// None at [`Depth::Status`].
    pub partner_hits: Option<Vec<(String, u64)>>,
    /// None at [`Depth::Status`].
    pub fill: Option<AllowFill>,
}

impl PinnedMaps {
    pub fn observe(maps: &GateMaps, state: &StateDir, depth: Depth<'_>) -> Result<PinnedMaps> {
        let counters = Counters::read(maps)?;
        let cfg = maps.read_config()?;
        let enforced = EnforcedView {
            mode: Mode::from_u32(cfg.mode),
            responder_down_policy: if cfg.responder_down_refuse != 0 {
                "refuse"
            } else {
                "pass"
            },
        };
        let cache = match depth {
            Depth::Status => None,
            Depth::Scrape(c) => Some(c),
        };
        let explained = match &maps.explain {
            Some(x) => Some(ExplainedView::read(
                maps,
                x,
                explained_count(maps, x, cache)?,
            )?),
            None => None,
        };
        let (partner_hits, fill) = match cache {
            None => (None, None),
            Some(cache) => {
                let ids = state.load_ids()?;
                let mut hits = Vec::new();
                for (name, id) in &ids.ids {
                    if *id < maps.partner_capacity {
                        hits.push((name.clone(), maps.partner_hits(*id)?));
                    }
                }
                let mut fill = allow_fill(maps, cfg.allow_generation, cache)?;
                fill.maps.push(MapFill {
                    map: map_names::PARTNER_HITS,
                    entries: ids.ids.len() as u64,
                    capacity: u64::from(maps.partner_capacity),
                });
                if let (Some(x), Some(e)) = (&maps.explain, &explained) {
                    fill.maps.push(MapFill {
                        map: map_names::EXPLAINED,
                        entries: e.entries,
                        capacity: u64::from(x.explained_capacity),
                    });
                }
                (Some(hits), Some(fill))
            }
        };
        Ok(PinnedMaps {
            counters,
            enforced,
            explained,
            partner_hits,
            fill,
        })
    }
}

fn explained_count(
    maps: &GateMaps,
    x: &ExplainMaps,
    cache: Option<&ScrapeCache>,
) -> Result<(u64, u64)> {
    let count = || x.count(&maps.read_defer()?, crate::explain::monotonic_now_ns());
    let Some(cache) = cache else {
        return count();
    };
    let mut c = cache.explained.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, n)) = &*c {
        if at.elapsed() < FILL_MAX_AGE {
            return Ok(*n);
        }
    }
    let n = count()?;
    *c = Some((Instant::now(), n));
    Ok(n)
}

fn allow_fill(maps: &GateMaps, generation: u32, cache: &ScrapeCache) -> Result<AllowFill> {
    let mut c = cache.fill.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match &*c {
        Some((g, at, fill)) if *g == generation && at.elapsed() < FILL_MAX_AGE => fill.clone(),
        _ => {
            let fill = count_allowlist(maps)?;
            // Odd: an update is under way, the counts may be half-way.
            *c = generation
                .is_multiple_of(2)
                .then(|| (generation, Instant::now(), fill.clone()));
            fill
        }
    })
}

/// Entries of the three allowlist maps (keys only, but the /32 table's values).
fn count_allowlist(maps: &GateMaps) -> Result<AllowFill> {
    // A /32's longest prefix sits inline in its SLASH32 value, in no other map.
    let (slash32, inline) = crate::allowlist::table_fill(maps);
    let long = maps.long.keys().try_fold(0u64, |n, k| k.map(|_| n + 1))?;
    let (mut trie, mut short) = (0u64, 0u64);
    for k in maps.allow.keys() {
        trie += 1;
        // Prefixes up to /32 live in the trie only; longer ones in the
        // trie are copies of LONG_PREFIXES entries (crowded /32s).
        if k?.prefix_len() <= 32 {
            short += 1;
        }
    }
    let cap = u64::from(maps.allow_capacity);
    let fill = |map, entries| MapFill {
        map,
        entries,
        capacity: cap,
    };
    Ok(AllowFill {
        prefixes: long + short + inline,
        maps: vec![
            fill(map_names::SLASH32, slash32),
            fill(map_names::LONG_PREFIXES, long),
            fill(map_names::ALLOW, trie),
        ],
    })
}

/// The pinned gate as the kernel holds it, without the config's or the
/// store's side: [`GateView`] is built on it, and the metrics collector
/// renders it on every scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedView {
    /// Whether a gate is pinned at all.
    pub loaded: bool,
    /// The protected interfaces (attached ∪ configured) with their links.
    pub interfaces: Vec<InterfaceView>,
    pub sk_lookup: SkLookupView,
    /// None when no gate is loaded, or its maps could not be read.
    pub maps: Option<PinnedMaps>,
}

impl PinnedView {
    /// The links: what is pinned and attached, read from the pins alone
    /// (the maps are [`PinnedMaps::observe`]'s).
    pub fn observe_links(
        layout: &PinLayout,
        state_dir: &Path,
        configured: &[String],
    ) -> PinnedView {
        let interfaces = attachments(layout, state_dir, configured)
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
        PinnedView {
            loaded: layout.is_loaded(),
            interfaces,
            sk_lookup: SkLookupView {
                attached: sk_link.is_some(),
                link: sk_link,
            },
            maps: None,
        }
    }
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
    /// What the CONFIG map enforces now (added to mx6gate.status/1 in
    /// place: a new field only).
    pub enforced: EnforcedView,
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
        let pinned = PinnedView::observe_links(&layout, &ctx.state.path, &cfg.interfaces);
        let pinned_maps = match &maps {
            Some(m) => Some(PinnedMaps::observe(m, &ctx.state, Depth::Status)?),
            None => None,
        };
        let PinnedView {
            interfaces,
            sk_lookup,
            ..
        } = pinned;
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
                let PinnedMaps {
                    counters,
                    enforced,
                    explained,
                    ..
                } = pinned_maps.expect("read with the maps");
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
                    counters,
                    enforced,
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
            sk_lookup,
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
