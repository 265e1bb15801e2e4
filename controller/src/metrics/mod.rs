//! Prometheus metrics over HTTP (`[metrics] listen`, loopback by default),
//! with the official `prometheus-client` crate.
//!
//! - `gate`   — a collector that reads the pinned gate (counters, partner
//!   hits, allowlist fill, mode, links) from the kernel at scrape time;
//! - here     — the daemon's own state: responder counters (read from the
//!   shared [`ResponderStats`] at scrape time), responder up/down, config
//!   reloads; and [`Exporter`], the daemon's one handle on all of it;
//! - `server` — the HTTP endpoint (`GET /metrics`);
//! - `config` — the `[metrics]` table.
//!
//! Like every component, metrics takes its own section (`MetricsConfig`)
//! and the few top-level values it needs (the pin path, state dir and
//! interfaces, given to `GateCollector`), never the whole `Config`:
//! `config` assembles the sections and imports them, not the reverse.
//!
//! Every metric is named `mx6gate_*`; README.md lists them.
pub mod config;
pub mod gate;
mod server;

use std::{fmt, sync::Arc};

use anyhow::Result;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        info::Info,
        MetricType,
    },
    registry::Registry,
};
use tracing::info;

pub use self::config::MetricsConfig;
use crate::{health::SharedHealth, responder::ResponderStats};

/// Everything a scrape shows. Shared by the daemon (which updates the
/// in-process metrics) and the HTTP server (which encodes it).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    gate: Arc<gate::GateCollector>,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
    last_reload_ok: Gauge,
    responder_up: Gauge,
    responder_stats: Arc<ResponderStats>,
    health: SharedHealth,
    spf: SpfMetrics,
}

type DomainLabel = Vec<(String, String)>;

fn domain_label(d: &str) -> DomainLabel {
    vec![("domain".to_string(), d.to_string())]
}

/// Per SPF domain: the refresh task updates them (`daemon::spf`).
#[derive(Debug, Clone, Default)]
pub struct SpfMetrics {
    prefixes: Family<DomainLabel, Gauge>,
    last_success: Family<DomainLabel, Gauge>,
    failures: Family<DomainLabel, Counter>,
    held: Family<DomainLabel, Gauge>,
    known: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl SpfMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "spf_prefixes",
            "IPv6 prefixes enforced for the SPF domain (its last good set).",
            self.prefixes.clone(),
        );
        registry.register(
            "spf_last_success_timestamp_seconds",
            "When a complete expansion of the SPF domain last confirmed its set (Unix time; 0: never).",
            self.last_success.clone(),
        );
        registry.register(
            "spf_refresh_failures",
            "SPF refreshes of the domain that failed (DNS did not answer, a broken record) since the daemon started; the last good set stays enforced.",
            self.failures.clone(),
        );
        registry.register(
            "spf_held",
            "1 while a new set of the SPF domain is held for confirmation (`mx6gate partner refresh NAME --accept`), else 0.",
            self.held.clone(),
        );
    }

    /// The domain's gauges from the SPF state.
    pub fn observe(&self, domain: &str, state: &crate::spf::SpfState) {
        let l = domain_label(domain);
        let d = state.domain.get(domain);
        let good = d.and_then(|d| d.last_good.as_ref());
        self.prefixes
            .get_or_create(&l)
            .set(good.map_or(0, |g| g.prefixes.len() as i64));
        self.last_success
            .get_or_create(&l)
            .set(good.map_or(0, |g| g.refreshed.timestamp()));
        self.held
            .get_or_create(&l)
            .set(i64::from(d.is_some_and(|d| d.held.is_some())));
        let _ = self.failures.get_or_create(&l);
        self.known
            .lock()
            .expect("not poisoned")
            .insert(domain.to_string());
    }

    pub fn failed(&self, domain: &str) {
        self.failures.get_or_create(&domain_label(domain)).inc();
    }

    /// Drop the series of domains no partner names any more.
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) {
        let mut known = self.known.lock().expect("not poisoned");
        for d in known.iter().filter(|d| !keep.contains(*d)) {
            let l = domain_label(d);
            self.prefixes.remove(&l);
            self.last_success.remove(&l);
            self.failures.remove(&l);
            self.held.remove(&l);
        }
        known.retain(|d| keep.contains(d));
    }
}

