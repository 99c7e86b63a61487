//! MACNN (reference class `MACNN`, 70,573,923 parameters): four residual VGG blocks (3x3
//! conv and ReLU twice, plus a 1x1 `botneck` shortcut, summed, 2x2 max pool; no BatchNorm), two
//! atrous 3x3 convolutions (dilation 4 then 2, ReLU), and a dense head
//! 12544 -> 4096 -> 4096 -> 3 with ReLU and dropout. Input u, v, strain at 112 x 112 (the
//! published complexity figures were measured on a 2-channel variant; the code uses 3).

use candle_core::Tensor;

use super::{DilatedConv, Fwd};
use crate::layers::{max_pool2_sum, relu, Conv2d, Ctx, Linear};
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) struct ResVgg {
    conv0: Conv2d,
    conv2: Conv2d,
    botneck: Conv2d,
}

impl ResVgg {
    pub(crate) fn new(ctx: &Ctx, c: usize, o: usize) -> Result<Self> {
        let conv = ctx.pp("conv");
        Ok(Self {
            conv0: Conv2d::new(&conv.pp(0), c, o, 3, 1, 1, true)?,
            conv2: Conv2d::new(&conv.pp(2), o, o, 3, 1, 1, true)?,
            botneck: Conv2d::new(&ctx.pp("botneck"), c, o, 1, 1, 0, true)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let main = self.conv2.forward_relu(&self.conv0.forward_relu(x)?)?;
        let short = self.botneck.forward(x)?;
        max_pool2_sum(&main, &short)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Macnn {
    blocks: Vec<ResVgg>,
    aconv: [DilatedConv; 2],
    dense: [Linear; 3],
}

impl Macnn {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        let r = ctx.pp("res_vgg");
        let blocks = [(3, 32), (32, 64), (64, 128), (128, 256)]
            .into_iter()
            .enumerate()
            .map(|(k, (c, o))| ResVgg::new(&r.pp(k), c, o))
            .collect::<Result<Vec<_>>>()?;
        let a = ctx.pp("aconv");
        let aconv = [
            DilatedConv::new(&a.pp(0), 256, 256, 3, 4, 4)?,
            DilatedConv::new(&a.pp(2), 256, 256, 3, 2, 2)?,
        ];
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 12544, 4096)?,
            Linear::new(&d.pp(3), 4096, 4096)?,
            Linear::new(&d.pp(6), 4096, 3)?,
        ];
        Ok(Self {
            blocks,
            aconv,
            dense,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, f: &mut Fwd) -> Result<Tensor> {
        let mut h = x.clone();
        for (k, b) in self.blocks.iter().enumerate() {
            h = b.forward(&h)?;
            f.tap(&format!("res_vgg_{k}"), &h);
        }
        let h = relu(&self.aconv[0].forward(&h)?)?;
        let h = relu(&self.aconv[1].forward(&h)?)?;
        f.tap("aconv", &h);
        let h = relu(&self.dense[0].forward_wide(&h.flatten_from(1)?)?)?;
        f.tap("dense_1", &h);
        let h = f.dropout(&h)?;
        let h = f.dropout(&relu(&self.dense[1].forward_wide(&h)?)?)?;
        self.dense[2].forward_wide(&h)
    }
}
