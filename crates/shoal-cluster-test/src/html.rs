//! `report.html`: the summary, the faults, and plots drawn with plotters as inline SVG:
//! latency over time and throughput over time, each with the fault windows shaded, and,
//! when a key's history has no linearization, its violation window as a timeline of
//! process lanes (as Porcupine and Knossos draw theirs).

use crate::history::OpRecord;
use crate::report::{Summary, ViolationWindow};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;

/// At most this many successful operations are drawn in the latency plot (evenly sampled;
/// failures and unknowns are all drawn).
const MAX_POINTS: usize = 20_000;

const OK: RGBColor = RGBColor(45, 110, 190);
const FAIL: RGBColor = RGBColor(230, 140, 20);
const INFO: RGBColor = RGBColor(200, 30, 30);

/// A fault kind's shade.
fn shade(fault: &str) -> RGBColor {
    match fault {
        "kill" => RGBColor(220, 60, 60),
        "pause" => RGBColor(150, 80, 200),
        "partition" => RGBColor(230, 160, 30),
        _ => RGBColor(60, 160, 90),
    }
}

fn draw_error<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the report: {e:?}")
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws `draw` on a fresh SVG of `size`; returns the SVG.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        draw(&root)?;
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

/// The clients' operations (not the setup writes or final reads).
fn client_ops(ops: &[OpRecord]) -> impl Iterator<Item = &OpRecord> {
    ops.iter()
        .filter(|o| o.process < crate::workload::SETUP_PROCESS)
}

/// A chart over the run's seconds, with values of `Y` up its side.
type TimeChart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

/// A time chart's frame: its title, margins and room for the axes' labels.
fn time_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56);
    builder
}

/// Draws a time chart's axes, `unit` up the side.
fn time_axes<Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut TimeChart<'_, '_, Y>,
    unit: &str,
) -> Result<(), String> {
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc(unit)
        .draw()
        .map_err(draw_error)
}

/// Shades each fault's window from `bottom` to `top` in its kind's colour, its name at
/// `label_at`.
fn shade_faults<Y: Ranged<ValueType = f64>>(
    chart: &mut TimeChart<'_, '_, Y>,
    summary: &Summary,
    (bottom, top): (f64, f64),
    label_at: f64,
) -> Result<(), String> {
    for f in &summary.nemesis {
        let (a, b) = (f.start_ms as f64 / 1e3, f.end_ms as f64 / 1e3);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, bottom), (b, top)],
                shade(f.fault).mix(0.18).filled(),
            )))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                f.fault,
                (a, label_at),
                ("sans-serif", 11),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Latency of every completed operation over time, log scale, faults shaded.