impl Metrics {
    /// `gate` reads the pinned gate at scrape time; the rest is the
    /// daemon's own state.
    pub fn new(gate: gate::GateCollector) -> Metrics {
        let mut registry = Registry::with_prefix("mx6gate");
        registry.register(
            "build",
            "The running mx6gate's version.",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let reloads = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // Both series exist from the start, so rate() and alerts see a 0.
        let _ = reloads.get_or_create(&[("result", "success")]);
        let _ = reloads.get_or_create(&[("result", "failure")]);
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP) since the daemon started, by result; a failed one changed nothing.",
            reloads.clone(),
        );
        let last_reload_ok = Gauge::default();
        last_reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), 0 if it failed: the daemon runs an older config than the file.",
            last_reload_ok.clone(),
        );
        let responder_up = Gauge::default();
        registry.register(
            "responder_up",
            "1 while the responder serves its socket, 0 when it is down (defer-mode connections then get responder_down_policy).",
            responder_up.clone(),
        );
        let responder_stats = Arc::new(ResponderStats::default());
        registry.register_collector(Box::new(ResponderCollector(Arc::clone(&responder_stats))));
        let health = SharedHealth::default();
        registry.register_collector(Box::new(HealthCollector(health.clone())));
        let gate = Arc::new(gate);
        registry.register_collector(Box::new(Arc::clone(&gate)));
        let spf = SpfMetrics::default();
        spf.register(&mut registry);
        Metrics {
            spf,
            registry,
            gate,
            reloads,
            last_reload_ok,
            responder_up,
            responder_stats,
            health,
        }
    }

    /// The SPF refresh task's per-domain series.
    pub fn spf(&self) -> SpfMetrics {
        self.spf.clone()
    }

    /// What the daemon's sync worker reports (store refused, repairs).
    pub fn health(&self) -> SharedHealth {
        self.health.clone()
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// The OpenMetrics text format, for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// The counters the responder updates; shared by every responder the
    /// daemon starts, so they keep counting across a restart on reload.
    pub fn responder_stats(&self) -> Arc<ResponderStats> {
        Arc::clone(&self.responder_stats)
    }

    /// Set to 1 by the responder task while it serves, 0 when it ends.
    pub fn responder_up(&self) -> Gauge {
        self.responder_up.clone()
    }

    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&[("result", result)]).inc();
        self.last_reload_ok.set(i64::from(ok));
    }
}

/// The daemon's handle: the metrics and the HTTP endpoint serving them.
pub struct Exporter {
    metrics: Arc<Metrics>,
    server: Option<server::Server>,
}

/// A listener bound for a reload, before anything else changes.
pub struct Rebind(Option<std::net::TcpListener>);

impl Exporter {
    /// Create the metrics and serve them on `cfg.listen` (unless
    /// disabled). A bind failure is an error naming the address.
    pub fn start(cfg: &MetricsConfig, gate: gate::GateCollector) -> Result<Exporter> {
        let metrics = Arc::new(Metrics::new(gate));
        let server = match cfg.listen {
            None => {
                info!("metrics endpoint disabled ([metrics] listen = false)");
                None
            }
            Some(addr) => Some(server::Server::spawn(
                server::bind(addr)?,
                Arc::clone(&metrics),
            )?),
        };
        Ok(Exporter { metrics, server })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// First half of a reload: bind the new address if it changed, so a
    /// busy address fails the reload before anything is applied.
    pub fn prepare_reload(&self, cfg: &MetricsConfig) -> Result<Rebind> {
        if cfg.listen == self.server.as_ref().map(|s| s.local_addr()) {
            return Ok(Rebind(None));
        }
        Ok(Rebind(cfg.listen.map(server::bind).transpose()?))
    }

    /// Second half, once the reload has succeeded: switch to the new
    /// listener (or stop serving) and follow the new interface list.
    pub fn apply_reload(
        &mut self,
        cfg: &MetricsConfig,
        interfaces: Vec<String>,
        rebind: Rebind,
    ) -> Result<()> {
        self.metrics.gate.set_interfaces(interfaces);
        if cfg.listen == self.server.as_ref().map(|s| s.local_addr()) {
            return Ok(());
        }
        self.server = None;
        if let Some(listener) = rebind.0 {
            self.server = Some(server::Server::spawn(listener, Arc::clone(&self.metrics))?);
        } else {
            info!("metrics endpoint disabled ([metrics] listen = false)");
        }
        Ok(())
    }
}

/// The daemon's view of its state: store applied or refused, repairs.
#[derive(Debug)]
struct HealthCollector(SharedHealth);

impl Collector for HealthCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let h = self.0.get();
        gauge(
            &mut enc,
            "partner_store_refused",
            "1 while the partner store is refused (a bad or unreadable file, a missing or emptied directory): the gate keeps the last good allowlist; `mx6gate status` says why. 0 when the store was applied.",
            i64::from(h.store_refused.is_some()),
        )?;
        gauge(
            &mut enc,
            "partner_store_skipped_files",
            "Entries of partners_dir named *.toml that are not regular files (a FIFO, a directory): skipped, never read.",
            h.store_skipped.len() as i64,
        )?;
        counter_family(
            &mut enc,
            "repairs",
            "Times the daemon found its state damaged and repaired it: what=\"responder_socket\" its socket missing from the RESPONDER sockmap (defer-mode connections got the down policy meanwhile), what=\"pins\" pins of its gate removed (pinned again; enforcement went on).",
            [
                ("responder_socket", h.socket_repairs),
                ("pins", h.pin_repairs),
            ]
            .map(|(what, n)| ([("what", what)], n)),
        )
    }
}

