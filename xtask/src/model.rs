//! `cargo xtask model summary` and `cargo xtask predict` (owned by the model crate's work).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use mer_data::clip::FaceBox;
use mer_data::features::{InputKind, SampleFeatures};
use mer_eval::ensemble::Ensemble;
use mer_model::candle_core::{Device, Tensor};
use mer_model::{
    npy, Baseline, ModelConfig, ModelSpec, OffTaNet, Variant, CLASS_NAMES, INPUT_SIZE,
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
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    weights: Option<PathBuf>,
    /// The models of a finished run (folder `results/NAME`): its final model of the
    /// experiment (`results/NAME/final/EXPERIMENT.safetensors`, from `cargo xtask train
    /// --out` there) if present, else every finished fold model of the experiment as an
    /// ensemble (the mean of their probabilities). The network and input come from the run.
    #[arg(long, conflicts_with_all = ["model", "variant", "in_channels"])]
    run: Option<String>,
    /// With --run: the experiment whose models to use.
    #[arg(long, default_value = "ta", requires = "run")]
    experiment: String,
    /// With --run: the results folder.
    #[arg(long, default_value_os_t = crate::util::project_root().join("results"))]
    results: PathBuf,
    /// Features: float32 .npy of shape [N, C, S, S] or [C, S, S] (Off-TANet: S = 112;
    /// off-apexnet, dual-inception: [2, 28, 28]; ststnet [3, 28, 28]; macnn [3, 112, 112];
    /// micro-attention [3, 224, 224]).
    #[arg(long, required_unless_present = "onset", conflicts_with_all = ["onset", "apex", "frames", "video"])]
    features: Option<PathBuf>,
    /// The onset frame: an image file (any format OpenCV reads), or with --frames the
    /// frame number (the number in the file names), or with --video the frame index (from 0).
    #[arg(long)]
    onset: Option<String>,
    /// The apex frame: an image file, or a frame number (--frames) or index (--video);
    /// with --frames or --video and without --apex the apex is spotted (the frame of largest
    /// mean optical strain from the onset over the face, up to --offset).
    #[arg(long, required_unless_present_any = ["features", "frames", "video"])]
    apex: Option<String>,
    /// A folder of numbered frames (natural order; the number in the name is the frame's).
    #[arg(long, conflicts_with = "video")]
    frames: Option<PathBuf>,
    /// A video file (any container and codec OpenCV's videoio reads); frames indexed from 0.
    #[arg(long)]
    video: Option<PathBuf>,
    /// With --frames or --video: the last frame to spot the apex in (default: the last frame).
    #[arg(long)]
    offset: Option<u32>,
    /// `auto`: detect the face in the onset frame (Haar cascade) and cut the same square box
    /// (with a margin) from every frame; `none`: the frames are face crops already (as in the
    /// databases).
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
    /// Write Fig. 5 of the clip here (PNG): the apex frame, the spatial and the
    /// self-attention maps over the face (Off-TANet variants with both in the last block:
    /// `ta`, `all-ta`; an ensemble's maps are averaged over its models).
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// Off-TANet variant: res, cbam, sa, bot, ta (default), all-ta.
    #[arg(long)]
    variant: Option<String>,
    /// Off-TANet input channels (3, the default: u, v, strain; 2: the no-strain and
    /// raw-image ablations).
    #[arg(long)]
    in_channels: Option<usize>,
    /// Write the logits [N, 3] as float32 .npy here (an ensemble: the mean of its models').
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

/// The models `predict` runs: one weight file, or a run's final or fold models.
struct Models {
    spec: ModelSpec,
    kind: InputKind,
    size: usize,
    /// What they are, for messages and the JSON.
    what: String,
    weights: Vec<PathBuf>,
}

fn models(a: &PredictArgs) -> Result<Models> {
    if let Some(run) = &a.run {
        let dir = a.results.join(run);
        let m = mer_eval::ensemble::run_models(&dir, &a.experiment)
            .with_context(|| format!("--run {run}"))?;
        let what = if m.is_final {
            format!("run {run}, experiment {}, final model", a.experiment)
        } else {
            format!(
                "run {run}, experiment {}, ensemble of {} fold model(s){}",
                a.experiment,
                m.weights.len(),
                if m.weights.len() < m.expected {
                    format!(" (of {}: the run is unfinished)", m.expected)
                } else {
                    String::new()
                }
            )
        };
        return Ok(Models {
            kind: m.experiment.input_kind()?,
            size: m.experiment.input_size(),
            spec: m.model,
            what,
            weights: m.weights,
        });
    }
    let weights = a
        .weights
        .clone()
        .context("--weights or --run is required")?;
    let b = baseline(&a.model, &a.variant, a.in_channels)?;
    let (spec, what) = match b {
        Some(b) => (ModelSpec::Baseline(b), b.name().to_string()),
        None => {
            let cfg = config(a.variant.as_deref(), a.in_channels)?;
            let what = format!(
                "variant {}, {} input channels",
                cfg.variant, cfg.in_channels
            );
            (ModelSpec::OffTaNet(cfg), what)
        }
    };
    let (c, size) = match &spec {
        ModelSpec::Baseline(b) => b.input_shape(),
        ModelSpec::OffTaNet(cfg) => (cfg.in_channels, INPUT_SIZE),
    };
    let kind = if c == 3 {
        InputKind::Flow3
    } else {
        InputKind::FlowNoStrain
    };
    Ok(Models {
        spec,
        kind,
        size,
        what,
        weights: vec![weights],
    })
}

fn best_class(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map_or(0, |b| b.0)
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let dev = Device::Cpu;
    let m = models(&a)?;
    let c = m.kind.channels();
    let s = m.size;
    let (x, clip) = match &a.features {
        Some(features) => {
            if a.heatmap.is_some() {
                bail!("--heatmap needs the frames (--onset/--apex, --frames or --video), not --features");
            }
            let x = npy::read_tensor(features, &dev)?;
            let x = match x.dims() {
                [n, ch, h, w] if *ch == c && *h == s && *w == s && *n > 0 => x,
                [ch, h, w] if *ch == c && *h == s && *w == s => x.unsqueeze(0)?,
                found => bail!(
                    "{}: expected shape [N, {c}, {s}, {s}] or [{c}, {s}, {s}] ({}), found {found:?}",
                    features.display(),
                    m.what
                ),
            };
            (x, None)
        }
        None => {
            let clip = raw_clip(&a, s)?;
            let x = Tensor::from_vec(clip.features.input(m.kind), (1, c, s, s), &dev)?;
            (x, Some(clip))
        }
    };
    let ensemble = Ensemble::load(&m.spec, &m.weights, &dev).with_context(|| {
        format!(
            "loading {} as {}",
            m.weights
                .iter()
                .map(|w| w.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.what
        )
    })?;
    let pred = ensemble.predict(&x, CHUNK)?;
    let n = pred.probabilities.len();
    if m.weights.len() > 1 {
        println!("models: {}", m.what);
    }
    println!("sample\tclass\t{}", CLASS_NAMES.join("\t"));
    for (i, p) in pred.probabilities.iter().enumerate() {
        let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
        println!("{i}\t{}\t{}", CLASS_NAMES[best_class(p)], ps.join("\t"));
    }
    if let Some(out) = &a.out {
        let flat: Vec<f32> = pred.logits.iter().flatten().copied().collect();
        let width = flat.len() / n.max(1);
        npy::write_tensor(out, &Tensor::from_vec(flat, (n, width), &dev)?)?;
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
    if let (Some(path), Some(clip)) = (&a.heatmap, &clip) {
        heatmap(path, &ensemble, &x, clip, &m.what)?;
        println!("heatmap: {}", path.display());
    }
    if let Some(path) = &a.json {
        let rows: Vec<serde_json::Value> = pred
            .probabilities
            .iter()
            .zip(&pred.logits)
            .map(|(p, l)| {
                serde_json::json!({
                    "class": CLASS_NAMES[best_class(p)],
                    "probabilities": CLASS_NAMES.iter().zip(p).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    "logits": l,
                })
            })
            .collect();
        let mut doc = serde_json::json!({
            "model": m.what,
            "weights": m.weights,
            "predictions": rows,
        });
        if m.weights.len() > 1 {
            doc["ensemble"] = serde_json::json!({
                "rule": "mean of the members' softmax probabilities; logits: mean of the members' logits",
                "member_probabilities": pred.members,
            });
        }
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

/// Fig. 5 of a clip: the apex frame with the spatial and self-attention maps of the models
/// (averaged over an ensemble's members).
fn heatmap(path: &Path, e: &Ensemble, x: &Tensor, clip: &RawClip, what: &str) -> Result<()> {
    use mer_eval::attention::{attention_maps, fig5_png};
    let (mut spatial, mut combined, mut side) = (Vec::<f32>::new(), Vec::<f32>::new(), 0);
    for net in &e.nets {
        let Some(model) = net.as_offtanet() else {
            bail!("--heatmap: {what} has no attention maps (a Table 2 baseline)");
        };
        let maps = attention_maps(model, x)
            .with_context(|| format!("--heatmap: {what}"))?
            .remove(0);
        let add = |acc: &mut Vec<f32>, v: &[f32]| {
            acc.resize(v.len(), 0.0);
            acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        };
        add(&mut spatial, &maps.spatial);
        add(&mut combined, &maps.combined());
        side = maps.side;
    }
    let k = e.nets.len() as f32;
    spatial.iter_mut().for_each(|v| *v /= k);
    combined.iter_mut().for_each(|v| *v /= k);
    let size = clip.features.size;
    let apex: Vec<f32> = clip.features.frames[size * size..]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let frame = |n: Option<u32>, f: &Path| {
        n.map_or_else(
            || {
                f.file_name()
                    .map_or(String::new(), |s| s.to_string_lossy().into_owned())
            },
            |n| format!("frame {n}"),
        )
    };
    let title = format!(
        "apex {}{} (onset {}); {what}",
        frame(clip.apex, &clip.apex_file),
        if clip.scores.is_some() {
            ", spotted"
        } else {
            ""
        },
        frame(clip.onset, &clip.onset_file),
    );
    fig5_png(path, &title, &apex, size, &spatial, &combined, side)
        .with_context(|| format!("writing {}", path.display()))
}

/// The onset -> apex input of a raw clip, and what was chosen.
struct RawClip {
    features: SampleFeatures,
    /// The frame numbers (with --frames) or indices (with --video).
    onset: Option<u32>,
    apex: Option<u32>,
    onset_file: PathBuf,
    apex_file: PathBuf,
    face: Option<FaceBox>,
    /// The spotting scores `(frame, mean strain)`, when the apex was spotted.
    scores: Option<Vec<(u32, f64)>>,
}

fn raw_clip(a: &PredictArgs, size: usize) -> Result<RawClip> {
    use mer_data::clip::{
        detect_face, features_of_grays, numbered_frames, pair_features, read_video,
        video_frame_name, FaceMode,
    };
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
            .with_context(|| format!("--{what} `{s}`: with --frames or --video, a frame number"))
    };
    let face_mode = match a.face.as_str() {
        "none" => FaceMode::None,
        _ => FaceMode::Auto(&a.cascade),
    };
    let apex_arg = a.apex.as_deref().map(|k| number(k, "apex")).transpose();
    if let Some(video) = &a.video {
        let on = number(onset_arg, "onset")?;
        let apex = apex_arg?;
        if let Some(k) = apex {
            ensure!(k > on, "--apex {k} must come after --onset {on}");
        }
        if let Some(off) = a.offset {
            ensure!(off > on, "--offset {off} must come after --onset {on}");
        }
        let last = apex.or(a.offset);
        let keep = |n: u32| apex.is_none_or(|k| n == k);
        let v = read_video(video, on, last, &keep, size, face_mode)?;
        let (apex_n, scores) = match apex {
            Some(k) => (k, None),
            None => {
                let name = |i: usize| video_frame_name(video, v.frames[i].0).display().to_string();
                let sp = mer_data::spot::spot_apex_grays(&v.frames, size, formula, &name)?;
                (sp.apex, Some(sp.scores))
            }
        };
        let g1 = v
            .frames
            .iter()
            .find(|f| f.0 == apex_n)
            .map(|f| f.1.clone())
            .context("the apex frame was read")?;
        let what = format!("flow of {} frames {on} -> {apex_n}", video.display());
        let features = features_of_grays(v.frames[0].1.clone(), g1, size, formula, &what)?;
        return Ok(RawClip {
            features,
            onset: Some(on),
            apex: Some(apex_n),
            onset_file: video.clone(),
            apex_file: video.clone(),
            face: v.face,
            scores,
        });
    }
    let face_of = |onset: &Path| -> Result<Option<FaceBox>> {
        Ok(match face_mode {
            FaceMode::None => None,
            FaceMode::Auto(c) => Some(detect_face(onset, c)?),
        })
    };
    let (onset, onset_file, apex, apex_file, face, scores) = match &a.frames {
        None => {
            let on = PathBuf::from(onset_arg);
            let ap = PathBuf::from(
                a.apex
                    .as_deref()
                    .context("--apex is required without --frames or --video")?,
            );
            ensure!(
                a.offset.is_none(),
                "--offset applies to --frames and --video only"
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
            match apex_arg? {
                Some(k) => {
                    ensure!(k > on, "--apex {k} must come after --onset {on}");
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
                        ensure!(off > on, "--offset {off} must come after --onset {on}");
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
    let features = pair_features(&onset_file, &apex_file, size, formula, face)?;
    Ok(RawClip {
        features,
        onset,
        apex,
        onset_file,
        apex_file,
        face,
        scores,
    })
}