fn latency_plot(summary: &Summary, ops: &[OpRecord], seconds: f64) -> Result<String, String> {
    let completed: Vec<(f64, f64, &str)> = client_ops(ops)
        .filter_map(|o| {
            let done = o.completed?;
            let ms = (done.saturating_sub(o.invoked) as f64 / 1e6).max(0.01);
            Some((o.invoked as f64 / 1e9, ms, o.outcome))
        })
        .collect();
    let max_ms = completed
        .iter()
        .map(|&(_, ms, _)| ms)
        .fold(10.0f64, f64::max)
        * 1.5;
    let ok_count = completed.iter().filter(|p| p.2 == "ok").count();
    let every = ok_count.div_ceil(MAX_POINTS).max(1);
    svg((1000, 380), |root| {
        let mut chart = time_chart(
            root,
            "Latency of each operation (ms, log scale); faults shaded",
        )
        .build_cartesian_2d(0f64..seconds, (0.01f64..max_ms).log_scale())
        .map_err(draw_error)?;
        time_axes(&mut chart, "ms")?;
        shade_faults(&mut chart, summary, (0.01, max_ms), max_ms / 1.4)?;
        for (outcome, color, size) in [("ok", OK, 1), ("fail", FAIL, 3), ("info", INFO, 3)] {
            let points = completed
                .iter()
                .filter(|p| p.2 == outcome)
                .enumerate()
                .filter(|(i, _)| outcome != "ok" || i % every == 0)
                .map(|(_, &(x, y, _))| Circle::new((x, y), size, color.filled()));
            chart
                .draw_series(points)
                .map_err(draw_error)?
                .label(outcome)
                .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(draw_error)?;
        Ok(())
    })
}

/// Operations completed per second by outcome, faults shaded.
fn throughput_plot(summary: &Summary, ops: &[OpRecord], seconds: f64) -> Result<String, String> {
    let buckets = seconds.ceil() as usize + 1;
    let mut counts = [
        vec![0u64; buckets],
        vec![0u64; buckets],
        vec![0u64; buckets],
    ];
    for o in client_ops(ops) {
        let Some(done) = o.completed else { continue };
        let second = ((done / 1_000_000_000) as usize).min(buckets - 1);
        let row = match o.outcome {
            "ok" => 0,
            "fail" => 1,
            _ => 2,
        };
        counts[row][second] += 1;
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    svg((1000, 320), |root| {
        let mut chart = time_chart(root, "Operations completed per second; faults shaded")
            .build_cartesian_2d(0f64..seconds, 0f64..top)
            .map_err(draw_error)?;
        time_axes(&mut chart, "ops/s")?;
        shade_faults(&mut chart, summary, (0.0, top), top * 0.97)?;
        for (row, (name, color)) in [("ok", OK), ("fail", FAIL), ("info", INFO)]
            .into_iter()
            .enumerate()
        {
            let line = counts[row]
                .iter()
                .enumerate()
                .map(|(s, &n)| (s as f64 + 0.5, n as f64));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(draw_error)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(draw_error)?;
        Ok(())
    })
}

/// How an operation reads on the timeline: `w 17`, `r 17`, `cas 3→17 ok`.
fn label(o: &OpRecord) -> String {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "nil".to_string(),
        v => v.to_string(),
    };
    match o.f {
        "read" => format!("r {}", value(&o.result)),
        "cas" => format!(
            "cas {}→{} {}",
            value(&o.value[0]),
            value(&o.value[1]),
            value(&o.result)
        ),
        f => format!("{f} {}", value(&o.value)),
    }
}

/// The violation window: one lane per process, each operation a bar from invocation to
/// completion (an unknown one runs to the window's end), the one no order fits in red.
fn timeline(window: &ViolationWindow) -> Result<String, String> {
    let ops = window.rows();
    let mut lanes: Vec<u64> = ops.iter().map(|o| o.process).collect();
    lanes.sort_unstable();
    lanes.dedup();
    let start = ops.iter().map(|o| o.invoked).min().unwrap_or(0);
    let end = ops
        .iter()
        .map(|o| o.completed.unwrap_or(o.invoked))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let pad = (end - start) as f64 / 1e6 * 0.05;
    let span = (end - start) as f64 / 1e6 + pad;
    let ms = |t: u64| (t - start) as f64 / 1e6;
    let height = 90 + 46 * lanes.len() as u32;
    svg((1000, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Key {}: the violation window", window.key),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(90)
            .build_cartesian_2d(-pad..span, -0.5f64..lanes.len() as f64 - 0.5)
            .map_err(draw_error)?;
        let lane_names = lanes.clone();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_desc("ms since the window's first invocation")
            .y_labels(lanes.len().max(1))
            .y_label_formatter(&move |y| {
                let i = y.round();
                if (y - i).abs() > 0.01 || i < 0.0 {
                    return String::new();
                }
                match lane_names.get(i as usize) {
                    Some(&p) if p == crate::workload::FINAL_PROCESS => "final read".into(),
                    Some(p) => format!("process {p}"),
                    None => String::new(),
                }
            })
            .draw()
            .map_err(draw_error)?;
        for o in &ops {
            let lane = lanes.iter().position(|&p| p == o.process).unwrap_or(0) as f64;
            // Quick operations in a long window still show as bars.
            let (a, b) = (ms(o.invoked), o.completed.map_or(span, ms));
            let b = b.max(a + span * 0.008);
            let color = if o.id == window.last.id {
                INFO
            } else {
                match o.outcome {
                    "ok" => OK,
                    "fail" => FAIL,
                    _ => RGBColor(150, 150, 150),
                }
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, lane - 0.28), (b, lane + 0.28)],
                    color.mix(0.75).filled(),
                )))
                .map_err(draw_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label(o),
                    (a, lane + 0.45),
                    ("sans-serif", 12),
                )))
                .map_err(draw_error)?;
        }
        Ok(())
    })
}

