//! PNG figures with plotters: the Fig. 4 scatter (parameters vs score, with error bars),
//! learning curves, confusion matrices
//! and the Fig. 5 attention heatmaps over the face. Text is drawn with the embedded DejaVu
//! Sans font (`assets/DejaVuSans.ttf`, Bitstream Vera license, see
//! `assets/LICENSE-DejaVu.txt`), so plots render on machines without system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::metrics::Confusion;
use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font (checked by a test).
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Draws into a `w` x `h` PNG written atomically to `path`.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    ensure_font();
    crate::io::write_atomic_with(path, |tmp: &Path| -> Result<()> {
        let root = BitMapBackend::new(tmp, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| Error::plot(path, e))?;
        draw(&root).map_err(|e| Error::plot(path, e))?;
        root.present().map_err(|e| Error::plot(path, e))?;
        Ok(())
    })
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The series legend of the figures, in the lower right corner.
fn legend<'a, 'b, X: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, RangedCoordf64>>,
) -> std::result::Result<(), String>
where
    'b: 'a,
{
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(s)
}

/// A labelled point of a scatter plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Label drawn beside the point.
    pub label: String,
    /// x (parameters).
    pub x: f64,
    /// y (UAR or UF1).
    pub y: f64,
    /// Half-length of a vertical error bar (one standard deviation over seeds), if any.
    pub y_err: Option<f64>,
    /// Highlighted (the full model).
    pub highlight: bool,
}

/// The Fig. 4 scatter: total parameters (x, log axis, as the paper draws it) against a
/// score (y), with the chance level.
pub fn scatter_png(
    path: &Path,
    title: &str,
    y_desc: &str,
    points: &[Point],
    chance: Option<f64>,
) -> Result<()> {
    let (mut x0, mut x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    if points.is_empty() {
        (x0, x1) = (1e3, 1e6);
    }
    // Room for the labels on the right; a decade at least.
    let (x0, x1) = ((x0 / 2.0).max(1.0), (x1 * 4.0).max(x0 * 10.0));
    let ymax = points
        .iter()
        .map(|p| p.y + p.y_err.unwrap_or(0.0))
        .fold(0.0f64, f64::max);
    let (y0, y1) = (0.0, (ymax + 0.1).clamp(0.5, 1.0));
    render(path, (900, 620), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("total parameters (log scale)")
            .y_desc(y_desc)
            .x_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.1}M", v / 1e6)
                } else {
                    format!("{:.0}k", v / 1e3)
                }
            })
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(s)?;
        if let Some(c) = chance {
            chart
                .draw_series(LineSeries::new(vec![(x0, c), (x1, c)], RED.stroke_width(1)))
                .map_err(s)?
                .label(format!("chance ({c:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .draw_series(points.iter().filter_map(|p| {
                let color = if p.highlight { RED } else { BLUE };
                p.y_err.map(|e| {
                    ErrorBar::new_vertical(p.x, p.y - e, p.y, p.y + e, color.stroke_width(2), 10)
                })
            }))
            .map_err(s)?;
        chart
            .draw_series(points.iter().map(|p| {
                let color = if p.highlight { RED } else { BLUE };
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 6, color.filled())
                    + Text::new(p.label.clone(), (9, -16), (FAMILY, 15).into_font())
            }))
            .map_err(s)?;
        if chance.is_some() {
            legend(&mut chart)?;
        }
        Ok(())
    })
}

/// A line of [`lines_png`]: `(x, y, error bar half-length)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64, Option<f64>)>,
}

