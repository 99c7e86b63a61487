//! A synthetic micro-expression database in the three native layouts.
//!
//! Procedural faces that differ per subject (shape, feature placement, skin colour,
//! texture, lighting); each sample is a short frame sequence (onset first, apex in the
//! middle, offset last) whose apex carries a small, local, FACS-like motion applied as a
//! smooth displacement field by warping the procedural face:
//! - positive: lip-corner puller AU12 (+ cheek raiser AU6),
//! - negative: brow lowerer AU4, lip-corner depressor AU15, nose wrinkler AU9 (one or more),
//! - surprise: brow raisers AU1 + AU2 (+ jaw drop AU26),
//!
//! 0.3 to 3 px at 112x112, plus nuisance: slight head motion, illumination change, sensor
//! noise and blinks. Annotation workbooks are written as the real ones (`.xls` BIFF8 for
//! CASME, `.xlsx` for CASME II and CAS(ME)^2, header-less sheets for the latter) with a
//! few rows the 3-class rules drop, so the indexer reads it exactly as real data. The
//! expected 3-class list is written to [`SYNTH_LIST`]. Deterministic for a seed.

use crate::list::{write_list, Class, Dataset, SampleMeta};
use crate::workbook::{write_xls, write_xlsx, SheetData, Value};
use crate::{Error, Result};
use mer_common::fs::write_atomic;
use mer_common::rng::{Seeding, SplitMix64};
use opencv::core::{Mat, Vec3b, Vector, VectorToVec};
use opencv::imgcodecs;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The synthetic database's generator: SplitMix64 under the data key schedule.
type Rng = SplitMix64;

fn rng(seed: u64, stream: &[u64]) -> Rng {
    SplitMix64::new(Seeding::DATA, seed, stream)
}

/// The expected 3-class list, written at the database's root.
pub const SYNTH_LIST: &str = "synthetic_3class.csv";
/// The completion marker, written last (JSON of the configuration).
pub const SYNTH_MARKER: &str = ".synth-complete.json";
/// Bumped whenever the generator's output changes.
pub const SYNTH_VERSION: u32 = 1;

/// Parameters of the synthetic database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Subjects over the three databases (at least 3), split about as in the reference
    /// (16 : 24 : 9 for CASME : CASME II : CAS(ME)^2).
    pub subjects: usize,
    /// 3-class samples per subject.
    pub samples_per_subject: usize,
    /// Frames per sample (at least 3): onset first, apex in the middle, offset last.
    pub frames: usize,
    /// Side of the square, pre-cropped face images (the databases' crops are larger than 112).
    pub size: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// JPEG quality of the frames.
    pub jpeg_quality: i32,
    /// Also write rows that the 3-class rules drop (tense, others, `/` apex, macro-expression).
    pub extra_rows: bool,
    /// Also write SMIC-HS and SAMM in their native layouts (for `--benchmark megc2019`):
    /// `subjects / 3` subjects each (at least 2), with their own random streams, so the
    /// three CASME databases are the same with or without them.
    #[serde(default)]
    pub megc: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            subjects: 12,
            samples_per_subject: 8,
            frames: 8,
            size: 176,
            seed: 0,
            jpeg_quality: 95,
            extra_rows: true,
            megc: false,
        }
    }
}

impl SynthConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.subjects < 3 {
            return bad("synthetic database: at least 3 subjects (one per database)");
        }
        if self.samples_per_subject < 1 || self.frames < 3 {
            return bad(
                "synthetic database: at least 1 sample per subject and 3 frames per sample",
            );
        }
        if !(32..=1024).contains(&self.size) {
            return bad("synthetic database: image size must be 32 to 1024");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad("synthetic database: JPEG quality must be 1 to 100");
        }
        Ok(())
    }

    /// Subjects of CASME, CAS(ME)^2 and CASME II.
    pub fn split(&self) -> [usize; 3] {
        let n = self.subjects;
        let sq = ((n as f64 * 9.0 / 49.0).round() as usize).max(1);
        let c1 = ((n as f64 * 16.0 / 49.0).round() as usize).max(1);
        [c1, sq, n - c1 - sq]
    }
}

/// What [`synthesize`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// The configuration.
    pub config: SynthConfig,
    /// The generator version.
    pub version: u32,
    /// The 3-class samples (sorted as lists are).
    pub samples: usize,
    /// Annotation rows written that the indexer must drop.
    pub dropped_rows: usize,
    /// Image files written.
    pub images: usize,
}

// ---------------------------------------------------------------------------------------
// The procedural face

/// Smooth value noise in [-1, 1]: bilinear with smoothstep weights over a hashed lattice.
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (xi, yi) = (x.floor(), y.floor());
    let (fx, fy) = (x - xi, y - yi);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let h = |i: i64, j: i64| {
        let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ seed;
        z = (z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 32;
        (z & 0xFFFF) as f32 / 32767.5 - 1.0
    };
    let (i, j) = (xi as i64, yi as i64);
    let a = h(i, j) + sx * (h(i + 1, j) - h(i, j));
    let b = h(i, j + 1) + sx * (h(i + 1, j + 1) - h(i, j + 1));
    a + sy * (b - a)
}

