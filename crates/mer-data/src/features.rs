//! Onset->apex features and their cache.
//!
//! Per sample: the onset and apex frames preprocessed as the reference
//! ([`crate::preprocess`]), TV-L1 flow from onset to apex and optical strain (the flow
//! crate). The cache stores, per sample, one safetensors file holding `flow` [2,S,S] f32
//! (u, v), `strain` [S,S] f32 and `frames` [2,S,S] u8 (onset, apex gray), so each
//! [`InputKind`] is read from the same file. Files live under `<cache>/<key>/`, where the
//! key hashes everything that changes them (preprocessing, TV-L1 parameters, strain
//! formula, size, face crop); metadata repeats the key, the sample, its onset and apex and a
//! checksum, so a stale or corrupt file is detected (and recomputed by [`FeatureCache::ensure`]).
//! Files are written atomically: an interrupted run resumes where it stopped.

use crate::index::{IndexOptions, IndexedSample};
use crate::list::{read_list, SampleKey, SampleMeta};
use crate::preprocess::{crop, load_gray, read_color, to_gray, FaceCropper, FEATURE_SIZE};
use crate::{Error, Result};
use mer_common::fs::write_atomic;
use mer_common::hash::{fnv1a64, fnv1a64_hex};
use mer_flow::strain::{optical_strain, StrainFormula};
use mer_flow::{GrayImage, TvL1, TvL1Params};
use opencv::core::MatTraitConst;
use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Bumped whenever the stored features change for the same configuration.
pub const FEATURES_VERSION: u32 = 1;

/// The network inputs the experiments need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// u, v, strain: Off-TANet's input (3 channels).
    Flow3,
    /// u, v: the "no strain" ablation (2 channels).
    FlowNoStrain,
    /// onset and apex gray images scaled to [0, 1]: the "no optical flow" ablation (2 channels).
    RawImages,
}

impl InputKind {
    /// All kinds.
    pub const ALL: [InputKind; 3] = [
        InputKind::Flow3,
        InputKind::FlowNoStrain,
        InputKind::RawImages,
    ];
    /// Channels of the kind.
    pub fn channels(self) -> usize {
        match self {
            InputKind::Flow3 => 3,
            InputKind::FlowNoStrain | InputKind::RawImages => 2,
        }
    }
    /// `flow3`, `flow-no-strain`, `raw-images`.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Flow3 => "flow3",
            InputKind::FlowNoStrain => "flow-no-strain",
            InputKind::RawImages => "raw-images",
        }
    }
}

impl std::str::FromStr for InputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown input kind `{s}`: flow3, flow-no-strain or raw-images"))
    }
}

/// Everything that changes the features.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureConfig {
    /// TV-L1 parameters (default: OpenCV's).
    pub tvl1: TvL1Params,
    /// Strain formula (default: the paper's).
    pub strain: StrainFormula,
    /// Side of the square input (default 112).
    pub size: usize,
    /// A Haar cascade to crop faces with (detected on the onset frame, the same box used
    /// for the apex), for frames that are not pre-cropped; `None` (default) uses frames whole.
    pub face_crop: Option<PathBuf>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            tvl1: TvL1Params::default(),
            strain: StrainFormula::Paper,
            size: FEATURE_SIZE,
            face_crop: None,
        }
    }
}

impl FeatureConfig {
    /// The canonical description hashed into the cache key.
    pub fn key_string(&self) -> String {
        let s = self.size;
        format!(
            "mer-data features v{FEATURES_VERSION}; preprocess: imread color, resize {s}x{s} INTER_CUBIC, BGR2GRAY; face crop: {}; flow: onset->apex {:?}; strain: {:?}; stored: flow[2,{s},{s}] f32, strain[{s},{s}] f32, frames[2,{s},{s}] u8",
            self.face_crop.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
            self.tvl1,
            self.strain
        )
    }
    /// The cache key: 16 hex digits of the hash of [`FeatureConfig::key_string`].
    pub fn key(&self) -> String {
        fnv1a64_hex(self.key_string().as_bytes())
    }
}

