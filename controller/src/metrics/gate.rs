//! What the pinned gate holds, read from the kernel at scrape time (so no
//! polling loop, and a scrape shows the maps as they are, whoever changed
//! them): the programs' per-CPU counters summed over CPUs, the per-partner
//! hits, the allowlist maps' fill, the mode, and which links are pinned.
//!
//! Reading ([`GateCollector::snapshot`]) and writing the exposition text
//! ([`GateSnapshot::encode`]) are apart, so the text is tested without a
//! kernel.
use std::{
    fmt,
    path::Path,
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Result;
use mx6gate_common::{Counter, Mode};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use tracing::warn;

use super::{counter, counter_family, gauge, gauge_family};
use crate::{
    gate::PinLayout,
    maps::GateMaps,
    observe::{attachments, Attachment},
    state::StateDir,
};

/// Longest the allowlist counts are reused while the generation stays.
const FILL_MAX_AGE: Duration = Duration::from_secs(60);

/// Every counter the programs keep, with the program that keeps it. The
/// names are `Counter::as_str`, the table `mx6gate status` prints too; a
/// variant added to either list is exported without a change here.
pub fn counter_table() -> impl Iterator<Item = (&'static str, Counter)> {
    Counter::ALL
        .into_iter()
        .map(|c| ("xdp", c))
        .chain(Counter::SK_ALL.into_iter().map(|c| ("sk_lookup", c)))
        // The programs' non-partner SYN reports: sent to the ring buffer, or
        // over the kernel's rate budget (counted, not sent).
        .chain(Counter::REPORT_ALL.into_iter().map(|c| ("report", c)))
}

/// Entries and capacity of one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// The allowlist as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowFill {
    /// Prefixes the programs match (each counted once, whichever map
    /// holds it).
    pub prefixes: u64,
    pub maps: Vec<MapFill>,
}

/// Everything the collector reads in one scrape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateSnapshot {
    /// Whether a gate is pinned at all; the rest is empty when not.
    pub loaded: bool,
    /// (program, action, count) for every counter in [`counter_table`].
    pub decisions: Vec<(&'static str, &'static str, u64)>,
    /// (partner name, SYNs let in).
    pub partner_hits: Vec<(String, u64)>,
    pub allow: Option<AllowFill>,
    /// The mode the programs enforce (from the CONFIG map).
    pub mode: Option<Mode>,
    /// What defer mode does while no responder socket is registered.
    pub down_refuse: Option<bool>,
    pub xdp: Vec<Attachment>,
    pub sk_lookup_attached: bool,
    /// Defer mode's explanation records; None for a gate pinned before them.
    pub explained: Option<ExplainedFill>,
}

/// Defer mode's explanation records (`crate::explain`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExplainedFill {
    /// Sources recorded since the gate was loaded.
    pub recorded: u64,
    /// Records in the map, and those within the window now.
    pub entries: u64,
    pub live: u64,
    pub capacity: u64,
}

