//! The loss curve: `loss.svg` (with title, axis labels and legend) and `loss.png`, drawn with
//! plotters. The PNG has no text: plotters' bitmap backend needs a font engine (`ab_glyph` plus an
//! embedded TTF) for text, which is not worth its build cost; the SVG carries the labels.

use crate::metrics::Record;
use crate::{io_err, Result, TrainError};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (800, 480);

fn perr(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Points (step, loss).
type Points = Vec<(f64, f64)>;

/// The series to draw: training loss per step and validation loss on evaluation steps.
fn series(records: &[Record]) -> (Points, Points) {
    let train = records
        .iter()
        .map(|r| (r.step as f64, r.loss))
        .filter(|p| p.1.is_finite())
        .collect();
    let val = records
        .iter()
        .filter_map(|r| Some((r.step as f64, r.val_loss?)))
        .filter(|p| p.1.is_finite())
        .collect();
    (train, val)
}

fn ranges(train: &[(f64, f64)], val: &[(f64, f64)]) -> (f64, f64, f64) {
    let all = train.iter().chain(val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.clone().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min);
    (x_max, y_min.min(y_max) * 0.95, y_max * 1.02)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    records: &[Record],
    text: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (train, val) = series(records);
    let (x_max, y_min, y_max) = ranges(&train, &val);
    root.fill(&WHITE).map_err(perr)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("loss", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, y_min..y_max)
        .map_err(perr)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("step").y_desc("nats / token");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(perr)?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let s = chart
        .draw_series(LineSeries::new(train, blue.stroke_width(2)))
        .map_err(perr)?;
    if text {
        s.label("train")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    }
    let s = chart
        .draw_series(LineSeries::new(val.clone(), red.stroke_width(2)))
        .map_err(perr)?;
    if text {
        s.label("validation")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    }
    chart
        .draw_series(val.iter().map(|&p| Circle::new(p, 3, red.filled())))
        .map_err(perr)?;
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// Draws `loss.svg` and `loss.png` in `dir` from `records` (nothing when there are none).
pub fn plot_loss(dir: &Path, records: &[Record]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let svg_path = dir.join("loss.svg");
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(),
        records,
        true,
    )?;
    crate::checkpoint::write_atomic(&svg_path, svg.as_bytes())?;

    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(),
        records,
        false,
    )?;
    let png_path = dir.join("loss.png");
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, SIZE.0, SIZE.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(perr)?;
        w.write_image_data(&rgb).map_err(perr)?;
    }
    crate::checkpoint::write_atomic(&png_path, &bytes).map_err(|e| match e {
        TrainError::Io { source, .. } => io_err(&png_path)(source),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg_with_labels_and_a_decodable_png() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=20)
            .map(|s| Record {
                step: s,
                loss: 5.0 / s as f64,
                lr: 1e-3,
                tokens_per_s: 1.0,
                grad_norm: None,
                val_loss: (s % 5 == 0).then_some(5.5 / s as f64),
                val_bpb: None,
            })
            .collect();
        plot_loss(dir.path(), &records).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("validation") && svg.contains("polyline"));
        let png = std::fs::read(dir.path().join("loss.png")).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), SIZE);
    }
}