/// Lines with markers and optional vertical error bars (the learning curves), with the
/// chance level.
pub fn lines_png(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    chance: Option<f64>,
) -> Result<()> {
    let xs = series.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let x1 = xs.fold(1.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1 + p.2.unwrap_or(0.0)))
        .fold(0.0f64, f64::max);
    let y1 = (ymax + 0.1).clamp(0.5, 1.0);
    let palette = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(230, 140, 0),
        RGBColor(120, 70, 20),
    ];
    render(path, (900, 620), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 20))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x1 * 1.05, 0.0..y1)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(s)?;
        if let Some(c) = chance {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, c), (x1 * 1.05, c)],
                    BLACK.mix(0.4),
                ))
                .map_err(s)?
                .label(format!("chance ({c:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        }
        for (i, l) in series.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(s)?
                .label(l.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(l.points.iter().filter_map(|p| {
                    p.2.map(|e| {
                        ErrorBar::new_vertical(p.0, p.1 - e, p.1, p.1 + e, color.stroke_width(1), 8)
                    })
                }))
                .map_err(s)?;
            chart
                .draw_series(
                    l.points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
                )
                .map_err(s)?;
        }
        legend(&mut chart)?;
        Ok(())
    })
}

/// A confusion matrix as a heatmap: rows the truth, columns the prediction, cells coloured by
/// the row-normalised rate and labelled with the count.
pub fn confusion_png(path: &Path, title: &str, c: &Confusion, classes: &[&str]) -> Result<()> {
    let n = c.n as i32;
    let cell = 110;
    let (left, top) = (150, 90);
    let (w, h) = ((left + n * cell + 40) as u32, (top + n * cell + 70) as u32);
    render(path, (w, h), |root| {
        let font = |size: u32| (FAMILY, size).into_font();
        root.draw(&Text::new(title.to_string(), (15, 12), font(20)))
            .map_err(s)?;
        root.draw(&Text::new(
            "predicted".to_string(),
            (left + n * cell / 2 - 40, top - 50),
            font(16),
        ))
        .map_err(s)?;
        root.draw(&Text::new(
            "true".to_string(),
            (15, top + n * cell / 2 - 30),
            font(16),
        ))
        .map_err(s)?;
        for t in 0..n {
            let support = c.support(t as usize).max(1) as f64;
            let name = classes.get(t as usize).copied().unwrap_or("?");
            root.draw(&Text::new(
                name.to_string(),
                (left - 95, top + t * cell + cell / 2 - 8),
                font(15),
            ))
            .map_err(s)?;
            root.draw(&Text::new(
                name.to_string(),
                (left + t * cell + 12, top - 25),
                font(15),
            ))
            .map_err(s)?;
            for p in 0..n {
                let v = c.get(t as usize, p as usize);
                let r = v as f64 / support;
                let shade = (255.0 * (1.0 - 0.85 * r)) as u8;
                let color = RGBColor(shade, shade, 255);
                let (x, y) = (left + p * cell, top + t * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color.filled(),
                ))
                .map_err(s)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.stroke_width(1),
                ))
                .map_err(s)?;
                let text_color = if r > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    format!("{v}"),
                    (x + cell / 2 - 12, y + cell / 2 - 20),
                    font(22).color(&text_color),
                ))
                .map_err(s)?;
                root.draw(&Text::new(
                    format!("{:.0}%", 100.0 * r),
                    (x + cell / 2 - 16, y + cell / 2 + 8),
                    font(14).color(&text_color),
                ))
                .map_err(s)?;
            }
        }
        Ok(())
    })
}

/// The jet colour map of `v` in [0, 1].
pub fn jet(v: f32) -> (u8, u8, u8) {
    let v = v.clamp(0.0, 1.0);
    let f = |x: f32| (255.0 * (1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0)) as u8;
    (f(3.0), f(2.0), f(1.0))
}

/// One panel of [`heatmaps_png`]: a gray face, optionally overlaid with a heatmap.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    /// Caption above the panel.
    pub title: String,
    /// Side of the square maps.
    pub side: usize,
    /// Gray face in [0, 1], `side * side`, row-major.
    pub face: &'a [f32],
    /// Heatmap in [0, 1] (already normalised), `side * side`.
    pub heat: Option<&'a [f32]>,
}

