//! per-packet.svg: ns per packet against allowlist size.
use std::fmt::Write as _;

use super::{size_name, Pp};
use crate::bench::{
    per_packet::{Prog, Temp},
    run::Results,
    stats::num,
};

/// ns/packet against allowlist size: log x, log y, one line per series.
pub(super) fn plot(r: &Results, pp: &Pp<'_>) -> String {
    struct Series {
        label: String,
        color: &'static str,
        dash: bool,
        pts: Vec<(f64, f64, f64, f64)>, // x, median, min, max
    }
    let specs: [(&str, Prog, Temp, &str, &str); 12] = [
        (
            "partner",
            Prog::Gate,
            Temp::Hot,
            "#1f77b4",
            "mx6gate SYN partner, hot",
        ),
        (
            "near",
            Prog::Gate,
            Temp::Hot,
            "#2ca02c",
            "mx6gate SYN stranger near, hot",
        ),
        (
            "drop",
            Prog::Gate,
            Temp::Hot,
            "#17becf",
            "mx6gate SYN stranger far, hot",
        ),
        (
            "partner",
            Prog::Gate,
            Temp::Cold,
            "#1f77b4",
            "mx6gate SYN partner, cold",
        ),
        (
            "near",
            Prog::Gate,
            Temp::Cold,
            "#2ca02c",
            "mx6gate SYN stranger near, cold",
        ),
        (
            "drop",
            Prog::Gate,
            Temp::Cold,
            "#17becf",
            "mx6gate SYN stranger far, cold",
        ),
        (
            "ipv4",
            Prog::Gate,
            Temp::Hot,
            "#7f7f7f",
            "mx6gate IPv4, hot",
        ),
        (
            "near",
            Prog::XdpFilter,
            Temp::Hot,
            "#ff7f0e",
            "xdp-filter SYN stranger, hot",
        ),
        (
            "near",
            Prog::XdpFilter,
            Temp::Cold,
            "#ff7f0e",
            "xdp-filter SYN stranger, cold",
        ),
        (
            "partner",
            Prog::Trie,
            Temp::Hot,
            "#d62728",
            "plain trie SYN partner, hot",
        ),
        (
            "partner",
            Prog::Trie,
            Temp::Cold,
            "#d62728",
            "plain trie SYN partner, cold",
        ),
        ("near", Prog::Floor, Temp::Hot, "#000000", "XDP_DROP floor"),
    ];
    let mut series = Vec::new();
    for (class, prog, temp, color, label) in specs {
        let pts: Vec<(f64, f64, f64, f64)> = r
            .sizes
            .iter()
            .filter_map(|&n| {
                pp.get(n, class, prog, temp)
                    .map(|s| (n as f64, s.median, s.min, s.max))
            })
            .collect();
        if !pts.is_empty() {
            series.push(Series {
                label: label.into(),
                color,
                dash: temp == Temp::Cold,
                pts,
            });
        }
    }
    let (w, h) = (900.0, 560.0);
    let (l, rgt, top, bot) = (70.0, 300.0, 40.0, 60.0);
    let (pw, ph) = (w - l - rgt, h - top - bot);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.pts.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.pts.iter().flat_map(|p| [p.2, p.3]))
        .filter(|y| *y > 0.0)
        .collect();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">BPF_PROG_TEST_RUN ns per packet against allowlist size ({})</text>"#,
        l + pw / 2.0,
        r.date
    );
    if xs.is_empty() || ys.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">no per-packet figures in this run</text></svg>"#,
            l,
            top + 20.0
        );
        return svg;
    }
    let lx0 = xs.iter().cloned().fold(f64::MAX, f64::min).log10().floor();
    let lx1 = xs
        .iter()
        .cloned()
        .fold(f64::MIN, f64::max)
        .log10()
        .ceil()
        .max(lx0 + 1.0);
    let ly0 = (ys.iter().cloned().fold(f64::MAX, f64::min) / 1.3).log10();
    let ly1 = (ys.iter().cloned().fold(f64::MIN, f64::max) * 1.3)
        .log10()
        .max(ly0 + 1.0);
    let px = |x: f64| l + (x.log10() - lx0) / (lx1 - lx0) * pw;
    let py = |y: f64| top + ph - (y.max(1e-9).log10() - ly0) / (ly1 - ly0) * ph;
    // Axes and grid.
    let _ = writeln!(
        svg,
        r##"<rect x="{l}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let mut d = lx0;
    while d <= lx1 + 1e-9 {
        let x = px(10f64.powf(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/>"##,
            top + ph
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            size_name(10f64.powf(d).round() as usize)
        );
        d += 1.0;
    }
    let mut d = ly0.floor();
    while d <= ly1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(d);
            if v.log10() < ly0 || v.log10() > ly1 {
                continue;
            }
            let y = py(v);
            let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
            let _ = writeln!(
                svg,
                r#"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"/>"#,
                l + pw
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                l - 6.0,
                y + 4.0,
                if v >= 10.0 { format!("{v:.0}") } else { num(v) }
            );
        }
        d += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">allowlist size (prefixes, log scale)</text>"#,
        l + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">ns per packet (log scale)</text>"#,
        top + ph / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let dash = if s.dash {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let path: Vec<String> = s
            .pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            s.color
        );
        for p in &s.pts {
            let (x, y0, y1) = (px(p.0), py(p.2), py(p.3));
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{}"/>"#,
                s.color
            );
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                py(p.1),
                s.color
            );
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = l + pw + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 28.0,
            s.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 34.0,
            ly + 4.0,
            s.label
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="11">solid: hot (same source); dashed: cold (sources spread over the table); bars: min–max of the runs</text>"#,
        l,
        h - 4.0
    );
    let _ = writeln!(svg, "</svg>");
    svg
}
