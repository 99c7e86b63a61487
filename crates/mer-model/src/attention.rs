//! The triplet attention of the paper (Section 3.2): channel attention, spatial attention and
//! multi-head self-attention with a 2-D sinusoidal positional code.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::Init;

use crate::layers::{conv_madd, max_keepdim_first, relu, Conv2d, Ctx};
use crate::summary::{Chw, SummaryRow};
use crate::Result;

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::sigmoid(x)?)
}

/// Channel attention (eq. 6): `sigmoid(MLP(avgpool x) + MLP(maxpool x))`, the shared MLP
/// being 1x1 convs `C -> C/16 (at least 1) -> C` without bias, ReLU between.
#[derive(Debug, Clone)]
pub struct ChannelAttention {
    fc1: Tensor,
    fc2: Tensor,
    name: String,
}

impl ChannelAttention {
    pub(crate) fn new(ctx: &Ctx, c: usize) -> Result<Self> {
        let hidden = (c / 16).max(1);
        let b1 = 1.0 / (c as f64).sqrt();
        let b2 = 1.0 / (hidden as f64).sqrt();
        let fc1 = ctx.pp("fc1").param(
            &[hidden, c, 1, 1],
            "weight",
            Init::Uniform { lo: -b1, up: b1 },
        )?;
        let fc2 = ctx.pp("fc2").param(
            &[c, hidden, 1, 1],
            "weight",
            Init::Uniform { lo: -b2, up: b2 },
        )?;
        Ok(Self {
            fc1,
            fc2,
            name: ctx.vb.prefix(),
        })
    }

    fn mlp(&self, z: &Tensor) -> Result<Tensor> {
        let w1 = self.fc1.flatten_from(1)?; // [hidden, C]
        let w2 = self.fc2.flatten_from(1)?; // [C, hidden]
        Ok(relu(&z.matmul(&w1.t()?)?)?.matmul(&w2.t()?)?)
    }

    /// The channel weights `[N, C, 1, 1]` of `x` `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let flat = x.flatten_from(2)?;
        let avg = flat.mean(2)?;
        let max = max_keepdim_first(&flat, 2)?.squeeze(2)?;
        let s = (self.mlp(&avg)? + self.mlp(&max)?)?;
        sigmoid(&s)?.reshape((n, c, 1, 1)).map_err(Into::into)
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.fc1.elem_count() + self.fc2.elem_count()
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let (hidden, c) = (self.fc1.dims()[0], self.fc1.dims()[1]);
        let madd = 2
            * (conv_madd([hidden, 1, 1], c, 1, false)
                + hidden as u64
                + conv_madd([c, 1, 1], hidden, 1, false));
        let flops = 2 * (2 * hidden * c + hidden) as u64;
        // Memory: the shared MLP's modules once each (fc1: c + its weights -> hidden; ReLU;
        // fc2: hidden + its weights -> c); the global pools are tensor operations.
        let (h, cc) = (hidden as u64, c as u64);
        let read = (cc + h * cc) + h + (h + cc * h);
        let write = h + h + cc;
        rows.push(
            SummaryRow::new(
                &self.name,
                "ChannelAttention",
                [c, 1, 1],
                self.num_params(),
                madd,
            )
            .with_flops(flops)
            .with_mem(read, write),
        );
        x
    }
}

/// Spatial attention (eq. 5): `sigmoid(conv3x3([mean_c x; max_c x]))`, no bias.
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    conv: Conv2d,
    name: String,
}

impl SpatialAttention {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&ctx.pp("conv1"), 2, 1, 3, 1, 1, false)?,
            name: ctx.vb.prefix(),
        })
    }

    /// The spatial map `[N, 1, H, W]` of `x` `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let avg = x.mean_keepdim(1)?;
        let max = max_keepdim_first(x, 1)?;
        let s = self.conv.forward(&Tensor::cat(&[avg, max], 1)?)?;
        sigmoid(&s)
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.conv.num_params()
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let out = [1, x[1], x[2]];
        rows.push(
            SummaryRow::new(
                &self.name,
                "SpatialAttention",
                out,
                self.num_params(),
                conv_madd(out, 2, 3, false),
            )
            .with_flops((out[1] * out[2] * 18) as u64)
            .with_mem(
                (2 * out[1] * out[2] + self.num_params()) as u64,
                (out[1] * out[2]) as u64,
            ),
        );
        x
    }
}

/// The positional code `P` of a `size x size` map (eq. 8-10, as the reference computes it):
/// `p[i] = sin(1 / 10000^(floor(i/2) / size))` for even `i`, `cos(...)` for odd `i`,
/// `P[a][b] = p[a] + p[b]`; computed in f64, then cast to `dtype`.
pub fn positional_code(size: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let p: Vec<f64> = (0..size)
        .map(|i| {
            let a = 1.0 / 10000f64.powf((i / 2) as f64 / size as f64);
            if i % 2 == 0 {
                a.sin()
            } else {
                a.cos()
            }
        })
        .collect();
    let mut m = Vec::with_capacity(size * size);
    for a in 0..size {
        for b in 0..size {
            m.push(p[a] + p[b]);
        }
    }
    Ok(Tensor::from_vec(m, (size, size), device)?.to_dtype(dtype)?)
}

/// One self-attention head (eq. 7): `q, k, v` are 1x1 convs `C -> d` with bias; for each
/// channel `c`, `softmax(Q_c K_c^T + Q_c P^T)` over all `H*H` entries jointly, multiplied
/// element-wise by `V_c`.
#[derive(Debug, Clone)]
pub struct SelfAttentionHead {
    w_q: Conv2d,
    w_k: Conv2d,
    w_v: Conv2d,
    /// Transposed positional code `P^T`, `[size, size]`.
    pos_t: Tensor,
    name: String,
}

