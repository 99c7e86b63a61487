//! `cargo xtask model summary` and `cargo xtask predict` (owned by the model crate's work).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mer_model::candle_core::{Device, Tensor};
use mer_model::{
    npy, Baseline, ModelConfig, ModelSpec, Net, OffTaNet, Variant, CLASS_NAMES, INPUT_SIZE,
};

/// The model names `--model` accepts besides the baselines' ([`Baseline::name`]).
const OFF_TANET: &str = "off-tanet";

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Per-layer table ending with `total params: N`: Off-TANet's (output shape, params,
    /// multiply-adds, Flops) or a Table 2 baseline's (torchstat's Params, Flops, MemR+W).
    Summary {
        /// Model: off-tanet, off-apexnet, ststnet, dual-inception, macnn, micro-attention.
        #[arg(long, default_value = OFF_TANET)]
        model: String,
        /// Off-TANet variant: res, cbam, sa, bot, ta, all-ta.
        #[arg(long)]
        variant: Option<String>,
        /// Off-TANet input channels (3: u, v, strain; 2: the no-strain and raw-image
        /// ablations).
        #[arg(long)]
        in_channels: Option<usize>,
    },
}

#[derive(Args)]
pub struct PredictArgs {
    /// Model: off-tanet, off-apexnet, ststnet, dual-inception, macnn, micro-attention.
    #[arg(long, default_value = OFF_TANET)]
    model: String,
    /// Weights: a PyTorch state_dict (.pth, zip pickle) or a .safetensors file with the same
    /// tensor names.
    #[arg(long)]
    weights: PathBuf,
    /// Features: float32 .npy of shape [N, C, S, S] or [C, S, S] (Off-TANet: S = 112;
    /// off-apexnet, dual-inception: [2, 28, 28]; ststnet [3, 28, 28]; macnn [3, 112, 112];
    /// micro-attention [3, 224, 224]).
    #[arg(long)]
    features: PathBuf,
    /// Off-TANet variant: res, cbam, sa, bot, ta (default), all-ta.
    #[arg(long)]
    variant: Option<String>,
    /// Off-TANet input channels (3, the default: u, v, strain; 2: the no-strain and
    /// raw-image ablations).
    #[arg(long)]
    in_channels: Option<usize>,
    /// Write the logits [N, 3] as float32 .npy here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `None` for Off-TANet, else the baseline; refuses the Off-TANet-only flags for a baseline.
fn baseline(
    model: &str,
    variant: &Option<String>,
    in_channels: Option<usize>,
) -> Result<Option<Baseline>> {
    if model.eq_ignore_ascii_case(OFF_TANET) {
        return Ok(None);
    }
    let b = Baseline::from_name(model).map_err(|_| {
        anyhow::anyhow!(
            "unknown model `{model}`: expected one of off-tanet, off-apexnet, ststnet, dual-inception, macnn, micro-attention"
        )
    })?;
    if variant.is_some() || in_channels.is_some() {
        bail!(
            "--variant and --in-channels apply to off-tanet only, not to {}",
            b.name()
        );
    }
    Ok(Some(b))
}

fn config(variant: Option<&str>, in_channels: Option<usize>) -> Result<ModelConfig> {
    let variant: Variant = variant.unwrap_or("ta").parse()?;
    Ok(ModelConfig::new(variant).with_in_channels(in_channels.unwrap_or(3)))
}

pub fn run(cmd: ModelCmd) -> Result<()> {
    match cmd {
        ModelCmd::Summary {
            model,
            variant,
            in_channels,
        } => {
            match baseline(&model, &variant, in_channels)? {
                Some(b) => println!("{}", b.summary()),
                None => {
                    let cfg = config(variant.as_deref(), in_channels)?;
                    let model = OffTaNet::random(&cfg, &Device::Cpu)?;
                    println!("{}", model.summary());
                }
            }
            Ok(())
        }
    }
}

/// Samples per forward pass (bounds memory for large feature files).
const CHUNK: usize = 64;

pub fn predict(a: PredictArgs) -> Result<()> {
    let dev = Device::Cpu;
    let b = baseline(&a.model, &a.variant, a.in_channels)?;
    let (c, s, what) = match b {
        Some(b) => {
            let (c, s) = b.input_shape();
            (c, s, b.name().to_string())
        }
        None => {
            let cfg = config(a.variant.as_deref(), a.in_channels)?;
            (
                cfg.in_channels,
                INPUT_SIZE,
                format!(
                    "variant {}, {} input channels",
                    cfg.variant, cfg.in_channels
                ),
            )
        }
    };
    let x = npy::read_tensor(&a.features, &dev)?;
    let x = match x.dims() {
        [n, ch, h, w] if *ch == c && *h == s && *w == s && *n > 0 => x,
        [ch, h, w] if *ch == c && *h == s && *w == s => x.unsqueeze(0)?,
        found => bail!(
            "{}: expected shape [N, {c}, {s}, {s}] or [{c}, {s}, {s}] ({what}), found {found:?}",
            a.features.display(),
        ),
    };
    let spec = match b {
        Some(b) => ModelSpec::Baseline(b),
        None => ModelSpec::OffTaNet(config(a.variant.as_deref(), a.in_channels)?),
    };
    let model: Net = spec
        .load(&a.weights, &dev)
        .with_context(|| format!("loading {} as {what}", a.weights.display()))?;
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
