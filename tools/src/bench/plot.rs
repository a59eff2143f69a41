//! The SVG a person looks at after a run: latency over time (per-second p50 and p99) on top,
//! the latency distribution by percentile (log-scaled "nines" axis, as HdrHistogram's plots)
//! below. Hand-written SVG: two charts do not need a plotting library.

use std::fmt::Write;

use super::report::{OpStats, Report};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 130.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// The distribution's x axis runs to 99.999% (five nines).
const NINES_MAX: f64 = 5.0;
const TICKS: usize = 5;

/// A plotting area and the data ranges it maps.
struct Frame {
    top: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn width() -> f64 {
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    }

    fn height() -> f64 {
        PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    }

    fn px(&self, x: f64) -> f64 {
        MARGIN_LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * Frame::width()
    }

    fn py(&self, y: f64) -> f64 {
        self.top + MARGIN_TOP + Frame::height()
            - (y - self.y.0) / (self.y.1 - self.y.0) * Frame::height()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The smallest of 1, 2, 5 × 10^k at or above `v`.
fn nice_ceil(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * base)
}

fn label(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn axes(svg: &mut String, f: &Frame, title: &str, x_label: &str, y_label: &str) {
    let (x0, x1) = (MARGIN_LEFT, MARGIN_LEFT + Frame::width());
    let (y0, y1) = (f.top + MARGIN_TOP + Frame::height(), f.top + MARGIN_TOP);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="16" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        f.top + 25.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 20 {:.1})">{}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn x_tick(svg: &mut String, f: &Frame, x: f64, text: &str) {
    let px = f.px(x);
    let y0 = f.top + MARGIN_TOP + Frame::height();
    let _ = writeln!(
        svg,
        r##"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
        f.top + MARGIN_TOP,
        y0 + 16.0,
        escape(text)
    );
}

fn y_tick(svg: &mut String, f: &Frame, y: f64, text: &str) {
    let py = f.py(y);
    let _ = writeln!(
        svg,
        r##"<line x1="{MARGIN_LEFT:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
        MARGIN_LEFT + Frame::width(),
        MARGIN_LEFT - 6.0,
        py + 4.0,
        escape(text)
    );
}

fn series(
    svg: &mut String,
    f: &Frame,
    points: &[(f64, f64)],
    color: &str,
    name: &str,
    slot: usize,
) {
    if points.is_empty() {
        return;
    }
    let coords: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
        coords.join(" ")
    );
    if let [(x, y)] = points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
            f.px(*x),
            f.py(*y)
        );
    }
    let lx = MARGIN_LEFT + Frame::width() + 15.0;
    let ly = f.top + MARGIN_TOP + 10.0 + 20.0 * slot as f64;
    let _ = writeln!(
        svg,
        r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0,
        escape(name)
    );
}

fn timeline_panel(svg: &mut String, report: &Report) {
    let seconds = report.timeline.len().max(1) as f64;
    let y_max = nice_ceil(report.timeline.iter().map(|s| s.p99_us).fold(0.0, f64::max));
    let f = Frame {
        top: 0.0,
        x: (0.0, seconds),
        y: (0.0, y_max),
    };
    axes(
        svg,
        &f,
        "Latency over time (all requests)",
        "seconds since start",
        "latency (µs)",
    );
    for i in 0..=TICKS {
        let x = seconds * i as f64 / TICKS as f64;
        x_tick(svg, &f, x, &label(x));
        let y = y_max * i as f64 / TICKS as f64;
        y_tick(svg, &f, y, &label(y));
    }
    let busy = || report.timeline.iter().filter(|s| s.requests > 0);
    let p50: Vec<_> = busy().map(|s| (s.second as f64 + 0.5, s.p50_us)).collect();
    let p99: Vec<_> = busy().map(|s| (s.second as f64 + 0.5, s.p99_us)).collect();
    series(svg, &f, &p50, "#1f77b4", "p50", 0);
    series(svg, &f, &p99, "#d62728", "p99", 1);
}

/// Percentile as "nines": 90% → 1, 99% → 2, 99.9% → 3.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-NINES_MAX));
    (-rest.log10()).min(NINES_MAX)
}

