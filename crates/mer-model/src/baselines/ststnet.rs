//! STSTNet (reference class `STSTNet`, 162,051 parameters): three streams (3, 5, 8 channels)
//! of a 3x3 convolution (no activation) and a 3x3 stride-3 max pool padded with minus
//! infinity, concatenated, a 2x2 max pool, and a dense head 400 -> 400 -> 3 (ReLU, no
//! dropout). Input u, v, strain.

use candle_core::Tensor;

use super::{max_pool_padded, Fwd};
use crate::layers::{max_pool2, relu, Conv2d, Ctx, Linear};
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) struct Ststnet {
    streams: [Conv2d; 3],
    dense: [Linear; 2],
}

impl Ststnet {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        let conv = |k: usize, c: usize| {
            Conv2d::new(
                &ctx.pp(format!("stream{k}")).pp("conv"),
                3,
                c,
                3,
                1,
                1,
                true,
            )
        };
        let streams = [conv(1, 3)?, conv(2, 5)?, conv(3, 8)?];
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 400, 400)?,
            Linear::new(&d.pp(2), 400, 3)?,
        ];
        Ok(Self { streams, dense })
    }

    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(3);
        for (k, conv) in self.streams.iter().enumerate() {
            let h = max_pool_padded(&conv.forward(x)?, 3, 3, 1)?;
            f.tap(&format!("stream{}", k + 1), &h);
            outs.push(h);
        }
        let h = max_pool2(&Tensor::cat(&outs, 1)?)?;
        f.tap("pool", &h);
        let h = relu(&self.dense[0].forward_wide(&h.flatten_from(1)?)?)?;
        f.tap("dense_1", &h);
        self.dense[1].forward_wide(&h)
    }
}