/// The features of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleFeatures {
    /// Side of the square maps.
    pub size: usize,
    /// u then v, each [size, size], row-major.
    pub flow: Vec<f32>,
    /// Strain [size, size].
    pub strain: Vec<f32>,
    /// Onset then apex gray frames, each [size, size].
    pub frames: Vec<u8>,
}

impl SampleFeatures {
    /// Writes the channels of `kind` into `out` ([C, size, size]).
    pub fn write_input(&self, kind: InputKind, out: &mut [f32]) {
        let n = self.size * self.size;
        assert_eq!(
            out.len(),
            kind.channels() * n,
            "output slice has the wrong length"
        );
        match kind {
            InputKind::Flow3 => {
                out[..2 * n].copy_from_slice(&self.flow);
                out[2 * n..].copy_from_slice(&self.strain);
            }
            InputKind::FlowNoStrain => out.copy_from_slice(&self.flow),
            InputKind::RawImages => {
                for (o, &p) in out.iter_mut().zip(&self.frames) {
                    *o = p as f32 / 255.0;
                }
            }
        }
    }
    /// The input tensor of `kind` ([C, size, size]).
    pub fn input(&self, kind: InputKind) -> Vec<f32> {
        let mut v = vec![0.0; kind.channels() * self.size * self.size];
        self.write_input(kind, &mut v);
        v
    }
    fn checksum(&self) -> u64 {
        let mut bytes =
            Vec::with_capacity(self.flow.len() * 4 + self.strain.len() * 4 + self.frames.len());
        bytes.extend(self.flow.iter().flat_map(|x| x.to_le_bytes()));
        bytes.extend(self.strain.iter().flat_map(|x| x.to_le_bytes()));
        bytes.extend_from_slice(&self.frames);
        fnv1a64(&bytes)
    }
}

/// Computes a sample's features from its onset and apex frame files.
pub fn compute_features(
    onset: &Path,
    apex: &Path,
    cfg: &FeatureConfig,
    tvl1: &TvL1,
    cropper: Option<&mut FaceCropper>,
) -> Result<SampleFeatures> {
    let s = cfg.size;
    let (g0, g1) = match cropper {
        None => (load_gray(onset, s)?, load_gray(apex, s)?),
        Some(fc) => {
            let (m0, m1) = (read_color(onset)?, read_color(apex)?);
            // No face found: the frames are used whole (as if pre-cropped).
            let rect = fc.detect(&m0)?.unwrap_or_else(|| {
                tracing::warn!(
                    "{}: no face found by the Haar cascade; using the whole frame",
                    onset.display()
                );
                opencv::core::Rect::new(0, 0, m0.cols(), m0.rows())
            });
            let img = |p: &Path, e: Error| match e {
                Error::OpenCv { context, error } => Error::image(p, format!("{context}: {error}")),
                e => e,
            };
            let c0 = crop(&m0, rect)
                .and_then(|m| to_gray(&m, s))
                .map_err(|e| img(onset, e))?;
            let c1 = crop(&m1, rect)
                .and_then(|m| to_gray(&m, s))
                .map_err(|e| img(apex, e))?;
            (c0, c1)
        }
    };
    let flow_err = |error: mer_flow::Error| Error::Flow {
        context: format!("flow of {} -> {}", onset.display(), apex.display()),
        error,
    };
    let i0 = GrayImage::from_u8(s, s, &g0).map_err(flow_err)?;
    let i1 = GrayImage::from_u8(s, s, &g1).map_err(flow_err)?;
    let flow = tvl1.compute(&i0, &i1).map_err(flow_err)?;
    let strain = optical_strain(&flow, cfg.strain);
    let mut uv = flow.u();
    uv.extend(flow.v());
    let mut frames = g0;
    frames.extend(g1);
    Ok(SampleFeatures {
        size: s,
        flow: uv,
        strain,
        frames,
    })
}