/// Panels side by side (each map drawn at `scale` pixels per value), heatmaps blended over
/// the face with the jet colour map (Fig. 5).
pub fn heatmaps_png(path: &Path, title: &str, panels: &[Panel], scale: usize) -> Result<()> {
    let side = panels.first().map_or(1, |p| p.side);
    let px = side * scale;
    let gap = 20;
    let (top, left) = (70, 15);
    let w = (left * 2 + panels.len() * px + (panels.len().saturating_sub(1)) * gap) as u32;
    let h = (top + px + 20) as u32;
    render(path, (w, h), |root| {
        root.draw(&Text::new(
            title.to_string(),
            (15, 10),
            (FAMILY, 18).into_font(),
        ))
        .map_err(s)?;
        for (i, p) in panels.iter().enumerate() {
            let x0 = left + i * (px + gap);
            root.draw(&Text::new(
                p.title.clone(),
                (x0 as i32, top as i32 - 26),
                (FAMILY, 15).into_font(),
            ))
            .map_err(s)?;
            for y in 0..px {
                for x in 0..px {
                    let k = (y / scale) * p.side + x / scale;
                    let g = p.face[k].clamp(0.0, 1.0);
                    let (r, gg, b) = match p.heat {
                        Some(hm) => {
                            let (hr, hg, hb) = jet(hm[k]);
                            let a = 0.55;
                            let mix = |c: u8| (a * c as f32 + (1.0 - a) * 255.0 * g) as u8;
                            (mix(hr), mix(hg), mix(hb))
                        }
                        None => {
                            let v = (255.0 * g) as u8;
                            (v, v, v)
                        }
                    };
                    root.draw_pixel(((x0 + x) as i32, (top + y) as i32), &RGBColor(r, gg, b))
                        .map_err(s)?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(p: &Path) -> bool {
        std::fs::read(p)
            .map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
            .unwrap_or(false)
    }

    #[test]
    fn draws_pngs_with_the_embedded_font() {
        assert!(plotters::style::register_font("check", FontStyle::Normal, FONT).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let pts = vec![
            Point {
                label: "ta".into(),
                x: 59403.0,
                y: 0.7,
                y_err: Some(0.05),
                highlight: true,
            },
            Point {
                label: "res".into(),
                x: 52000.0,
                y: 0.6,
                y_err: None,
                highlight: false,
            },
        ];
        let a = dir.path().join("a.png");
        scatter_png(&a, "Fig. 4", "UAR", &pts, Some(1.0 / 3.0)).unwrap();
        let c = Confusion::from_pairs(&[0, 0, 1, 2], &[0, 1, 1, 2], 3);
        let b = dir.path().join("b.png");
        confusion_png(&b, "ta", &c, &["negative", "positive", "surprise"]).unwrap();
        let face: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        let heat: Vec<f32> = face.iter().rev().copied().collect();
        let d = dir.path().join("d.png");
        let panels = [
            Panel {
                title: "face".into(),
                side: 4,
                face: &face,
                heat: None,
            },
            Panel {
                title: "map".into(),
                side: 4,
                face: &face,
                heat: Some(&heat),
            },
        ];
        heatmaps_png(&d, "Fig. 5", &panels, 20).unwrap();
        let l = dir.path().join("l.png");
        let series = [
            Series {
                label: "ta".into(),
                points: vec![(1.0, 0.4, Some(0.05)), (4.0, 0.6, Some(0.1))],
            },
            Series {
                label: "res".into(),
                points: vec![(1.0, 0.35, None), (4.0, 0.5, None)],
            },
        ];
        lines_png(&l, "curves", "epochs", "UAR", &series, Some(1.0 / 3.0)).unwrap();
        for p in [&a, &b, &d, &l] {
            assert!(is_png(p), "{}", p.display());
        }
        // Only the four PNGs: no temporaries left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        assert_eq!(jet(0.0), (0, 0, 127));
        assert_eq!(jet(1.0), (127, 0, 0));
    }
}
