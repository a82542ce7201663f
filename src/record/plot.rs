//! A scatter plot of trials in two objectives as a standalone SVG: every successful trial as a
//! dot, the Pareto front as larger dots joined by its staircase, axes with ticks and the
//! objectives' names and directions.

use std::fmt::Write as _;

/// Size of the drawing.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 480.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 64.0;

/// One axis: the objective's name, and whether larger is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Label.
    pub name: String,
    /// Larger is better.
    pub maximize: bool,
}

/// Draws `points` (x, y) with the indices in `front` highlighted and joined in x order.
pub fn scatter_svg(
    title: &str,
    x: &Axis,
    y: &Axis,
    points: &[(f64, f64)],
    front: &[usize],
) -> String {
    let (x_lo, x_hi) = padded_range(points.iter().map(|p| p.0));
    let (y_lo, y_hi) = padded_range(points.iter().map(|p| p.1));
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let sx = |v: f64| MARGIN_LEFT + (v - x_lo) / (x_hi - x_lo) * plot_w;
    let sy = |v: f64| MARGIN_TOP + plot_h - (v - y_lo) / (y_hi - y_lo) * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{MARGIN_LEFT}\" y=\"{MARGIN_TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#888\"/>"
    );
    for tick in ticks(x_lo, x_hi) {
        let px = sx(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{MARGIN_TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
            label(tick)
        );
    }
    for tick in ticks(y_lo, y_hi) {
        let py = sy(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            py + 4.0,
            label(tick)
        );
    }
    let direction = |a: &Axis| {
        if a.maximize {
            "higher is better"
        } else {
            "lower is better"
        }
    };
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} ({})</text>",
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 20.0,
        escape(&x.name),
        direction(x)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{} ({})</text>",
        MARGIN_TOP + plot_h / 2.0,
        escape(&y.name),
        direction(y)
    );
    for &(px, py) in points {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#9ab\" fill-opacity=\"0.7\"/>",
            sx(px),
            sy(py)
        );
    }
    let mut on_front: Vec<(f64, f64)> = front.iter().map(|&i| points[i]).collect();
    on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = on_front
        .iter()
        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#c33\" stroke-width=\"1.5\"/>",
        path.join(" ")
    );
    for p in &on_front {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#c33\"/>",
            sx(p.0),
            sy(p.1)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The range of `values` widened by 5% on each side (by 0.5 when they are all equal).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// About five round tick values inside `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label with as few digits as it needs.
fn label(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// `text` safe inside SVG markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert!(ticks(0.61, 0.69).iter().all(|t| (0.61..=0.69).contains(t)));
        assert_eq!(label(0.30000000000000004), "0.3");
    }

    #[test]
    fn the_plot_is_an_svg_with_every_point_and_the_front_highlighted() {
        let x = Axis {
            name: "digits/accuracy".into(),
            maximize: true,
        };
        let y = Axis {
            name: "loss <ce>".into(),
            maximize: false,
        };
        let svg = scatter_svg(
            "front",
            &x,
            &y,
            &[(0.1, 2.0), (0.5, 1.0), (0.3, 3.0)],
            &[0, 1],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("r=\"3\"").count(), 3);
        assert_eq!(svg.matches("r=\"5\"").count(), 2);
        assert!(svg.contains("loss &lt;ce&gt; (lower is better)"));
    }
}