fn smooth_edge(d: f32, w: f32) -> f32 {
    // 1 inside (d < -w), 0 outside (d > w)
    let t = ((w - d) / (2.0 * w)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// A subject's face: geometry in face units (x right, y down, face half-width 1).
#[derive(Clone, Debug)]
struct Face {
    /// Face centre and half-width in pixels.
    cx: f32,
    cy: f32,
    a: f32,
    /// Face half-height / half-width.
    aspect: f32,
    eye_dx: f32,
    eye_y: f32,
    eye_rx: f32,
    eye_ry: f32,
    brow_y: f32,
    brow_arch: f32,
    brow_w: f32,
    nose_y: f32,
    nose_w: f32,
    mouth_y: f32,
    mouth_w: f32,
    lip_h: f32,
    skin: [f32; 3],
    hair: [f32; 3],
    lip: [f32; 3],
    background: [f32; 3],
    bg_grad: f32,
    light: (f32, f32),
    texture: f32,
    hairline: f32,
    seed: u64,
}

impl Face {
    fn new(rng: &mut Rng, size: usize) -> Self {
        let s = size as f32;
        let tone = rng.range(0.0, 1.0) as f32;
        let skin = [
            95.0 + 80.0 * tone + rng.range(-10.0, 10.0) as f32, // B
            120.0 + 75.0 * tone + rng.range(-10.0, 10.0) as f32, // G
            160.0 + 65.0 * tone + rng.range(-8.0, 8.0) as f32,  // R
        ];
        let h = rng.range(15.0, 80.0) as f32;
        Face {
            cx: s * (0.5 + rng.range(-0.02, 0.02) as f32),
            cy: s * (0.53 + rng.range(-0.02, 0.02) as f32),
            a: s * rng.range(0.36, 0.42) as f32,
            aspect: rng.range(1.18, 1.38) as f32,
            eye_dx: rng.range(0.34, 0.44) as f32,
            eye_y: rng.range(-0.24, -0.14) as f32,
            eye_rx: rng.range(0.13, 0.18) as f32,
            eye_ry: rng.range(0.055, 0.08) as f32,
            brow_y: rng.range(-0.46, -0.36) as f32,
            brow_arch: rng.range(0.02, 0.08) as f32,
            brow_w: rng.range(0.035, 0.06) as f32,
            nose_y: rng.range(0.22, 0.32) as f32,
            nose_w: rng.range(0.09, 0.14) as f32,
            mouth_y: rng.range(0.56, 0.66) as f32,
            mouth_w: rng.range(0.26, 0.36) as f32,
            lip_h: rng.range(0.05, 0.08) as f32,
            skin,
            hair: [
                h * rng.range(0.8, 1.2) as f32,
                h,
                h * rng.range(1.0, 1.4) as f32,
            ],
            lip: [skin[0] * 0.72, skin[1] * 0.62, skin[2] * 0.85],
            background: [
                rng.range(60.0, 200.0) as f32,
                rng.range(60.0, 200.0) as f32,
                rng.range(60.0, 200.0) as f32,
            ],
            bg_grad: rng.range(-40.0, 40.0) as f32,
            light: (rng.range(-0.5, 0.5) as f32, rng.range(-0.6, 0.1) as f32),
            texture: rng.range(5.0, 11.0) as f32,
            hairline: rng.range(-0.78, -0.62) as f32,
            seed: rng.next_u64(),
        }
    }

    /// The colour (BGR, 0..255) at face coordinates (u, v); `blink` in [0, 1] closes the eyes.
    fn shade(&self, u: f32, v: f32, blink: f32) -> [f32; 3] {
        let px = 1.0 / self.a; // one pixel in face units: edge softness
        let vv = v / self.aspect;
        let r = (u * u + vv * vv).sqrt();
        // background with a gradient
        let mut c = self.background;
        for ch in &mut c {
            *ch += self.bg_grad * (u * 0.3 + v * 0.2);
        }
        // skin with lighting (ellipsoid normal), two octaves of texture and pores
        let nz = (1.0 - (u * u + vv * vv).min(1.0)).sqrt();
        let lit = 0.8 + 0.25 * nz + 0.18 * (self.light.0 * u + self.light.1 * vv) * nz;
        let tex = self.texture
            * (0.6 * value_noise(u * 7.0, v * 7.0, self.seed)
                + 0.4 * value_noise(u * 19.0, v * 19.0, self.seed ^ 0xABCD)
                + 0.25 * value_noise(u * 41.0, v * 41.0, self.seed ^ 0x1234));
        let skin = self.skin.map(|c| c * lit + tex);
        // neck below the face
        let neck = smooth_edge(u.abs() - 0.55, px) * smooth_edge(-(v - 0.6), px);
        c = mix(c, [skin[0] * 0.85, skin[1] * 0.85, skin[2] * 0.85], neck);
        // face ellipse
        let inside = smooth_edge(r - 1.0, 1.5 * px);
        c = mix(c, skin, inside);
        // hair: above the hairline and around the top of the head
        let hair_t = smooth_edge(v - (self.hairline + 0.12 * u * u), 2.0 * px)
            * smooth_edge(r - 1.12, 1.5 * px);
        let hair_tex = 8.0 * value_noise(u * 3.0, v * 40.0, self.seed ^ 0x77);
        c = mix(
            c,
            [
                self.hair[0] + hair_tex,
                self.hair[1] + hair_tex,
                self.hair[2] + hair_tex,
            ],
            hair_t,
        );
        // brows: thick arcs above the eyes
        for side in [-1.0f32, 1.0] {
            let x0 = side * self.eye_dx;
            let du = (u - x0) / (self.eye_rx * 1.35);
            if du.abs() < 1.3 {
                let centre =
                    self.brow_y - self.brow_arch * (1.0 - du * du) + 0.03 * side * (u - x0);
                let d = (v - centre).abs() - self.brow_w * (1.0 - 0.35 * du.abs()).max(0.2);
                let t = smooth_edge(d, 1.2 * px) * smooth_edge(du.abs() - 1.0, 0.08);
                c = mix(
                    c,
                    [
                        self.hair[0] * 1.2 + 10.0,
                        self.hair[1] * 1.2 + 10.0,
                        self.hair[2] * 1.2 + 10.0,
                    ],
                    t * 0.9,
                );
            }
        }
        // eyes: white, iris, pupil, eyelid crease; blink covers them with skin
        for side in [-1.0f32, 1.0] {
            let (ex, ey) = (side * self.eye_dx, self.eye_y);
            let (du, dv) = ((u - ex) / self.eye_rx, (v - ey) / self.eye_ry);
            if du.abs() < 1.6 && dv.abs() < 2.5 {
                let crease =
                    ((v - (ey - self.eye_ry * 1.6 * (1.0 - 0.4 * du * du))).abs() - 0.008) * self.a;
                c = mix(
                    c,
                    [skin[0] * 0.7, skin[1] * 0.7, skin[2] * 0.7],
                    smooth_edge(crease, 0.8) * smooth_edge(du.abs() - 1.0, 0.1),
                );
                let open = (1.0 - blink).max(0.02);
                let e = (du * du + (dv / open) * (dv / open)).sqrt();
                let eye_in = smooth_edge((e - 1.0) * self.eye_ry * open, px);
                let ir = ((u - ex).powi(2) + (v - ey).powi(2)).sqrt();
                let mut eye = mix(
                    [225.0, 230.0, 235.0],
                    [60.0, 70.0, 80.0],
                    smooth_edge(ir - self.eye_ry * 0.95, px),
                );
                eye = mix(
                    eye,
                    [20.0, 20.0, 25.0],
                    smooth_edge(ir - self.eye_ry * 0.45, px),
                );
                c = mix(c, eye, eye_in);
                // lid line
                let lid = smooth_edge((e - 1.0).abs() * self.eye_ry * open - 0.6 * px, px)
                    * (du.abs() < 1.05) as u8 as f32;
                c = mix(c, [35.0, 35.0, 40.0], lid * 0.8);
            }
        }
        // nose: side shading, tip highlight, nostrils
        let nb = ((u.abs()
            - self.nose_w * (0.4 + 0.6 * ((v + 0.1) / (self.nose_y + 0.1)).clamp(0.0, 1.0)))
            / 0.03)
            .abs();
        if v > -0.12 && v < self.nose_y + 0.02 {
            c = mix(
                c,
                [skin[0] * 0.8, skin[1] * 0.8, skin[2] * 0.8],
                (1.0 - nb).max(0.0) * 0.6,
            );
        }
        for side in [-1.0f32, 1.0] {
            let (dx, dy) = (
                (u - side * self.nose_w * 0.75) / 0.045,
                (v - self.nose_y) / 0.025,
            );
            let d = (dx * dx + dy * dy).sqrt();
            c = mix(
                c,
                [skin[0] * 0.35, skin[1] * 0.33, skin[2] * 0.35],
                smooth_edge((d - 1.0) * 0.025, px),
            );
        }
        let tip =
            ((u / (self.nose_w * 0.8)).powi(2) + ((v - self.nose_y + 0.06) / 0.06).powi(2)).sqrt();
        c = mix(
            c,
            [skin[0] * 1.12, skin[1] * 1.12, skin[2] * 1.12],
            smooth_edge((tip - 1.0) * 0.05, 2.0 * px) * 0.5,
        );
        // mouth: lips and the dark line between them
        let (mu, mv) = (u / self.mouth_w, v - self.mouth_y);
        if mu.abs() < 1.3 {
            let curve = 0.03 * mu * mu;
            let lip_d = ((mu * mu + (mv / self.lip_h).powi(2)).sqrt() - 1.0) * self.lip_h;
            let lip_t = smooth_edge(lip_d, px);
            let lip_tex = 4.0 * value_noise(u * 60.0, v * 12.0, self.seed ^ 0x55);
            c = mix(
                c,
                [
                    self.lip[0] + lip_tex,
                    self.lip[1] + lip_tex,
                    self.lip[2] + lip_tex,
                ],
                lip_t,
            );
            let line = (mv + curve).abs() - 0.006;
            let line_t = smooth_edge(line, px) * smooth_edge(mu.abs() - 1.02, 0.05);
            c = mix(c, [40.0, 35.0, 60.0], line_t * 0.9);
        }
        c
    }
}

// ---------------------------------------------------------------------------------------
// Action units as displacement fields

#[derive(Clone, Copy, Debug)]
struct Bump {
    /// Centre in face units.
    u: f32,
    v: f32,
    /// Width in face units.
    sigma: f32,
    /// Displacement at full intensity, in pixels (native size).
    du: f32,
    dv: f32,
}

fn unit(x: f32, y: f32) -> (f32, f32) {
    let n = (x * x + y * y).sqrt().max(1e-6);
    (x / n, y / n)
}

/// Adds the bumps of one action unit (both sides, each side's strength jittered).
fn add_au(bumps: &mut Vec<Bump>, face: &Face, au: u32, amp: f32, rng: &mut Rng) {
    for side in [-1.0f32, 1.0] {
        let a = amp * rng.range(0.75, 1.25) as f32;
        let mut push = |u: f32, v: f32, sigma: f32, dir: (f32, f32), k: f32| {
            let (x, y) = unit(dir.0, dir.1);
            bumps.push(Bump {
                u,
                v,
                sigma,
                du: a * k * x,
                dv: a * k * y,
            });
        };
        match au {
            // inner brow raiser
            1 => push(
                side * face.eye_dx * 0.55,
                face.brow_y,
                0.14,
                (0.0, -1.0),
                1.0,
            ),
            // outer brow raiser
            2 => push(
                side * face.eye_dx * 1.35,
                face.brow_y + 0.02,
                0.14,
                (0.0, -1.0),
                0.9,
            ),
            // brow lowerer: inner brows down and together
            4 => push(
                side * face.eye_dx * 0.7,
                face.brow_y,
                0.16,
                (-side * 0.6, 1.0),
                1.0,
            ),
            // cheek raiser
            6 => push(
                side * (face.eye_dx + 0.05),
                face.eye_y + 0.28,
                0.17,
                (0.0, -1.0),
                0.5,
            ),
            // nose wrinkler: nose sides up, upper lip slightly up
            9 => {
                push(
                    side * face.nose_w * 1.1,
                    face.nose_y - 0.12,
                    0.1,
                    (-side * 0.3, -1.0),
                    0.8,
                );
                push(
                    side * face.mouth_w * 0.4,
                    face.mouth_y - 0.04,
                    0.1,
                    (0.0, -1.0),
                    0.4,
                );
            }
            // lip corner puller: corners out and up
            12 => push(
                side * face.mouth_w,
                face.mouth_y,
                0.13,
                (side * 0.8, -0.65),
                1.0,
            ),
            // lip corner depressor: corners down
            15 => push(
                side * face.mouth_w,
                face.mouth_y + 0.01,
                0.12,
                (side * 0.15, 1.0),
                1.0,
            ),
            // jaw drop: chin and lower lip down
            26 => push(side * 0.05, face.mouth_y + 0.2, 0.3, (0.0, 1.0), 0.7),
            _ => {}
        }
    }
}

/// The action units of a class: the AU numbers drawn for this sample.
fn draw_aus(class: Class, rng: &mut Rng) -> Vec<u32> {
    match class {
        Class::Positive => {
            let mut v = vec![12];
            if rng.chance(0.6) {
                v.push(6);
            }
            v
        }
        Class::Surprise => {
            let mut v = vec![1, 2];
            if rng.chance(0.5) {
                v.push(26);
            }
            v
        }
        Class::Negative => loop {
            let mut v = Vec::new();
            for (au, p) in [(4, 0.7), (9, 0.3), (15, 0.4)] {
                if rng.chance(p) {
                    v.push(au);
                }
            }
            if !v.is_empty() {
                break v;
            }
        },
    }
}

/// One sample's motion and nuisance over its frames.
#[derive(Clone, Debug)]
struct Motion {
    bumps: Vec<Bump>,
    /// Expression intensity per frame (0 at onset, 1 at apex).
    intensity: Vec<f32>,
    /// Head translation (px) and rotation (rad) per frame.
    head: Vec<(f32, f32, f32)>,
    /// Illumination gain and horizontal gradient per frame.
    light: Vec<(f32, f32)>,
    /// Eyelid closure per frame.
    blink: Vec<f32>,
}

fn make_motion(face: &Face, class: Class, cfg: &SynthConfig, rng: &mut Rng) -> (Motion, Vec<u32>) {
    let n = cfg.frames;
    let apex = n / 2;
    let scale = cfg.size as f32 / 112.0;
    // expression amplitude at 112x112: log-uniform in 0.6..2.6 px (bumps jitter it to 0.3..3)
    let amp = (0.6f64.ln() + rng.f64() * (2.6f64 / 0.6).ln()).exp() as f32 * scale;
    let aus = draw_aus(class, rng);
    let mut bumps = Vec::new();
    for &au in &aus {
        add_au(&mut bumps, face, au, amp, rng);
    }
    let intensity = (0..n)
        .map(|i| {
            if i <= apex {
                let t = i as f32 / apex as f32;
                (std::f32::consts::FRAC_PI_2 * t).sin().powi(2)
            } else {
                let t = (i - apex) as f32 / (n - 1 - apex).max(1) as f32;
                1.0 - 0.7 * (std::f32::consts::FRAC_PI_2 * t).sin().powi(2)
            }
        })
        .collect();
    // head motion: a slow drift of up to ~0.8 px (at 112) and ~0.5 degree
    let (tx, ty, rot) = (
        rng.normal() as f32 * 0.35,
        rng.normal() as f32 * 0.35,
        rng.normal() as f32 * 0.004,
    );
    let head = (0..n)
        .map(|i| {
            let t = i as f32 / (n - 1) as f32;
            (
                tx * t * scale + rng.normal() as f32 * 0.05 * scale,
                ty * t * scale + rng.normal() as f32 * 0.05 * scale,
                rot * t,
            )
        })
        .collect();
    let (g, gr) = (rng.range(-0.04, 0.04) as f32, rng.range(-0.04, 0.04) as f32);
    let light = (0..n)
        .map(|i| {
            let t = i as f32 / (n - 1) as f32;
            (1.0 + g * t + rng.normal() as f32 * 0.004, gr * t)
        })
        .collect();
    let mut blink = vec![0.0; n];
    if rng.chance(0.25) {
        let at = rng.int_in(1, n);
        let depth = rng.range(0.5, 1.0) as f32;
        blink[at] = depth;
        if at + 1 < n {
            blink[at + 1] = depth * 0.4;
        }
        if at > 1 {
            blink[at - 1] = depth * 0.3;
        }
    }
    (
        Motion {
            bumps,
            intensity,
            head,
            light,
            blink,
        },
        aus,
    )
}

/// Renders frame `i` of a sample as BGR bytes.
fn render(face: &Face, m: &Motion, i: usize, size: usize, noise_seed: u64) -> Vec<u8> {
    let mut rng = rng(noise_seed, &[i as u64]);
    let (tx, ty, rot) = m.head[i];
    let (cr, sr) = (rot.cos(), rot.sin());
    let (gain, grad) = m.light[i];
    let k = m.intensity[i];
    let mut out = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            // inverse head motion (rotation about the face centre, then translation)
            let (px, py) = (x as f32 + 0.5 - face.cx - tx, y as f32 + 0.5 - face.cy - ty);
            let (qx, qy) = (cr * px + sr * py, -sr * px + cr * py);
            // inverse expression warp: sample the neutral face at q - d(q)
            let (u0, v0) = (qx / face.a, qy / face.a);
            let (mut dx, mut dy) = (0.0f32, 0.0f32);
            if k > 0.0 {
                for b in &m.bumps {
                    let (du, dv) = (u0 - b.u, v0 - b.v);
                    let w = (-(du * du + dv * dv) / (2.0 * b.sigma * b.sigma)).exp();
                    dx += w * b.du;
                    dy += w * b.dv;
                }
            }
            let (u, v) = ((qx - k * dx) / face.a, (qy - k * dy) / face.a);
            let c = face.shade(u, v, m.blink[i]);
            let lightf = gain * (1.0 + grad * (x as f32 / size as f32 - 0.5));
            let o = (y * size + x) * 3;
            for ch in 0..3 {
                let val = c[ch] * lightf + rng.normal() as f32 * 2.0;
                out[o + ch] = val.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Encodes a BGR frame as `ext` (`.jpg` at `quality`, or `.bmp`).
fn encode(bgr: &[u8], size: usize, quality: i32, path: &Path, ext: &str) -> Result<Vec<u8>> {
    let mat = Mat::new_rows_cols_with_bytes::<Vec3b>(size as i32, size as i32, bgr)
        .map_err(Error::cv("wrapping a frame"))?;
    let mut buf = Vector::<u8>::new();
    let jpeg = ext == ".jpg";
    let params = if jpeg {
        Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality])
    } else {
        Vector::new()
    };
    let ok = imgcodecs::imencode(ext, &mat, &mut buf, &params)
        .map_err(|e| Error::image(path, e.to_string()))?;
    if !ok {
        let what = if jpeg {
            "JPEG encoding failed"
        } else {
            "encoding failed"
        };
        return Err(Error::image(path, what));
    }
    Ok(buf.to_vec())
}

// ---------------------------------------------------------------------------------------
// The layouts

/// One planned sample.
#[derive(Clone, Debug)]
struct Plan {
    meta: SampleMeta,
    /// Subject index in the whole database (face identity).
    face: usize,
    /// Frame folder relative to the root, and the frame file prefix.
    dir: PathBuf,
    prefix: String,
    /// Emotion word for the sheet and the AU text.
    emotion: String,
    aus: String,
    /// Sample index (for seeding).
    index: usize,
}

const NEG_CASME1: [&str; 5] = ["disgust", "repression", "sadness", "fear", "contempt"];
const NEG_CASME2: [&str; 2] = ["disgust", "repression"];

fn class_plan(total: usize, rng: &mut Rng) -> Vec<Class> {
    // The reference's balance: 194 : 48 : 52 of 294.
    let pos = ((total as f64 * 48.0 / 294.0).round() as usize).max(1);
    let sur = ((total as f64 * 52.0 / 294.0).round() as usize).max(1);
    let neg = total.saturating_sub(pos + sur);
    let mut v: Vec<Class> = std::iter::repeat_n(Class::Negative, neg)
        .chain(std::iter::repeat_n(Class::Positive, pos))
        .chain(std::iter::repeat_n(Class::Surprise, sur))
        .collect();
    for i in (1..v.len()).rev() {
        let j = rng.int_in(0, i + 1);
        v.swap(i, j);
    }
    v.truncate(total);
    v
}

/// Why the synthetic database has no SMIC or SAMM (it writes the three databases of the
/// Off-TANet benchmark; its loops never reach the other two).
const NOT_SYNTHESIZED: &str = "the synthetic database has no SMIC or SAMM (yet)";

/// Folder of each database inside the synthetic root.
pub fn database_folder(d: Dataset) -> &'static str {
    match d {
        Dataset::Casme1 => "CASME",
        Dataset::Casme2 => "CASME2",
        Dataset::CasMeSquared => "CAS(ME)^2",
        Dataset::Smic => "SMIC",
        Dataset::Samm => "SAMM",
    }
}

/// The CAS(ME)^2 folder number of participant `p` (1-based): 15, 16, 19, 20, 23, ...
fn casme_sq_folder(p: usize) -> usize {
    15 + (p - 1) / 2 * 4 + (p - 1) % 2
}

/// The samples to render, the three workbooks' sheets (CASME, CASME II, CAS(ME)^2; sample
/// rows are appended after rendering) and the number of rows the indexer must drop.
type Planned = (
    Vec<Plan>,
    Vec<SheetData>,
    Vec<SheetData>,
    Vec<SheetData>,
    usize,
);

/// A workbook header row from `|`-separated cells (an empty cell stays empty).
fn header_row(cells: &str) -> Vec<Value> {
    cells
        .split('|')
        .map(|s| {
            if s.is_empty() {
                Value::Empty
            } else {
                Value::from(s)
            }
        })
        .collect()
}

fn plan(cfg: &SynthConfig) -> Planned {
    let mut rng = rng(cfg.seed, &[0xC1A55]);
    let [n1, nsq, _] = cfg.split();
    let total = cfg.subjects * cfg.samples_per_subject;
    let classes = class_plan(total, &mut rng);
    let mut plans = Vec::new();
    let mut c1_rows = vec![header_row(
        "Subject|Filename||OnsetF|ApexF1|ApexF2|OffsetF||Onset|Total|AU|Emotion",
    )];
    let mut c2_rows = vec![header_row(
        "Subject|Filename||OnsetFrame|ApexFrame|OffsetFrame||Action Units|Estimated Emotion",
    )];
    let mut sq_rows: Vec<Vec<Value>> = Vec::new();
    let mut rule1: Vec<Vec<Value>> = Vec::new();
    let videos = [
        "anger1", "anger2", "disgust1", "disgust2", "happy1", "happy2", "happy3", "happy4",
        "happy5",
    ];
    let rule2: Vec<Vec<Value>> = videos
        .iter()
        .enumerate()
        .map(|(i, v)| {
            vec![
                Value::Number(((i / 2 + 1) * 100 + i % 2 + 1) as f64),
                Value::from(*v),
            ]
        })
        .collect();
    let apex_off = (cfg.frames / 2) as u32;
    let mut extra = 0;
    let mut k = 0;
    for face in 0..cfg.subjects {
        let (dataset, local) = if face < n1 {
            (Dataset::Casme1, face + 1)
        } else if face < n1 + nsq {
            (Dataset::CasMeSquared, face - n1 + 1)
        } else {
            (Dataset::Casme2, face - n1 - nsq + 1)
        };
        let mut used = std::collections::HashSet::new();
        if dataset == Dataset::CasMeSquared {
            let folder = casme_sq_folder(local);
            rule1.push(vec![
                Value::Number(folder as f64),
                Value::Text(format!("s{folder}")),
                Value::Number(local as f64),
            ]);
        }
        for _ in 0..cfg.samples_per_subject {
            let class = classes[k];
            let onset = match dataset {
                Dataset::Casme1 => rng.int_in(10, 300) as u32,
                Dataset::Casme2 => rng.int_in(1, 200) as u32,
                Dataset::CasMeSquared => rng.int_in(100, 3500) as u32,
                Dataset::Smic | Dataset::Samm => unreachable!("{NOT_SYNTHESIZED}"),
            };
            let apex = onset + apex_off;
            let (subject, sample, dir, prefix, emotion) = match dataset {
                Dataset::Casme1 => {
                    let name = loop {
                        let n = format!("EP{:02}_{}", rng.int_in(1, 20), rng.int_in(1, 12));
                        if used.insert(n.clone()) {
                            break n;
                        }
                    };
                    let sub = format!("sub{local:02}");
                    let emo = match class {
                        Class::Positive => "happiness".to_string(),
                        Class::Surprise => "surprise".into(),
                        Class::Negative => NEG_CASME1[rng.int_in(0, NEG_CASME1.len())].into(),
                    };
                    (
                        sub.clone(),
                        name.clone(),
                        PathBuf::from("CASME/Cropped").join(&sub).join(&name),
                        format!("reg_{name}-"),
                        emo,
                    )
                }
                Dataset::Casme2 => {
                    let name = loop {
                        let mut n = format!("EP{:02}_{:02}", rng.int_in(1, 20), rng.int_in(1, 8));
                        if rng.chance(0.7) {
                            n.push('f');
                        }
                        if used.insert(n.clone()) {
                            break n;
                        }
                    };
                    let sub = format!("sub{local:02}");
                    let emo = match class {
                        Class::Positive => "happiness".to_string(),
                        Class::Surprise => "surprise".into(),
                        Class::Negative => NEG_CASME2[rng.int_in(0, NEG_CASME2.len())].into(),
                    };
                    (
                        sub.clone(),
                        name.clone(),
                        PathBuf::from("CASME2/Cropped").join(&sub).join(&name),
                        "reg_img".into(),
                        emo,
                    )
                }
                Dataset::CasMeSquared => {
                    let name = loop {
                        let n = format!(
                            "{}_{}",
                            videos[rng.int_in(0, videos.len())],
                            rng.int_in(1, 15)
                        );
                        if used.insert(n.clone()) {
                            break n;
                        }
                    };
                    let sub = casme_sq_folder(local).to_string();
                    (
                        sub.clone(),
                        name.clone(),
                        PathBuf::from("CAS(ME)^2/cropped").join(&sub).join(&name),
                        "img".into(),
                        class.name().into(),
                    )
                }
                Dataset::Smic | Dataset::Samm => unreachable!("{NOT_SYNTHESIZED}"),
            };
            let meta = SampleMeta {
                dataset,
                subject,
                sample,
                onset,
                apex,
                class,
            };
            plans.push(Plan {
                meta,
                face,
                dir,
                prefix,
                emotion,
                aus: String::new(),
                index: k,
            });
            k += 1;
        }
        // rows the 3-class rules drop, once per database (on its first subject)
        if cfg.extra_rows && local == 1 {
            match dataset {
                Dataset::Casme1 => {
                    c1_rows.push(row(&[
                        1.into(),
                        "EP99_1".into(),
                        Value::Empty,
                        20.into(),
                        25.into(),
                        Value::Empty,
                        30.into(),
                        Value::Empty,
                        333.into(),
                        500.into(),
                        "14".into(),
                        "tense".into(),
                    ]));
                    extra += 1;
                }
                Dataset::Casme2 => {
                    c2_rows.push(row(&[
                        Value::Text("01".into()),
                        "EP99_01".into(),
                        Value::Empty,
                        10.into(),
                        20.into(),
                        40.into(),
                        Value::Empty,
                        "4".into(),
                        "others".into(),
                    ]));
                    c2_rows.push(row(&[
                        1.into(),
                        "EP99_02f".into(),
                        Value::Empty,
                        10.into(),
                        "/".into(),
                        40.into(),
                        Value::Empty,
                        "12".into(),
                        "happiness".into(),
                    ]));
                    extra += 2;
                }
                Dataset::CasMeSquared => {
                    sq_rows.push(row(&[
                        1.into(),
                        "disgust1_99".into(),
                        10.into(),
                        20.into(),
                        0.into(),
                        "4+9".into(),
                        "negative".into(),
                        "macro-expression".into(),
                        "disgust".into(),
                    ]));
                    sq_rows.push(row(&[
                        1.into(),
                        "happy1_99".into(),
                        10.into(),
                        20.into(),
                        30.into(),
                        "12".into(),
                        "others".into(),
                        "micro-expression".into(),
                        "happy".into(),
                    ]));
                    extra += 2;
                }
                Dataset::Smic | Dataset::Samm => unreachable!("{NOT_SYNTHESIZED}"),
            }
        }
    }
    let casme_sq = vec![
        SheetData {
            name: "CASFEcode_final".into(),
            rows: sq_rows,
        },
        SheetData {
            name: "naming rule1".into(),
            rows: rule1,
        },
        SheetData {
            name: "naming rule2".into(),
            rows: rule2,
        },
    ];
    let sheet1 = |rows| {
        vec![SheetData {
            name: "Sheet1".into(),
            rows,
        }]
    };
    (plans, sheet1(c1_rows), sheet1(c2_rows), casme_sq, extra)
}

fn row(cells: &[Value]) -> Vec<Value> {
    cells.to_vec()
}

fn au_text(aus: &[u32]) -> String {
    aus.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// Writes the synthetic database into `out`, which must not exist or be an empty folder.
/// Everything is written into a sibling `<out>.partial` folder, the marker last, then
/// renamed into place: an interrupted run leaves no half database at `out`.
pub fn synthesize(out: &Path, cfg: &SynthConfig) -> Result<SynthReport> {
    cfg.validate()?;
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Destination {
                path: out.to_path_buf(),
                message: "exists and is not empty".into(),
            });
        }
        std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "synth".into());
    let tmp = out.with_file_name(format!("{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let report = write_database(&tmp, cfg)?;
    let marker_path = tmp.join(SYNTH_MARKER);
    let marker = serde_json::to_vec_pretty(&report).map_err(|error| Error::Json {
        path: marker_path.clone(),
        error,
    })?;
    write_atomic(&marker_path, &marker)?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(report)
}

fn write_database(root: &Path, cfg: &SynthConfig) -> Result<SynthReport> {
    let (mut plans, mut c1, mut c2, mut sq, extra) = plan(cfg);
    let faces: Vec<Face> = (0..cfg.subjects)
        .map(|s| Face::new(&mut rng(cfg.seed, &[0xFACE, s as u64]), cfg.size))
        .collect();
    let pb = indicatif::ProgressBar::new(plans.len() as u64).with_message("synthesising");
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} samples ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let aus: Vec<String> = plans
        .par_iter()
        .map(|p| -> Result<String> {
            let mut rng = rng(cfg.seed, &[0x5A3F, p.index as u64]);
            let face = &faces[p.face];
            let (motion, aus) = make_motion(face, p.meta.class, cfg, &mut rng);
            let dir = root.join(&p.dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let noise = rng.next_u64();
            for i in 0..cfg.frames {
                let path = dir.join(format!("{}{}.jpg", p.prefix, p.meta.onset + i as u32));
                let bgr = render(face, &motion, i, cfg.size, noise);
                let bytes = encode(&bgr, cfg.size, cfg.jpeg_quality, &path, ".jpg")?;
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            }
            pb.inc(1);
            Ok(au_text(&aus))
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    for (p, a) in plans.iter_mut().zip(aus) {
        p.aus = a;
    }
    // Annotation rows, in plan order (extra rows were added per database first subject).
    let last = cfg.frames as u32 - 1;
    for p in &plans {
        let m = &p.meta;
        let subject_number: u32 = m.subject.trim_start_matches("sub").parse().unwrap_or(0);
        match m.dataset {
            Dataset::Casme1 => {
                let ms = |frames: u32| Value::Number((frames as f64 * 1000.0 / 60.0).round());
                c1[0].rows.push(row(&[
                    subject_number.into(),
                    m.sample.as_str().into(),
                    Value::Empty,
                    m.onset.into(),
                    m.apex.into(),
                    if p.index % 3 == 0 {
                        "\\".into()
                    } else {
                        Value::Empty
                    },
                    (m.onset + last).into(),
                    Value::Empty,
                    ms(m.apex - m.onset),
                    ms(last),
                    p.aus.as_str().into(),
                    p.emotion.as_str().into(),
                ]));
            }
            Dataset::Casme2 => {
                // the subject as a number in some rows and as text in others (both releases)
                let subject = if subject_number.is_multiple_of(2) {
                    Value::Text(format!("{subject_number:02}"))
                } else {
                    subject_number.into()
                };
                c2[0].rows.push(row(&[
                    subject,
                    m.sample.as_str().into(),
                    Value::Empty,
                    m.onset.into(),
                    m.apex.into(),
                    (m.onset + last).into(),
                    Value::Empty,
                    p.aus.as_str().into(),
                    p.emotion.as_str().into(),
                ]));
            }
            Dataset::CasMeSquared => {
                let folder: usize = m.subject.parse().unwrap_or(0);
                let participant = (1..=cfg.subjects)
                    .find(|&q| casme_sq_folder(q) == folder)
                    .unwrap_or(0);
                sq[0].rows.push(row(&[
                    (participant as u32).into(),
                    m.sample.as_str().into(),
                    m.onset.into(),
                    m.apex.into(),
                    (m.onset + last).into(),
                    p.aus.as_str().into(),
                    p.emotion.as_str().into(),
                    "micro-expression".into(),
                    p.emotion.as_str().into(),
                ]));
            }
            Dataset::Smic | Dataset::Samm => unreachable!("{NOT_SYNTHESIZED}"),
        }
    }
    write_xls(&root.join("CASME/CASME-coded-20190721.xls"), &c1)?;
    write_xlsx(&root.join("CASME2/CASME2-coding-20140508.xlsx"), &c2)?;
    write_xlsx(&root.join("CAS(ME)^2/CAS(ME)^2code_final.xlsx"), &sq)?;
    let mut list: Vec<SampleMeta> = plans.iter().map(|p| p.meta.clone()).collect();
    let (mut extra, mut images) = (extra, list.len() * cfg.frames);
    if cfg.megc {
        let (megc, dropped, written) = write_megc(root, cfg)?;
        list.extend(megc);
        extra += dropped;
        images += written;
    }
    crate::list::sort_samples(&mut list);
    write_list(&root.join(SYNTH_LIST), &list)?;
    Ok(SynthReport {
        config: cfg.clone(),
        version: SYNTH_VERSION,
        samples: list.len(),
        dropped_rows: extra,
        images,
    })
}

/// One planned SMIC or SAMM clip.
struct MegcPlan {
    meta: SampleMeta,
    dir: PathBuf,
    /// Frame file name of frame number N.
    name: Box<dyn Fn(u32) -> String + Send + Sync>,
    ext: &'static str,
    face: usize,
    emotion: String,
}

/// SMIC-HS (`SMIC/SMIC_all_cropped/HS/s<n>/micro/<emotion>/<clip>/reg_image<N>.bmp`, N a
/// 6-digit camera counter, 8 digits for the last subject; the apex is the middle frame,
/// SMIC's rule here) and SAMM (`SAMM/<sub3>/<sub3>_<code>_<k>/<sub3>_<N>.jpg`, N padded to
/// 4 or 5 digits by clip, and `SAMM/SAMM_Micro_FACS_Codes_v2.xlsx` with its 13-row
/// preamble). Planted drops: one SAMM `Other` row and one SMIC `non_micro` clip per
/// database. Returns the samples, the planted drops and the images written.
fn write_megc(root: &Path, cfg: &SynthConfig) -> Result<(Vec<SampleMeta>, usize, usize)> {
    let per = (cfg.subjects / 3).max(2);
    let mut rng = rng(cfg.seed, &[0x3E6C, 2019]);
    let classes = class_plan(2 * per * cfg.samples_per_subject, &mut rng);
    let n = cfg.frames as u32;
    let tag = |c: Class| match c {
        Class::Negative => "ne",
        Class::Positive => "po",
        Class::Surprise => "sur",
    };
    let mut plans: Vec<MegcPlan> = Vec::new();
    let mut k = 0;
    // SMIC
    let hs = PathBuf::from("SMIC/SMIC_all_cropped/HS");
    for s in 1..=per {
        let mut count = std::collections::HashMap::new();
        for _ in 0..cfg.samples_per_subject {
            let class = classes[k];
            k += 1;
            let c = count.entry(tag(class)).or_insert(0);
            *c += 1;
            let clip = format!("s{s}_{}_{:02}", tag(class), c);
            let base: u32 = if s == per { 17_000_000 } else { 100_000 };
            let onset = base + rng.int_in(0, 800_000) as u32 / 100 * 100;
            plans.push(MegcPlan {
                meta: SampleMeta {
                    dataset: Dataset::Smic,
                    subject: format!("s{s:02}"),
                    sample: clip.clone(),
                    onset,
                    apex: onset + (n - 1) / 2,
                    class,
                },
                dir: hs.join(format!("s{s}/micro/{}/{clip}", class.name())),
                name: Box::new(|f| format!("reg_image{f:06}.bmp")),
                ext: ".bmp",
                face: cfg.subjects + s - 1,
                emotion: class.name().into(),
            });
        }
    }
    // SAMM
    let samm_emotion = |c: Class, r: &mut Rng| match c {
        Class::Positive => "Happiness",
        Class::Surprise => "Surprise",
        Class::Negative => ["Anger", "Contempt", "Disgust", "Fear", "Sadness"][r.int_in(0, 5)],
    };
    for s in 1..=per {
        let sub = format!("{:03}", 5 + s);
        for j in 0..cfg.samples_per_subject {
            let class = classes[k];
            k += 1;
            let digits = if rng.chance(0.5) { 4 } else { 5 };
            let onset = rng.int_in(100, 9000) as u32;
            let file = format!("{sub}_{}_{}", j % 7 + 1, j / 7 + 1);
            let sub2 = sub.clone();
            plans.push(MegcPlan {
                meta: SampleMeta {
                    dataset: Dataset::Samm,
                    subject: sub.clone(),
                    sample: file.clone(),
                    onset,
                    apex: onset + n / 2,
                    class,
                },
                dir: PathBuf::from(format!("SAMM/{sub}/{file}")),
                name: Box::new(move |f| format!("{sub2}_{f:0digits$}.jpg")),
                ext: ".jpg",
                face: cfg.subjects + per + s - 1,
                emotion: samm_emotion(class, &mut rng).into(),
            });
        }
    }
    let faces: Vec<Face> = (0..cfg.subjects + 2 * per)
        .map(|f| Face::new(&mut self::rng(cfg.seed, &[0xFACE, f as u64]), cfg.size))
        .collect();
    plans
        .par_iter()
        .enumerate()
        .try_for_each(|(i, p)| -> Result<()> {
            let mut r = self::rng(cfg.seed, &[0x3E6C, 1, i as u64]);
            let face = &faces[p.face];
            let (motion, _) = make_motion(face, p.meta.class, cfg, &mut r);
            let dir = root.join(&p.dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let noise = r.next_u64();
            for f in 0..cfg.frames {
                let path = dir.join((p.name)(p.meta.onset + f as u32));
                let bgr = render(face, &motion, f, cfg.size, noise);
                let bytes = encode(&bgr, cfg.size, cfg.jpeg_quality, &path, p.ext)?;
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            }
            Ok(())
        })?;
    let mut images = plans.len() * cfg.frames;
    // Planted: a non-micro SMIC clip (skipped by the indexer) and a SAMM `Other` row.
    let nm = root.join(&hs).join("s1/non_micro/negative/s1_ne_99");
    std::fs::create_dir_all(&nm).map_err(|e| Error::io(&nm, e))?;
    let face = &faces[cfg.subjects];
    let (motion, _) = make_motion(
        face,
        Class::Negative,
        cfg,
        &mut self::rng(cfg.seed, &[0x3E6C, 3]),
    );
    for f in 0..2u32 {
        let path = nm.join(format!("reg_image{:06}.bmp", 900_000 + f));
        let bgr = render(face, &motion, f as usize, cfg.size, 7);
        std::fs::write(
            &path,
            encode(&bgr, cfg.size, cfg.jpeg_quality, &path, ".bmp")?,
        )
        .map_err(|e| Error::io(&path, e))?;
        images += 1;
    }
    let text = |t: &str| Value::Text(t.to_string());
    let mut rows: Vec<Vec<Value>> = vec![
        vec![text("SAMM Micro-Movement FACS Codes (synthetic)")],
        vec![],
        vec![text("Updated: synthetic database")],
        vec![Value::Empty, Value::Empty, Value::Empty, Value::Empty, text("Notes")],
        vec![],
        vec![text("Symbol Key")],
        vec![text("/ = or")],
        vec![text("? = offset unclear")],
        vec![],
        vec![text("AU Help")],
        vec![text("L = left, R = right")],
        vec![text("A-E = intensity")],
        vec![],
        header_row("Subject|Filename|Inducement Code|Onset Frame|Apex Frame|Offset Frame|Duration|Micro|Action Units|Estimated Emotion|Objective Classes|Notes"),
    ];
    for p in plans.iter().filter(|p| p.meta.dataset == Dataset::Samm) {
        let m = &p.meta;
        let code: u32 = m
            .sample
            .split('_')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        rows.push(vec![
            text(&m.subject),
            text(&m.sample),
            Value::Number(code as f64),
            m.onset.into(),
            m.apex.into(),
            (m.onset + n - 1).into(),
            Value::Number(n as f64),
            text("Micro - 1/2"),
            text("4+7"),
            text(&p.emotion),
            Value::Number(1.0),
        ]);
    }
    let other = format!("{:03}_9_9", 6);
    rows.push(vec![
        text("006"),
        text(&other),
        Value::Number(9.0),
        Value::Number(100.0),
        Value::Number(103.0),
        Value::Number(106.0),
        Value::Number(7.0),
        text("Micro - 1/2"),
        text("12"),
        text("Other"),
        Value::Number(7.0),
    ]);
    write_xlsx(
        &root.join("SAMM/SAMM_Micro_FACS_Codes_v2.xlsx"),
        &[SheetData {
            name: "MICRO_ONLY".into(),
            rows,
        }],
    )?;
    Ok((plans.into_iter().map(|p| p.meta).collect(), 1, images))
}

/// Reads the completion marker of a synthetic database, if it is complete.
pub fn read_marker(root: &Path) -> Option<SynthReport> {
    let bytes = std::fs::read(root.join(SYNTH_MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Makes sure a complete synthetic database of `cfg` exists at `path`: generates it if
/// absent, returns at once if present (idempotent). Errors if `path` holds anything else
/// (another configuration or an incomplete database: nothing is deleted).
pub fn ensure_synth(path: &Path, cfg: &SynthConfig) -> Result<SynthReport> {
    if let Some(r) = read_marker(path) {
        if r.config == *cfg && r.version == SYNTH_VERSION {
            return Ok(r);
        }
        return Err(Error::Destination {
            path: path.to_path_buf(),
            message: format!(
                "holds a synthetic database of another configuration or version ({:?}, version {}); remove it or pick another path",
                r.config, r.version
            ),
        });
    }
    if path.exists()
        && std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .next()
            .is_some()
    {
        return Err(Error::Destination {
            path: path.to_path_buf(),
            message: format!("exists but is not a complete synthetic database (no {SYNTH_MARKER})"),
        });
    }
    tracing::info!(path = %path.display(), "generating the synthetic database");
    synthesize(path, cfg)
}

/// [`ensure_synth`] with the default configuration: what `cargo xtask ablation` uses.
pub fn ensure_default_synth(path: &Path) -> Result<SynthReport> {
    ensure_synth(path, &SynthConfig::default())
}

#[cfg(test)]
mod tests;
