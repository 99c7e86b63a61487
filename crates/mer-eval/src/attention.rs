//! The attention analysis of the paper's section 4.4: Fig. 5 (the spatial-attention map and
//! the self-attention map over the face) and Table 5 (their sparseness per fold).
//!
//! Definitions used here (the paper leaves details to its code):
//! - spatial map: the spatial-attention sigmoid map of the last block, `[14, 14]`;
//! - self-attention maps: the softmax maps of every head channel, `[28, 14, 14]` per sample
//!   (each channel's map sums to 1 over its 196 positions);
//! - Table 5: `Soft_0.01` (eq. 13, the number of elements below 0.01) and Hoyer sparseness
//!   (eq. 14) of each sample's spatial map and of its self-attention maps (all channels
//!   together), averaged over the fold's test samples;
//! - Fig. 5: maps resized to 112x112 (bilinear, half-pixel centres); the self-attention
//!   maps are reduced by a channel-wise maximum and multiplied by the spatial map, as the
//!   paper's caption says; each map is min-max normalised for display.

use std::path::{Path, PathBuf};

use mer_data::features::{FeatureCache, FeatureConfig, InputKind};
use mer_data::SampleMeta;
use mer_model::candle_core::{Device, Tensor};
use mer_model::OffTaNet;
use serde::{Deserialize, Serialize};

use crate::io::{write_atomic, write_json};
use crate::loso::Fold;
use crate::plot::{heatmaps_png, Panel};
use crate::run_dir::{RunFolder, RunSettings};
use crate::{Error, Result};

/// `Soft_t(x)`: the number of elements below `t` (eq. 13).
pub fn soft_count(x: &[f32], t: f32) -> usize {
    x.iter().filter(|&&v| v < t).count()
}

/// Hoyer sparseness (eq. 14): `(sqrt(n) - |x|_1 / |x|_2) / (sqrt(n) - 1)`, in [0, 1]
/// (0 for a constant vector, 1 for a single non-zero); 0 for an all-zero vector or `n < 2`.
pub fn hoyer(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let l1: f64 = x.iter().map(|v| v.abs() as f64).sum();
    let l2: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    if n < 2.0 || l2 == 0.0 {
        return 0.0;
    }
    (n.sqrt() - l1 / l2) / (n.sqrt() - 1.0)
}

/// Bilinear resize of a `sw` x `sh` map to `dw` x `dh`, with half-pixel centres and clamped
/// borders (OpenCV's `INTER_LINEAR`, PyTorch's `align_corners=False`).
pub fn resize_bilinear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dw * dh);
    let coord = |d: usize, s: usize, dn: usize| -> (usize, usize, f32) {
        let f = ((d as f32 + 0.5) * s as f32 / dn as f32 - 0.5).max(0.0);
        let i0 = (f.floor() as usize).min(s - 1);
        let i1 = (i0 + 1).min(s - 1);
        (i0, i1, f - i0 as f32)
    };
    for y in 0..dh {
        let (y0, y1, fy) = coord(y, sh, dh);
        for x in 0..dw {
            let (x0, x1, fx) = coord(x, sw, dw);
            let a = src[y0 * sw + x0] * (1.0 - fx) + src[y0 * sw + x1] * fx;
            let b = src[y1 * sw + x0] * (1.0 - fx) + src[y1 * sw + x1] * fx;
            out.push(a * (1.0 - fy) + b * fy);
        }
    }
    out
}

/// Min-max normalisation to [0, 1] (a constant map becomes 0).
pub fn normalise(v: &[f32]) -> Vec<f32> {
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let r = hi - lo;
    v.iter()
        .map(|&x| if r > 0.0 { (x - lo) / r } else { 0.0 })
        .collect()
}

/// The attention maps of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleMaps {
    /// Side of the maps (14).
    pub side: usize,
    /// Spatial attention `[side, side]`.
    pub spatial: Vec<f32>,
    /// Self-attention softmax maps `[channels, side, side]`.
    pub self_maps: Vec<f32>,
    /// Number of self-attention channels.
    pub channels: usize,
}

