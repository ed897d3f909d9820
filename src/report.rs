//! The analysis report: one self-contained HTML file (inline SVG drawn with plotters, no scripts, no
//! network) with the per-layer numbers of `analyze` as charts and tables, and what runs in which precision.
use crate::analyze::LayerStats;
use crate::calib::Calibrated;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use qcc_ir::{Graph, Op};
use qcc_runtime::observe::RangeMethod;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One chart as an SVG string.
fn svg(w: u32, h: u32, draw: impl FnOnce(&Area) -> DrawResult) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing a chart: {e}"))?;
        draw(&root).map_err(|e| anyhow!("drawing a chart: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing a chart: {e}"))?;
    }
    Ok(out)
}

type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A chart with the report's layout: title, x and y ranges, axis descriptions.
fn axes<'a, 'b>(
    root: &'a Area<'b>,
    title: impl AsRef<str>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    (xd, yd): (&str, &str),
) -> std::result::Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut c = ChartBuilder::on(root)
        .caption(title.as_ref(), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x, y)?;
    c.configure_mesh().x_desc(xd).y_desc(yd).draw()?;
    Ok(c)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn finite_or(v: f64, d: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        d
    }
}

fn sqnr_chart(layers: &[LayerStats]) -> Result<String> {
    let top =
        layers.iter().flat_map(|l| [l.sqnr_db, l.alone_sqnr_db, l.sensitivity_db]).filter(|v| v.is_finite()).fold(10f64, f64::max) + 5.0;
    svg(900, 320, |root| {
        let mut c = axes(root, "SQNR per layer (dB; higher is better)", 0f64..layers.len().max(1) as f64, 0f64..top, ("layer #", "dB"))?;
        let pts = |f: fn(&LayerStats) -> f64| layers.iter().enumerate().map(move |(i, l)| (i as f64 + 0.5, finite_or(f(l), top)));
        c.draw_series(LineSeries::new(pts(|l| l.alone_sqnr_db), BLUE.stroke_width(2)))?
            .label("alone (the error this layer adds)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.draw_series(LineSeries::new(pts(|l| l.sqnr_db), RED.stroke_width(2)))?
            .label("end to end")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        if layers.iter().any(|l| l.sensitivity_db.is_finite()) {
            let sens = layers
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.sensitivity_db.is_nan())
                .map(|(i, l)| (i as f64 + 0.5, finite_or(l.sensitivity_db, top)));
            c.draw_series(LineSeries::new(sens, GREEN.stroke_width(2)))?
                .label("sensitivity (network output, only this layer quantized)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        }
        c.configure_series_labels().position(SeriesLabelPosition::LowerLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

fn range_chart(layers: &[LayerStats]) -> Result<String> {
    let lo = layers.iter().map(|l| l.range.0 as f64).fold(0f64, f64::min);
    let hi = layers.iter().map(|l| l.range.1 as f64).fold(1e-6f64, f64::max);
    let pad = (hi - lo) * 0.05;
    svg(900, 320, |root| {
        let mut c = axes(
            root,
            "Float activation range per layer (min to max over the analysed samples)",
            0f64..layers.len().max(1) as f64,
            (lo - pad)..(hi + pad),
            ("layer #", "value"),
        )?;
        c.draw_series(layers.iter().enumerate().map(|(i, l)| {
            Rectangle::new([(i as f64 + 0.15, l.range.0 as f64), (i as f64 + 0.85, l.range.1 as f64)], BLUE.mix(0.6).filled())
        }))?;
        Ok(())
    })
}

fn scatter_chart(layers: &[LayerStats]) -> Result<String> {
    let xmax = layers.iter().map(|l| (l.range.1 - l.range.0) as f64).fold(1e-6f64, f64::max) * 1.05;
    let ymax = layers.iter().map(|l| finite_or(l.rmse_over_scale, 0.0)).fold(0.5f64, f64::max) * 1.1;
    svg(900, 320, |root| {
        let mut c = axes(
            root,
            "RMSE in quantization steps vs activation range (0.29 = pure rounding)",
            0f64..xmax,
            0f64..ymax,
            ("range (max - min)", "RMSE / scale"),
        )?;
        c.draw_series(LineSeries::new([(0.0, 0.2887), (xmax, 0.2887)], BLACK.mix(0.5)))?;
        c.draw_series(
            layers.iter().map(|l| Circle::new(((l.range.1 - l.range.0) as f64, finite_or(l.rmse_over_scale, 0.0)), 4, RED.filled())),
        )?;
        Ok(())
    })
}

/// Box plots (min, quartiles, max) of each conv/gemm's per-channel max |w|.
fn weight_chart(layers: &[LayerStats]) -> Result<Option<String>> {
    let with: Vec<(usize, &LayerStats)> = layers.iter().enumerate().filter(|(_, l)| !l.weight_channels.is_empty()).collect();
    if with.is_empty() {
        return Ok(None);
    }
    let ymax = with.iter().flat_map(|(_, l)| l.weight_channels.iter().copied()).fold(1e-6f32, f32::max) as f64 * 1.05;
    let chart = svg(900, 320, |root| {
        let mut c = axes(
            root,
            "Per-channel weight range (max |w| per output channel) of each conv/gemm",
            0f64..layers.len().max(1) as f64,
            0f64..ymax,
            ("layer #", "max |w|"),
        )?;
        for (i, l) in &with {
            draw_box(&mut c, *i as f64 + 0.5, 0.35, &l.weight_channels, GREEN)?;
        }
        Ok(())
    })?;
    Ok(Some(chart))
}

/// One box plot at `x` (half width `hw`): whiskers at min and max, box from the first to the third
/// quartile, a line at the median.
fn draw_box(c: &mut Chart, x: f64, hw: f64, values: &[f32], color: RGBColor) -> DrawResult {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    if v.is_empty() {
        return Ok(());
    }
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64;
    c.draw_series(std::iter::once(PathElement::new(vec![(x, q(0.0)), (x, q(1.0))], BLACK)))?;
    c.draw_series(std::iter::once(Rectangle::new([(x - hw, q(0.25)), (x + hw, q(0.75))], color.mix(0.7).filled())))?;
    c.draw_series(std::iter::once(PathElement::new(vec![(x - hw, q(0.5)), (x + hw, q(0.5))], BLACK.stroke_width(2))))?;
    Ok(())
}

/// Per output channel max |w| of a float conv/gemm's constant weights, divided by the largest: how much
/// of one per-tensor weight range each channel uses.
fn float_channel_use(g: &Graph, n: qcc_ir::NodeId) -> Option<Vec<f32>> {
    let node = g.node(n);
    let axis = match node.op {
        Op::Conv { .. } => 0,
        Op::Gemm { trans_b, .. } => usize::from(!trans_b),
        _ => return None,
    };
    let w = g.const_tensor(*node.inputs.get(1)?)?.as_f32()?;
    let m: Vec<f32> = w.axis_iter(ndarray::Axis(axis)).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
    let top = m.iter().copied().fold(0f32, f32::max);
    (top > 0.0).then(|| m.iter().map(|v| v / top).collect())
}

/// Box plots of each conv/gemm's per-channel weight ranges before (red) and after (green) equalization.
fn equalization_chart(cal: &Calibrated) -> Result<Option<String>> {
    let Some(before) = &cal.before_equalize else { return Ok(None) };
    let by_loc: std::collections::HashMap<&[String], qcc_ir::NodeId> =
        before.node_ids().map(|n| (before.node(n).loc.as_slice(), n)).collect();
    let after = &cal.graph;
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = after
        .topo_order()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let b = *by_loc.get(after.node(n).loc.as_slice())?;
            Some((float_channel_use(before, b)?, float_channel_use(after, n)?))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(None);
    }
    let chart = svg(900, 320, |root| {
        let mut c = axes(
            root,
            "Equalization: per-channel max |w| / layer max, before (red) and after (green)",
            0f64..pairs.len() as f64,
            0f64..1.05,
            ("conv/gemm #", "share of the layer's range"),
        )?;
        for (i, (b, a)) in pairs.iter().enumerate() {
            draw_box(&mut c, i as f64 + 0.3, 0.18, b, RED)?;
            draw_box(&mut c, i as f64 + 0.7, 0.18, a, GREEN)?;
        }
        Ok(())
    })?;
    Ok(Some(chart))
}

/// The calibration histogram of one layer with each range method's clipping range.
fn histogram_chart(cal: &Calibrated, l: &LayerStats, levels: u32) -> Result<Option<String>> {
    let Some(obs) = cal.observers.get(&l.float_value) else { return Ok(None) };
    let (lo, width, hist) = obs.histogram();
    let Some(first) = hist.iter().position(|c| *c > 0) else { return Ok(None) };
    let last = hist.iter().rposition(|c| *c > 0).unwrap_or(first);
    let (x0, x1) = (lo + first as f64 * width, lo + (last + 1) as f64 * width);
    let ymax = hist.iter().map(|c| (*c as f64 + 1.0).log10()).fold(1f64, f64::max) * 1.1;
    let methods: Vec<(String, (f32, f32))> = RangeMethod::all().into_iter().map(|m| (m.name(), obs.range(m, levels))).collect();
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK, YELLOW];
    let chart = svg(900, 360, |root| {
        let mut c = axes(
            root,
            format!("Calibration histogram of {} with each method's range", l.name),
            x0..x1.max(x0 + 1e-6),
            0f64..ymax,
            ("value", "log10(count + 1)"),
        )?;
        c.draw_series(hist[first..=last].iter().enumerate().map(|(i, n)| {
            let a = lo + (first + i) as f64 * width;
            Rectangle::new([(a, 0.0), (a + width, (*n as f64 + 1.0).log10())], BLACK.mix(0.35).filled())
        }))?;
        for (k, (name, (a, b))) in methods.iter().enumerate() {
            let col = colors[k % colors.len()];
            let y = ymax * (0.95 - 0.06 * k as f64);
            c.draw_series(LineSeries::new([(*a as f64, y), (*b as f64, y)], col.stroke_width(3)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(Some(chart))
}

/// Every node of the quantized graph that computes something, with the precision it computes in.
fn precision_table(q: &Graph) -> (String, [usize; 3]) {
    let mut rows = String::new();
    let mut counts = [0usize; 3];
    for n in q.topo_order().unwrap_or_default() {
        let node = q.node(n);
        if matches!(node.op, Op::Quantize | Op::Dequantize) || qcc_passes::is_layout_only(&node.op) {
            continue;
        }
        let t = q.ty(node.output);
        let (prec, k) = match t.quant().map(|x| x.storage) {
            Some(qcc_ir::DType::I16) => ("int16", 1),
            Some(_) => ("int8", 0),
            None => ("float", 2),
        };
        counts[k] += 1;
        rows.push_str(&format!("<tr class=\"{prec}\"><td>{}</td><td>{}</td><td>{prec}</td></tr>\n", esc(node.name()), esc(node.op.name())));
    }
    (rows, counts)
}

/// The whole report.
#[allow(clippy::too_many_arguments)]
pub fn html(
    model: &str,
    scheme: &str,
    cal: &Calibrated,
    q: &Graph,
    layers: &[LayerStats],
    samples: usize,
    focus: Option<&str>,
    auto_log: &[String],
) -> Result<String> {
    let worst = layers.iter().min_by(|a, b| a.alone_sqnr_db.total_cmp(&b.alone_sqnr_db));
    let chosen = match focus {
        Some(name) => Some(
            layers
                .iter()
                .find(|l| l.name == name || l.name.split('+').any(|p| p == name))
                .ok_or_else(|| anyhow!("--report-layer {name:?} names no quantized tensor (the layer names are in the report's table)"))?,
        ),
        None => worst,
    };
    let levels = if layers.iter().any(|l| l.precision == "int16") { 65536 } else { 256 };
    let (prec_rows, counts) = precision_table(q);
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>qcc quantization report</h1>\n<p>Model <code>{}</code>, {}; {} quantized tensors compared with float on {samples} \
         calibration samples. Compute nodes: {} int8, {} int16, {} float.</p>\n",
        esc(model),
        esc(scheme),
        layers.len(),
        counts[0],
        counts[1],
        counts[2]
    ));
    if !auto_log.is_empty() {
        body.push_str("<h2>Mixed precision decisions</h2>\n<p>Each promotion, the metric after it and its measured latency:</p>\n<pre>");
        for line in auto_log {
            body.push_str(&format!("{}\n", esc(line)));
        }
        body.push_str("</pre>\n");
    }
    body.push_str("<h2>Worst layers</h2>\n<pre>");
    body.push_str(&esc(&crate::analyze::table(layers, Some(5))));
    body.push_str("</pre>\n");
    for chart in [sqnr_chart(layers)?, range_chart(layers)?, scatter_chart(layers)?] {
        body.push_str(&format!("<div class=\"chart\">{chart}</div>\n"));
    }
    if let Some(c) = weight_chart(layers)? {
        body.push_str(&format!("<div class=\"chart\">{c}</div>\n"));
    }
    match equalization_chart(cal)? {
        Some(c) => body.push_str(&format!(
            "<div class=\"chart\">{c}</div>\n<p>Cross-layer equalization rescales channels so that each uses more of its \
             layer's weight range: boxes closer to 1 lose less to per-tensor weight quantization.</p>\n"
        )),
        None => body.push_str(
            "<p>Equalization is off (it runs at <code>-O2</code> unless <code>--no-equalize</code>; the report then \
             shows each layer's per-channel weight ranges before and after it).</p>\n",
        ),
    }
    if let Some(l) = chosen {
        if let Some(c) = histogram_chart(cal, l, levels)? {
            body.push_str(&format!("<h2>{}</h2>\n<div class=\"chart\">{c}</div>\n", esc(&l.name)));
        }
    }
    body.push_str("<h2>Every quantized tensor</h2>\n<pre>");
    let all = crate::analyze::table(layers, None);
    for (i, line) in all.lines().enumerate() {
        body.push_str(&if i == 0 { format!("    # {}\n", esc(line)) } else { format!("{:>5} {}\n", i - 1, esc(line)) });
    }
    body.push_str("</pre>\n<h2>What runs in which precision</h2>\n<table>\n<tr><th>node</th><th>op</th><th>precision</th></tr>\n");
    body.push_str(&prec_rows);
    body.push_str("</table>\n");
    Ok(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>qcc report: {}</title>\n<style>body{{font-family:sans-serif;margin:2em}}\
         pre{{font-size:12px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:12px}}\
         tr.float td{{background:#fdd}}tr.int16 td{{background:#ffd}}.chart{{margin:1em 0}}</style></head>\n<body>\n{body}</body></html>\n",
        esc(model)
    ))
}
