//! PNG plot of accuracy against SNR, drawn with plotters' bitmap backend.
//!
//! Axis text uses DejaVu Sans, embedded in the binary from the `dejavu` crate and given to
//! plotters' `ab_glyph` font renderer, so no system font or download is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Font family name under which the embedded font is registered.
const FAMILY: &str = "sans-serif";

static REGISTER: Once = Once::new();

fn register_embedded_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType file shipped by the crate; failure is a build bug.
        if register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_err() {
            tracing::warn!("embedded font could not be registered; plot text may be missing");
        }
    });
}

/// One curve: its legend text and (SNR dB, accuracy in [0, 1]) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Errors of drawing or writing the plot.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// Draws accuracy (percent) against SNR (dB) for each series into a 800x500 PNG at `path`.
pub fn accuracy_vs_snr(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    register_embedded_font();
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };

    let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, _) in series.iter().flat_map(|s| s.points.iter()) {
        x_min = x_min.min(*x);
        x_max = x_max.max(*x);
    }
    if !x_min.is_finite() {
        return Err(err(&"no points to plot"));
    }
    if x_max - x_min < 1.0 {
        x_min -= 1.0;
        x_max += 1.0;
    }
    let pad = 0.05 * (x_max - x_min);

    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min - pad)..(x_max + pad), 0.0..100.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("SNR (dB)")
        .y_desc("top-1 accuracy (%)")
        .label_style((FAMILY, 15))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(|e| err(&e))?;

    for (i, s) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s.points.iter().map(|(x, y)| (*x, 100.0 * y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("semclip-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acc.png");
        let series = [Series {
            label: "k=8".into(),
            points: vec![(-10.0, 0.3), (0.0, 0.6), (20.0, 0.9)],
        }];
        accuracy_vs_snr(&path, "test", &series).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_an_empty_plot() {
        let path = std::env::temp_dir().join("semclip-never-written.png");
        assert!(accuracy_vs_snr(&path, "t", &[]).is_err());
    }
}
