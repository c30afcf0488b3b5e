//! A hand-written SVG bar chart of latency percentiles (p50, p90, p99) per series, on a
//! log scale so a 30 us HTTP answer and a 1 ms process run are both readable.

use crate::report::Series;
use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 70.0;
const TOP: f64 = 40.0;
const COLORS: [&str; 3] = ["#4c78a8", "#f58518", "#e45756"];

/// The chart as an SVG document.
pub fn chart(series: &[Series]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14">Latency percentiles (log scale, microseconds)</text>"#,
        W / 2.0
    );
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|x| [x.p50, x.p90, x.p99])
        .map(|d| (d.as_secs_f64() * 1e6).max(1.0))
        .collect();
    let max = vals.iter().copied().fold(10.0, f64::max);
    let (lo, hi) = (1.0f64.log10(), max.log10().ceil());
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| H - BOTTOM - (v.max(1.0).log10() - lo) / (hi - lo) * plot_h;
    // Axis with decades.
    let mut d = 0.0;
    while d <= hi {
        let v = 10f64.powf(d);
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
            W - 10.0,
            LEFT - 6.0,
            yy + 4.0
        );
        d += 1.0;
    }
    let n = series.len().max(1) as f64;
    let group = (W - LEFT - 20.0) / n;
    let bar = (group - 20.0) / 3.0;
    for (i, x) in series.iter().enumerate() {
        let gx = LEFT + 10.0 + group * i as f64;
        for (j, (label, d)) in [("p50", x.p50), ("p90", x.p90), ("p99", x.p99)]
            .into_iter()
            .enumerate()
        {
            let v = (d.as_secs_f64() * 1e6).max(1.0);
            let (bx, by) = (gx + bar * j as f64, y(v));
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {label}: {v:.0} us</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{v:.0}</text>"#,
                bar - 2.0,
                H - BOTTOM - by,
                COLORS[j],
                escape(&x.name),
                bx + bar / 2.0 - 1.0,
                by - 3.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group / 2.0 - 10.0,
            H - BOTTOM + 18.0,
            escape(&x.name)
        );
    }
    for (j, label) in ["p50", "p90", "p99"].iter().enumerate() {
        let lx = LEFT + 10.0 + 70.0 * j as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{label}</text>"#,
            H - 28.0,
            COLORS[j],
            lx + 16.0,
            H - 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