/// Identifies the frames a sample's features come from: a hash of the onset and apex
/// files' bytes (so a regenerated or replaced database is never served stale features).
pub fn source_hash(onset: &Path, apex: &Path) -> Result<String> {
    let a = std::fs::read(onset).map_err(|e| Error::io(onset, e))?;
    let b = std::fs::read(apex).map_err(|e| Error::io(apex, e))?;
    Ok(format!("{}-{}", fnv1a64_hex(&a), fnv1a64_hex(&b)))
}

/// What [`FeatureCache::ensure`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Samples computed now.
    pub computed: usize,
    /// Samples already in the cache.
    pub reused: usize,
    /// Cache files that were corrupt or stale and were recomputed.
    pub repaired: usize,
}

/// A folder of per-sample feature files for one [`FeatureConfig`].
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
    cfg: FeatureConfig,
    key_string: String,
}

fn cache_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl FeatureCache {
    /// The cache of `cfg` under `root` (files go to `root/<key>/`).
    pub fn new(root: &Path, cfg: FeatureConfig) -> Self {
        let dir = root.join(cfg.key());
        let key_string = cfg.key_string();
        FeatureCache {
            dir,
            cfg,
            key_string,
        }
    }
    /// The folder of this configuration's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }
    fn check_size(&self) -> Result<()> {
        if !(16..=4096).contains(&self.cfg.size) {
            return Err(Error::Invalid(format!(
                "feature size {} is outside 16..=4096",
                self.cfg.size
            )));
        }
        Ok(())
    }

    /// The file of a sample.
    pub fn path_of(&self, m: &SampleMeta) -> PathBuf {
        self.dir
            .join(m.dataset.name())
            .join(&m.subject)
            .join(format!("{}.safetensors", m.sample))
    }

    /// Reads and checks a sample's file: `Ok(None)` if absent, an error naming the file if
    /// it is corrupt or was made for another configuration, onset or apex.
    pub fn read(&self, m: &SampleMeta) -> Result<Option<SampleFeatures>> {
        Ok(self.read_entry(m)?.map(|(f, _)| f))
    }

    /// [`FeatureCache::read`] and the hash of the source frames the file was made from.
    fn read_entry(&self, m: &SampleMeta) -> Result<Option<(SampleFeatures, String)>> {
        let path = self.path_of(m);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let err = |msg: String| cache_err(&path, msg);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("unreadable header: {e}")))?;
        let md = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| err(format!("no `{k}` in the metadata")))
        };
        if get("key")? != self.key_string {
            return Err(err("made with another feature configuration".into()));
        }
        let want = [
            ("sample", m.id()),
            ("onset", m.onset.to_string()),
            ("apex", m.apex.to_string()),
        ];
        for (k, v) in want {
            let got = get(k)?;
            if got != v {
                return Err(err(format!("{k} is `{got}`, expected `{v}`")));
            }
        }
        let s = self.cfg.size;
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
            let t = st
                .tensor(name)
                .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != dtype || t.shape() != shape {
                return Err(err(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data().to_vec())
        };
        let f32s = |b: Vec<u8>| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>()
        };
        let f = SampleFeatures {
            size: s,
            flow: f32s(tensor("flow", Dtype::F32, &[2, s, s])?),
            strain: f32s(tensor("strain", Dtype::F32, &[s, s])?),
            frames: tensor("frames", Dtype::U8, &[2, s, s])?,
        };
        if get("checksum")? != format!("{:016x}", f.checksum()) {
            return Err(err("checksum mismatch: the data is corrupt".into()));
        }
        Ok(Some((f, get("source")?)))
    }

    /// Writes a sample's file atomically; `source` identifies the frames it was made from
    /// (see [`source_hash`]).
    pub fn write(&self, m: &SampleMeta, f: &SampleFeatures, source: &str) -> Result<()> {
        let path = self.path_of(m);
        let s = f.size;
        let flow: Vec<u8> = f.flow.iter().flat_map(|x| x.to_le_bytes()).collect();
        let strain: Vec<u8> = f.strain.iter().flat_map(|x| x.to_le_bytes()).collect();
        let err = |e: safetensors::SafeTensorError| cache_err(&path, e.to_string());
        let tensors = vec![
            (
                "flow",
                TensorView::new(Dtype::F32, vec![2, s, s], &flow).map_err(err)?,
            ),
            (
                "frames",
                TensorView::new(Dtype::U8, vec![2, s, s], &f.frames).map_err(err)?,
            ),
            (
                "strain",
                TensorView::new(Dtype::F32, vec![s, s], &strain).map_err(err)?,
            ),
        ];
        let md: HashMap<String, String> = [
            ("key", self.key_string.clone()),
            ("sample", m.id()),
            ("onset", m.onset.to_string()),
            ("apex", m.apex.to_string()),
            ("class", m.class.to_string()),
            ("checksum", format!("{:016x}", f.checksum())),
            ("source", source.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize(tensors, Some(md)).map_err(err)?;
        Ok(write_atomic(&path, &bytes)?)
    }

    /// Computes (in parallel, with a progress bar) every sample whose file is missing,
    /// corrupt, or stale (made from other frame files: their bytes are hashed). Failing samples do not stop the others; the first failure is
    /// returned after all were tried.
    pub fn ensure(&self, samples: &[IndexedSample]) -> Result<CacheReport> {
        self.check_size()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        write_atomic(
            &self.dir.join("key.txt"),
            format!("{}\n", self.key_string).as_bytes(),
        )?;
        let mut report = CacheReport::default();
        let mut todo = Vec::new();
        for s in samples {
            let source = source_hash(&s.onset_path, &s.apex_path).ok();
            match self.read_entry(&s.meta) {
                Ok(Some((_, src))) if Some(&src) == source.as_ref() => report.reused += 1,
                Ok(Some(_)) => {
                    tracing::info!("{}: made from other frames: recomputing", s.meta.id());
                    report.repaired += 1;
                    todo.push(s);
                }
                Ok(None) => todo.push(s),
                Err(e) => {
                    tracing::warn!("{e}: recomputing");
                    report.repaired += 1;
                    todo.push(s);
                }
            }
        }
        if todo.is_empty() {
            return Ok(report);
        }
        let tvl1 = TvL1::new(self.cfg.tvl1.clone()).map_err(|error| Error::Flow {
            context: "TV-L1 parameters".into(),
            error,
        })?;
        if let Some(c) = &self.cfg.face_crop {
            FaceCropper::new(c)?; // fail early on a bad cascade
        }
        let pb = indicatif::ProgressBar::new(todo.len() as u64).with_message("features");
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} samples ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let results: Vec<Result<()>> = todo
            .par_iter()
            .map_init(
                || {
                    self.cfg
                        .face_crop
                        .as_ref()
                        .and_then(|c| FaceCropper::new(c).ok())
                },
                |cropper, s| {
                    let r = compute_features(
                        &s.onset_path,
                        &s.apex_path,
                        &self.cfg,
                        &tvl1,
                        cropper.as_mut(),
                    )
                    .and_then(|f| {
                        self.write(&s.meta, &f, &source_hash(&s.onset_path, &s.apex_path)?)
                    })
                    .map_err(|e| Error::Sample {
                        sample: s.meta.id(),
                        message: e.to_string(),
                    });
                    pb.inc(1);
                    r
                },
            )
            .collect();
        pb.finish_and_clear();
        let failed: Vec<Error> = results.into_iter().filter_map(|r| r.err()).collect();
        if let Some(first) = failed.into_iter().next() {
            return Err(first);
        }
        report.computed = todo.len();
        Ok(report)
    }

    /// The inputs of `kind` for `samples`, in order, as one [N, C, size, size] buffer.
    /// Every sample must be in the cache.
    pub fn load(&self, samples: &[SampleMeta], kind: InputKind) -> Result<Vec<f32>> {
        self.check_size()?;
        let per = kind.channels() * self.cfg.size * self.cfg.size;
        let mut out = vec![0.0f32; samples.len() * per];
        out.par_chunks_mut(per)
            .zip(samples.par_iter())
            .try_for_each(|(chunk, m)| {
                let f = self.read(m)?.ok_or_else(|| Error::Sample {
                    sample: m.id(),
                    message: format!("not in the feature cache {}", self.dir.display()),
                })?;
                f.write_input(kind, chunk);
                Ok::<(), Error>(())
            })?;
        Ok(out)
    }
}

