//! `cargo xtask model summary` and `cargo xtask predict` (owned by the model crate's work).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mer_model::candle_core::{Device, Tensor};
use mer_model::{npy, ModelConfig, OffTaNet, Variant, CLASS_NAMES, INPUT_SIZE};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Per-layer table (output shape, params, multiply-adds), ending with `total params: N`.
    Summary {
        /// Model variant: res, cbam, sa, bot, ta, all-ta.
        #[arg(long, default_value = "ta")]
        variant: String,
        /// Input channels (3: u, v, strain; 2: the no-strain and raw-image ablations).
        #[arg(long, default_value_t = 3)]
        in_channels: usize,
    },
}

#[derive(Args)]
pub struct PredictArgs {
    /// Weights: a PyTorch state_dict (.pth, zip pickle) or a .safetensors file with the same
    /// tensor names.
    #[arg(long)]
    weights: PathBuf,
    /// Features: float32 .npy of shape [N, C, 112, 112] or [C, 112, 112].
    #[arg(long)]
    features: PathBuf,
    /// Model variant: res, cbam, sa, bot, ta, all-ta.
    #[arg(long, default_value = "ta")]
    variant: String,
    /// Input channels of the model (3: u, v, strain; 2: the no-strain and raw-image ablations).
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Write the logits [N, 3] as float32 .npy here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn config(variant: &str, in_channels: usize) -> Result<ModelConfig> {
    let variant: Variant = variant.parse()?;
    Ok(ModelConfig::new(variant).with_in_channels(in_channels))
}

pub fn run(cmd: ModelCmd) -> Result<()> {
    match cmd {
        ModelCmd::Summary {
            variant,
            in_channels,
        } => {
            let cfg = config(&variant, in_channels)?;
            let model = OffTaNet::random(&cfg, &Device::Cpu)?;
            println!("{}", model.summary());
            Ok(())
        }
    }
}

/// Samples per forward pass (bounds memory for large feature files).
const CHUNK: usize = 64;

pub fn predict(a: PredictArgs) -> Result<()> {
    let cfg = config(&a.variant, a.in_channels)?;
    let dev = Device::Cpu;
    let x = npy::read_tensor(&a.features, &dev)?;
    let c = cfg.in_channels;
    let x = match x.dims() {
        [n, ch, h, w] if *ch == c && *h == INPUT_SIZE && *w == INPUT_SIZE && *n > 0 => x,
        [ch, h, w] if *ch == c && *h == INPUT_SIZE && *w == INPUT_SIZE => x.unsqueeze(0)?,
        found => bail!(
            "{}: expected shape [N, {c}, {INPUT_SIZE}, {INPUT_SIZE}] or [{c}, {INPUT_SIZE}, {INPUT_SIZE}] (variant {}, {c} input channels), found {found:?}",
            a.features.display(),
            cfg.variant
        ),
    };
    let model = OffTaNet::load(&cfg, &a.weights, &dev)
        .with_context(|| format!("loading {} as variant {}", a.weights.display(), cfg.variant))?;
    let n = x.dim(0)?;
    let mut chunks = Vec::new();
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        chunks.push(model.forward_t(&x.narrow(0, start, len)?, false)?);
    }
    let logits = Tensor::cat(&chunks, 0)?;
    let probs = mer_model::candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
    println!("sample\tclass\t{}", CLASS_NAMES.join("\t"));
    for (i, p) in probs.iter().enumerate() {
        let best = p
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map_or(0, |b| b.0);
        let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
        println!("{i}\t{}\t{}", CLASS_NAMES[best], ps.join("\t"));
    }
    if let Some(out) = &a.out {
        npy::write_tensor(out, &logits)?;
        tracing::info!(path = %out.display(), samples = n, "wrote logits");
    }
    Ok(())
}
