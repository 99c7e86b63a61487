//! The deterministic "formula weights" of the reference outputs
//! (`shared/reference/baselines/README.md`): every state-dict entry `k` (counted from 0 in
//! state_dict order, `num_batches_tracked` included) and flat element `i` get
//! `s = (splitmix64(k * 2^32 + i) >> 11) * 2^-52 - 1` in float64, scaled by the entry's
//! [`Kind`] and cast to f32 (round to nearest). Integer and basic float64 arithmetic only, so
//! the values are bit-exact.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::BaselineNet;
use crate::Result;

/// The kind of a state-dict entry, which picks the formula's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Convolution or linear weight (2 or more dims): `sqrt(3 / fan_in) * s`,
    /// `fan_in = numel / shape[0]`.
    Weight,
    /// Convolution or linear bias: `0.1 * s`.
    Bias,
    /// BatchNorm weight (gamma): `1 + 0.1 * s`.
    BnWeight,
    /// BatchNorm bias (beta): `0.1 * s`.
    BnBias,
    /// BatchNorm running mean: `0.1 * s`.
    BnRunningMean,
    /// BatchNorm running variance: `1 + 0.5 * |s|`.
    BnRunningVar,
    /// BatchNorm `num_batches_tracked`: 0 (i64 scalar).
    BnNumBatchesTracked,
}

impl Kind {
    /// The kind of entry `name` of `shape`; `is_bn` says it belongs to a BatchNorm layer.
    pub fn of(name: &str, shape: &[usize], is_bn: bool) -> Self {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        match (is_bn, leaf) {
            (_, "num_batches_tracked") => Kind::BnNumBatchesTracked,
            (_, "running_mean") => Kind::BnRunningMean,
            (_, "running_var") => Kind::BnRunningVar,
            (true, "weight") => Kind::BnWeight,
            (true, _) => Kind::BnBias,
            _ if shape.len() >= 2 => Kind::Weight,
            _ => Kind::Bias,
        }
    }

    /// The README's name of the kind (`W`, `B`, `BN.weight`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Weight => "W",
            Kind::Bias => "B",
            Kind::BnWeight => "BN.weight",
            Kind::BnBias => "BN.bias",
            Kind::BnRunningMean => "BN.running_mean",
            Kind::BnRunningVar => "BN.running_var",
            Kind::BnNumBatchesTracked => "BN.num_batches_tracked",
        }
    }
}

/// splitmix64's output for state `x` (one step: add the golden gamma, then mix).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `s` of element `i` of entry `k`: exact, in `[-1, 1)` on a grid of 2^-52.
pub fn unit(k: u64, i: u64) -> f64 {
    let z = splitmix64((k << 32).wrapping_add(i));
    (z >> 11) as f64 * (-52f64).exp2() - 1.0
}

/// The f32 value of element `i` of entry `k` of `kind`; `fan_in` is used by
/// [`Kind::Weight`] only.
pub fn value(k: u64, i: u64, kind: Kind, fan_in: usize) -> f32 {
    let s = unit(k, i);
    let v = match kind {
        Kind::Weight => (3.0 / fan_in as f64).sqrt() * s,
        Kind::Bias | Kind::BnBias | Kind::BnRunningMean => 0.1 * s,
        Kind::BnWeight => 1.0 + 0.1 * s,
        Kind::BnRunningVar => 1.0 + 0.5 * s.abs(),
        Kind::BnNumBatchesTracked => 0.0,
    };
    v as f32
}

/// The values of entry `k` of `shape` and `kind`, row-major (computed in parallel).
pub fn values(k: u64, shape: &[usize], kind: Kind) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in = if shape.is_empty() || shape[0] == 0 {
        1
    } else {
        n / shape[0]
    };
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, out)| {
        let base = (c << 16) as u64;
        for (j, o) in out.iter_mut().enumerate() {
            *o = value(k, base + j as u64, kind, fan_in);
        }
    });
    v
}

/// Entry `k` as a tensor on `device`: f32 of `shape`, or the i64 scalar 0 for
/// [`Kind::BnNumBatchesTracked`].
pub fn tensor(k: u64, shape: &[usize], kind: Kind, device: &Device) -> Result<Tensor> {
    if kind == Kind::BnNumBatchesTracked {
        return Ok(Tensor::new(0i64, device)?);
    }
    Ok(Tensor::from_vec(values(k, shape, kind), shape, device)?)
}

/// The whole formula state dict of `model`'s architecture, in state_dict order (f32, the
/// `num_batches_tracked` entries i64). For the large models prefer
/// [`BaselineNet::set_formula_weights`], which never holds a second copy.
pub fn formula_state_dict(model: &BaselineNet) -> Result<Vec<(String, Tensor)>> {
    model
        .state_dict_layout()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape, is_bn))| {
            let kind = Kind::of(&name, &shape, is_bn);
            Ok((name, tensor(k as u64, &shape, kind, model.device())?))
        })
        .collect()
}
