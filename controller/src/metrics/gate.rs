//! What the pinned gate holds, read from the kernel at scrape time (so no
//! polling loop, and a scrape shows the maps as they are, whoever changed
//! them): the programs' per-CPU counters summed over CPUs, the per-partner
//! hits, the allowlist maps' fill, the mode, and which links are pinned.
//!
//! The reading is `observe`'s ([`PinnedView`], the kernel half of the
//! `GateView` that `status` renders), so a scrape and `status` never
//! disagree; this module keeps the maps open between scrapes and writes
//! the exposition text ([`encode`]), which is tested without a kernel.
use std::{
    fmt,
    path::Path,
    sync::{Mutex, RwLock},
};

use mx6gate_common::Mode;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use tracing::warn;

use super::{counter, counter_family, gauge, gauge_family};
use crate::{
    gate::PinLayout,
    maps::GateMaps,
    observe::{Depth, PinnedMaps, PinnedView, ScrapeCache},
    state::StateDir,
};

/// The exposition of one observation of the pinned gate.
pub fn encode(v: &PinnedView, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    gauge(
        enc,
        "gate_loaded",
        "1 if the gate's programs and maps are pinned (loaded), 0 if not.",
        i64::from(v.loaded),
    )?;
    gauge_family(
        enc,
        "xdp_attached",
        "1 for each interface with a pinned XDP link, labelled with how it is attached (native, generic); 0 with xdp_mode=\"none\" for a configured interface that is not attached.",
        v.interfaces.iter().map(|i| {
            let a = &i.attachment;
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
        i64::from(v.sk_lookup.attached),
    )?;
    let Some(m) = v.maps.as_ref().filter(|_| v.loaded) else {
        return Ok(());
    };
    counter_family(
        enc,
        "decisions",
        "What the programs did, since the gate was loaded. program=\"xdp\" counts packets: partner_allowed, monitored (would act), dropped, reset, deferred are SYNs to a protected port; passed_other is every other packet, unparsed the IPv6 packets XDP passed to the kernel for sk_lookup to judge. program=\"sk_lookup\" counts connections to a protected port as the kernel looks up their listener.",
        m.counters.by_program().into_iter().flat_map(|(p, counts)| {
            counts
                .0
                .iter()
                .map(move |(a, n)| ([("program", p), ("action", *a)], *n))
        }),
    )?;
    counter_family(
        enc,
        "partner_syns",
        "SYNs from a partner's prefixes let through by XDP, per partner (store name), since the partner got its counter slot.",
        m.partner_hits
            .iter()
            .flatten()
            .map(|(name, n)| ([("partner", name.as_str())], *n)),
    )?;
    {
        let mode = m.enforced.mode;
        gauge_family(
            enc,
            "mode",
            "1 for the mode the programs enforce now (monitor, defer, reset, drop), 0 for the others.",
            Mode::ALL
                .iter()
                .map(|m| ([("mode", m.as_str())], i64::from(*m == mode))),
        )?;
    }
    {
        let refuse = m.enforced.responder_down_policy == "refuse";
        gauge_family(
            enc,
            "responder_down_policy",
            "1 for what defer mode does while no responder socket is registered (pass: to the MTA; refuse: RST), 0 for the other.",
            [("pass", !refuse), ("refuse", refuse)]
                .into_iter()
                .map(|(p, on)| ([("policy", p)], i64::from(on))),
        )?;
    }
    if let Some(x) = &m.explained {
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
    if let Some(allow) = &m.fill {
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
    /// The allowlist and EXPLAINED counts, kept between scrapes.
    cache: ScrapeCache,
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
            cache: ScrapeCache::default(),
        }
    }

    pub fn set_interfaces(&self, interfaces: Vec<String>) {
        *self.interfaces.write().unwrap_or_else(|e| e.into_inner()) = interfaces;
    }

    /// Read everything; what cannot be read is left out and logged.
    pub fn observe(&self) -> PinnedView {
        let mut v = {
            let configured = self.interfaces.read().unwrap_or_else(|e| e.into_inner());
            PinnedView::observe_links(&self.layout, &self.state.path, &configured)
        };
        let mut guard = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if !v.loaded {
            *guard = None;
            return v;
        }
        if guard.is_none() {
            match GateMaps::open(&self.layout.root) {
                Ok(m) => *guard = Some(m),
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "metrics: cannot open the gate's maps"
                    );
                    return v;
                }
            }
        }
        let maps = guard.as_ref().expect("opened above");
        match PinnedMaps::observe(maps, &self.state, Depth::Scrape(&self.cache)) {
            Ok(m) => v.maps = Some(m),
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "metrics: reading the gate's maps failed"
                );
                // Maybe replaced under us (detach and load): reopen next time.
                *guard = None;
            }
        }
        v
    }
}

impl Collector for GateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode(&self.observe(), &mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use mx6gate_common::Counter;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::observe::{
        AllowFill, Attachment, Counters, Counts, EnforcedView, ExplainedView, InterfaceView,
        MapFill, SkLookupView,
    };

    #[derive(Debug)]
    struct Fixed(PinnedView);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            encode(&self.0, &mut encoder)
        }
    }

    fn text(v: PinnedView) -> String {
        let mut r = Registry::with_prefix("mx6gate");
        r.register_collector(Box::new(Fixed(v)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        out
    }

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

    fn interface(name: &str, xdp_mode: &str, attached: bool) -> InterfaceView {
        InterfaceView {
            attachment: Attachment {
                interface: name.into(),
                xdp_mode: xdp_mode.into(),
                attached,
            },
            link: None,
            link_error: None,
        }
    }

    fn unloaded() -> PinnedView {
        PinnedView {
            loaded: false,
            interfaces: Vec::new(),
            sk_lookup: SkLookupView {
                attached: false,
                link: None,
            },
            maps: None,
        }
    }

    fn loaded() -> PinnedView {
        let mut i = 0u64;
        let mut counts = |cs: &[Counter]| {
            Counts(
                cs.iter()
                    .map(|c| {
                        i += 1;
                        (c.as_str(), (i - 1) * 10)
                    })
                    .collect(),
            )
        };
        let counters = Counters {
            xdp: counts(&Counter::ALL),
            sk_lookup: counts(&Counter::SK_ALL),
            report: counts(&Counter::REPORT_ALL),
        };
        PinnedView {
            loaded: true,
            interfaces: vec![
                interface("eth0", "native", true),
                interface("eth1", "none", false),
            ],
            sk_lookup: SkLookupView {
                attached: true,
                link: None,
            },
            maps: Some(PinnedMaps {
                counters,
                enforced: EnforcedView {
                    mode: Mode::Defer,
                    responder_down_policy: "pass",
                },
                partner_hits: Some(vec![("example-isp".into(), 7), ("odd \"name\"".into(), 0)]),
                fill: Some(AllowFill {
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
                explained: Some(ExplainedView {
                    recorded: 12,
                    entries: 9,
                    live: 5,
                    capacity: 1024,
                }),
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
        let t = text(PinnedView {
            interfaces: vec![interface("eth0", "none", false)],
            ..unloaded()
        });
        assert!(t.contains("mx6gate_gate_loaded 0\n"), "{t}");
        assert!(t.contains("mx6gate_xdp_attached{interface=\"eth0\",xdp_mode=\"none\"} 0\n"));
        assert!(t.contains("mx6gate_sk_lookup_attached 0\n"));
        assert!(!t.contains("mx6gate_decisions_total"), "{t}");
        assert!(!t.contains("mx6gate_mode"), "{t}");
    }
}