impl SampleMaps {
    /// The paper's Fig. 5 self-attention map: channel-wise maximum times the spatial map.
    pub fn combined(&self) -> Vec<f32> {
        let n = self.side * self.side;
        (0..n)
            .map(|k| {
                let m = (0..self.channels)
                    .map(|c| self.self_maps[c * n + k])
                    .fold(f32::MIN, f32::max);
                m * self.spatial[k]
            })
            .collect()
    }
}

/// The attention maps of every sample of `x` `[N, C, 112, 112]`; the model must have both
/// spatial and self-attention in its last block (`ta`, `all-ta`).
pub fn attention_maps(model: &OffTaNet, x: &Tensor) -> Result<Vec<SampleMaps>> {
    let (_, taps) = model.forward_with_taps(x)?;
    let missing = || {
        Error::NoAttention(format!(
            "variant `{}` has no spatial and self-attention in its last block",
            model.config().variant
        ))
    };
    let spa = taps.spatial_attention.ok_or_else(missing)?;
    let sam = taps.self_attention_maps.ok_or_else(missing)?;
    let (n, c, h, w) = sam.dims4()?;
    if spa.dims() != [n, 1, h, w] || h != w {
        return Err(Error::NoAttention(format!(
            "unexpected attention shapes {:?} and {:?}",
            spa.dims(),
            sam.dims()
        )));
    }
    let spa = spa.flatten_all()?.to_vec1::<f32>()?;
    let sam = sam.flatten_all()?.to_vec1::<f32>()?;
    let per = c * h * w;
    Ok((0..n)
        .map(|i| SampleMaps {
            side: h,
            spatial: spa[i * h * w..(i + 1) * h * w].to_vec(),
            self_maps: sam[i * per..(i + 1) * per].to_vec(),
            channels: c,
        })
        .collect())
}

/// Fig. 5 for one sample: the apex frame (`side` x `side` gray in [0, 1]), the spatial map
/// and the combined self-attention map ([`SampleMaps::combined`], or a mean of several
/// models' maps), both `map_side` x `map_side`, upsampled to the frame (bilinear) and
/// min-max normalised over it, as three panels.
pub fn fig5_png(
    path: &Path,
    title: &str,
    apex: &[f32],
    side: usize,
    spatial: &[f32],
    combined: &[f32],
    map_side: usize,
) -> Result<()> {
    let spatial = normalise(&resize_bilinear(spatial, map_side, map_side, side, side));
    let combined = normalise(&resize_bilinear(combined, map_side, map_side, side, side));
    heatmaps_png(
        path,
        title,
        &[
            Panel {
                title: "apex frame".into(),
                side,
                face: apex,
                heat: None,
            },
            Panel {
                title: "spatial attention".into(),
                side,
                face: apex,
                heat: Some(&spatial),
            },
            Panel {
                title: "self-attention (max over channels) x spatial".into(),
                side,
                face: apex,
                heat: Some(&combined),
            },
        ],
        3,
    )
}

/// One row of Table 5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsenessRow {
    /// 1-based fold number.
    pub fold: usize,
    /// `dataset/subject`.
    pub subject: String,
    /// Test samples.
    pub test_size: usize,
    /// Mean `Soft_0.01` of the spatial maps (of 196 values).
    pub spatial_soft: f64,
    /// Mean Hoyer sparseness of the spatial maps.
    pub spatial_hoyer: f64,
    /// Mean `Soft_0.01` of the self-attention maps (of 28 x 196 values).
    pub self_soft: f64,
    /// Mean Hoyer sparseness of the self-attention maps.
    pub self_hoyer: f64,
}

/// The sparseness of a fold's test samples' maps.
pub fn sparseness(fold: &Fold, maps: &[SampleMaps]) -> SparsenessRow {
    let k = maps.len().max(1) as f64;
    let mean = |f: &dyn Fn(&SampleMaps) -> f64| maps.iter().map(f).sum::<f64>() / k;
    SparsenessRow {
        fold: fold.number,
        subject: fold.subject_id(),
        test_size: maps.len(),
        spatial_soft: mean(&|m| soft_count(&m.spatial, 0.01) as f64),
        spatial_hoyer: mean(&|m| hoyer(&m.spatial)),
        self_soft: mean(&|m| soft_count(&m.self_maps, 0.01) as f64),
        self_hoyer: mean(&|m| hoyer(&m.self_maps)),
    }
}

