//! Residual blocks: the plain one, the attention-enhanced one (ta / cbam / sa) and the
//! bottleneck transformer (bot).

use candle_core::Tensor;

use crate::attention::{head_widths, ChannelAttention, MultiHeadSelfAttention, SpatialAttention};
use crate::layers::{max_pool2_sum, pool_summary, relu_summary, BatchNorm2d, Conv2d, Ctx};
use crate::summary::{Chw, SummaryRow};
use crate::Result;

/// Intermediate tensors of an attention block (see [`crate::Taps`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct BlockTaps {
    pub conv1: Option<Tensor>,
    pub ca: Option<Tensor>,
    pub spa: Option<Tensor>,
    pub sa: Option<Tensor>,
    pub sa_maps: Option<Tensor>,
    pub conv2: Option<Tensor>,
}

/// conv -> BN -> ReLU.
#[derive(Debug, Clone)]
struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
    relu_name: String,
}

impl ConvBnRelu {
    /// Conv at `ctx.pp(i)`, BN at `ctx.pp(i + 1)`, ReLU at `i + 2` (a `nn.Sequential`).
    fn new(ctx: &Ctx, i: usize, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&ctx.pp(i), cin, cout, 3, 1, 1, true)?,
            bn: BatchNorm2d::new(&ctx.pp(i + 1), cout)?,
            relu_name: ctx.name(&(i + 2).to_string()),
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            if let Some(y) = self.bn.conv_bn_train(&self.conv, x, false, true)? {
                return Ok(y);
            }
        }
        self.bn.forward_t_relu(&self.conv.forward(x)?, train)
    }

    fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let x = self.conv.summarize(x, rows);
        let x = self.bn.summarize(x, rows);
        relu_summary(&self.relu_name, x, rows)
    }
}

/// ResNet-18 style block: `pool(relu(bn(conv(relu(bn(conv x))))) + conv1x1 x)`.
/// Names: `conv.0`, `conv.1` (BN), `conv.3`, `conv.4` (BN), `botneck`.
#[derive(Debug, Clone)]
pub struct Residual {
    a: ConvBnRelu,
    b: ConvBnRelu,
    botneck: Conv2d,
    name: String,
}

impl Residual {
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize) -> Result<Self> {
        let conv = ctx.pp("conv");
        Ok(Self {
            a: ConvBnRelu::new(&conv, 0, cin, cout)?,
            b: ConvBnRelu::new(&conv, 3, cout, cout)?,
            botneck: Conv2d::new(&ctx.pp("botneck"), cin, cout, 1, 1, 0, true)?,
            name: ctx.vb.prefix(),
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.b.forward_t(&self.a.forward_t(x, train)?, train)?;
        max_pool2_sum(&h, &self.botneck.forward(x)?)
    }

    fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let h = self.a.summarize(x, rows);
        let h = self.b.summarize(h, rows);
        self.botneck.summarize(x, rows);
        pool_summary(&format!("{}.pool", self.name), h, rows)
    }
}

/// Which parts an attention-enhanced block has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnhancedSpec {
    /// Channel and spatial attention (CBAM) after the first conv.
    pub cbam: bool,
    /// Multi-head self-attention after CBAM.
    pub mhsa: bool,
    /// The second conv (cin -> cout); without it the MHSA maps cin -> cout.
    pub conv2: bool,
}

/// The attention-enhanced residual block (paper Fig. 2):
/// `conv1 (cin->cin)+BN+ReLU; x*CA(x); x*SpA(x); MHSA; conv2 (->cout)+BN+ReLU; + conv1x1; pool`.
/// Names: `conv1.{0,1}`, `conv2.{0,1}`, `botneck`, `spa.conv1`, `ca.fc{1,2}`,
/// `sa.sa_blocks.{i}.w_{q,k,v}`.
#[derive(Debug, Clone)]
pub struct EnhancedBlock {
    conv1: ConvBnRelu,
    conv2: Option<ConvBnRelu>,
    botneck: Conv2d,
    spa: Option<SpatialAttention>,
    ca: Option<ChannelAttention>,
    sa: Option<MultiHeadSelfAttention>,
    name: String,
}