impl SelfAttentionHead {
    pub(crate) fn new(ctx: &Ctx, cin: usize, d: usize, size: usize) -> Result<Self> {
        let w_q = Conv2d::new(&ctx.pp("w_q"), cin, d, 1, 1, 0, true)?;
        let w_k = Conv2d::new(&ctx.pp("w_k"), cin, d, 1, 1, 0, true)?;
        let w_v = Conv2d::new(&ctx.pp("w_v"), cin, d, 1, 1, 0, true)?;
        let pos_t = positional_code(size, ctx.dtype(), ctx.device())?
            .t()?
            .contiguous()?;
        Ok(Self {
            w_q,
            w_k,
            w_v,
            pos_t,
            name: ctx.vb.prefix(),
        })
    }

    /// `(output [N, d, H, W], attention map [N, d, H, H])`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = x.dims4()?;
        let size = self.pos_t.dims()[0];
        if h != w || h != size {
            return Err(crate::Error::InputShape {
                expected: format!("[N, C, {size}, {size}] at self-attention `{}`", self.name),
                found: x.dims().to_vec(),
            });
        }
        let q = self.w_q.forward(x)?;
        let k = self.w_k.forward(x)?;
        let v = self.w_v.forward(x)?;
        let d = q.dim(1)?;
        let qk = q.matmul(&k.transpose(2, 3)?)?;
        let qr = q
            .reshape((n * d * h, w))?
            .matmul(&self.pos_t)?
            .reshape((n, d, h, h))?;
        let logits = (qk + qr)?.reshape((n, d, h * h))?;
        let attn = candle_nn::ops::softmax(&logits, D::Minus1)?.reshape((n, d, h, h))?;
        let out = (&attn * &v)?;
        Ok((out, attn))
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.w_q.num_params() + self.w_k.num_params() + self.w_v.num_params()
    }

    fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let q = self.w_q.out_shape(x);
        let (d, h, w) = (q[0], q[1], q[2]);
        let convs = 3 * conv_madd(q, x[0], 1, true);
        let matmuls = 2 * (d * h * h * (2 * w - 1)) as u64;
        let flops = 3 * (d * h * w * (x[0] + 1)) as u64;
        // Memory: the three 1x1 convolutions (each reads the input and its own weights);
        // the products and the softmax count 0.
        let read = 3 * (x[0] * x[1] * x[2]) as u64 + self.num_params() as u64;
        let write = 3 * (d * h * w) as u64;
        rows.push(
            SummaryRow::new(
                &self.name,
                "SelfAttentionHead",
                q,
                self.num_params(),
                convs + matmuls,
            )
            .with_flops(flops)
            .with_mem(read, write),
        );
        q
    }
}

/// Multi-head self-attention: heads of the given widths, outputs concatenated on channels.
#[derive(Debug, Clone)]
pub struct MultiHeadSelfAttention {
    heads: Vec<SelfAttentionHead>,
}

/// Splits `c` channels into `heads` widths as evenly as possible, wider heads first
/// (28 -> 7,7,7,7; 8 -> 2,2,2,2; 18 -> 5,5,4,4).
pub fn head_widths(c: usize, heads: usize) -> Vec<usize> {
    (0..heads)
        .map(|i| c / heads + usize::from(i < c % heads))
        .collect()
}

impl MultiHeadSelfAttention {
    /// Heads named `sa_blocks.{i}` under `ctx`.
    pub(crate) fn new(ctx: &Ctx, cin: usize, widths: &[usize], size: usize) -> Result<Self> {
        let blocks = ctx.pp("sa_blocks");
        let heads = widths
            .iter()
            .enumerate()
            .map(|(i, &d)| SelfAttentionHead::new(&blocks.pp(i), cin, d, size))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { heads })
    }

    /// `(output [N, sum d, H, W], attention maps [N, sum d, H, H])`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut outs = Vec::with_capacity(self.heads.len());
        let mut maps = Vec::with_capacity(self.heads.len());
        for h in &self.heads {
            let (o, a) = h.forward(x)?;
            outs.push(o);
            maps.push(a);
        }
        Ok((Tensor::cat(&outs, 1)?, Tensor::cat(&maps, 1)?))
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.heads.iter().map(|h| h.num_params()).sum()
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let mut c = 0;
        let mut out = x;
        for h in &self.heads {
            out = h.summarize(x, rows);
            c += out[0];
        }
        [c, out[1], out[2]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_widths_split_evenly() {
        for (c, want) in [
            (28, vec![7, 7, 7, 7]),
            (8, vec![2, 2, 2, 2]),
            (18, vec![5, 5, 4, 4]),
        ] {
            assert_eq!(head_widths(c, 4), want);
        }
    }

    #[test]
    fn positional_code_is_symmetric_sum_of_1d_codes() {
        let p = positional_code(14, DType::F64, &Device::Cpu)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        // p[0] = sin(1), p[1] = cos(1), p[2] = sin(10000^(-1/14)).
        let p1 = [1f64.sin(), 1f64.cos(), (10000f64.powf(-1.0 / 14.0)).sin()];
        assert!((p[0][0] - 2.0 * p1[0]).abs() < 1e-15);
        assert!((p[1][2] - (p1[1] + p1[2])).abs() < 1e-15);
        assert_eq!(p[3][7], p[7][3]);
    }
}