impl GateSnapshot {
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        gauge(
            enc,
            "gate_loaded",
            "1 if the gate's programs and maps are pinned (loaded), 0 if not.",
            i64::from(self.loaded),
        )?;
        gauge_family(
            enc,
            "xdp_attached",
            "1 for each interface with a pinned XDP link, labelled with how it is attached (native, generic); 0 with xdp_mode=\"none\" for a configured interface that is not attached.",
            self.xdp.iter().map(|a| {
                (
                    [
                        ("interface", a.interface.clone()),
                        ("xdp_mode", a.xdp_mode.clone()),
                    ],
                    i64::from(a.attached),
                )
            }),
        )?;
        gauge(
            enc,
            "sk_lookup_attached",
            "1 if the sk_lookup program's link is pinned in this network namespace.",
            i64::from(self.sk_lookup_attached),
        )?;
        if !self.loaded {
            return Ok(());
        }
        counter_family(
            enc,
            "decisions",
            "What the programs did, since the gate was loaded. program=\"xdp\" counts packets: partner_allowed, monitored (would act), dropped, reset, deferred are SYNs to a protected port; passed_other is every other packet, unparsed the IPv6 packets XDP passed to the kernel for sk_lookup to judge. program=\"sk_lookup\" counts connections to a protected port as the kernel looks up their listener.",
            self.decisions
                .iter()
                .map(|(p, a, n)| ([("program", *p), ("action", *a)], *n)),
        )?;
        counter_family(
            enc,
            "partner_syns",
            "SYNs from a partner's prefixes let through by XDP, per partner (store name), since the partner got its counter slot.",
            self.partner_hits
                .iter()
                .map(|(name, n)| ([("partner", name.as_str())], *n)),
        )?;
        if let Some(mode) = self.mode {
            gauge_family(
                enc,
                "mode",
                "1 for the mode the programs enforce now (monitor, defer, reset, drop), 0 for the others.",
                Mode::ALL
                    .iter()
                    .map(|m| ([("mode", m.as_str())], i64::from(*m == mode))),
            )?;
        }
        if let Some(refuse) = self.down_refuse {
            gauge_family(
                enc,
                "responder_down_policy",
                "1 for what defer mode does while no responder socket is registered (pass: to the MTA; refuse: RST), 0 for the other.",
                [("pass", !refuse), ("refuse", refuse)]
                    .into_iter()
                    .map(|(p, on)| ([("policy", p)], i64::from(on))),
            )?;
        }
        if let Some(x) = &self.explained {
            counter(
                enc,
                "explained_sources",
                "Defer mode: sources recorded as explained (handed the banner with no explain window running for them), since the gate was loaded. Their later connections within the window count as decisions action=\"escalated\" (reset) unless repeat = \"defer\".",
                x.recorded,
            )?;
            gauge(
                enc,
                "explained_sources_in_window",
                "Defer mode: sources explained within the explain window now (their next connection gets the reset, or the banner again with repeat = \"defer\"). Read at most once a minute.",
                x.live as i64,
            )?;
        }
        if let Some(allow) = &self.allow {
            gauge(
                enc,
                "allowlist_prefixes",
                "Partner prefixes in the allowlist maps (active partners only).",
                allow.prefixes as i64,
            )?;
            gauge_family(
                enc,
                "map_entries",
                "Entries in each sized map: the allowlist's SLASH32 (distinct /32s), LONG_PREFIXES (prefixes longer than /32) and ALLOW (trie), PARTNER_HITS (partner counter slots assigned), and EXPLAINED (defer mode's explanation records, read at most once a minute).",
                allow
                    .maps
                    .iter()
                    .map(|m| ([("map", m.map)], m.entries as i64)),
            )?;
            gauge_family(
                enc,
                "map_capacity",
                "max_entries of each sized map, as created (maps.allow_entries, maps.max_partners, maps.explained_entries).",
                allow
                    .maps
                    .iter()
                    .map(|m| ([("map", m.map)], m.capacity as i64)),
            )?;
            gauge_family(
                enc,
                "map_fill_ratio",
                "map_entries / map_capacity: at 1 the next `partner add` that needs the map is refused; for EXPLAINED (an LRU) the least recently explained source is forgotten and gets the banner once more.",
                allow.maps.iter().map(|m| {
                    (
                        [("map", m.map)],
                        m.entries as f64 / m.capacity.max(1) as f64,
                    )
                }),
            )?;
        }
        Ok(())
    }
}

/// Reads the pinned gate under `pin_path` on every scrape.
pub struct GateCollector {
    layout: PinLayout,
    state: StateDir,
    /// The configured interfaces (replaced on reload), so one that is
    /// configured but not attached shows as 0.
    interfaces: RwLock<Vec<String>>,
    /// Opened on first use and kept; dropped when the gate is gone (a
    /// detach) so the next scrape after a new load opens the new maps.
    maps: Mutex<Option<GateMaps>>,
    /// Counting the allowlist maps walks every key; the counts only change
    /// when the controller bumps CONFIG.allow_generation, so keep them per
    /// generation, and for at most FILL_MAX_AGE (the generation does not
    /// see edits made around the controller, e.g. with bpftool).
    fill_cache: Mutex<Option<(u32, Instant, AllowFill)>>,
    /// Counting EXPLAINED reads every record: at most once per FILL_MAX_AGE.
    explained_cache: Mutex<Option<(Instant, (u64, u64))>>,
}

impl fmt::Debug for GateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateCollector")
            .field("pin_path", &self.layout.root)
            .field("state_dir", &self.state.path)
            .finish_non_exhaustive()
    }
}

impl GateCollector {
    pub fn new(pin_path: &Path, state_dir: &Path, interfaces: Vec<String>) -> GateCollector {
        GateCollector {
            layout: PinLayout::new(pin_path),
            state: StateDir::new(state_dir),
            interfaces: RwLock::new(interfaces),
            maps: Mutex::new(None),
            fill_cache: Mutex::new(None),
            explained_cache: Mutex::new(None),
        }
    }

    pub fn set_interfaces(&self, interfaces: Vec<String>) {
        *self.interfaces.write().unwrap_or_else(|e| e.into_inner()) = interfaces;
    }