/// What [`analyse_attention`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionReport {
    /// The experiment analysed.
    pub experiment: String,
    /// The seed of its models.
    pub seed: u64,
    /// Table 5, one row per fold.
    pub rows: Vec<SparsenessRow>,
    /// The sample of Fig. 5.
    pub sample: String,
    /// Its fold.
    pub sample_fold: usize,
    /// Fig. 5 (PNG).
    pub figure: PathBuf,
}

/// Reads a run folder's settings and sample list.
pub fn load_run(run_dir: &Path) -> Result<(RunSettings, Vec<SampleMeta>, Vec<Fold>)> {
    let folder = RunFolder::open(run_dir)?;
    let (samples, folds) = folder.samples()?;
    Ok((folder.settings()?, samples, folds))
}

/// Fig. 5 and Table 5 of `experiment` in a finished run: every fold's saved final model
/// (of `seed`; default: the first seed asked for) on its test samples; the figure for
/// `sample` (`dataset/subject/sample`; default: the first positive sample of fold 1, else
/// its first sample). Writes `attention/` in the run folder.
pub fn analyse_attention(
    run_dir: &Path,
    experiment: &str,
    seed: Option<u64>,
    sample: Option<&str>,
) -> Result<AttentionReport> {
    let folder = RunFolder::open(run_dir)?;
    let (state, samples, folds) = load_run(run_dir)?;
    let (spec, seeds) = folder.experiment(experiment)?;
    let seed = seed.unwrap_or(seeds[0]);
    let cfg = spec.model_config(state.schedule.dropout)?;
    let kind = spec.input_kind()?;
    let cache = FeatureCache::new(&state.cache_dir, FeatureConfig::default());
    let dev = Device::Cpu;
    let ids: Vec<String> = samples.iter().map(SampleMeta::id).collect();
    let chosen = match sample {
        Some(s) => ids.iter().position(|i| i == s).ok_or_else(|| {
            Error::Invalid(format!(
                "sample `{s}` is not in the run's list (ids are dataset/subject/sample, e.g. {})",
                ids[0]
            ))
        })?,
        None => {
            let f = &folds[0];
            f.test
                .iter()
                .copied()
                .find(|&i| samples[i].class == mer_data::Class::Positive)
                .unwrap_or(f.test[0])
        }
    };
    let mut rows = Vec::new();
    let mut fig = None;
    for f in &folds {
        let (_, weights) = folder.cell_paths(experiment, seed, f);
        if !weights.exists() {
            return Err(Error::Incomplete(format!(
                "{}: no saved model; finish the run first",
                weights.display()
            )));
        }
        let model = OffTaNet::load(&cfg, &weights, &dev)?;
        let test: Vec<SampleMeta> = f.test.iter().map(|&i| samples[i].clone()).collect();
        let x = cache.load(&test, kind)?;
        let x = Tensor::from_vec(x, (test.len(), kind.channels(), 112, 112), &dev)?;
        let maps = attention_maps(&model, &x)?;
        rows.push(sparseness(f, &maps));
        if let Some(pos) = f.test.iter().position(|&i| i == chosen) {
            fig = Some((f.number, maps[pos].clone()));
        }
    }
    let (sample_fold, maps) = fig.expect("every sample is in one fold");
    let face = cache.load(&[samples[chosen].clone()], InputKind::RawImages)?;
    let apex = &face[112 * 112..];
    let out = run_dir.join("attention");
    let stem = crate::io::file_safe(&ids[chosen]);
    let figure = out.join(format!("fig5_{stem}.png"));
    fig5_png(
        &figure,
        &format!(
            "Fig. 5: {} ({}), fold {sample_fold} model, experiment `{experiment}`",
            ids[chosen], samples[chosen].class
        ),
        apex,
        112,
        &maps.spatial,
        &maps.combined(),
        maps.side,
    )?;
    let report = AttentionReport {
        experiment: experiment.to_string(),
        seed,
        rows,
        sample: ids[chosen].clone(),
        sample_fold,
        figure,
    };
    write_json(&out.join("table5.json"), &report)?;
    write_atomic(&out.join("TABLE5.md"), format_table5(&report).as_bytes())?;
    Ok(report)
}

