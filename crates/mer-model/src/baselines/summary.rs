//! torchstat 0.0.7's columns for the baselines (`shared/docs/baselines-notes.md`, "Counting
//! rules"): leaf layers only, batch 1, 4 bytes per value.
//!
//! - Flops: convolution `kh*kw*Cin*Cout*Hout*Wout` plus `Cout*Hout*Wout` with a bias; linear
//!   `in*out` (bias not counted); ReLU and max pool: elements of the input; BatchNorm
//!   2 per element; dropout, softmax and tensor operations 0.
//! - Memory read / write in values: convolution and linear (input + own parameters, output);
//!   BatchNorm (input + 2C, input); pool (input, output); ReLU (input, input); others (0, 0).
//!   MemR+W = 4 * (read + write) bytes, shown in MiB (torchstat labels it "MB").

use mer_common::fmt::thousands;
use std::fmt;

use super::Baseline;

/// One leaf layer of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchstatRow {
    /// The module's name, e.g. `res_vgg.0.conv.0` (state_dict path; pools and activations
    /// named after their place).
    pub name: String,
    /// Layer type, e.g. `Conv2d`.
    pub kind: String,
    /// Output shape of one sample.
    pub output_shape: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
    /// torchstat's Flops.
    pub flops: u64,
    /// Values read (input plus parameters where counted).
    pub mem_read: u64,
    /// Values written.
    pub mem_write: u64,
}

impl TorchstatRow {
    /// Memory read + written, in bytes (4 per value).
    pub fn mem_rw_bytes(&self) -> u64 {
        4 * (self.mem_read + self.mem_write)
    }
}

/// torchstat's per-layer table of a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchstatSummary {
    /// The model.
    pub model: Baseline,
    /// Input shape of one sample `[C, S, S]`.
    pub input_shape: Vec<usize>,
    /// Leaf layers in forward order.
    pub rows: Vec<TorchstatRow>,
}

impl TorchstatSummary {
    /// Sum of the rows' parameters (the trainable total).
    pub fn total_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }

    /// Sum of the rows' Flops.
    pub fn total_flops(&self) -> u64 {
        self.rows.iter().map(|r| r.flops).sum()
    }

    /// Total memory read + written, in bytes.
    pub fn total_mem_rw_bytes(&self) -> u64 {
        self.rows.iter().map(TorchstatRow::mem_rw_bytes).sum()
    }

    /// Total memory read + written in MiB (torchstat's "MB" column).
    pub fn total_mem_rw_mib(&self) -> f64 {
        self.total_mem_rw_bytes() as f64 / (1024.0 * 1024.0)
    }
}

/// torchstat's printing: divide by powers of `base` while the value is at least `base`, round
/// to 2 decimals and print as Python's `str` does (`3.87M`, `1.0G`, `526.98K`).
pub fn torchstat_format(v: f64, base: f64) -> String {
    let mut v = v;
    let mut prefix = "";
    for p in ["K", "M", "G", "T"] {
        if v < base {
            break;
        }
        v /= base;
        prefix = p;
    }
    let r = (v * 100.0).round() / 100.0;
    let mut s = format!("{r}");
    if !s.contains('.') {
        s.push_str(".0");
    }
    format!("{s}{prefix}")
}

impl fmt::Display for TorchstatSummary {
    /// The table (torchstat's columns), then the totals, ending with `total params: N`.
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
            "{}, input {:?} (torchstat 0.0.7's counting, batch 1)",
            self.model.display_name(),
            self.input_shape
        )?;
        writeln!(
            f,
            "{:<w$}  {:<11}  {:<11}  {:>10}  {:>13}  {:>11}",
            "layer", "type", "output", "params", "Flops", "MemR+W(MiB)"
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
                "{:<w$}  {:<11}  {:<11}  {:>10}  {:>13}  {:>11.2}",
                r.name,
                r.kind,
                shape,
                thousands(r.params as u64),
                thousands(r.flops),
                r.mem_rw_bytes() as f64 / (1024.0 * 1024.0)
            )?;
        }
        let flops = self.total_flops();
        writeln!(
            f,
            "total Flops (torchstat): {} ({})",
            thousands(flops),
            torchstat_format(flops as f64, 1000.0)
        )?;
        let mem = self.total_mem_rw_bytes();
        writeln!(
            f,
            "total MemR+W (torchstat): {:.2} MiB ({}B)",
            self.total_mem_rw_mib(),
            torchstat_format(mem as f64, 1024.0)
        )?;
        write!(f, "total params: {}", self.total_params())
    }
}