/// The whole page.
pub fn render(summary: &Summary, table: &str, ops: &[OpRecord]) -> Result<String, String> {
    let seconds = client_ops(ops)
        .filter_map(|o| o.completed)
        .max()
        .map_or(1.0, |t| (t as f64 / 1e9).ceil().max(1.0));
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cluster-test seed {}</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:1040px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;\
         text-align:left;font-size:13px}}pre{{background:#f6f6f6;padding:10px}}</style>\
         </head><body><h1>cluster-test: seed {}, {} nodes, {} workload</h1><pre>{}</pre>",
        summary.seed,
        summary.seed,
        summary.nodes,
        summary.workload,
        esc(table)
    );
    page.push_str(&latency_plot(summary, ops, seconds)?);
    page.push_str(&throughput_plot(summary, ops, seconds)?);
    page.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>nodes</th><th>from (s)</th><th>to (s)</th><th>took effect</th><th>detail</th></tr>");
    for f in &summary.nemesis {
        let _ = write!(
            page,
            "<tr><td style=\"color:rgb{:?}\">{}</td><td>{:?}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            {
                let RGBColor(r, g, b) = shade(f.fault);
                (r, g, b)
            },
            f.fault,
            f.nodes,
            f.start_ms as f64 / 1e3,
            f.end_ms as f64 / 1e3,
            if f.took_effect { "yes" } else { "no" },
            esc(&f.detail)
        );
    }
    page.push_str("</table>");
    if let Some(window) = &summary.violation {
        let _ = write!(
            page,
            "<h2>Violation on key {}</h2><p>The shortest prefix of the key's history with no \
             linearization has {} of its {} operations. It ends when operation {} (in red) \
             completes: no order of the operations before it and the {} concurrent with it \
             fits its outcome. Drawn with them are the {} operations that completed last \
             before it began.</p>",
            esc(&window.key),
            window.prefix_ops,
            window.key_ops,
            window.last.id,
            window.concurrent.len(),
            window.before.len()
        );
        page.push_str(&timeline(window)?);
        page.push_str("<table><tr><th>id</th><th>process</th><th>operation</th><th>outcome</th><th>invoked (ms)</th><th>completed (ms)</th></tr>");
        for o in window.rows() {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                o.id,
                o.process,
                esc(&label(o)),
                o.outcome,
                o.invoked as f64 / 1e6,
                o.completed
                    .map_or("never".into(), |c| format!("{:.3}", c as f64 / 1e6))
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::history::{Event, Recorder};
    use crate::nemesis::FaultEvent;
    use crate::report::{figures, Summary, ViolationWindow};
    use shoal_sim::linearizability::{Outcome, RegisterOp};

    fn summary(events: &[Event], nemesis: Vec<FaultEvent>) -> Summary {
        let f = figures(events);
        Summary {
            seed: 1,
            nodes: 3,
            workload: "register",
            ops: f.ops,
            ok: f.ok,
            fail: f.fail,
            info: f.info,
            lost: None,
            set: None,
            violations: Vec::new(),
            linearizable: Some(true),
            violation_key: None,
            violation: None,
            replicas_equal: true,
            unread_keys: 0,
            longest_unavailable_ms: f.longest_unavailable_ms,
            latency_p50_ms: f.p50_ms,
            latency_p99_ms: f.p99_ms,
            nemesis,
            carried_out: true,
            unclean_exits: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// The page draws with no operations at all, and with operations, faults and a
    /// violation window; its plots are inline SVG, its text escaped.
    #[test]
    fn the_report_draws_empty_and_full_runs() {
        let empty = summary(&[], Vec::new());
        let page = render(&empty, "<table>", &[]).unwrap();
        assert!(page.contains("&lt;table&gt;"));
        assert_eq!(page.matches("<svg").count(), 2);

        let recorder = Recorder::new();
        for i in 0..50u64 {
            let (id, op) = recorder.invoke_with(i % 3, "r1", RegisterOp::Write);
            let outcome = [Outcome::Written, Outcome::Failed, Outcome::Unknown][(i % 3) as usize];
            recorder.complete(id, i % 3, "r1", op, outcome);
        }
        let (id, op) = recorder.invoke_with(7, "r1", |_| RegisterOp::Read);
        recorder.complete(id, 7, "r1", op, Outcome::Read(Some(0)));
        let events = recorder.finish().events;
        let ops = crate::history::operations(&events);
        let fault = FaultEvent {
            fault: "partition",
            nodes: vec![1],
            leader: false,
            detail: "majority [2, 3] / minority [1]".into(),
            took_effect: true,
            clean_cut: true,
            start_ms: 0,
            end_ms: 1,
        };
        let mut full = summary(&events, vec![fault]);
        let last = ops.last().unwrap().clone();
        full.violation = Some(ViolationWindow {
            key: "r1".into(),
            prefix_ops: ops.len(),
            key_ops: ops.len(),
            before: crate::report::preceding(&ops, "r1", &last, 4),
            concurrent: Vec::new(),
            last,
        });
        let page = render(&full, "table", &ops).unwrap();
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("Violation on key r1"));
        assert!(page.contains("majority [2, 3] / minority [1]"));
    }
}
