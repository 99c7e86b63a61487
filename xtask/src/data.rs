//! `cargo xtask index | synth | features` (owned by the data crate's work).

use crate::util;
use anyhow::{Context, Result};
use clap::Args;
use mer_data::features::{ensure_features, FeatureCache, FeatureConfig};
use mer_data::index::{FrameSource, IndexOptions};
use mer_data::list::{
    compare_lists, format_comparison, format_counts, format_drop_summary, read_list, write_dropped,
    write_list,
};
use mer_data::synth::{read_marker, synthesize, SynthConfig, SYNTH_LIST, SYNTH_VERSION};
use mer_flow::strain::StrainFormula;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct IndexArgs {
    /// Folder holding the databases: native releases (CASME `.xls`, CASME II and CAS(ME)^2
    /// `.xlsx` with their frame folders) and/or the reference's combined layout.
    #[arg(long)]
    pub root: PathBuf,
    /// The 3-class list to write (`Dataset,Subject,Sample,Onset,Apex,Class`); the dropped
    /// samples go to `<LIST>.dropped.csv` beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Compare the derived list with another list: the reference's combined_3class.csv
    /// (`offtanet`), or MEGC 2019's published `combined_3class_gt.csv` in its own naming
    /// (`megc2019`: no header, `dataset,subject,clip,label`).
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The benchmark: `offtanet` (CASME, CAS(ME)^2, CASME II; the default) or `megc2019`
    /// (SMIC-HS, CASME II, SAMM with MEGC's 3-class rules).
    #[arg(long, default_value = "offtanet")]
    pub benchmark: mer_data::megc::Benchmark,
    /// How SMIC's apex (not annotated) is chosen: `middle` (the middle frame) or `spotted`
    /// (the frame of largest mean optical strain from the onset; `mer_data::spot`).
    #[arg(long, default_value = "middle", value_parser = ["middle", "spotted"])]
    pub smic_apex: String,
    /// Index the raw frames (`CASME2_RAW_selected/`, `rawpic/`) instead of the cropped faces.
    #[arg(long)]
    pub raw: bool,
    /// The sample list of a combined layout (default: combined_3class.csv beside the
    /// `*_cropped` folders or in ../reference/).
    #[arg(long)]
    pub list: Option<PathBuf>,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Subjects over the three databases (split about 16:24:9 as in the reference).
    #[arg(long, default_value_t = SynthConfig::default().subjects)]
    pub subjects: usize,
    /// Seed of everything random (the output is a function of the seed).
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// 3-class samples per subject.
    #[arg(long, default_value_t = SynthConfig::default().samples_per_subject)]
    pub samples_per_subject: usize,
    /// Frames per sample (onset first, apex in the middle).
    #[arg(long, default_value_t = SynthConfig::default().frames)]
    pub frames: usize,
    /// Side of the pre-cropped face images in pixels.
    #[arg(long, default_value_t = SynthConfig::default().size)]
    pub size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write SMIC-HS and SAMM in their native layouts (the MEGC 2019 benchmark's
    /// databases; the three CASME databases are the same with or without them).
    #[arg(long)]
    pub megc: bool,
}

#[derive(Args)]
pub struct FeaturesArgs {
    /// Folder holding the databases (as for `index`).
    #[arg(long)]
    pub root: PathBuf,
    /// The benchmark the list belongs to (`offtanet` or `megc2019`): a list row of another
    /// database is an error. The frames are found whatever the benchmark.
    #[arg(long, default_value = "offtanet")]
    pub benchmark: mer_data::megc::Benchmark,
    /// The sample list whose features to compute.
    #[arg(long)]
    pub list: PathBuf,
    /// Cache folder (files go to `<CACHE>/<key>/`, the key hashing every setting).
    #[arg(long)]
    pub out: PathBuf,
    /// Strain formula: `paper` (eq. 4) or `reference` (the published code's).
    #[arg(long, default_value = "paper")]
    pub strain_formula: StrainFormula,
    /// Crop faces with this Haar cascade first (for frames that are not pre-cropped), e.g.
    /// /usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml.
    #[arg(long)]
    pub face_cascade: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn index(a: IndexArgs) -> Result<()> {
    let opts = IndexOptions {
        source: if a.raw {
            FrameSource::Raw
        } else {
            FrameSource::Cropped
        },
        combined_list: a.list.clone(),
    };
    let idx = mer_data::megc::index_benchmark(
        &a.root,
        a.benchmark,
        &opts,
        a.smic_apex.parse().map_err(anyhow::Error::msg)?,
    )?;
    for s in &idx.sources {
        println!(
            "found {} ({:?}): {} frames in {}",
            s.dataset,
            s.layout,
            s.annotation.display(),
            s.frames
                .as_ref()
                .map_or("(no frame folder)".into(), |f| f.display().to_string())
        );
    }
    let list = idx.list();
    write_list(&a.out, &list)?;
    let dropped_path = a.out.with_extension("dropped.csv");
    write_dropped(&dropped_path, &idx.dropped)?;
    println!("\n{} samples -> {}", list.len(), a.out.display());
    print!("{}", format_counts(&list));
    println!(
        "\n{} dropped -> {}",
        idx.dropped.len(),
        dropped_path.display()
    );
    print!("{}", format_drop_summary(&idx.dropped));
    for d in &idx.dropped {
        println!("  {d}");
    }
    if let (Some(other), mer_data::megc::Benchmark::Megc2019) = (&a.compare, a.benchmark) {
        let published = mer_data::megc::read_published_list(other)?;
        let c = mer_data::megc::compare_published(&list, &published);
        println!("\ncompared with {} (MEGC naming):", other.display());
        print!("{}", mer_data::megc::format_published_comparison(&c));
    } else if let Some(other) = &a.compare {
        let reference = read_list(other)?;
        let c = compare_lists(&list, &reference);
        println!("\ncompared with {}:", other.display());
        print!("{}", format_comparison(&c, "derived", "other"));
    }
    Ok(())
}

pub fn synth(a: SynthArgs) -> Result<()> {
    util::set_threads(a.threads)?;
    let cfg = SynthConfig {
        subjects: a.subjects,
        samples_per_subject: a.samples_per_subject,
        frames: a.frames,
        size: a.size,
        seed: a.seed,
        megc: a.megc,
        ..SynthConfig::default()
    };
    if let Some(r) = read_marker(&a.out).filter(|r| r.config == cfg && r.version == SYNTH_VERSION) {
        println!(
            "{}: already a complete synthetic database of this configuration ({} samples)",
            a.out.display(),
            r.samples
        );
        return Ok(());
    }
    let t = Instant::now();
    let r = synthesize(&a.out, &cfg)
        .with_context(|| format!("writing the synthetic database to {}", a.out.display()))?;
    let [c1, sq, c2] = cfg.split();
    println!(
        "{}: {} samples ({} + {} + {} subjects in casme1, casme^2, casme2), {} images, {} annotation rows to drop, in {:.1} s",
        a.out.display(),
        r.samples,
        c1,
        sq,
        c2,
        r.images,
        r.dropped_rows,
        t.elapsed().as_secs_f64()
    );
    let list = read_list(&a.out.join(SYNTH_LIST))?;
    print!("{}", format_counts(&list));
    Ok(())
}

pub fn features(a: FeaturesArgs) -> Result<()> {
    util::set_threads(a.threads)?;
    let cfg = FeatureConfig {
        strain: a.strain_formula,
        face_crop: a.face_cascade.clone(),
        ..FeatureConfig::default()
    };
    let samples = read_list(&a.list)?;
    let allowed: &[mer_data::Dataset] = match a.benchmark {
        mer_data::megc::Benchmark::OffTanet => &mer_data::Dataset::ALL,
        mer_data::megc::Benchmark::Megc2019 => &[
            mer_data::Dataset::Smic,
            mer_data::Dataset::Casme2,
            mer_data::Dataset::Samm,
        ],
    };
    if let Some((i, s)) = samples
        .iter()
        .enumerate()
        .find(|(_, s)| !allowed.contains(&s.dataset))
    {
        anyhow::bail!(
            "{}, row {}: sample {} is not in the {:?} benchmark's databases (use --benchmark)",
            a.list.display(),
            i + 2,
            s.id(),
            a.benchmark
        );
    }
    let cache = FeatureCache::new(&a.out, cfg);
    let t = Instant::now();
    let r = ensure_features(&a.root, &samples, Some(&a.list), &cache)?;
    println!(
        "{} samples: {} computed, {} reused, {} repaired in {:.1} s -> {}",
        samples.len(),
        r.computed,
        r.reused,
        r.repaired,
        t.elapsed().as_secs_f64(),
        cache.dir().display()
    );
    Ok(())
}