/// Per-sample shape `[C, H, W]`.
type Chw = [usize; 3];

fn numel(x: Chw) -> u64 {
    (x[0] * x[1] * x[2]) as u64
}

/// Collects rows while walking an architecture.
#[derive(Default)]
struct Walk {
    rows: Vec<TorchstatRow>,
}

impl Walk {
    fn row(
        &mut self,
        name: &str,
        kind: &str,
        out: Vec<usize>,
        params: usize,
        flops: u64,
        rw: (u64, u64),
    ) {
        self.rows.push(TorchstatRow {
            name: name.to_string(),
            kind: kind.to_string(),
            output_shape: out,
            params,
            flops,
            mem_read: rw.0,
            mem_write: rw.1,
        });
    }

    /// Convolution with bias: kernel `k`, stride `s`, padding `p`, dilation `d`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: Chw,
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
    ) -> Chw {
        let o = |n: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
        let out = [cout, o(x[1]), o(x[2])];
        let params = cout * x[0] * k * k + cout;
        let flops = (k * k * x[0]) as u64 * numel(out) + numel(out);
        self.row(
            name,
            "Conv2d",
            out.to_vec(),
            params,
            flops,
            (numel(x) + params as u64, numel(out)),
        );
        out
    }

    fn linear(&mut self, name: &str, fin: usize, fout: usize) {
        let params = fin * fout + fout;
        self.row(
            name,
            "Linear",
            vec![fout],
            params,
            (fin * fout) as u64,
            ((fin + params) as u64, fout as u64),
        );
    }

    fn relu(&mut self, name: &str, x: Chw) -> Chw {
        let n = numel(x);
        self.row(name, "ReLU", x.to_vec(), 0, n, (n, n));
        x
    }

    fn relu1(&mut self, name: &str, n: usize) {
        self.row(name, "ReLU", vec![n], 0, n as u64, (n as u64, n as u64));
    }

    fn dropout(&mut self, name: &str, n: usize) {
        self.row(name, "Dropout", vec![n], 0, 0, (0, 0));
    }

    fn pool(&mut self, name: &str, x: Chw, k: usize, s: usize, p: usize) -> Chw {
        let o = |n: usize| (n + 2 * p - k) / s + 1;
        let out = [x[0], o(x[1]), o(x[2])];
        self.row(
            name,
            "MaxPool2d",
            out.to_vec(),
            0,
            numel(x),
            (numel(x), numel(out)),
        );
        out
    }

    fn bn(&mut self, name: &str, x: Chw) -> Chw {
        let n = numel(x);
        self.row(
            name,
            "BatchNorm2d",
            x.to_vec(),
            2 * x[0],
            2 * n,
            (n + 2 * x[0] as u64, n),
        );
        x
    }

    fn softmax(&mut self, name: &str, n: usize) {
        self.row(name, "Softmax", vec![n], 0, 0, (0, 0));
    }
}