fn distribution_panel(svg: &mut String, report: &Report) {
    let ops: [(&str, &OpStats, &str); 3] = [
        ("GET", &report.get, "#2ca02c"),
        ("SET", &report.set, "#ff7f0e"),
        ("all", &report.total, "#555"),
    ];
    let values = || {
        ops.iter()
            .flat_map(|(_, s, _)| s.distribution.iter().map(|q| q.latency_us))
    };
    let lo = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let hi = values().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil()),
        )
    } else {
        (1.0, 10.0)
    };
    let f = Frame {
        top: PANEL_HEIGHT,
        x: (0.0, NINES_MAX),
        y: (lo.log10(), hi.log10()),
    };
    axes(
        svg,
        &f,
        "Latency by percentile",
        "percentile",
        "latency (µs, log scale)",
    );
    for (n, text) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        x_tick(svg, &f, n as f64, text);
    }
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        y_tick(svg, &f, decade.log10(), &label(decade));
        decade *= 10.0;
    }
    for (slot, (name, stats, color)) in ops.iter().enumerate() {
        let points: Vec<_> = stats
            .distribution
            .iter()
            .filter(|q| q.latency_us > 0.0 && q.percentile < 100.0)
            .map(|q| (nines(q.percentile), q.latency_us.max(lo).log10()))
            .collect();
        series(svg, &f, &points, color, name, slot);
    }
}

/// The whole SVG document.
pub fn render(report: &Report) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}" font-family="sans-serif">"#,
        2.0 * PANEL_HEIGHT,
        2.0 * PANEL_HEIGHT
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let c = &report.config;
    let _ = writeln!(
        svg,
        r#"<title>shoal-bench {}: {} clients, pipeline {}, {:.0} ops/s</title>"#,
        escape(&c.addr),
        c.clients,
        c.pipeline,
        report.total.ops_per_sec
    );
    timeline_panel(&mut svg, report);
    distribution_panel(&mut svg, report);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::super::args::Args;
    use super::super::client::{OpRecord, ThreadRecord, latency_histogram};
    use super::*;

    /// Checks XML well-formedness as far as this writer can break it: every tag closed in
    /// order, attribute values quoted, no stray `<` or `&` in text, one root element.
    fn assert_well_formed(doc: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = doc.trim();
        let mut roots = 0;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('<') {
                let end = after.find('>').expect("unterminated tag");
                let tag = &after[..end];
                assert!(!tag.contains('<'), "'<' inside tag {tag}");
                assert_eq!(
                    tag.matches('"').count() % 2,
                    0,
                    "unbalanced quotes in {tag}"
                );
                if let Some(name) = tag.strip_prefix('/') {
                    assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
                } else {
                    let name = tag
                        .split_whitespace()
                        .next()
                        .expect("empty tag")
                        .trim_end_matches('/');
                    if stack.is_empty() {
                        roots += 1;
                    }
                    if !tag.ends_with('/') {
                        stack.push(name);
                    }
                }
                rest = &after[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = &rest[..end];
                assert!(
                    !stack.is_empty() || text.trim().is_empty(),
                    "text outside the root"
                );
                for (i, _) in text.match_indices('&') {
                    let entity = &text[i..];
                    assert!(
                        ["&amp;", "&lt;", "&gt;", "&quot;"]
                            .iter()
                            .any(|e| entity.starts_with(e)),
                        "bare & in {text}"
                    );
                }
                rest = &rest[end..];
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }

    fn report(seconds: usize, addr: &str) -> Report {
        let mut config = Args::try_parse_from(["b"]).unwrap().config().unwrap();
        config.addr = addr.to_owned();
        let mut get = OpRecord::new();
        let mut set = OpRecord::new();
        let mut timeline = Vec::new();
        for s in 0..seconds {
            let mut h = latency_histogram(2);
            for i in 1..=1000u64 {
                let v = 10_000 + i * 37 * (s as u64 + 1);
                h.record(v).unwrap();
                get.latency_ns.record(v).unwrap();
                set.latency_ns.record(2 * v).unwrap();
            }
            timeline.push(h);
        }
        let t = ThreadRecord {
            get,
            set,
            timeline,
            last_reply: None,
        };
        Report::new(config, Duration::from_secs(seconds.max(1) as u64), &[t])
    }

    #[test]
    fn svg_is_well_formed_with_both_charts() {
        let svg = render(&report(5, "127.0.0.1:1 <&\"test\">"));
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            svg.matches("<polyline").count(),
            5,
            "p50, p99, GET, SET, all"
        );
        assert!(svg.contains("Latency over time") && svg.contains("Latency by percentile"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn svg_of_an_empty_or_one_second_run_is_well_formed() {
        for seconds in [0, 1] {
            let svg = render(&report(seconds, "x"));
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn checker_rejects_broken_documents() {
        for bad in [
            "<svg><g></svg>",
            "<svg a=\"1></svg>",
            "<svg>a & b</svg>",
            "<svg/><svg/>",
        ] {
            assert!(
                std::panic::catch_unwind(|| assert_well_formed(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn nice_ceilings_and_nines() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(130.0), 200.0);
        assert_eq!(nice_ceil(480.0), 500.0);
        assert_eq!(nice_ceil(1000.0), 1000.0);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
        assert_eq!(nines(0.0), 0.0);
    }
}
