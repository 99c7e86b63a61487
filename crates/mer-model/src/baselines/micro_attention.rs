//! Micro-Attention (reference class `MicroAttention`, 53,384,195 parameters): a 7x7 stride-2
//! stem with ReLU and a 3x3 stride-2 max pool, three micro-attention blocks separated by 2x2
//! max pools, and a dense head 12544 -> 4096 -> 3 (ReLU, dropout). Input u, v, strain at
//! 224 x 224.
//!
//! Block (in `c`, out `o`): `a = ReLU(BN(conv3x3(x)))`, `b = ReLU(BN(conv3x3(a)))`,
//! `m = conv1x1(x)`, `s = b + m`, `r = convr([a, b, m])` (1x1, 3o -> 3o), `e` the channel mean
//! of `r`, `w` the softmax of `e` over all positions of a sample, output `s + s * w`. The
//! `convr` bias cannot change the output (the softmax removes the constant it adds); it is
//! kept for the state_dict and the parameter count.

use candle_core::Tensor;

use super::{max_pool_padded, Fwd};
use crate::layers::{max_pool2, relu, BatchNorm2d, Conv2d, Ctx, Linear};
use crate::Result;

/// conv 3x3 (padding 1) -> BatchNorm -> ReLU, entries `0` and `1`.
#[derive(Debug, Clone)]
pub(crate) struct ConvBnRelu {
    pub(crate) conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    pub(crate) fn new(ctx: &Ctx, c: usize, o: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&ctx.pp(0), c, o, 3, 1, 1, true)?,
            bn: BatchNorm2d::new(&ctx.pp(1), o)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            if let Some(y) = self.bn.conv_bn_train(&self.conv, x, false, true)? {
                return Ok(y);
            }
        }
        self.bn.forward_t_relu(&self.conv.forward(x)?, train)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MaBlock {
    pub(crate) convl_1: ConvBnRelu,
    convl_2: ConvBnRelu,
    convm: Conv2d,
    convr: Conv2d,
}

impl MaBlock {
    pub(crate) fn new(ctx: &Ctx, c: usize, o: usize) -> Result<Self> {
        Ok(Self {
            convl_1: ConvBnRelu::new(&ctx.pp("convl_1"), c, o)?,
            convl_2: ConvBnRelu::new(&ctx.pp("convl_2"), o, o)?,
            convm: Conv2d::new(&ctx.pp("convm"), c, o, 1, 1, 0, true)?,
            convr: Conv2d::new(&ctx.pp("convr"), 3 * o, 3 * o, 1, 1, 0, true)?,
        })
    }

    /// `[N, c, H, W] -> [N, o, H, W]`; `tag` names the stage outputs (`ma_0`, ...).
    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd, tag: &str) -> Result<Tensor> {
        let a = self.convl_1.forward(x, f.train)?;
        f.tap(&format!("{tag}_convl_1"), &a);
        let b = self.convl_2.forward(&a, f.train)?;
        let m = self.convm.forward(x)?;
        let s = (&b + &m)?;
        let (n, _, h, w) = s.dims4()?;
        let e = if crate::kernels::usable(x) && !crate::kernels::disabled() {
            self.channel_mean_of_convr(&a, &b, &m)?
        } else {
            self.convr
                .forward(&Tensor::cat(&[&a, &b, &m], 1)?)?
                .mean_keepdim(1)?
        }
        .reshape((n, h * w))?;
        let wts = softmax_rows(&e)?;
        f.tap(&format!("{tag}_softmax"), &wts);
        let wts = wts.reshape((n, 1, h, w))?;
        let y = (&s + s.broadcast_mul(&wts)?)?;
        f.tap(tag, &y);
        Ok(y)
    }
}

/// Softmax over the last dimension of `[N, P]`, differentiable (candle-nn's fused
/// `softmax_last_dim` has no backward pass: the attention would get no gradient). The row
/// maximum is subtracted first, as PyTorch does; it is detached, since the softmax does not
/// depend on the shift.
impl MaBlock {
    /// The channel mean of `convr([a, b, m])`, `[N, 1, H, W]`, computed as what it equals:
    /// `sum_j wbar_j [a, b, m]_j + mean(bias)` with `wbar` the column means of `convr`'s
    /// weight, three 1x1 convolutions to one channel (one per part, so the concatenation is
    /// never built). A third of the model's multiply-adds are in `convr` otherwise. The
    /// gradient reaches every row of the weight through the mean (each row gets the same
    /// one, as through the full layer); equal to the full layer up to summation order
    /// (compared with it in the tests and with the reference outputs).
    fn channel_mean_of_convr(&self, a: &Tensor, b: &Tensor, m: &Tensor) -> Result<Tensor> {
        let wr = self.convr.weight();
        let c3 = wr.dim(0)?;
        let o = c3 / 3;
        let wbar = wr.sum_keepdim(0)?.affine(1.0 / c3 as f64, 0.0)?;
        let part = |t: &Tensor, k: usize| -> Result<Tensor> {
            Ok(crate::kernels::conv2d(
                t,
                &wbar.narrow(1, k * o, o)?,
                None,
                1,
                0,
                false,
            )?)
        };
        let e = ((part(a, 0)? + part(b, 1)?)? + part(m, 2)?)?;
        match self.convr.bias() {
            Some(bias) => Ok(e.broadcast_add(&bias.mean_all()?)?),
            None => Ok(e),
        }
    }
}

fn softmax_rows(e: &Tensor) -> Result<Tensor> {
    let shifted = e.broadcast_sub(&e.max_keepdim(1)?.detach())?;
    let ex = shifted.exp()?;
    Ok(ex.broadcast_div(&ex.sum_keepdim(1)?)?)
}

#[derive(Debug, Clone)]
pub(crate) struct MicroAttention {
    stem: Conv2d,
    pub(crate) blocks: Vec<MaBlock>,
    dense: [Linear; 2],
}

impl MicroAttention {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        let stem = Conv2d::new(&ctx.pp("conv").pp(0), 3, 32, 7, 2, 3, true)?;
        let ma = ctx.pp("ma");
        let blocks = vec![
            MaBlock::new(&ma.pp(0), 32, 64)?,
            MaBlock::new(&ma.pp(2), 64, 128)?,
            MaBlock::new(&ma.pp(4), 128, 256)?,
        ];
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 12544, 4096)?,
            Linear::new(&d.pp(3), 4096, 3)?,
        ];
        Ok(Self {
            stem,
            blocks,
            dense,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd) -> Result<Tensor> {
        let h = max_pool_padded(&self.stem.forward_relu(x)?, 3, 2, 1)?;
        f.tap("pool", &h);
        let mut h = h;
        for (i, b) in self.blocks.iter().enumerate() {
            let tag = format!("ma_{}", 2 * i);
            h = max_pool2(&b.forward(&h, f, &tag)?)?;
        }
        let h = relu(&self.dense[0].forward_wide(&h.flatten_from(1)?)?)?;
        f.tap("dense_1", &h);
        let h = f.dropout(&h)?;
        self.dense[1].forward_wide(&h)
    }
}