/// The torchstat table of `model` (computed from the architecture, no weights needed).
pub(crate) fn summarize(model: Baseline) -> TorchstatSummary {
    let (c, s) = model.input_shape();
    let mut w = Walk::default();
    match model {
        Baseline::OffApexNet => {
            for p in ["cnn1", "cnn2"] {
                let h = w.conv(&format!("{p}.conv1"), [1, 28, 28], 6, 5, 1, 2, 1);
                let h = w.pool(&format!("{p}.pool1"), h, 2, 2, 0);
                let h = w.conv(&format!("{p}.conv2"), h, 16, 5, 1, 2, 1);
                w.pool(&format!("{p}.pool2"), h, 2, 2, 0);
            }
            dense_head(&mut w, &[1568, 1024, 1024, 3], true);
        }
        Baseline::Ststnet => {
            for (k, o) in [(1, 3), (2, 5), (3, 8)] {
                let h = w.conv(&format!("stream{k}.conv"), [3, 28, 28], o, 3, 1, 1, 1);
                w.pool(&format!("stream{k}.pool"), h, 3, 3, 1);
            }
            w.pool("pool", [16, 10, 10], 2, 2, 0);
            dense_head(&mut w, &[400, 400, 3], false);
        }
        Baseline::DualInception => {
            for p in ["icpt1", "icpt2"] {
                let mut x = [1, 28, 28];
                for (b, width) in [(0, 6), (1, 16)] {
                    let n = |s: &str| format!("{p}.{b}.{s}");
                    let h = w.conv(&n("path1.0"), x, width, 1, 1, 0, 1);
                    let h = w.relu(&n("path1.1"), h);
                    let h = w.conv(&n("path1.2"), h, width, 5, 1, 2, 1);
                    w.relu(&n("path1.3"), h);
                    let h = w.conv(&n("path2.0"), x, width, 1, 1, 0, 1);
                    let h = w.relu(&n("path2.1"), h);
                    let h = w.conv(&n("path2.2"), h, width, 3, 1, 1, 1);
                    w.relu(&n("path2.3"), h);
                    let h = w.pool(&n("path3.0"), x, 3, 1, 1);
                    let h = w.conv(&n("path3.1"), h, width, 1, 1, 0, 1);
                    w.relu(&n("path3.2"), h);
                    w.conv(&n("path4"), x, width, 1, 1, 0, 1);
                    x = w.pool(&n("pool"), [4 * width, x[1], x[2]], 2, 2, 0);
                }
            }
            dense_head(&mut w, &[6272, 1024, 3], false);
        }
        Baseline::Macnn => {
            let mut x = [c, s, s];
            for (k, o) in [32, 64, 128, 256].into_iter().enumerate() {
                let n = |s: &str| format!("res_vgg.{k}.{s}");
                let h = w.conv(&n("conv.0"), x, o, 3, 1, 1, 1);
                let h = w.relu(&n("conv.1"), h);
                let h = w.conv(&n("conv.2"), h, o, 3, 1, 1, 1);
                let h = w.relu(&n("conv.3"), h);
                w.conv(&n("botneck"), x, o, 1, 1, 0, 1);
                x = w.pool(&n("pool"), h, 2, 2, 0);
            }
            let h = w.conv("aconv.0", x, 256, 3, 1, 4, 4);
            let h = w.relu("aconv.1", h);
            let h = w.conv("aconv.2", h, 256, 3, 1, 2, 2);
            w.relu("aconv.3", h);
            dense_head(&mut w, &[12544, 4096, 4096, 3], true);
        }
        Baseline::MicroAttention => {
            let h = w.conv("conv.0", [c, s, s], 32, 7, 2, 3, 1);
            let h = w.relu("conv.1", h);
            let mut x = w.pool("pool", h, 3, 2, 1);
            for (b, o) in [(0, 64), (2, 128), (4, 256)] {
                let n = |s: &str| format!("ma.{b}.{s}");
                let a = w.conv(&n("convl_1.0"), x, o, 3, 1, 1, 1);
                let a = w.bn(&n("convl_1.1"), a);
                let a = w.relu(&n("convl_1.2"), a);
                let h = w.conv(&n("convl_2.0"), a, o, 3, 1, 1, 1);
                let h = w.bn(&n("convl_2.1"), h);
                let h = w.relu(&n("convl_2.2"), h);
                w.conv(&n("convm"), x, o, 1, 1, 0, 1);
                w.conv(&n("convr"), [3 * o, h[1], h[2]], 3 * o, 1, 1, 0, 1);
                w.softmax(&n("softmax"), h[1] * h[2]);
                x = w.pool(&format!("ma.{}", b + 1), h, 2, 2, 0);
            }
            dense_head(&mut w, &[12544, 4096, 3], true);
        }
    }
    TorchstatSummary {
        model,
        input_shape: vec![c, s, s],
        rows: w.rows,
    }
}

/// `dense.*`: linear layers of `widths`, ReLU (and dropout when `dropout`) between them,
/// indexed as the reference's sequential stack.
fn dense_head(w: &mut Walk, widths: &[usize], dropout: bool) {
    let step = if dropout { 3 } else { 2 };
    for (i, pair) in widths.windows(2).enumerate() {
        let base = step * i;
        w.linear(&format!("dense.{base}"), pair[0], pair[1]);
        if i + 2 < widths.len() {
            w.relu1(&format!("dense.{}", base + 1), pair[1]);
            if dropout {
                w.dropout(&format!("dense.{}", base + 2), pair[1]);
            }
        }
    }
}