/// The responder's counters, read from its atomics at scrape time.
#[derive(Debug)]
struct ResponderCollector(Arc<ResponderStats>);

impl Collector for ResponderCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.0.snapshot();
        counter(
            &mut enc,
            "responder_connections",
            "Connections the responder accepted (defer mode hands them over), those refused over a cap included.",
            s.connections,
        )?;
        gauge(
            &mut enc,
            "responder_active_connections",
            "Connections the responder is serving now.",
            s.active as i64,
        )?;
        counter_family(
            &mut enc,
            "responder_refused",
            "Connections refused with a short 421 because a cap was full: max_connections (in total) or max_per_source (one source /64).",
            [
                (
                    "max_connections",
                    s.refused_over_cap.saturating_sub(s.refused_per_source),
                ),
                ("max_per_source", s.refused_per_source),
            ]
            .map(|(cap, n)| ([("cap", cap)], n)),
        )?;
        counter(
            &mut enc,
            "responder_deferred",
            "Connections that were sent the whole deferral greeting (the 4xx asking to retry over IPv4).",
            s.deferred,
        )?;
        counter(
            &mut enc,
            "responder_timeouts",
            "Responder sessions closed by the idle or the session timeout.",
            s.timeouts,
        )?;
        counter(
            &mut enc,
            "responder_commands",
            "SMTP command lines the responder answered (greeting = \"converse\").",
            s.commands,
        )?;
        counter(
            &mut enc,
            "responder_lines_too_long",
            "Responder sessions closed because a command line was too long.",
            s.lines_too_long,
        )?;
        counter(
            &mut enc,
            "responder_accept_errors",
            "Errors accepting a connection (out of file descriptors, ...).",
            s.accept_errors,
        )
    }
}

// Helpers for collectors: one HELP/TYPE header per family, then its samples.

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn metrics() -> (tempfile::TempDir, Metrics) {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(gate::GateCollector::new(
            &dir.path().join("no-gate-here"),
            &dir.path().join("state"),
            vec!["eth0".into()],
        ));
        (dir, m)
    }

    #[test]
    fn daemon_state_in_the_text() {
        let (_dir, m) = metrics();
        let t = m.encode_text();
        for line in [
            "mx6gate_build_info{version=\"",
            "mx6gate_config_reloads_total{result=\"success\"} 0\n",
            "mx6gate_config_reloads_total{result=\"failure\"} 0\n",
            "mx6gate_config_last_reload_successful 1\n",
            "mx6gate_responder_up 0\n",
            "mx6gate_responder_connections_total 0\n",
            "mx6gate_responder_active_connections 0\n",
            "mx6gate_responder_refused_total{cap=\"max_connections\"} 0\n",
            "mx6gate_gate_loaded 0\n",
            "mx6gate_xdp_attached{interface=\"eth0\",xdp_mode=\"none\"} 0\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }

        m.record_reload(false);
        m.record_reload(true);
        m.record_reload(false);
        m.responder_up().set(1);
        let s = m.responder_stats();
        s.connections.fetch_add(5, Relaxed);
        s.active.fetch_add(2, Relaxed);
        s.refused_over_cap.fetch_add(3, Relaxed);
        s.refused_per_source.fetch_add(1, Relaxed);
        let t = m.encode_text();
        for line in [
            "mx6gate_config_reloads_total{result=\"success\"} 1\n",
            "mx6gate_config_reloads_total{result=\"failure\"} 2\n",
            "mx6gate_config_last_reload_successful 0\n",
            "mx6gate_responder_up 1\n",
            "mx6gate_responder_connections_total 5\n",
            "mx6gate_responder_active_connections 2\n",
            "mx6gate_responder_refused_total{cap=\"max_connections\"} 2\n",
            "mx6gate_responder_refused_total{cap=\"max_per_source\"} 1\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn openmetrics_variant() {
        let (_dir, m) = metrics();
        let t = m.encode_openmetrics();
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE mx6gate_config_reloads counter\n"), "{t}");
        assert!(t.contains("mx6gate_config_reloads_total{result=\"success\"} 0\n"));
    }
}