/// Computes the missing features of `samples` (frames found by indexing `root`, with
/// `list` as the sample list of a combined layout) into the cache at `cache_root`.
pub fn ensure_features(
    root: &Path,
    samples: &[SampleMeta],
    list: Option<&Path>,
    cache: &FeatureCache,
) -> Result<CacheReport> {
    let opts = IndexOptions {
        combined_list: list.map(Path::to_path_buf),
        ..Default::default()
    };
    let mut datasets: Vec<crate::list::Dataset> = samples.iter().map(|s| s.dataset).collect();
    datasets.sort();
    datasets.dedup();
    let idx = crate::megc::index_datasets(root, &datasets, &opts)?;
    let by_key: HashMap<SampleKey, &IndexedSample> =
        idx.samples.iter().map(|s| (s.meta.key(), s)).collect();
    let mut indexed = Vec::with_capacity(samples.len());
    for m in samples {
        let Some(s) = by_key.get(&m.key()) else {
            let why = idx
                .dropped
                .iter()
                .find(|d| d.dataset == m.dataset && d.subject == m.subject && d.sample == m.sample);
            return Err(Error::Sample {
                sample: m.id(),
                message: match why {
                    Some(d) => format!("not usable under {}: {}", root.display(), d.reason),
                    None => format!("not found under {}", root.display()),
                },
            });
        };
        if (s.meta.onset, s.meta.apex) != (m.onset, m.apex) {
            // The list decides the frames: look them up in the same folder, same naming.
            let stem = s
                .onset_path
                .file_stem()
                .and_then(|x| x.to_str())
                .unwrap_or("");
            let prefix = stem.trim_end_matches(|c: char| c.is_ascii_digit());
            let frames = crate::index::scan_frames(&s.dir, prefix)?;
            let (Some(o), Some(a)) = (frames.get(&m.onset).cloned(), frames.get(&m.apex).cloned())
            else {
                return Err(Error::Sample {
                    sample: m.id(),
                    message: format!(
                        "onset {} or apex {} frame missing in {}",
                        m.onset,
                        m.apex,
                        s.dir.display()
                    ),
                });
            };
            indexed.push(IndexedSample {
                meta: m.clone(),
                dir: s.dir.clone(),
                onset_path: o,
                apex_path: a,
            });
        } else {
            indexed.push(IndexedSample {
                meta: m.clone(),
                ..(*s).clone()
            });
        }
    }
    cache.ensure(&indexed)
}

