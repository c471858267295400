//! `bench --plot`: a small SVG with throughput against concurrency and the
//! latency percentiles of each run, drawn without a plotting dependency.

use std::fmt::Write as _;
use std::path::Path;

use super::report::Summary;

const W: f64 = 900.0;
const H: f64 = 360.0;
const PAD: f64 = 60.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: a polyline per series over evenly spaced x labels.
fn panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, &str, Vec<f64>)],
) {
    let width = W / 2.0 - PAD * 1.5;
    let height = H - PAD * 2.0;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = write!(svg, r#"<g transform="translate({x0},{PAD})">"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="-25" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#333"/><line x1="0" y1="0" x2="0" y2="{height}" stroke="#333"/>"##
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = height - height * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="-6" y="{y}" text-anchor="end" font-size="11">{v:.0}</text><line x1="0" y1="{y}" x2="{width}" y2="{y}" stroke="#ddd"/>"##
        );
    }
    let _ = write!(
        svg,
        r#"<text x="-45" y="{}" font-size="11" transform="rotate(-90,-45,{})">{}</text>"#,
        height / 2.0,
        height / 2.0,
        escape(unit)
    );
    let step = if labels.len() > 1 {
        width / (labels.len() - 1) as f64
    } else {
        0.0
    };
    let x_of = |i: usize| {
        if labels.len() > 1 {
            step * i as f64
        } else {
            width / 2.0
        }
    };
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
            x_of(i),
            height + 16.0,
            escape(label)
        );
    }
    for (legend, (name, colour, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), height - height * v / max))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            width - 90.0,
            12.0 + 14.0 * legend as f64,
            escape(name)
        );
    }
    svg.push_str("</g>");
}

pub fn write_svg(path: &Path, runs: &[Summary]) -> std::io::Result<()> {
    let labels: Vec<String> = runs
        .iter()
        .map(|s| format!("{}×{}", s.processes, s.concurrency))
        .collect();
    let title = runs
        .first()
        .map(|s| format!("{} on {}", s.workload, s.backend))
        .unwrap_or_default();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">"#
    );
    let _ = write!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let throughput = vec![(
        "ops/s",
        "#1f77b4",
        runs.iter().map(|s| s.ops_per_sec).collect(),
    )];
    panel(
        &mut svg,
        PAD,
        &format!("{title}: throughput"),
        "ops/s",
        &labels,
        &throughput,
    );
    let lat = |f: fn(&Summary) -> u64| runs.iter().map(|s| f(s) as f64).collect::<Vec<f64>>();
    let latency = vec![
        ("p50", "#2ca02c", lat(|s| s.latency_us.p50)),
        ("p90", "#ff7f0e", lat(|s| s.latency_us.p90)),
        ("p99", "#d62728", lat(|s| s.latency_us.p99)),
        ("p99.9", "#9467bd", lat(|s| s.latency_us.p999)),
    ];
    panel(
        &mut svg,
        W / 2.0 + PAD,
        &format!("{title}: latency"),
        "µs",
        &labels,
        &latency,
    );
    svg.push_str("</svg>\n");
    std::fs::write(path, svg)
}
