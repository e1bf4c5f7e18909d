//! The HTML page of a fleet report: one self-contained file (inline CSS and inline SVG charts,
//! nothing fetched when it is viewed, no script) to open in a browser or attach to a ticket.
//!
//! From the top: the run (seed, devices, shards, target, start, duration, clock), the key
//! figures, four charts over the run's simulated time or its sessions (sessions per second,
//! session latency p50/p90/p99, sessions by trigger and mode, errors by class), then the tables
//! of the summary. The charts are drawn with plotters' SVG backend, whose text stays SVG text
//! (the browser's sans-serif font, no font file needed).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::names::Named as _;
use crate::schedule::{Mode, Trigger};

use super::report::{Percentiles, Report, Summary, duration, format_ms, thousands};

/// Width and height of a chart, in SVG pixels (the page scales it to its width).
const CHART: (u32, u32) = (1160, 400);
const FONT: &str = "sans-serif";
/// Font sizes as plotters takes them (its SVG text is 1/1.24 of this in pixels: 18 is 14.5 px).
const LABEL: f64 = 18.0;
const AXIS: f64 = 19.0;

/// The colors of series, in order (Okabe and Ito's palette, told apart with color blindness).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(120, 120, 120), // grey
];
const FAILED: RGBColor = RGBColor(213, 94, 0);
const GRID: RGBColor = RGBColor(232, 232, 232);
const GRID_BOLD: RGBColor = RGBColor(205, 205, 205);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
  color: #1d1d1f; background: #f5f6f8; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 4px; }
