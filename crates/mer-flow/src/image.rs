//! Owned single-channel images and two-channel flow fields (f32, row-major).

use crate::{Error, Result};

/// A gray image of f32 values, row-major. Values from 8-bit images are kept in
/// 0..=255 (not normalised), as OpenCV's TV-L1 converts them.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl GrayImage {
    /// An image from row-major values; fails on zero size or a wrong length.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        check_dims("image", width, height, 1, data.len())?;
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// An image from 8-bit gray values (converted to f32 0..=255).
    pub fn from_u8(width: usize, height: usize, data: &[u8]) -> Result<Self> {
        check_dims("image", width, height, 1, data.len())?;
        Ok(Self {
            width,
            height,
            data: data.iter().map(|&v| f32::from(v)).collect(),
        })
    }

    /// A zero image.
    pub fn zeros(width: usize, height: usize) -> Result<Self> {
        Self::new(width, height, vec![0.0; width * height])
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }
    /// Row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Mutable row-major values.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// The value at column `x`, row `y`.
    ///
    /// # Panics
    /// When `x` or `y` is outside the image.
    pub fn get(&self, x: usize, y: usize) -> f32 {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x},{y}) outside {}x{}",
            self.width,
            self.height
        );
        self.data[y * self.width + x]
    }
    /// Consumes the image, returning its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// A dense flow field: per pixel the displacement (u, v) in pixels from the first
/// image to the second, stored interleaved `[H, W, 2]` like OpenCV's `CV_32FC2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Flow {
    /// A flow from interleaved `(u, v)` values; fails on zero size or a wrong length.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        check_dims("flow", width, height, 2, data.len())?;
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A flow from separate u and v planes.
    pub fn from_planes(width: usize, height: usize, u: &[f32], v: &[f32]) -> Result<Self> {
        check_dims("flow u", width, height, 1, u.len())?;
        check_dims("flow v", width, height, 1, v.len())?;
        let data = u.iter().zip(v).flat_map(|(&a, &b)| [a, b]).collect();
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A zero flow.
    pub fn zeros(width: usize, height: usize) -> Result<Self> {
        Self::new(width, height, vec![0.0; 2 * width * height])
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }
    /// Interleaved `(u, v)` values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The horizontal component as a plane.
    pub fn u(&self) -> Vec<f32> {
        self.data.chunks_exact(2).map(|c| c[0]).collect()
    }
    /// The vertical component as a plane.
    pub fn v(&self) -> Vec<f32> {
        self.data.chunks_exact(2).map(|c| c[1]).collect()
    }
    /// `(u, v)` at column `x`, row `y`.
    ///
    /// # Panics
    /// When `x` or `y` is outside the field.
    pub fn get(&self, x: usize, y: usize) -> (f32, f32) {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x},{y}) outside {}x{}",
            self.width,
            self.height
        );
        let i = 2 * (y * self.width + x);
        (self.data[i], self.data[i + 1])
    }

    /// Mean end-point error against another flow of the same size.
    pub fn mean_epe(&self, other: &Flow) -> Result<f64> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(Error::SizeMismatch {
                what: "flow",
                a_w: self.width,
                a_h: self.height,
                other: "other flow",
                b_w: other.width,
                b_h: other.height,
            });
        }
        let sum: f64 = self
            .data
            .chunks_exact(2)
            .zip(other.data.chunks_exact(2))
            .map(|(a, b)| {
                let du = f64::from(a[0]) - f64::from(b[0]);
                let dv = f64::from(a[1]) - f64::from(b[1]);
                (du * du + dv * dv).sqrt()
            })
            .sum();
        Ok(sum / (self.width * self.height) as f64)
    }

    pub(crate) fn set_from_planes(&mut self, width: usize, height: usize, u: &[f32], v: &[f32]) {
        self.width = width;
        self.height = height;
        self.data.clear();
        self.data
            .extend(u.iter().zip(v).flat_map(|(&a, &b)| [a, b]));
    }
}

fn check_dims(
    what: &'static str,
    width: usize,
    height: usize,
    channels: usize,
    found: usize,
) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Empty {
            what,
            width,
            height,
        });
    }
    let expected = width * height * channels;
    if found != expected {
        return Err(Error::BadLength {
            what,
            width,
            height,
            expected,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_dimensions_are_errors() {
        assert!(matches!(
            GrayImage::new(0, 4, vec![]),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            GrayImage::new(2, 2, vec![0.0; 3]),
            Err(Error::BadLength {
                expected: 4,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            Flow::new(2, 2, vec![0.0; 4]),
            Err(Error::BadLength { expected: 8, .. })
        ));
    }

    #[test]
    fn planes_round_trip() {
        let f = Flow::from_planes(2, 1, &[1.0, 2.0], &[3.0, 4.0]).unwrap();
        assert_eq!(f.data(), &[1.0, 3.0, 2.0, 4.0]);
        assert_eq!(f.u(), vec![1.0, 2.0]);
        assert_eq!(f.v(), vec![3.0, 4.0]);
        assert_eq!(f.get(1, 0), (2.0, 4.0));
        let z = Flow::zeros(2, 1).unwrap();
        assert!((f.mean_epe(&z).unwrap() - (10f64.sqrt() + 20f64.sqrt()) / 2.0).abs() < 1e-12);
    }
}
