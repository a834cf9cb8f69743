//! The loss curve: `loss.svg` and `loss.png` (title, axis labels and legend in both), drawn with
//! plotters. The bitmap's text is rasterized by ab_glyph from DejaVu Sans, embedded in the
//! binary, so a machine without fonts draws the same picture.

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
    let train = records.iter().map(|r| (r.step as f64, r.loss)).filter(|p| p.1.is_finite()).collect();
    let val = records.iter().filter_map(|r| Some((r.step as f64, r.val_loss?))).filter(|p| p.1.is_finite()).collect();
    (train, val)
}

fn ranges(train: &[(f64, f64)], val: &[(f64, f64)]) -> (f64, f64, f64) {
    let all = train.iter().chain(val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.clone().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min);
    (x_max, y_min.min(y_max) * 0.95, y_max * 1.02)
}

/// Makes DejaVu Sans plotters' "sans-serif" (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(TrainError::Plot("the embedded font did not load".into()))
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, records: &[Record]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font()?;
    let (train, val) = series(records);
    let (x_max, y_min, y_max) = ranges(&train, &val);
    root.fill(&WHITE).map_err(perr)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .caption("loss", ("sans-serif", 22))
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, y_min..y_max)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("nats / token")
        .draw()
        .map_err(perr)?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(train, blue.stroke_width(2)))
        .map_err(perr)?
        .label("train")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    chart
        .draw_series(LineSeries::new(val.clone(), red.stroke_width(2)))
        .map_err(perr)?
        .label("validation")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, red.filled()))).map_err(perr)?;
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(perr)?;
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
    draw(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), records)?;
    crate::checkpoint::write_atomic(&svg_path, svg.as_bytes())?;

    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), records)?;
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
    fn writes_svg_and_png_with_labels() {
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
        let mut reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), SIZE);
        let mut rgb = vec![0u8; reader.output_buffer_size()];
        reader.next_frame(&mut rgb).unwrap();
        // The caption "loss" sits centred above the plot, where nothing else is drawn: dark
        // pixels there are its glyphs.
        let dark_in = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| rgb[((y * SIZE.0 + x) * 3) as usize] < 128)
                .count()
        };
        let caption = dark_in(SIZE.0 / 2 - 40, SIZE.0 / 2 + 40, 15, 45);
        assert!(caption > 30, "the PNG's caption has {caption} dark pixels");
        // The axis description "step" below the plot, likewise.
        assert!(dark_in(SIZE.0 / 2 - 60, SIZE.0 / 2 + 60, SIZE.1 - 40, SIZE.1) > 20, "no x-axis label in the PNG");
    }
}