.sub { color: #555; margin: 0 0 16px; }
dl.run { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 8px 20px;
  background: #fff; border: 1px solid #dde; border-radius: 8px; padding: 14px 18px; margin: 0 0 18px; }
dl.run div { min-width: 0; }
dl.run dt { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #667; }
dl.run dd { margin: 2px 0 0; font-size: 16px; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; margin: 0 0 18px; }
.figure { background: #fff; border: 1px solid #dde; border-radius: 8px; padding: 12px 16px; }
.figure .v { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure .k { font-size: 13px; color: #556; }
.figure.bad .v { color: #b83d00; }
section.chart, section.tables { background: #fff; border: 1px solid #dde; border-radius: 8px; padding: 16px 18px;
  margin: 0 0 18px; }
section.chart p, .note { color: #555; margin: 0 0 8px; font-size: 14px; }
svg { display: block; width: 100%; height: auto; }
.tables { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 22px 28px;
  align-items: start; }
.tables table.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
caption { text-align: left; font-weight: 600; font-size: 15px; padding: 0 0 6px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; }
th { color: #556; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
footer { color: #778; font-size: 13px; }
";

/// The report as one self-contained HTML page.
pub fn render(r: &Report) -> String {
    let s = r.summary();
    let mut h = String::with_capacity(256 * 1024);
    let title =
        format!("mdmsim fleet report: {} devices, {}, seed {}", thousands(s.devices), duration(s.duration_s), s.seed);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    let _ = write!(
        h,
        "<h1>Fleet report</h1>\n<p class=\"sub\">{} devices against {} for {} of simulated time</p>\n",
        thousands(s.devices),
        esc(&s.target),
        duration(s.duration_s)
    );
    header(&mut h, r, &s);
    figures(&mut h, &s);
    chart_section(
        &mut h,
        "Sessions per second",
        &format!(
            "Sessions that started in each {} of simulated time, per second; failed sessions apart.",
            bucket_words(r.bucket_s)
        ),
        sessions_chart(r),
    );
    chart_section(
        &mut h,
        "Session latency over time",
        &format!(
            "Percentiles of the latency of the sessions that started in each {} (from the instant each \
             session was due to its end), in milliseconds on a logarithmic scale.",
            bucket_words(r.bucket_s)
        ),
        latency_chart(r),
    );
    chart_section(
        &mut h,
        "Sessions by trigger and mode",
        "What started each session (trigger), stacked by the operation mode it ran in.",
        by_trigger_chart(r),
    );
    if r.totals.errors.is_empty() {
        let _ = write!(
            h,
            "<section class=\"chart\">\n<h2>Errors over time</h2>\n<p>No errors were reported in this run.</p>\n</section>\n"
        );
    } else {
        chart_section(
            &mut h,
            "Errors over time",
            &format!("Errors per minute by class, averaged over each {}.", bucket_words(r.bucket_s)),
            errors_chart(r),
        );
    }
    tables(&mut h, r, &s);
    let _ = write!(
        h,
        "<footer>Written by mdmsim {}. Counts and latency histograms are exact: the reports of a run's shards \
         merge into this same page.</footer>\n</main>\n</body>\n</html>\n",
        esc(&r.run.mdmsim_version)
    );
    h
}

fn header(h: &mut String, r: &Report, s: &Summary) {
    let shards = if r.run.shard_count <= 1 {
        "whole fleet".to_string()
    } else if r.shards.len() as u32 == r.run.shard_count {
        format!("all {} shards", r.run.shard_count)
    } else {
        format!("{} (partial: {} of {} shards)", s.shards, r.shards.len(), r.run.shard_count)
    };
    let end = r.run.start + chrono::Duration::seconds(r.run.duration_s as i64);
    let facts = [
        ("Seed", s.seed.to_string()),
        ("Devices", thousands(s.devices)),
        ("Shards", shards),
        ("Target", s.target.clone()),
        ("Simulated time", format!("{} to {}", when(r.run.start), when(end))),
        ("Duration", duration(s.duration_s)),
        ("Clock", s.clock.clone()),
        ("Time buckets", bucket_words(r.bucket_s)),
    ];
    h.push_str("<dl class=\"run\">\n");
    for (k, v) in facts {
        let _ = writeln!(h, "<div><dt>{k}</dt><dd>{}</dd></div>", esc(&v));
    }
    h.push_str("</dl>\n");
}

fn figures(h: &mut String, s: &Summary) {
    let p99 = s.latency_ms.get("session").filter(|p| p.count > 0).map_or("-".to_string(), |p| format_ms(p.p99));
    let failed_pct =
        if s.totals.sessions > 0 { 100.0 * s.totals.failed as f64 / s.totals.sessions as f64 } else { 0.0 };
    let errors: u64 = s.totals.errors.values().sum();
    let cards = [
        ("Sessions", thousands(s.totals.sessions), false),
        ("Sessions/s, average", format!("{:.2}", s.sessions_per_s), false),
        ("Sessions/s, peak", format!("{:.2}", s.peak_sessions_per_s), false),
        ("Session latency p99", p99, false),
        ("Failed sessions", format!("{} ({failed_pct:.1} %)", thousands(s.totals.failed)), s.totals.failed > 0),
        ("Errors", thousands(errors), errors > 0),
    ];
    h.push_str("<div class=\"figures\">\n");
    for (k, v, bad) in cards {
        let class = if bad { "figure bad" } else { "figure" };
        let _ =
            writeln!(h, "<div class=\"{class}\"><div class=\"v\">{}</div><div class=\"k\">{k}</div></div>", esc(&v));
    }
    h.push_str("</div>\n");
}

fn chart_section(h: &mut String, title: &str, note: &str, svg: String) {
    let _ = write!(h, "<section class=\"chart\">\n<h2>{title}</h2>\n<p>{}</p>\n{svg}\n</section>\n", esc(note));
}

/// Draws one chart into an SVG string; a chart that cannot be drawn says why instead.
fn svg(draw: impl FnOnce(&Area<'_>) -> DrawResult) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, CHART).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => buf,
        Err(e) => format!("<p class=\"note\">This chart could not be drawn: {}</p>", esc(&e.to_string())),
    }
}

/// The step of the time axis's ticks, in seconds: a round one that gives at most 12 ticks.
fn time_step(duration_s: u64) -> u64 {
    const STEPS: [u64; 15] =
        [60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800, 1_209_600, 2_592_000];
    STEPS.into_iter().find(|s| duration_s / s <= 12).unwrap_or(duration_s.div_ceil(12).max(1))
}

/// The label of a tick: a clock time for a day or less, the weekday too for a week or less, the
/// date beyond.
fn time_label(start: DateTime<Utc>, duration_s: u64, secs: f64) -> String {
    let t = start + chrono::Duration::seconds(secs as i64);
    if duration_s <= 86_400 {
        t.format("%H:%M").to_string()
    } else if duration_s <= 7 * 86_400 {
        t.format("%a %H:%M").to_string()
    } else {
        t.format("%b %d").to_string()
    }
}

/// The points of a per-bucket series: (middle of the bucket, value), within the run; time is
/// in ticks of the time axis ([`time_step`]), so that the ticks fall on whole numbers.
fn points(r: &Report, value: impl Fn(&super::report::Bucket) -> Option<f64>) -> Vec<(f64, f64)> {
    let end = r.run.duration_s as f64;
    let step = time_step(r.run.duration_s) as f64;
    r.series
        .iter()
        .enumerate()
        .filter_map(|(k, b)| {
            let x = ((k as f64 + 0.5) * r.bucket_s as f64).min(end) / step;
            value(b).map(|v| (x, v))
        })
        .collect()
}

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 26, y)], color.stroke_width(4))
}

/// A time chart's frame: axes, labels and grid, with `y` on the vertical.
macro_rules! time_chart {
    ($area:expr, $r:expr, $y:expr, $ydesc:expr, $yfmt:expr) => {{
        let step = time_step($r.run.duration_s);
        let n = ($r.run.duration_s / step) as usize + 1;
        let x = 0f64..$r.run.duration_s as f64 / step as f64;
        let mut chart = ChartBuilder::on($area)
            .margin(14)
            .margin_right(34)
            .x_label_area_size(62)
            .y_label_area_size(92)
            .build_cartesian_2d(x, $y)?;
        let (start, dur) = ($r.run.start, $r.run.duration_s);
        chart
            .configure_mesh()
            .x_labels(n)
            .y_labels(8)
            .x_label_formatter(&|v| time_label(start, dur, *v * step as f64))
            .y_label_formatter(&$yfmt)
            .x_desc("simulated time (UTC)")
            .y_desc($ydesc)
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, AXIS))
            .light_line_style(GRID)
            .bold_line_style(GRID_BOLD)
            .max_light_lines(1)
            .draw()?;
        chart
    }};
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .legend_area_size(34)
        .background_style(WHITE.mix(0.9))
        .border_style(GRID_BOLD)
        .label_font((FONT, LABEL))
        .draw()?;
    Ok(())
}

fn sessions_chart(r: &Report) -> String {
    let per_s = r.bucket_s as f64;
    let all = points(r, |b| Some(b.sessions as f64 / per_s));
    let failed = points(r, |b| Some(b.failed as f64 / per_s));
    let missed = points(r, |b| Some(b.missed as f64 / per_s));
    let top = all.iter().chain(&missed).map(|p| p.1).fold(0.0, f64::max);
    let ymax = nice_max(top);
    svg(|area| {
        let mut chart = time_chart!(area, r, 0f64..ymax, "sessions per second", |v: &f64| rate_label(*v));
        let blue = PALETTE[0];
        chart.draw_series(AreaSeries::new(all.iter().copied(), 0.0, blue.mix(0.15)))?;
        chart
            .draw_series(LineSeries::new(all.iter().copied(), blue.stroke_width(3)))?
            .label("sessions started")
            .legend(legend_line(blue));
        if r.totals.failed > 0 {
            chart
                .draw_series(LineSeries::new(failed.iter().copied(), FAILED.stroke_width(3)))?
                .label("failed")
                .legend(legend_line(FAILED));
        }
        if r.totals.missed > 0 {
            let grey = PALETTE[6];
            chart
                .draw_series(LineSeries::new(missed.iter().copied(), grey.stroke_width(2)))?
                .label("missed (network off)")
                .legend(legend_line(grey));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

fn latency_chart(r: &Report) -> String {
    let q = |quantile: f64| {
        points(r, move |b| {
            let h = &b.latency.0;
            (!h.is_empty()).then(|| (h.value_at_quantile(quantile) as f64 / 1000.0).max(0.001))
        })
    };
    let lines = [("p50", q(0.5), PALETTE[0]), ("p90", q(0.9), PALETTE[1]), ("p99", q(0.99), FAILED)];
    let values = || lines.iter().flat_map(|l| l.1.iter().map(|p| p.1));
    if values().next().is_none() {
        return "<p class=\"note\">No session latency was measured.</p>".to_string();
    }
    let lo = values().fold(f64::INFINITY, f64::min);
    let hi = values().fold(0.0, f64::max);
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf((hi * 1.3).log10().ceil()).max(lo * 10.0);
    svg(|area| {
        let mut chart = time_chart!(area, r, (lo..hi).log_scale(), "latency (ms)", |v: &f64| ms_label(*v));
        for (name, pts, color) in &lines {
            let color = *color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(3)))?
                .label(*name)
                .legend(legend_line(color));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

fn by_trigger_chart(r: &Report) -> String {
    let by = &r.totals.sessions_by;
    if by.is_empty() {
        return "<p class=\"note\">No session ran.</p>".to_string();
    }
    // Triggers and modes in their usual order, those that occurred only.
    let count = |t: Trigger, m: Mode| by.get(&format!("{}/{}", t.as_str(), m.as_str())).copied().unwrap_or(0);
    let modes = [Mode::Machine, Mode::Maintenance, Mode::Apps];
    let triggers: Vec<Trigger> =
        Trigger::ALL.iter().copied().filter(|t| modes.iter().any(|m| count(*t, *m) > 0)).collect();
    let modes: Vec<Mode> = modes.into_iter().filter(|m| triggers.iter().any(|t| count(*t, *m) > 0)).collect();
    let totals: Vec<u64> = triggers.iter().map(|t| modes.iter().map(|m| count(*t, *m)).sum()).collect();
    let ymax = nice_max(totals.iter().copied().max().unwrap_or(0) as f64 * 1.12);
    let n = triggers.len();
    svg(|area| {
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .margin_right(34)
            .x_label_area_size(62)
            .y_label_area_size(92)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(8)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    triggers.get(*i).map_or(String::new(), |t| t.as_str().to_string())
                }
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|v| thousands(*v as u64))
            .x_desc("trigger")
            .y_desc("sessions")
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, AXIS))
            .light_line_style(GRID)
            .bold_line_style(GRID_BOLD)
            .max_light_lines(1)
            .draw()?;
        let margin = (CHART.0 / (n as u32 * 5)).clamp(8, 70);
        let mut base = vec![0u64; n];
        for (k, mode) in modes.iter().enumerate() {
            let color = PALETTE[k];
            let bars: Vec<_> = triggers
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let c = count(*t, *mode);
                    let (y0, y1) = (base[i] as f64, (base[i] + c) as f64);
                    base[i] += c;
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), y0), (SegmentValue::Exact(i + 1), y1)],
                        color.filled(),
                    );
                    bar.set_margin(0, 0, margin, margin);
                    bar
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(mode.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 8), (x + 22, y + 8)], color.filled()));
        }
        let above = TextStyle::from((FONT, LABEL).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(totals.iter().enumerate().map(|(i, t)| {
            Text::new(thousands(*t), (SegmentValue::CenterOf(i), *t as f64 + ymax * 0.01), above.clone())
        }))?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

fn errors_chart(r: &Report) -> String {
    let per_min = r.bucket_s as f64 / 60.0;
    let classes: Vec<&String> = r.totals.errors.keys().collect();
    let lines: Vec<(&String, Vec<(f64, f64)>)> = classes
        .iter()
        .map(|c| (*c, points(r, |b| Some(b.errors.get(*c).copied().unwrap_or(0) as f64 / per_min))))
        .collect();
    let top = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(0.0, f64::max);
    let ymax = nice_max(top);
    svg(|area| {
        let mut chart = time_chart!(area, r, 0f64..ymax, "errors per minute", |v: &f64| rate_label(*v));
        for (k, (class, pts)) in lines.iter().enumerate() {
            let color = [FAILED, PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], PALETTE[4], PALETTE[6]][k % 7];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(3)))?
                .label(class.as_str())
                .legend(legend_line(color));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// A round upper bound above `v` (1, 2, 2.5 or 5 times a power of ten), with room for the
/// legend.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let v = v * 1.25;
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

fn rate_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 100.0 {
        thousands(v.round() as u64)
    } else if v >= 1.0 {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn ms_label(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{:.1}", v / 1000.0);
        format!("{} s", s.strip_suffix(".0").unwrap_or(&s))
    } else {
        rate_label(v)
    }
}

fn bucket_words(s: u64) -> String {
    match s {
        60 => "minute".to_string(),
        3600 => "hour".to_string(),
        86_400 => "day".to_string(),
        s => duration(s),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn tables(h: &mut String, r: &Report, s: &Summary) {
    h.push_str("<section class=\"tables\">\n");
    let mut lat: Vec<(String, Percentiles)> = ["session", "message", "enroll"]
        .iter()
        .filter_map(|k| s.latency_ms.get(*k).map(|p| (k.to_string(), *p)))
        .collect();
    lat.extend(s.latency_by_ms.iter().map(|(k, p)| (format!("session {k}"), *p)));
    let ms = |v: f64, n: u64| if n == 0 { "-".to_string() } else { format!("{v:.1}") };
    table_of(
        h,
        "wide",
        "Latency (ms)",
        &["", "count", "p50", "p90", "p99", "p99.9", "max"],
        lat.into_iter().map(|(k, p)| {
            vec![
                k,
                thousands(p.count),
                ms(p.p50, p.count),
                ms(p.p90, p.count),
                ms(p.p99, p.count),
                ms(p.p999, p.count),
                ms(p.max, p.count),
            ]
        }),
    );
    let pct = |n: u64| {
        if s.totals.sessions > 0 {
            format!(" ({:.1} %)", 100.0 * n as f64 / s.totals.sessions as f64)
        } else {
            String::new()
        }
    };
    let rows = vec![
        ("Sessions".to_string(), thousands(s.totals.sessions)),
        ("completed".to_string(), format!("{}{}", thousands(s.totals.completed), pct(s.totals.completed))),
        (
            "failed: server unreachable".to_string(),
            format!("{}{}", thousands(s.totals.failed_unreachable), pct(s.totals.failed_unreachable)),
        ),
        (
            "failed: protocol or HTTP error".to_string(),
            format!("{}{}", thousands(s.totals.failed_protocol), pct(s.totals.failed_protocol)),
        ),
        ("Missed (network off)".to_string(), thousands(s.totals.missed)),
        ("Devices unenrolled".to_string(), thousands(s.totals.unenrolled)),
        ("HTTP exchanges".to_string(), thousands(s.totals.messages)),
        (
            "Messages sent / received".to_string(),
            format!("{} / {}", thousands(s.totals.messages_sent), thousands(s.totals.messages_received)),
        ),
        ("Messages sent again (429/503)".to_string(), thousands(s.totals.throttled)),
        (
            "Enrollments (failed)".to_string(),
            format!("{} ({})", thousands(s.totals.enrollments), thousands(s.totals.enrollments_failed)),
        ),
        ("Sessions/s average / peak".to_string(), format!("{:.2} / {:.2}", s.sessions_per_s, s.peak_sessions_per_s)),
        ("Wall time (longest shard)".to_string(), format!("{:.1} s", s.wall_s)),
        ("CPU time (all shards)".to_string(), format!("{:.1} s", s.cpu_s)),
        ("Peak memory (largest shard)".to_string(), format!("{:.1} MiB", s.peak_rss_bytes as f64 / 1048576.0)),
    ];
    table(h, "Summary", &["", "value"], rows.into_iter().map(|(k, v)| vec![k, v]));

    counts_table(h, "Sessions by trigger/mode", "trigger/mode", &s.totals.sessions_by);
    counts_table(h, "Errors by class", "class", &s.totals.errors);
    if !s.totals.enroll_errors.is_empty() {
        counts_table(h, "Failed enrollments by class", "class", &s.totals.enroll_errors);
    }
    counts_table(h, "Status codes sent by the devices", "code", &s.totals.statuses_sent);
    counts_table(h, "Status codes received from the server", "code", &s.totals.statuses_received);
    counts_table(h, "Findings by rule", "rule", &s.totals.findings);
    if r.run.shard_count > 1 {
        table(
            h,
            "Shards",
            &["shard", "devices", "wall s", "CPU s", "peak MiB"],
            r.shards.iter().map(|sh| {
                vec![
                    format!("{}/{}", sh.index, r.run.shard_count),
                    thousands(sh.devices),
                    format!("{:.1}", sh.wall_s),
                    format!("{:.1}", sh.cpu_s),
                    format!("{:.1}", sh.peak_rss_bytes as f64 / 1048576.0),
                ]
            }),
        );
    }
    h.push_str("</section>\n");
}

fn counts_table<K: std::fmt::Display>(
    h: &mut String,
    caption: &str,
    key: &str,
    m: &std::collections::BTreeMap<K, u64>,
) {
    if m.is_empty() {
        let _ = writeln!(h, "<table><caption>{caption}</caption><tr><td>none</td></tr></table>");
        return;
    }
    table(h, caption, &[key, "count"], m.iter().map(|(k, n)| vec![k.to_string(), thousands(*n)]));
}

/// A table whose first column is text and the others numbers; a wide one takes the whole width.
fn table(h: &mut String, caption: &str, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    table_of(h, "", caption, head, rows)
}

fn table_of(h: &mut String, class: &str, caption: &str, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let class = if class.is_empty() { String::new() } else { format!(" class=\"{class}\"") };
    let _ = write!(h, "<table{class}><caption>{}</caption>\n<tr>", esc(caption));
    for (i, c) in head.iter().enumerate() {
        let class = if i > 0 { " class=\"n\"" } else { "" };
        let _ = write!(h, "<th{class}>{}</th>", esc(c));
    }
    h.push_str("</tr>\n");
    for row in rows {
        h.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let class = if i > 0 { " class=\"n\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", esc(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ticks_are_round_and_few() {
        assert_eq!(time_step(86_400), 2 * 3600);
        assert_eq!(time_step(3600), 300);
        assert_eq!(time_step(7 * 86_400), 86_400);
        assert_eq!(time_step(365 * 86_400), 2_592_000);
        let start = "2025-03-03T00:00:00Z".parse().unwrap();
        assert_eq!(time_label(start, 86_400, 3.0 * 3600.0), "03:00");
        assert_eq!(time_label(start, 3 * 86_400, 86_400.0), "Tue 00:00");
        assert_eq!(time_label(start, 30 * 86_400, 86_400.0), "Mar 04");
    }

    fn report(duration_s: u64) -> Report {
        Report::new(super::super::report::RunMeta {
            seed: 1,
            devices: 3,
            shard: None,
            start: "2025-03-03T06:00:00Z".parse().unwrap(),
            duration_s,
            clock: "real".into(),
            target: "<in-process & co>".into(),
            mdmsim_version: "0.1.0".into(),
        })
    }

    #[test]
    fn every_chart_is_drawn_from_an_empty_run_to_one_session() {
        let empty = render(&report(600));
        assert_eq!(empty.matches("<svg").count(), 1, "sessions per second only");
        assert!(empty.contains("No session latency was measured."));
        assert!(empty.contains("No session ran."));
        assert!(empty.contains("No errors were reported in this run."));
        assert!(empty.contains("&lt;in-process &amp; co&gt;") && !empty.contains("<in-process"), "escaped");
        let mut r = report(3 * 86_400);
        let at = r.run.start + chrono::Duration::hours(30);
        let s = crate::session::Summary::new("D", "1", Mode::Machine, Trigger::Reboot, 1201, at);
        r.record(&crate::device::engine::Record::Session { device: "D".into(), at, summary: Box::new(s) }, Some(4000));
        r.error(at, "connect");
        let one = render(&r);
        assert_eq!(one.matches("<svg").count(), 4);
        assert!(!one.contains("could not be drawn"), "{one}");
        assert!(one.contains("Tue 06:00"), "weekday labels for a 3-day run");
    }

    #[test]
    fn axis_bounds_and_labels_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(1.5), 2.0);
        assert_eq!(nice_max(190.0), 250.0);
        assert_eq!(rate_label(2.0), "2");
        assert_eq!(rate_label(2.5), "2.5");
        assert_eq!(rate_label(0.25), "0.25");
        assert_eq!(rate_label(1500.0), "1,500");
        assert_eq!(ms_label(2000.0), "2 s");
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