    /// Read everything; what cannot be read is left out and logged.
    pub fn snapshot(&self) -> GateSnapshot {
        let mut s = GateSnapshot {
            loaded: self.layout.is_loaded(),
            xdp: self.attachments(),
            sk_lookup_attached: self.layout.sk_lookup_link().exists(),
            ..GateSnapshot::default()
        };
        let mut guard = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if !s.loaded {
            *guard = None;
            return s;
        }
        if guard.is_none() {
            match GateMaps::open(&self.layout.root) {
                Ok(m) => *guard = Some(m),
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "metrics: cannot open the gate's maps"
                    );
                    return s;
                }
            }
        }
        let maps = guard.as_ref().expect("opened above");
        if let Err(e) = self.read_maps(maps, &mut s) {
            warn!(
                error = format!("{e:#}"),
                "metrics: reading the gate's maps failed"
            );
            // Maybe replaced under us (detach and load): reopen next time.
            *guard = None;
        }
        s
    }

    fn read_maps(&self, maps: &GateMaps, s: &mut GateSnapshot) -> Result<()> {
        for (program, c) in counter_table() {
            s.decisions.push((program, c.as_str(), maps.counter(c)?));
        }
        let cfg = maps.read_config()?;
        s.mode = Some(Mode::from_u32(cfg.mode));
        s.down_refuse = Some(cfg.responder_down_refuse != 0);
        let ids = self.state.load_ids()?;
        for (name, id) in &ids.ids {
            if *id < maps.partner_capacity {
                s.partner_hits.push((name.clone(), maps.partner_hits(*id)?));
            }
        }
        let mut allow = self.allow_fill(maps, cfg.allow_generation, ids.ids.len())?;
        if let Some(x) = &maps.explain {
            let (entries, live) = self.explained_count(maps, x)?;
            allow.maps.push(MapFill {
                map: mx6gate_common::map_names::EXPLAINED,
                entries,
                capacity: u64::from(x.explained_capacity),
            });
            s.explained = Some(ExplainedFill {
                recorded: maps.counter(Counter::Explained)?,
                entries,
                live,
                capacity: u64::from(x.explained_capacity),
            });
        }
        s.allow = Some(allow);
        Ok(())
    }

    fn explained_count(&self, maps: &GateMaps, x: &crate::maps::ExplainMaps) -> Result<(u64, u64)> {
        let mut cache = self
            .explained_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = &*cache {
            if at.elapsed() < FILL_MAX_AGE {
                return Ok(*n);
            }
        }
        let n = x.count(&maps.read_defer()?, crate::explain::monotonic_now_ns())?;
        *cache = Some((Instant::now(), n));
        Ok(n)
    }

    fn allow_fill(&self, maps: &GateMaps, generation: u32, partners: usize) -> Result<AllowFill> {
        let mut cache = self.fill_cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut fill = match &*cache {
            Some((g, at, fill)) if *g == generation && at.elapsed() < FILL_MAX_AGE => fill.clone(),
            _ => {
                let fill = count_allowlist(maps)?;
                // Odd: an update is under way, the counts may be half-way.
                *cache = generation
                    .is_multiple_of(2)
                    .then(|| (generation, Instant::now(), fill.clone()));
                fill
            }
        };
        fill.maps.push(MapFill {
            map: mx6gate_common::map_names::PARTNER_HITS,
            entries: partners as u64,
            capacity: u64::from(maps.partner_capacity),
        });
        Ok(fill)
    }

    fn attachments(&self) -> Vec<Attachment> {
        let configured = self.interfaces.read().unwrap_or_else(|e| e.into_inner());
        attachments(&self.layout, &self.state.path, &configured)
    }
}

/// Entries of the three allowlist maps (keys only, but SLASH32's values).
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
    use mx6gate_common::map_names as n;
    Ok(AllowFill {
        prefixes: long + short + inline,
        maps: vec![
            MapFill {
                map: n::SLASH32,
                entries: slash32,
                capacity: cap,
            },
            MapFill {
                map: n::LONG_PREFIXES,
                entries: long,
                capacity: cap,
            },
            MapFill {
                map: n::ALLOW,
                entries: trie,
                capacity: cap,
            },
        ],
    })
}