impl EnhancedBlock {
    /// `size` is the side of the input feature map (the self-attention works before pooling).
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        size: usize,
        spec: EnhancedSpec,
    ) -> Result<Self> {
        let conv1 = ConvBnRelu::new(&ctx.pp("conv1"), 0, cin, cin)?;
        let conv2 = if spec.conv2 {
            Some(ConvBnRelu::new(&ctx.pp("conv2"), 0, cin, cout)?)
        } else {
            None
        };
        let botneck = Conv2d::new(&ctx.pp("botneck"), cin, cout, 1, 1, 0, true)?;
        let (spa, ca) = if spec.cbam {
            (
                Some(SpatialAttention::new(&ctx.pp("spa"))?),
                Some(ChannelAttention::new(&ctx.pp("ca"), cin)?),
            )
        } else {
            (None, None)
        };
        let sa = if spec.mhsa {
            let width = if spec.conv2 { cin } else { cout };
            Some(MultiHeadSelfAttention::new(
                &ctx.pp("sa"),
                cin,
                &head_widths(width, 4),
                size,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            botneck,
            spa,
            ca,
            sa,
            name: ctx.vb.prefix(),
        })
    }

    fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        mut taps: Option<&mut BlockTaps>,
    ) -> Result<Tensor> {
        let mut h = self.conv1.forward_t(x, train)?;
        if let Some(t) = taps.as_deref_mut() {
            t.conv1 = Some(h.clone());
        }
        if let Some(ca) = &self.ca {
            let w = ca.forward(&h)?;
            h = h.broadcast_mul(&w)?;
            if let Some(t) = taps.as_deref_mut() {
                t.ca = Some(w);
            }
        }
        if let Some(spa) = &self.spa {
            let m = spa.forward(&h)?;
            h = h.broadcast_mul(&m)?;
            if let Some(t) = taps.as_deref_mut() {
                t.spa = Some(m);
            }
        }
        if let Some(sa) = &self.sa {
            let (o, maps) = sa.forward(&h)?;
            h = o;
            if let Some(t) = taps.as_deref_mut() {
                t.sa = Some(h.clone());
                t.sa_maps = Some(maps);
            }
        }
        if let Some(c2) = &self.conv2 {
            h = c2.forward_t(&h, train)?;
            if let Some(t) = taps {
                t.conv2 = Some(h.clone());
            }
        }
        max_pool2_sum(&h, &self.botneck.forward(x)?)
    }

    fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let mut h = self.conv1.summarize(x, rows);
        if let Some(ca) = &self.ca {
            h = ca.summarize(h, rows);
        }
        if let Some(spa) = &self.spa {
            h = spa.summarize(h, rows);
        }
        if let Some(sa) = &self.sa {
            h = sa.summarize(h, rows);
        }
        if let Some(c2) = &self.conv2 {
            h = c2.summarize(h, rows);
        }
        self.botneck.summarize(x, rows);
        pool_summary(&format!("{}.pool", self.name), h, rows)
    }
}

/// Bottleneck-transformer block: `pool(MHSA2(MHSA1 x) + conv1x1 x)`, 4 heads each
/// (`cin -> cout`, then `cout -> cout`). Names: `sa1.sa_blocks.{i}`, `sa2.sa_blocks.{i}`,
/// `botneck`.
#[derive(Debug, Clone)]
pub struct BotBlock {
    sa1: MultiHeadSelfAttention,
    sa2: MultiHeadSelfAttention,
    botneck: Conv2d,
    name: String,
}

impl BotBlock {
    pub(crate) fn new(ctx: &Ctx, cin: usize, cout: usize, size: usize) -> Result<Self> {
        let widths = head_widths(cout, 4);
        Ok(Self {
            sa1: MultiHeadSelfAttention::new(&ctx.pp("sa1"), cin, &widths, size)?,
            sa2: MultiHeadSelfAttention::new(&ctx.pp("sa2"), cout, &widths, size)?,
            botneck: Conv2d::new(&ctx.pp("botneck"), cin, cout, 1, 1, 0, true)?,
            name: ctx.vb.prefix(),
        })
    }

    fn forward_t(&self, x: &Tensor, taps: Option<&mut BlockTaps>) -> Result<Tensor> {
        let (h, _) = self.sa1.forward(x)?;
        let (h, maps) = self.sa2.forward(&h)?;
        if let Some(t) = taps {
            t.sa = Some(h.clone());
            t.sa_maps = Some(maps);
        }
        max_pool2_sum(&h, &self.botneck.forward(x)?)
    }

    fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let h = self.sa1.summarize(x, rows);
        let h = self.sa2.summarize(h, rows);
        self.botneck.summarize(x, rows);
        pool_summary(&format!("{}.pool", self.name), h, rows)
    }
}

/// One of the network's residual stages.
#[derive(Debug, Clone)]
pub enum Block {
    /// A plain residual block.
    Residual(Residual),
    /// An attention-enhanced block (ta, cbam or sa).
    Enhanced(EnhancedBlock),
    /// A bottleneck-transformer block.
    Bot(BotBlock),
}

impl Block {
    pub(crate) fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        taps: Option<&mut BlockTaps>,
    ) -> Result<Tensor> {
        match self {
            Block::Residual(b) => b.forward_t(x, train),
            Block::Enhanced(b) => b.forward_t(x, train, taps),
            Block::Bot(b) => b.forward_t(x, taps),
        }
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        match self {
            Block::Residual(b) => b.summarize(x, rows),
            Block::Enhanced(b) => b.summarize(x, rows),
            Block::Bot(b) => b.summarize(x, rows),
        }
    }
}