/// The features of a list: computes what the cache lacks, then returns the list's samples
/// and their inputs of `kind` as one [N, C, size, size] buffer (tensor-ready).
pub fn load_features(
    root: &Path,
    list: &Path,
    cache_root: &Path,
    kind: InputKind,
    cfg: &FeatureConfig,
) -> Result<(Vec<SampleMeta>, Vec<f32>)> {
    let samples = read_list(list)?;
    let cache = FeatureCache::new(cache_root, cfg.clone());
    ensure_features(root, &samples, Some(list), &cache)?;
    let data = cache.load(&samples, kind)?;
    Ok((samples, data))
}

/// The default synthetic database's features: generates the database at `db` if absent
/// ([`crate::synth::ensure_default_synth`]), computes what the cache at `cache_root` lacks
/// (default [`FeatureConfig`]), and returns its samples and inputs of `kind` ([N, C, 112, 112]).
pub fn synthetic_features(
    db: &Path,
    cache_root: &Path,
    kind: InputKind,
) -> Result<(Vec<SampleMeta>, Vec<f32>)> {
    crate::synth::ensure_default_synth(db)?;
    load_features(
        db,
        &db.join(crate::synth::SYNTH_LIST),
        cache_root,
        kind,
        &FeatureConfig::default(),
    )
}

#[cfg(test)]
mod tests;