impl Collector for GateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.snapshot().encode(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug)]
    struct Fixed(GateSnapshot);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            self.0.encode(&mut encoder)
        }
    }

    fn text(s: GateSnapshot) -> String {
        let mut r = Registry::with_prefix("mx6gate");
        r.register_collector(Box::new(Fixed(s)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        out
    }

    fn loaded() -> GateSnapshot {
        GateSnapshot {
            loaded: true,
            decisions: counter_table()
                .enumerate()
                .map(|(i, (p, c))| (p, c.as_str(), i as u64 * 10))
                .collect(),
            partner_hits: vec![("example-isp".into(), 7), ("odd \"name\"".into(), 0)],
            allow: Some(AllowFill {
                prefixes: 3,
                maps: vec![
                    MapFill {
                        map: "SLASH32",
                        entries: 2,
                        capacity: 16,
                    },
                    MapFill {
                        map: "PARTNER_HITS",
                        entries: 0,
                        capacity: 0,
                    },
                ],
            }),
            mode: Some(Mode::Defer),
            down_refuse: Some(false),
            xdp: vec![
                Attachment {
                    interface: "eth0".into(),
                    xdp_mode: "native".into(),
                    attached: true,
                },
                Attachment {
                    interface: "eth1".into(),
                    xdp_mode: "none".into(),
                    attached: false,
                },
            ],
            sk_lookup_attached: true,
            explained: Some(ExplainedFill {
                recorded: 12,
                entries: 9,
                live: 5,
                capacity: 1024,
            }),
        }
    }

    #[test]
    fn every_counter_is_exported_under_its_program() {
        let t = text(loaded());
        let mut n = 0;
        for (i, (program, c)) in counter_table().enumerate() {
            let line = format!(
                "mx6gate_decisions_total{{program=\"{program}\",action=\"{}\"}} {}\n",
                c.as_str(),
                i * 10
            );
            assert!(t.contains(&line), "missing {line:?} in\n{t}");
            n += 1;
        }
        assert_eq!(
            n,
            Counter::ALL.len() + Counter::SK_ALL.len() + Counter::REPORT_ALL.len()
        );
        // One header per family, not per sample.
        assert_eq!(
            t.matches("# TYPE mx6gate_decisions_total counter\n")
                .count(),
            1
        );
        assert_eq!(t.matches("# HELP mx6gate_decisions_total ").count(), 1);
    }

    #[test]
    fn text_exposition_of_a_loaded_gate() {
        let t = text(loaded());
        for line in [
            "# TYPE mx6gate_gate_loaded gauge\nmx6gate_gate_loaded 1\n",
            "mx6gate_xdp_attached{interface=\"eth0\",xdp_mode=\"native\"} 1\n",
            "mx6gate_xdp_attached{interface=\"eth1\",xdp_mode=\"none\"} 0\n",
            "mx6gate_sk_lookup_attached 1\n",
            "# TYPE mx6gate_partner_syns_total counter\n",
            "mx6gate_partner_syns_total{partner=\"example-isp\"} 7\n",
            // Label values are escaped.
            "mx6gate_partner_syns_total{partner=\"odd \\\"name\\\"\"} 0\n",
            "mx6gate_mode{mode=\"monitor\"} 0\n",
            "mx6gate_mode{mode=\"defer\"} 1\n",
            "mx6gate_mode{mode=\"drop\"} 0\n",
            "mx6gate_responder_down_policy{policy=\"pass\"} 1\n",
            "mx6gate_responder_down_policy{policy=\"refuse\"} 0\n",
            "mx6gate_allowlist_prefixes 3\n",
            "mx6gate_map_entries{map=\"SLASH32\"} 2\n",
            "mx6gate_map_capacity{map=\"SLASH32\"} 16\n",
            "mx6gate_map_fill_ratio{map=\"SLASH32\"} 0.125\n",
            // A zero capacity does not divide by zero.
            "mx6gate_map_fill_ratio{map=\"PARTNER_HITS\"} 0.0\n",
            "# TYPE mx6gate_explained_sources_total counter\n",
            "mx6gate_explained_sources_total 12\n",
            "mx6gate_explained_sources_in_window 5\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        // Every sample line is NAME{labels} VALUE or NAME VALUE, every name
        // has a HELP and a TYPE.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("mx6gate_"), "{l}");
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                t.contains(&format!("# TYPE {name} ")) || t.contains(&format!("# TYPE {family} ")),
                "no TYPE for {l}"
            );
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn unloaded_gate_shows_only_that() {
        let t = text(GateSnapshot {
            xdp: vec![Attachment {
                interface: "eth0".into(),
                xdp_mode: "none".into(),
                attached: false,
            }],
            ..GateSnapshot::default()
        });
        assert!(t.contains("mx6gate_gate_loaded 0\n"), "{t}");
        assert!(t.contains("mx6gate_xdp_attached{interface=\"eth0\",xdp_mode=\"none\"} 0\n"));
        assert!(t.contains("mx6gate_sk_lookup_attached 0\n"));
        assert!(!t.contains("mx6gate_decisions_total"), "{t}");
        assert!(!t.contains("mx6gate_mode"), "{t}");
    }
}
