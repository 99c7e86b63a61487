//! Optical strain magnitude of a flow field.
//!
//! Derivatives are 3x3 Sobel filters (OpenCV `Sobel(.., CV_32F, dx, dy, 3)`:
//! weights [-1 0 1] x [1 2 1], reflect-101 borders, no scaling).

use crate::image::Flow;

/// Which strain formula to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StrainFormula {
    /// The paper's eq. (4): `sqrt(ux^2 + vy^2 + 0.5 * (uy + vx)^2)`.
    #[default]
    Paper,
    /// The reference code's variant: `sqrt(ux^2 + uy^2 + 0.5 * (vx + uy)^2)`
    /// (uy where vy belongs), for reproducing its features.
    Reference,
}

impl std::str::FromStr for StrainFormula {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "paper" => Ok(Self::Paper),
            "reference" => Ok(Self::Reference),
            _ => Err(format!(
                "unknown strain formula {s:?}: expected paper or reference"
            )),
        }
    }
}

impl std::fmt::Display for StrainFormula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Paper => "paper",
            Self::Reference => "reference",
        })
    }
}

/// Reflect-101 index (OpenCV's default border): -1 -> 1, n -> n - 2.
fn reflect101(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * n - 2 - i };
    }
    i as usize
}

/// 3x3 Sobel derivatives (d/dx, d/dy) of a plane.
pub fn sobel(plane: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let mut gx = vec![0f32; w * h];
    let mut gy = vec![0f32; w * h];
    for y in 0..h {
        let ym = reflect101(y as isize - 1, h);
        let yp = reflect101(y as isize + 1, h);
        for x in 0..w {
            let xm = reflect101(x as isize - 1, w);
            let xp = reflect101(x as isize + 1, w);
            let p = |xx: usize, yy: usize| plane[yy * w + xx];
            gx[y * w + x] =
                (p(xp, ym) - p(xm, ym)) + 2.0 * (p(xp, y) - p(xm, y)) + (p(xp, yp) - p(xm, yp));
            gy[y * w + x] =
                (p(xm, yp) - p(xm, ym)) + 2.0 * (p(x, yp) - p(x, ym)) + (p(xp, yp) - p(xp, ym));
        }
    }
    (gx, gy)
}

/// Optical strain magnitude `[H, W]` of a flow, row-major.
pub fn optical_strain(flow: &Flow, formula: StrainFormula) -> Vec<f32> {
    let (w, h) = (flow.width(), flow.height());
    let (ux, uy) = sobel(&flow.u(), w, h);
    let (vx, vy) = sobel(&flow.v(), w, h);
    (0..w * h)
        .map(|i| match formula {
            StrainFormula::Paper => {
                (ux[i] * ux[i] + vy[i] * vy[i] + 0.5 * (uy[i] + vx[i]) * (uy[i] + vx[i])).sqrt()
            }
            StrainFormula::Reference => {
                (ux[i] * ux[i] + uy[i] * uy[i] + 0.5 * (vx[i] + uy[i]) * (vx[i] + uy[i])).sqrt()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        u: impl Fn(f32, f32) -> f32,
        v: impl Fn(f32, f32) -> f32,
        formula: StrainFormula,
        expected: f32,
    ) {
        let (w, h) = (7, 6);
        let mut uu = Vec::new();
        let mut vv = Vec::new();
        for y in 0..h {
            for x in 0..w {
                uu.push(u(x as f32, y as f32));
                vv.push(v(x as f32, y as f32));
            }
        }
        let f = Flow::from_planes(w, h, &uu, &vv).unwrap();
        let s = optical_strain(&f, formula);
        // Interior pixel: Sobel of a linear field is 8 * slope.
        let got = s[3 * w + 3];
        assert!(
            (got - expected).abs() < 1e-4,
            "{formula}: got {got}, expected {expected}"
        );
    }

    #[test]
    fn strain_of_linear_fields() {
        // u = a x + b y, v = c x + d y: Sobel gives 8a, 8b, 8c, 8d.
        let (a, b, c, d) = (0.1f32, 0.2f32, 0.3f32, -0.4f32);
        let paper =
            ((8.0 * a).powi(2) + (8.0 * d).powi(2) + 0.5 * (8.0 * b + 8.0 * c).powi(2)).sqrt();
        let reference =
            ((8.0 * a).powi(2) + (8.0 * b).powi(2) + 0.5 * (8.0 * c + 8.0 * b).powi(2)).sqrt();
        check(
            |x, y| a * x + b * y,
            |x, y| c * x + d * y,
            StrainFormula::Paper,
            paper,
        );
        check(
            |x, y| a * x + b * y,
            |x, y| c * x + d * y,
            StrainFormula::Reference,
            reference,
        );
    }

    #[test]
    fn reflect101_borders() {
        assert_eq!(reflect101(-1, 5), 1);
        assert_eq!(reflect101(5, 5), 3);
        assert_eq!(reflect101(2, 5), 2);
        assert_eq!(
            "reference".parse::<StrainFormula>().unwrap(),
            StrainFormula::Reference
        );
        assert!("x".parse::<StrainFormula>().is_err());
    }
}
