//! Dual-Inception (reference class `DualInception`, 6,449,867 parameters): u and v each
//! through two inception blocks (widths 6 and 16), flattened, concatenated (u first), and a
//! dense head 6272 -> 1024 -> 3 (ReLU, no dropout).
//!
//! Inception block (in `c`, width `w`): path1 1x1 + ReLU + 5x5 + ReLU; path2 1x1 + ReLU +
//! 3x3 + ReLU; path3 3x3 stride-1 max pool (minus-infinity padding) + 1x1 + ReLU; path4 a bare
//! 1x1 (no activation); channels concatenated in path order, then a 2x2 max pool.

use candle_core::Tensor;

use super::{max_pool_padded, Fwd};
use crate::layers::{max_pool2, relu, Conv2d, Ctx, Linear};
use crate::Result;

#[derive(Debug, Clone)]
struct Inception {
    p1a: Conv2d,
    p1b: Conv2d,
    p2a: Conv2d,
    p2b: Conv2d,
    p3: Conv2d,
    p4: Conv2d,
}

impl Inception {
    fn new(ctx: &Ctx, c: usize, w: usize) -> Result<Self> {
        Ok(Self {
            p1a: Conv2d::new(&ctx.pp("path1").pp(0), c, w, 1, 1, 0, true)?,
            p1b: Conv2d::new(&ctx.pp("path1").pp(2), w, w, 5, 1, 2, true)?,
            p2a: Conv2d::new(&ctx.pp("path2").pp(0), c, w, 1, 1, 0, true)?,
            p2b: Conv2d::new(&ctx.pp("path2").pp(2), w, w, 3, 1, 1, true)?,
            p3: Conv2d::new(&ctx.pp("path3").pp(1), c, w, 1, 1, 0, true)?,
            p4: Conv2d::new(&ctx.pp("path4"), c, w, 1, 1, 0, true)?,
        })
    }

    /// `[N, c, H, W] -> [N, 4w, H/2, W/2]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p1 = self.p1b.forward_relu(&self.p1a.forward_relu(x)?)?;
        let p2 = self.p2b.forward_relu(&self.p2a.forward_relu(x)?)?;
        let p3 = self.p3.forward_relu(&max_pool_padded(x, 3, 1, 1)?)?;
        let p4 = self.p4.forward(x)?;
        max_pool2(&Tensor::cat(&[p1, p2, p3, p4], 1)?)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DualInception {
    icpt: [[Inception; 2]; 2],
    dense: [Linear; 2],
}

impl DualInception {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        let stream = |p: &str| -> Result<[Inception; 2]> {
            let c = ctx.pp(p);
            Ok([
                Inception::new(&c.pp(0), 1, 6)?,
                Inception::new(&c.pp(1), 24, 16)?,
            ])
        };
        let icpt = [stream("icpt1")?, stream("icpt2")?];
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 6272, 1024)?,
            Linear::new(&d.pp(2), 1024, 3)?,
        ];
        Ok(Self { icpt, dense })
    }

    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(2);
        for (s, blocks) in self.icpt.iter().enumerate() {
            let mut h = x.narrow(1, s, 1)?.contiguous()?;
            for (b, block) in blocks.iter().enumerate() {
                h = block.forward(&h)?;
                f.tap(&format!("icpt{}_{b}", s + 1), &h);
            }
            flat.push(h.flatten_from(1)?);
        }
        let h = relu(&self.dense[0].forward_wide(&Tensor::cat(&flat, 1)?)?)?;
        f.tap("dense_1", &h);
        self.dense[1].forward_wide(&h)
    }
}
