//! A torchstat-like per-layer summary: output shape, parameters, multiply-adds.
//!
//! Counting rule (per sample, as torchstat counts with a batch of one). "MAdd" counts
//! multiplications and additions separately, following torchstat's `compute_madd`:
//! - Conv2d: per output element `k*k*cin` multiplications and `k*k*cin - 1` additions,
//!   plus one for the bias;
//! - Linear: `out * (2*in - 1)` (the bias is not counted);
//! - BatchNorm2d: 4 per element; ReLU: 1 per element; MaxPool2d 2x2: 3 per output element;
//! - the attention modules count their 1x1/3x3 convolutions and hidden ReLU with the rules
//!   above (channel attention's shared MLP twice: average and max branch), and, unlike
//!   torchstat (which sees only modules), the two matrix products of each self-attention
//!   head (`QK^T` and `QP^T`, `2*W - 1` per output element). Pooling, sigmoid, softmax and
//!   element-wise products are not counted.
//!
//! "Flops" follows torchstat's `compute_flops` (the paper's Table 2 column, 30.08M for
//! Off-TANet): Conv2d `out * k*k*cin` plus `out` with a bias; BatchNorm2d 2 per element;
//! ReLU 1 per element; MaxPool2d 1 per input element; Linear `in * out`; the attention
//! modules' convolutions and ReLU likewise, their matrix products not counted.
//!
//! "MemR+W" follows torchstat's `compute_memory` (values read and written, 4 bytes each):
//! Conv2d and Linear read their input and their own parameters and write their output;
//! BatchNorm2d reads its input and `2 * C` values and writes its input's size; ReLU reads
//! and writes its input; MaxPool2d reads its input and writes its output; every other
//! module (sigmoid, softmax, dropout) and all tensor operations (the attention's global
//! pools, which the reference computes with tensor operations, its products and sums)
//! count 0. The shared MLP of channel attention is one set of modules, counted once (its
//! last call). For `ta` this gives 1,478,822 values, 5.64 MiB: the paper's "5.64MB".

use mer_common::fmt::thousands;
use std::fmt;

use crate::Variant;

/// Per-sample shape `[C, H, W]`.
pub(crate) type Chw = [usize; 3];

/// One layer of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// State-dict-style name, e.g. `res1.conv.0`.
    pub name: String,
    /// Layer type, e.g. `Conv2d`.
    pub kind: String,
    /// Output shape of one sample (no batch axis).
    pub output_shape: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-adds (see the module documentation for the rule).
    pub madd: u64,
    /// torchstat's "Flops" (see the module documentation for the rule).
    pub flops: u64,
    /// Values read and written (torchstat's memory rule; see the module documentation).
    pub mem_rw: u64,
}

impl SummaryRow {
    pub(crate) fn new(name: &str, kind: &str, out: Chw, params: usize, madd: u64) -> Self {
        Self::new_dims(name, kind, out.to_vec(), params, madd)
    }

    pub(crate) fn new_dims(
        name: &str,
        kind: &str,
        output_shape: Vec<usize>,
        params: usize,
        madd: u64,
    ) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            output_shape,
            params,
            madd,
            flops: 0,
            mem_rw: 0,
        }
    }

    /// With `read + write` values of memory traffic (torchstat's rule).
    pub(crate) fn with_mem(mut self, read: u64, write: u64) -> Self {
        self.mem_rw = read + write;
        self
    }

    pub(crate) fn with_flops(mut self, flops: u64) -> Self {
        self.flops = flops;
        self
    }
}

/// The per-layer table of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The variant summarised.
    pub variant: Variant,
    /// Input shape of one sample.
    pub input_shape: Vec<usize>,
    /// Leaf layers in forward order.
    pub rows: Vec<SummaryRow>,
}

impl Summary {
    /// Sum of the rows' parameters (equals the model's trainable parameter count).
    pub fn total_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }

    /// Sum of the rows' multiply-adds.
    pub fn total_madd(&self) -> u64 {
        self.rows.iter().map(|r| r.madd).sum()
    }

    /// Sum of the rows' torchstat Flops (30,079,946 for `ta`: the paper's "30.08M").
    pub fn total_flops(&self) -> u64 {
        self.rows.iter().map(|r| r.flops).sum()
    }

    /// torchstat's MemR+W in MiB (printed as "MB"): 4 bytes per value read or written
    /// (5.64 for `ta`: the paper's Table 2).
    pub fn total_mem_rw_mib(&self) -> f64 {
        (4 * self.rows.iter().map(|r| r.mem_rw).sum::<u64>()) as f64 / (1024.0 * 1024.0)
    }
}

impl fmt::Display for Summary {
    /// The table, ending with `total params: N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "Off-TANet variant `{}`, input {:?}",
            self.variant, self.input_shape
        )?;
        writeln!(
            f,
            "{:<w$}  {:<18}  {:<10}  {:>7}  {:>11}  {:>11}",
            "layer", "type", "output", "params", "MAdd", "Flops"
        )?;
        for r in &self.rows {
            let shape = r
                .output_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            writeln!(
                f,
                "{:<w$}  {:<18}  {:<10}  {:>7}  {:>11}  {:>11}",
                r.name,
                r.kind,
                shape,
                thousands(r.params as u64),
                thousands(r.madd),
                thousands(r.flops)
            )?;
        }
        let (madd, flops) = (self.total_madd(), self.total_flops());
        writeln!(
            f,
            "total MAdd: {} ({:.2} M)",
            thousands(madd),
            madd as f64 / 1e6
        )?;
        writeln!(
            f,
            "total Flops (torchstat): {} ({:.2} M)",
            thousands(flops),
            flops as f64 / 1e6
        )?;
        writeln!(
            f,
            "total MemR+W (torchstat): {:.2} MiB",
            self.total_mem_rw_mib()
        )?;
        write!(f, "total params: {}", self.total_params())
    }
}
