//! Off-ApexNet (reference class `OffApexNet`, 2,664,475 parameters): u and v each through a
//! stream of two 5x5 convolutions (no activation) and 2x2 max pools, flattened, concatenated
//! (u first) and a dense head 1568 -> 1024 -> 1024 -> 3 with ReLU and dropout.

use candle_core::Tensor;

use super::Fwd;
use crate::layers::{max_pool2, relu, Conv2d, Ctx, Linear};
use crate::Result;

#[derive(Debug, Clone)]
struct Stream {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl Stream {
    fn new(ctx: &Ctx) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(&ctx.pp("conv1"), 1, 6, 5, 1, 2, true)?,
            conv2: Conv2d::new(&ctx.pp("conv2"), 6, 16, 5, 1, 2, true)?,
        })
    }

    /// `[N, 1, 28, 28] -> [N, 16, 7, 7]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = max_pool2(&self.conv1.forward(x)?)?;
        max_pool2(&self.conv2.forward(&h)?)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OffApexNet {
    cnn1: Stream,
    cnn2: Stream,
    dense: [Linear; 3],
}

impl OffApexNet {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        let cnn1 = Stream::new(&ctx.pp("cnn1"))?;
        let cnn2 = Stream::new(&ctx.pp("cnn2"))?;
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 1568, 1024)?,
            Linear::new(&d.pp(3), 1024, 1024)?,
            Linear::new(&d.pp(6), 1024, 3)?,
        ];
        Ok(Self { cnn1, cnn2, dense })
    }

    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd) -> Result<Tensor> {
        let u = self.cnn1.forward(&x.narrow(1, 0, 1)?.contiguous()?)?;
        f.tap("cnn1", &u);
        let v = self.cnn2.forward(&x.narrow(1, 1, 1)?.contiguous()?)?;
        f.tap("cnn2", &v);
        let h = Tensor::cat(&[u.flatten_from(1)?, v.flatten_from(1)?], 1)?;
        let h = relu(&self.dense[0].forward_wide(&h)?)?;
        f.tap("dense_1", &h);
        let h = f.dropout(&h)?;
        let h = f.dropout(&relu(&self.dense[1].forward_wide(&h)?)?)?;
        self.dense[2].forward_wide(&h)
    }
}
