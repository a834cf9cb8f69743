//! The loss curve: `loss.svg` and `loss.png` (title, axis labels and legend in both), drawn with
//! plotters; and charts of other lines (RL's reward and held-out accuracy, accuracy against
//! samples). The bitmap's text is rasterized by ab_glyph from DejaVu Sans, embedded in the
//! binary, so a machine without fonts draws the same picture.

use crate::metrics::Record;
use crate::{io_err, Result, TrainError};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (800, 480);

fn perr(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Points (x, y).
pub type Points = Vec<(f64, f64)>;

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
    write_both(dir, "loss", |svg| draw(svg.into_drawing_area(), records), |bmp| draw(bmp.into_drawing_area(), records))
}

/// A chart of lines: what it shows, and its series (name, points; a series with one point is
/// drawn as a dot).
pub struct Lines<'a> {
    /// Caption.
    pub title: &'a str,
    /// x-axis description.
    pub x_desc: &'a str,
    /// y-axis description.
    pub y_desc: &'a str,
    /// x values are powers of two (N = 1, 2, 4 …): drawn at log2 x, labelled as N.
    pub log2_x: bool,
    /// Series in legend order.
    pub series: Vec<(String, Points)>,
}

/// Draws `NAME.svg` and `NAME.png` in `dir`: accuracy against samples (`kiln eval --think`),
/// reward and held-out accuracy against RL steps (`kiln rl`).
pub fn plot_lines(dir: &Path, name: &str, lines: &Lines) -> Result<()> {
    if lines.series.iter().all(|(_, p)| p.is_empty()) {
        return Ok(());
    }
    write_both(
        dir,
        name,
        |svg| draw_lines(svg.into_drawing_area(), lines),
        |bmp| draw_lines(bmp.into_drawing_area(), lines),
    )
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, lines: &Lines) -> Result<()>
where
    DB::ErrorType: 'static,
{
    register_font()?;
    let x = |v: f64| if lines.log2_x { v.max(1e-9).log2() } else { v };
    let points = || lines.series.iter().flat_map(|(_, p)| p.iter());
    let x_min = points().map(|p| x(p.0)).fold(f64::MAX, f64::min).min(0.0);
    let x_max = points().map(|p| x(p.0)).fold(f64::MIN, f64::max).max(x_min + 1.0);
    let y_max = points().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = points().map(|p| p.1).fold(f64::MAX, f64::min);
    let pad = ((y_max - y_min) * 0.05).max(0.01);
    // Shares and counts never go below zero: the axis starts there.
    let y_low = if y_min >= 0.0 { 0.0 } else { y_min - pad };
    root.fill(&WHITE).map_err(perr)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .caption(lines.title, ("sans-serif", 22))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max, y_low..y_max + pad)
        .map_err(perr)?;
    let log2 = lines.log2_x;
    chart
        .configure_mesh()
        .x_desc(lines.x_desc)
        // One label per whole step (or power of two) when there are few, so none repeats.
        .x_labels(((x_max - x_min).round() as usize + 1).clamp(2, 12))
        .x_label_formatter(&|v| if log2 { format!("{:.0}", v.exp2()) } else { format!("{v:.0}") })
        .y_desc(lines.y_desc)
        .draw()
        .map_err(perr)?;
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    for (k, (name, pts)) in lines.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let pts: Points = pts.iter().map(|&(a, b)| (x(a), b)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(perr)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(perr)?;
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(())
}

/// Writes `NAME.svg` and `NAME.png` in `dir` with the same drawing on both backends.
fn write_both(
    dir: &Path,
    name: &str,
    svg_draw: impl FnOnce(SVGBackend) -> Result<()>,
    bmp_draw: impl FnOnce(BitMapBackend) -> Result<()>,
) -> Result<()> {
    let svg_path = dir.join(format!("{name}.svg"));
    let mut svg = String::new();
    svg_draw(SVGBackend::with_string(&mut svg, SIZE))?;
    crate::checkpoint::write_atomic(&svg_path, svg.as_bytes())?;

    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    bmp_draw(BitMapBackend::with_buffer(&mut rgb, SIZE))?;
    let png_path = dir.join(format!("{name}.png"));
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