/// Table 5 in Markdown, with the mean over folds.
pub fn format_table5(r: &AttentionReport) -> String {
    let mut s = String::from(
        "| Cross-val fold | Subject | Test set size | Spatial Soft_0.01 | Spatial Hoyer | Self-attention Soft_0.01 | Self-attention Hoyer |\n|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.4} | {:.1} | {:.4} |\n",
            x.fold,
            x.subject,
            x.test_size,
            x.spatial_soft,
            x.spatial_hoyer,
            x.self_soft,
            x.self_hoyer
        ));
    }
    let k = r.rows.len().max(1) as f64;
    let m = |f: fn(&SparsenessRow) -> f64| r.rows.iter().map(f).sum::<f64>() / k;
    s.push_str(&format!(
        "| mean | | {:.1} | {:.1} | {:.4} | {:.1} | {:.4} |\n",
        m(|x| x.test_size as f64),
        m(|x| x.spatial_soft),
        m(|x| x.spatial_hoyer),
        m(|x| x.self_soft),
        m(|x| x.self_hoyer)
    ));
    s.push_str(
        "\nDefinitions (the paper leaves them to its code; this is our reading): the spatial map \
         is the last block's spatial-attention sigmoid map (14x14 = 196 values per sample); the \
         self-attention maps are the softmax maps of every head channel (28x14x14 = 5488 values \
         per sample, each channel summing to 1); Soft_0.01 counts the values below 0.01 (eq. 13) \
         and Hoyer is eq. 14, both per sample over all its values, averaged over the fold's test \
         samples. The paper lists only folds with large test sets; every fold is listed here.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparseness_measures() {
        // numpy: (sqrt(4) - 1/1) / (sqrt(4) - 1) = 1 for a one-hot vector; 0 for a constant.
        assert_eq!(hoyer(&[0.0, 0.0, 3.0, 0.0]), 1.0);
        assert!(hoyer(&[0.5; 9]).abs() < 1e-12);
        // [1, 2, 3]: l1 6, l2 sqrt(14); (sqrt(3) - 6/sqrt(14)) / (sqrt(3) - 1) = 0.17551152838833808
        assert!(
            (hoyer(&[1.0, 2.0, 3.0]) - 0.175_511_528_388_338).abs() < 1e-7,
            "{}",
            hoyer(&[1.0, 2.0, 3.0])
        );
        assert_eq!(hoyer(&[0.0, 0.0]), 0.0);
        assert_eq!(soft_count(&[0.001, 0.01, 0.5, -1.0], 0.01), 2);
    }

    #[test]
    fn bilinear_resize_matches_half_pixel_centres() {
        // 2x2 -> 4x4 (OpenCV INTER_LINEAR): first row 0, 0.25, 0.75, 1 for [0, 1].
        let r = resize_bilinear(&[0.0, 1.0, 0.0, 1.0], 2, 2, 4, 4);
        assert_eq!(&r[..4], &[0.0, 0.25, 0.75, 1.0]);
        let same = resize_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 2, 2);
        assert_eq!(same, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(normalise(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn maps_of_a_random_network() {
        let cfg = mer_model::ModelConfig::new(mer_model::Variant::Ta);
        let net = OffTaNet::random(&cfg, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 112, 112), &Device::Cpu).unwrap();
        let maps = attention_maps(&net, &x).unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!((maps[0].side, maps[0].channels), (14, 28));
        // Each channel's softmax map sums to 1.
        let s: f32 = maps[0].self_maps[..196].iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "{s}");
        assert!(maps[0].spatial.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert_eq!(maps[0].combined().len(), 196);
        let res = OffTaNet::random(
            &mer_model::ModelConfig::new(mer_model::Variant::Res),
            &Device::Cpu,
        )
        .unwrap();
        assert!(attention_maps(&res, &x)
            .unwrap_err()
            .to_string()
            .contains("no spatial and self-attention"));
    }
}
