//! `cargo xtask model summary` and `cargo xtask predict` (owned by the model crate's work).

use std::path::{Path, PathBuf};

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
    #[arg(long, required_unless_present = "onset", conflicts_with_all = ["onset", "apex", "frames"])]
    features: Option<PathBuf>,
    /// The onset frame: an image file (any format OpenCV reads), or with --frames the
    /// frame number (the number in the file names).
    #[arg(long)]
    onset: Option<String>,
    /// The apex frame: an image file, or with --frames a frame number; with --frames and
    /// without --apex the apex is spotted (the frame of largest mean optical strain from the
    /// onset, up to --offset).
    #[arg(long, required_unless_present_any = ["features", "frames"])]
    apex: Option<String>,
    /// A folder of numbered frames (natural order; the number in the name is the frame's).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// With --frames: the last frame to spot the apex in (default: the last frame).
    #[arg(long, requires = "frames")]
    offset: Option<u32>,
    /// `auto`: detect the face in the onset frame (Haar cascade) and cut the same box from
    /// every frame; `none`: the frames are face crops already (as in the databases).
    #[arg(long, default_value = "auto", value_parser = ["auto", "none"])]
    face: String,
    /// The Haar cascade for `--face auto`.
    #[arg(long, default_value = mer_data::preprocess::DEFAULT_CASCADE)]
    cascade: PathBuf,
    /// Strain formula of the raw-frame path: `paper` (eq. 4) or `reference` (the reference
    /// code's, with uy in place of vy; its released weights were trained on it).
    #[arg(long, default_value = "paper", value_parser = ["paper", "reference"])]
    strain_formula: String,
    /// Write the class, probabilities, logits, face box, onset and apex frames (and the
    /// spotting scores) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
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
    let (x, clip) = match &a.features {
        Some(features) => {
            let x = npy::read_tensor(features, &dev)?;
            let x = match x.dims() {
                [n, ch, h, w] if *ch == c && *h == s && *w == s && *n > 0 => x,
                [ch, h, w] if *ch == c && *h == s && *w == s => x.unsqueeze(0)?,
                found => bail!(
                    "{}: expected shape [N, {c}, {s}, {s}] or [{c}, {s}, {s}] ({what}), found {found:?}",
                    features.display(),
                ),
            };
            (x, None)
        }
        None => {
            let clip = raw_clip(&a, c, s)?;
            let x = Tensor::from_vec(clip.input.clone(), (1, c, s, s), &dev)?;
            (x, Some(clip))
        }
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
    if let Some(clip) = &clip {
        let at =
            |n: Option<u32>, f: &Path| n.map_or(f.display().to_string(), |n| format!("frame {n}"));
        println!(
            "onset {}, apex {}{}{}",
            at(clip.onset, &clip.onset_file),
            at(clip.apex, &clip.apex_file),
            if clip.scores.is_some() {
                " (spotted)"
            } else {
                ""
            },
            clip.face
                .map_or(String::new(), |f| format!(", face box {f:?} (x, y, w, h)"))
        );
    }
    if let Some(path) = &a.json {
        let logits_v = logits.to_vec2::<f32>()?;
        let rows: Vec<serde_json::Value> = probs
            .iter()
            .zip(&logits_v)
            .map(|(p, l)| {
                let best = p
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map_or(0, |b| b.0);
                serde_json::json!({
                    "class": CLASS_NAMES[best],
                    "probabilities": CLASS_NAMES.iter().zip(p).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    "logits": l,
                })
            })
            .collect();
        let mut doc = serde_json::json!({ "model": what, "predictions": rows });
        if let Some(clip) = &clip {
            doc["face_box"] = serde_json::json!(clip.face);
            doc["onset"] = serde_json::json!(clip.onset);
            doc["apex"] = serde_json::json!(clip.apex);
            doc["apex_spotted"] = serde_json::json!(clip.scores.is_some());
            doc["onset_file"] = serde_json::json!(clip.onset_file);
            doc["apex_file"] = serde_json::json!(clip.apex_file);
            if let Some(sc) = &clip.scores {
                doc["spotting_scores"] = serde_json::json!(sc);
            }
        }
        mer_common::fs::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The onset -> apex input of a raw clip, and what was chosen.
struct RawClip {
    input: Vec<f32>,
    /// The frame numbers (with --frames).
    onset: Option<u32>,
    apex: Option<u32>,
    onset_file: PathBuf,
    apex_file: PathBuf,
    face: Option<mer_data::clip::FaceBox>,
    /// The spotting scores `(frame, mean strain)`, when the apex was spotted.
    scores: Option<Vec<(u32, f64)>>,
}

fn raw_clip(a: &PredictArgs, channels: usize, size: usize) -> Result<RawClip> {
    use mer_data::clip::{detect_face, numbered_frames, pair_features};
    use mer_flow::strain::StrainFormula;
    let formula = match a.strain_formula.as_str() {
        "reference" => StrainFormula::Reference,
        _ => StrainFormula::Paper,
    };
    let onset_arg = a
        .onset
        .as_deref()
        .context("--onset is required without --features")?;
    let number = |s: &str, what: &str| -> Result<u32> {
        s.parse::<u32>()
            .with_context(|| format!("--{what} `{s}`: with --frames, a frame number"))
    };
    let face_of = |onset: &Path| -> Result<Option<mer_data::clip::FaceBox>> {
        Ok(match a.face.as_str() {
            "none" => None,
            _ => Some(detect_face(onset, &a.cascade)?),
        })
    };
    let (onset, onset_file, apex, apex_file, face, scores) = match &a.frames {
        None => {
            let on = PathBuf::from(onset_arg);
            let ap = PathBuf::from(
                a.apex
                    .as_deref()
                    .context("--apex is required without --frames")?,
            );
            for (p, what) in [(&on, "onset"), (&ap, "apex")] {
                if !p.is_file() {
                    bail!("{what} frame {}: no such file", p.display());
                }
            }
            let face = face_of(&on)?;
            (None, on, None, ap, face, None)
        }
        Some(dir) => {
            let frames = numbered_frames(dir)?;
            let on = number(onset_arg, "onset")?;
            let onset_file = frames.get(&on).cloned().with_context(|| {
                format!(
                    "onset frame {on}: no file numbered {on} in {} ({} frames there)",
                    dir.display(),
                    frames.len()
                )
            })?;
            let face = face_of(&onset_file)?;
            match &a.apex {
                Some(k) => {
                    let k = number(k, "apex")?;
                    let f = frames.get(&k).cloned().with_context(|| {
                        format!("apex frame {k}: no file numbered {k} in {}", dir.display())
                    })?;
                    (Some(on), onset_file, Some(k), f, face, None)
                }
                None => {
                    let last = a
                        .offset
                        .unwrap_or_else(|| *frames.keys().next_back().unwrap_or(&on));
                    if let Some(off) = a.offset {
                        if !frames.contains_key(&off) {
                            bail!(
                                "offset frame {off}: no file numbered {off} in {}",
                                dir.display()
                            );
                        }
                    }
                    let clip: Vec<(u32, PathBuf)> = frames
                        .range(on..=last)
                        .map(|(n, p)| (*n, p.clone()))
                        .collect();
                    let sp = mer_data::spot::spot_apex_in(&clip, size, formula, face)?;
                    let f = frames[&sp.apex].clone();
                    (
                        Some(on),
                        onset_file,
                        Some(sp.apex),
                        f,
                        face,
                        Some(sp.scores),
                    )
                }
            }
        }
    };
    let feats = pair_features(&onset_file, &apex_file, size, formula, face)?;
    let kind = if channels == 3 {
        mer_data::features::InputKind::Flow3
    } else {
        mer_data::features::InputKind::FlowNoStrain
    };
    Ok(RawClip {
        input: feats.input(kind),
        onset,
        apex,
        onset_file,
        apex_file,
        face,
        scores,
    })
}
