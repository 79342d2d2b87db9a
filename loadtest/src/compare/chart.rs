//! SVG charts for `compare`, drawn with plotters: per scenario, latency by
//! percentile for each system on HdrHistogram's log axis (x = 1/(1-p), so
//! 90%, 99%, 99.9% … are evenly spaced), next to CPU µs per request as bars.

use plotters::prelude::*;
use std::path::Path;

/// One system's data in a chart.
pub struct Series {
    pub name: String,
    /// (percentile 0..100, latency ms).
    pub curve: Vec<(f64, f64)>,
    pub cpu_us: f64,
}

/// Largest x drawn: 1/(1-p) at p = 99.999 %.
const X_MAX: f64 = 1e5;

fn pct_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    draw_inner(path, title, series).map_err(|e| format!("chart {}: {e}", path.display()))
}

fn draw_inner(
    path: &Path,
    title: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(720);

    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.curve
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .filter(|(_, ms)| *ms > 0.0)
                .map(|&(p, ms)| ((1.0 / (1.0 - p / 100.0)).clamp(1.0, X_MAX), ms))
                .collect()
        })
        .collect();
    let x_hi = points
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(100.0f64, f64::max)
        .min(X_MAX);
    // Log latency axis too: tails of different systems span decades.
    let y_hi = points.iter().flatten().map(|p| p.1).fold(0.01f64, f64::max) * 1.5;
    let y_lo = points
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(y_hi / 10.0)
        / 1.5;
    let mut chart = ChartBuilder::on(&left)
        .margin(12)
        .caption("latency by percentile", ("sans-serif", 16))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..x_hi).log_scale(), (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .x_label_formatter(&|x| pct_label(*x))
        .draw()?;
    for (i, (s, pts)) in series.iter().zip(points).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let n = series.len().max(1);
    let c_hi = series.iter().map(|s| s.cpu_us).fold(0.1f64, f64::max) * 1.2;
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    let mut bars = ChartBuilder::on(&right)
        .margin(12)
        .caption("server CPU µs per request", ("sans-serif", 16))
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..c_hi)?;
    bars.configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .y_desc("µs / request")
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()?;
    bars.draw_series(series.iter().enumerate().map(|(i, s)| {
        let x = i as f64;
        Rectangle::new(
            [(x - 0.35, 0.0), (x + 0.35, s.cpu_us)],
            Palette99::pick(i).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(pct_label(1.0), "0%");
        assert_eq!(pct_label(10.0), "90%");
        assert_eq!(pct_label(1000.0), "99.9%");
    }

    #[test]
    fn draws_svg() {
        let dir = std::env::temp_dir().join(format!("loadtest-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.svg");
        let s = vec![
            Series {
                name: "a".into(),
                curve: vec![
                    (0.0, 0.1),
                    (50.0, 0.2),
                    (99.0, 1.0),
                    (99.9, 3.0),
                    (100.0, 9.0),
                ],
                cpu_us: 12.0,
            },
            Series {
                name: "b".into(),
                curve: vec![(0.0, 0.2), (90.0, 0.4), (99.99, 5.0)],
                cpu_us: 20.0,
            },
        ];
        draw(&p, "test", &s).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
