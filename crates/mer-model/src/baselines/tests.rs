//! Tests of the baselines: names and shapes, the formula weights against
//! `formula_weights_check.json`, parity with the PyTorch reference outputs (logits and stage
//! outputs, formula weights and the real STSTNet `.pth`), torchstat totals, training mode,
//! state-dict round trips.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::formula::{self, Kind};
use super::*;
use crate::npy::read_tensor;
use crate::{abs_max, reference_or_skip};

const BASELINES: &str = "baselines";

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    abs_max(&(a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap())
}

#[test]
fn names_shapes_and_parsing() {
    for b in Baseline::ALL {
        assert_eq!(Baseline::from_name(b.name()).unwrap(), b);
        assert_eq!(b.name().parse::<Baseline>().unwrap(), b);
    }
    assert_eq!(
        Baseline::from_name("Micro_Attention").unwrap(),
        Baseline::MicroAttention
    );
    let e = Baseline::from_name("resnet").unwrap_err().to_string();
    assert!(e.contains("resnet") && e.contains("ststnet"), "{e}");
    assert_eq!(Baseline::OffApexNet.input_shape(), (2, 28));
    assert_eq!(Baseline::Ststnet.input_shape(), (3, 28));
    assert_eq!(Baseline::Macnn.input_shape(), (3, 112));
    assert_eq!(Baseline::MicroAttention.input_shape(), (3, 224));
}

#[test]
fn wrong_input_shapes_are_errors_naming_expected_and_found() {
    let dev = Device::Cpu;
    let m = BaselineNet::random(Baseline::Ststnet, &dev).unwrap();
    let x = Tensor::zeros((2, 2, 28, 28), DType::F32, &dev).unwrap();
    let e = m.forward_t(&x, false).unwrap_err().to_string();
    assert!(
        e.contains("[N, 3, 28, 28]") && e.contains("STSTNet") && e.contains("[2, 2, 28, 28]"),
        "{e}"
    );
    let m = BaselineNet::random(Baseline::OffApexNet, &dev).unwrap();
    for shape in [
        vec![2, 3, 28, 28],
        vec![2, 2, 27, 28],
        vec![2, 28, 28],
        vec![0, 2, 28, 28],
    ] {
        let x = Tensor::zeros(shape.as_slice(), DType::F32, &dev).unwrap();
        let e = m.forward_t(&x, true).unwrap_err().to_string();
        assert!(
            e.contains("[N, 2, 28, 28]") && e.contains(&format!("{shape:?}")),
            "{e}"
        );
    }
}

#[test]
fn padded_max_pool_pads_with_minus_infinity_and_routes_the_gradient_to_the_first_max() {
    let dev = Device::Cpu;
    // All-negative input: zero padding would give 0 at the borders.
    let v: Vec<f32> = (0..16).map(|i| -1.0 - i as f32).collect();
    let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 4, 4), &dev).unwrap()).unwrap();
    let y = max_pool_padded(x.as_tensor(), 3, 3, 1).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    // Window rows -1..1, cols -1..1 holds x[0..2, 0..2]: max -1; (0, 1) covers cols 2..4.
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [-1.0, -3.0, -9.0, -11.0]
    );
    let y = max_pool_padded(x.as_tensor(), 3, 1, 1).unwrap();
    assert_eq!(y.dims(), &[1, 1, 4, 4]);
    assert!(y
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| *v < 0.0));
    // Ties: the gradient goes to the first maximum of each window only.
    let z = Var::zeros((1, 1, 4, 4), DType::F32, &dev).unwrap();
    let g = max_pool_padded(z.as_tensor(), 3, 3, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = g
        .get(z.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    #[rustfmt::skip]
    let want = [
        1.0, 0.0, 1.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        1.0, 0.0, 1.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(g, want);
}

/// The padded max-pool kernel against the plain candle ops, forward and gradient, for the
/// baselines' three geometries and a 2x2 one, on values with many ties, f32 and f64.
#[test]
fn padded_max_pool_kernel_equals_the_plain_ops() {
    let dev = Device::Cpu;
    for (k, st, p, h) in [(3, 3, 1, 28), (3, 1, 1, 14), (3, 2, 1, 17), (2, 2, 0, 9)] {
        for dtype in [DType::F32, DType::F64] {
            // Values in {-2, -1, 0, 1, 2}: ties in most windows.
            let v: Vec<f64> = (0..2 * 3 * h * h)
                .map(|i| ((i * 7919 + i / 5) % 5) as f64 - 2.0)
                .collect();
            let x = Tensor::from_vec(v, (2, 3, h, h), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // Small integer output gradients: their sums are exact in any order, so the
            // comparison checks the routing to the first maximum, bit for bit.
            let dims = max_pool_padded(&x, k, st, p).unwrap().dims().to_vec();
            let rv: Vec<f64> = (0..dims.iter().product::<usize>())
                .map(|i| ((i * 31) % 7) as f64 - 3.0)
                .collect();
            let r = Tensor::from_vec(rv, dims, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let run = || {
                let xv = Var::from_tensor(&x).unwrap();
                let y = max_pool_padded(xv.as_tensor(), k, st, p).unwrap();
                let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g = g.get(xv.as_tensor()).unwrap().clone();
                let f = |t: &Tensor| {
                    t.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                };
                (f(&y), f(&g))
            };
            let fast = run();
            let plain = crate::with_plain_ops(run);
            assert!(fast == plain, "k {k} s {st} p {p} {dtype:?}");
        }
    }
}

/// The README's check values, as printed there.
#[allow(clippy::excessive_precision)]
#[test]
fn formula_check_values_of_the_readme() {
    assert_eq!(formula::splitmix64(0), 0xE220_A839_7B1D_CDAF);
    assert_eq!(formula::unit(0, 0), 0.7666216164272852);
    assert_eq!(formula::unit(0, 1), 0.1331231503445618);
    assert_eq!(formula::unit(0, 2), 0.18237946839615882);
    assert_eq!(formula::unit(1, 0), 0.532603514678172);
    let w = formula::values(0, &[6, 1, 5, 5], Kind::Weight);
    assert_eq!(&w[..3], &[0.26556551f32, 0.046115212, 0.063178100]);
    let b = formula::values(1, &[6], Kind::Bias);
    assert_eq!(&b[..3], &[0.053260352f32, -0.074793793, 0.040186249]);
}

/// Every entry of every model against `formula_weights_check.json`: key, shape and kind in
/// state_dict order, the first three and the last value bit for bit, and the float64 sum.
/// (The file's sha256 is not checked: no sha2 crate in the workspace.)
#[test]
fn formula_weights_match_the_check_file_for_all_five_models() {
    let Some(dir) = reference_or_skip(
        "formula_weights_match_the_check_file",
        "baselines/formula_weights_check.json",
    ) else {
        return;
    };
    let text =
        std::fs::read_to_string(dir.join(BASELINES).join("formula_weights_check.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dev = Device::Cpu;
    for b in Baseline::ALL {
        let entries = json["models"][b.reference_name()]["state_dict"]
            .as_array()
            .unwrap();
        let model = BaselineNet::random(b, &dev).unwrap();
        let layout = model.state_dict_layout();
        assert_eq!(layout.len(), entries.len(), "{b}: entry count");
        for (k, ((name, shape, is_bn), e)) in layout.iter().zip(entries).enumerate() {
            assert_eq!(e["k"].as_u64().unwrap(), k as u64);
            assert_eq!(e["key"].as_str().unwrap(), name, "{b}: key {k}");
            let want_shape: Vec<usize> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(&want_shape, shape, "{b}: {name}");
            let kind = Kind::of(name, shape, *is_bn);
            assert_eq!(e["kind"].as_str().unwrap(), kind.label(), "{b}: {name}");
            if kind == Kind::BnNumBatchesTracked {
                assert_eq!(e["sum_f64"].as_f64().unwrap(), 0.0);
                continue;
            }
            let v = formula::values(k as u64, shape, kind);
            let first: Vec<f32> = e["first"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let n = first.len().min(v.len());
            assert_eq!(&v[..n], &first[..n], "{b}: {name} first values");
            assert_eq!(
                *v.last().unwrap(),
                e["last"].as_f64().unwrap() as f32,
                "{b}: {name} last value"
            );
            let sum: f64 = v.iter().map(|&x| x as f64).sum();
            let abs: f64 = v.iter().map(|&x| (x as f64).abs()).sum();
            let want = e["sum_f64"].as_f64().unwrap();
            assert!(
                (sum - want).abs() <= 1e-12 * (1.0 + abs),
                "{b}: {name} sum {sum} vs {want}"
            );
        }
    }
}

/// The stages the reference files hold, per model.
fn stage_names(b: Baseline) -> &'static [&'static str] {
    match b {
        Baseline::OffApexNet => &["cnn1", "cnn2", "dense_1"],
        Baseline::Ststnet => &["stream1", "stream2", "stream3", "pool", "dense_1"],
        Baseline::DualInception => &["icpt1_0", "icpt2_0", "icpt1_1", "icpt2_1", "dense_1"],
        Baseline::Macnn => &[
            "res_vgg_0",
            "res_vgg_1",
            "res_vgg_2",
            "res_vgg_3",
            "aconv",
            "dense_1",
        ],
        Baseline::MicroAttention => &[
            "pool",
            "ma_0_convl_1",
            "ma_0",
            "ma_2",
            "ma_4",
            "ma_0_softmax",
            "ma_2_softmax",
            "ma_4_softmax",
            "dense_1",
        ],
    }
}

/// Formula weights, eval mode: the batch's logits and input 0's stage outputs against the
/// reference. Differences are relative to `max(1, max |reference|)` (the softmax maps,
/// whose values are about 1 / positions, relative to their own maximum); asserts `tol`.
fn parity(b: Baseline, tol: f64) {
    let name = b.reference_name();
    let test = format!("{name}_parity");
    let Some(dir) = reference_or_skip(&test, &format!("baselines/{name}_logits.npy")) else {
        return;
    };
    let dir = dir.join(BASELINES);
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let model = BaselineNet::with_formula_weights(b, &dev).unwrap();
    let t_weights = t0.elapsed();
    let x = read_tensor(dir.join(format!("{name}_inputs.npy")), &dev).unwrap();
    let want = read_tensor(dir.join(format!("{name}_logits.npy")), &dev).unwrap();
    let got = model.forward_t(&x, false).unwrap();
    let mut report = Vec::new();
    let d = max_abs_diff(&got, &want);
    let rel = d / abs_max(&want).max(1.0);
    report.push(format!("logits {d:.2e}"));
    assert!(
        rel <= tol,
        "{name}: logits differ by {d:e} (relative {rel:e} > {tol:e})"
    );
    let (_, stages) = model
        .forward_with_stages(&x.narrow(0, 0, 1).unwrap())
        .unwrap();
    for s in stage_names(b) {
        let want = read_tensor(dir.join(format!("{name}_input0_{s}.npy")), &dev).unwrap();
        let got = &stages
            .iter()
            .find(|(n, _)| n == s)
            .unwrap_or_else(|| panic!("{name}: no stage {s}"))
            .1;
        let d = max_abs_diff(got, &want);
        let scale = if s.ends_with("softmax") {
            abs_max(&want)
        } else {
            abs_max(&want).max(1.0)
        };
        report.push(format!("{s} {d:.2e} (scale {scale:.3e})"));
        assert!(
            d / scale <= tol,
            "{name}: stage {s} differs by {d:e} (scale {scale:e})"
        );
    }
    eprintln!(
        "{name}: max |ours - reference|: {}; weights {:.2?}, total {:.2?}",
        report.join(", "),
        t_weights,
        t0.elapsed()
    );
}

#[test]
fn off_apexnet_matches_the_reference() {
    parity(Baseline::OffApexNet, 1e-5);
}

#[test]
fn ststnet_matches_the_reference() {
    parity(Baseline::Ststnet, 1e-5);
}

#[test]
fn dual_inception_matches_the_reference() {
    parity(Baseline::DualInception, 1e-5);
}

#[test]
fn macnn_matches_the_reference() {
    parity(Baseline::Macnn, 1e-5);
}

#[test]
fn micro_attention_matches_the_reference() {
    parity(Baseline::MicroAttention, 1e-5);
}

#[test]
fn ststnet_reference_pth_loads_and_gives_its_logits() {
    let Some(dir) = reference_or_skip("ststnet_pth", "baselines/ststnet_random_init.pth") else {
        return;
    };
    let dir = dir.join(BASELINES);
    let dev = Device::Cpu;
    let model =
        BaselineNet::load(Baseline::Ststnet, dir.join("ststnet_random_init.pth"), &dev).unwrap();
    let x = read_tensor(dir.join("ststnet_random_init_inputs.npy"), &dev).unwrap();
    let want = read_tensor(dir.join("ststnet_random_init_logits.npy"), &dev).unwrap();
    let d = max_abs_diff(&model.forward_t(&x, false).unwrap(), &want);
    eprintln!("ststnet_random_init: max |ours - reference| logits {d:.2e}");
    assert!(d <= 1e-5, "{d}");
    // Loading it as another model names what is missing.
    let e = BaselineNet::load(
        Baseline::OffApexNet,
        dir.join("ststnet_random_init.pth"),
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("missing") && e.contains("cnn1.conv1.weight"),
        "{e}"
    );
}

/// torchstat totals equal the notes' "our" columns: Params, Flops, MemR+W (MiB, 2 decimals);
/// the summary's parameters equal the model's.
#[test]
fn torchstat_totals_equal_the_notes() {
    let want = [
        (Baseline::OffApexNet, 2_664_475, 3_866_688, "10.35"),
        (Baseline::Ststnet, 162_051, 526_976, "0.76"),
        (Baseline::DualInception, 6_449_867, 12_643_744, "26.27"),
        (Baseline::Macnn, 70_573_923, 797_686_784, "297.96"),
        (
            Baseline::MicroAttention,
            53_384_195,
            1_002_482_688,
            "237.97",
        ),
    ];
    let dev = Device::Cpu;
    for (b, params, flops, mem) in want {
        let s = BaselineNet::random(b, &dev).map(|m| {
            assert_eq!(m.num_params(), params, "{b}: model parameters");
            m.summary()
        });
        let s = s.unwrap();
        assert_eq!(b.expected_params(), params);
        assert_eq!(s.total_params(), params, "{b}: summary parameters");
        assert_eq!(s.total_flops(), flops, "{b}: Flops");
        assert_eq!(format!("{:.2}", s.total_mem_rw_mib()), mem, "{b}: MemR+W");
        let text = s.to_string();
        assert!(text.ends_with(&format!("total params: {params}")), "{text}");
    }
    // torchstat's printing of the paper's figures.
    use super::summary::torchstat_format;
    assert_eq!(torchstat_format(3_866_688.0, 1000.0), "3.87M");
    assert_eq!(torchstat_format(1_002_482_688.0, 1000.0), "1.0G");
    assert_eq!(torchstat_format(526_976.0, 1000.0), "526.98K");
    let st = summarize_bytes(Baseline::Ststnet);
    assert_eq!(torchstat_format(st as f64, 1024.0), "780.46K");
}

fn summarize_bytes(b: Baseline) -> u64 {
    super::summary::summarize(b).total_mem_rw_bytes()
}

#[test]
fn training_mode_uses_dropout_and_batch_statistics() {
    let dev = Device::Cpu;
    // Off-ApexNet: dropout only in training.
    let m = BaselineNet::random(Baseline::OffApexNet, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 2, 28, 28), &dev).unwrap();
    let e1 = m.forward_t(&x, false).unwrap();
    let e2 = m.forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&e1, &e2), 0.0, "evaluation is deterministic");
    let t = m.forward_t(&x, true).unwrap();
    assert!(max_abs_diff(&e1, &t) > 0.0, "training applies dropout");
    // Seeded dropout repeats its masks; another seed gives others.
    m.seed_dropout(7);
    let s1 = m.forward_t(&x, true).unwrap();
    let s2 = m.forward_t(&x, true).unwrap();
    assert!(max_abs_diff(&s1, &s2) > 0.0, "successive masks differ");
    m.seed_dropout(7);
    assert_eq!(max_abs_diff(&s1, &m.forward_t(&x, true).unwrap()), 0.0);
    m.seed_dropout(8);
    assert!(max_abs_diff(&s1, &m.forward_t(&x, true).unwrap()) > 0.0);
    // STSTNet and Dual-Inception have no dropout nor BatchNorm: both modes agree.
    for b in [Baseline::Ststnet, Baseline::DualInception] {
        let m = BaselineNet::random(b, &dev).unwrap();
        let (c, s) = b.input_shape();
        let x = Tensor::randn(0f32, 1.0, (2, c, s, s), &dev).unwrap();
        let d = max_abs_diff(
            &m.forward_t(&x, false).unwrap(),
            &m.forward_t(&x, true).unwrap(),
        );
        assert!(d < 1e-6, "{b}: {d}");
    }
}

/// Micro-Attention's BatchNorm in training: batch statistics and PyTorch's running update
/// (momentum 0.1, unbiased variance), `num_batches_tracked` counted; eval uses the running
/// statistics; the state dict round-trips through safetensors with them.
#[test]
fn micro_attention_batch_norm_updates_running_stats_and_round_trips() {
    let dev = Device::Cpu;
    let m = BaselineNet::random(Baseline::MicroAttention, &dev).unwrap();
    let x = (Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &dev).unwrap() * 2.0).unwrap();
    let sd0 = m.state_dict().unwrap();
    let get = |sd: &[(String, Tensor)], k: &str| sd.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let y = m.forward_t(&x, true).unwrap();
    assert_eq!(y.dims(), &[2, 3]);
    let sd1 = m.state_dict().unwrap();
    for bn in ["ma.0.convl_1.1", "ma.4.convl_2.1"] {
        let nbt = get(&sd1, &format!("{bn}.num_batches_tracked"))
            .to_scalar::<i64>()
            .unwrap();
        assert_eq!(nbt, 1, "{bn}");
        let (m0, m1) = (
            get(&sd0, &format!("{bn}.running_mean")),
            get(&sd1, &format!("{bn}.running_mean")),
        );
        assert!(max_abs_diff(&m0, &m1) > 0.0, "{bn}: running mean updated");
    }
    // The first BatchNorm's update by hand: the batch statistics of conv(pool(stem(x))).
    let (_, stages) = m.forward_with_stages(&x).unwrap();
    let pool = &stages.iter().find(|(n, _)| n == "pool").unwrap().1;
    let Inner::MicroAttention(inner) = &m.inner else {
        unreachable!()
    };
    let h = inner.blocks[0].convl_1.conv.forward(pool).unwrap();
    let count = (2 * 56 * 56) as f64;
    let mean = h
        .to_dtype(DType::F64)
        .unwrap()
        .mean_keepdim((0, 2, 3))
        .unwrap();
    let var = h
        .to_dtype(DType::F64)
        .unwrap()
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_keepdim((0, 2, 3))
        .unwrap()
        .flatten_all()
        .unwrap();
    let want_var = ((var * (0.1 * count / (count - 1.0))).unwrap() + 0.9).unwrap();
    let got_var = get(&sd1, "ma.0.convl_1.1.running_var");
    assert!(max_abs_diff(&got_var, &want_var) < 1e-4);
    let want_mean = (mean.flatten_all().unwrap() * 0.1).unwrap();
    let got_mean = get(&sd1, "ma.0.convl_1.1.running_mean");
    assert!(max_abs_diff(&got_mean, &want_mean) < 1e-5);
    // Evaluation is deterministic and uses the running statistics; a safetensors round trip
    // keeps everything.
    let e1 = m.forward_t(&x, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ma.safetensors");
    m.save_safetensors(&p).unwrap();
    let back = BaselineNet::load(Baseline::MicroAttention, &p, &dev).unwrap();
    assert_eq!(max_abs_diff(&e1, &back.forward_t(&x, false).unwrap()), 0.0);
    let nbt = get(
        &back.state_dict().unwrap(),
        "ma.2.convl_1.1.num_batches_tracked",
    );
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 1);
}

#[test]
fn state_dicts_round_trip_through_safetensors() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    for b in [
        Baseline::OffApexNet,
        Baseline::Ststnet,
        Baseline::DualInception,
    ] {
        let m = BaselineNet::with_formula_weights(b, &dev).unwrap();
        let p = dir.path().join(format!("{}.safetensors", b.name()));
        m.save_safetensors(&p).unwrap();
        let back = BaselineNet::load(b, &p, &dev).unwrap();
        let (c, s) = b.input_shape();
        let x = Tensor::randn(0f32, 1.0, (2, c, s, s), &dev).unwrap();
        assert_eq!(
            max_abs_diff(
                &m.forward_t(&x, false).unwrap(),
                &back.forward_t(&x, false).unwrap()
            ),
            0.0
        );
        // formula_state_dict gives the same tensors as set_formula_weights.
        let sd = formula::formula_state_dict(&m).unwrap();
        let own = m.state_dict().unwrap();
        assert_eq!(sd.len(), own.len());
        for ((k1, t1), (k2, t2)) in sd.iter().zip(&own) {
            assert_eq!(k1, k2);
            if t1.dtype() == DType::F32 {
                assert_eq!(max_abs_diff(t1, t2), 0.0, "{k1}");
            }
        }
        assert!(Path::new(&p).exists());
        // A weights file of another extension is refused.
        let e = m.load_file(dir.path().join("w.bin"));
        assert!(e.is_err());
    }
}

/// Deterministic f64 values in `[-scale/10, scale/10)` (the formula's bias kind, entry `k`).
fn fixed(k: u64, shape: &[usize], scale: f64) -> Tensor {
    let v: Vec<f64> = formula::values(k, shape, Kind::Bias)
        .into_iter()
        .map(|x| x as f64 * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Sets every parameter in `entries` to deterministic values (the formula's, by position).
fn fill_fixed(entries: &[crate::layers::Entry]) {
    for (k, e) in entries.iter().enumerate() {
        if let crate::layers::Entry::Param { name, tensor } = e {
            let kind = if tensor.rank() >= 2 {
                Kind::Weight
            } else if name.contains("convl_") && name.contains(".1.") {
                Kind::BnWeight
            } else {
                Kind::Bias
            };
            let v: Vec<f64> = formula::values(k as u64, tensor.dims(), kind)
                .into_iter()
                .map(f64::from)
                .collect();
            Var::from_tensor(tensor)
                .unwrap()
                .set(&Tensor::from_vec(v, tensor.shape(), tensor.device()).unwrap())
                .unwrap();
        }
    }
}

/// `sum(logits * r)` for a fixed `r`, the scalar the gradient checks differentiate.
fn probe_loss(m: &BaselineNet, x: &Tensor, r: &Tensor, train: bool) -> Tensor {
    (m.forward_t(x, train).unwrap() * r)
        .unwrap()
        .sum_all()
        .unwrap()
}

/// Central finite differences (f64, eval mode: no dropout) against the backward pass, for
/// the first, a middle and the last element of every parameter of the three small models:
/// convolutions (fast kernels), minus-infinity-padded pools, concatenations, dense heads.
#[test]
fn small_models_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    for b in [
        Baseline::OffApexNet,
        Baseline::Ststnet,
        Baseline::DualInception,
    ] {
        // Deterministic weights and inputs, so that no run lands on a ReLU or pool kink.
        let m = BaselineNet::random_with_dtype(b, DType::F64, &dev).unwrap();
        m.set_formula_weights().unwrap();
        let (c, s) = b.input_shape();
        let x = fixed(1000, &[2, c, s, s], 20.0);
        let r = fixed(1001, &[2, 3], 10.0);
        let grads = probe_loss(&m, &x, &r, false).backward().unwrap();
        let mut worst = 0f64;
        for (name, t) in m.named_parameters() {
            let g = grads
                .get(&t)
                .unwrap_or_else(|| panic!("{b}: no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let var = Var::from_tensor(&t).unwrap();
            let base = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let n = base.len();
            for i in [0, n / 2, n - 1] {
                let eps = 1e-6;
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    var.set(&Tensor::from_vec(v, t.shape(), &dev).unwrap())
                        .unwrap();
                    probe_loss(&m, &x, &r, false).to_scalar::<f64>().unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(base.clone(), t.shape(), &dev).unwrap())
                    .unwrap();
                let err = (fd - g[i]).abs() / (1.0 + g[i].abs());
                worst = worst.max(err);
                assert!(
                    err < 1e-5,
                    "{b}: {name}[{i}]: backward {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
        eprintln!("{b}: worst relative gradient error {worst:.1e}");
    }
}

/// Micro-Attention in training mode: every parameter gets a finite gradient, and exactly the
/// `convr` biases get zero (the softmax removes the constant they add).
#[test]
fn micro_attention_convr_bias_gets_no_gradient() {
    let dev = Device::Cpu;
    let m = BaselineNet::random(Baseline::MicroAttention, &dev).unwrap();
    let x = Tensor::randn(0f32, 2.0, (2, 3, 224, 224), &dev).unwrap();
    let r = Tensor::randn(0f32, 1.0, (2, 3), &dev).unwrap();
    let grads = probe_loss(&m, &x, &r, true).backward().unwrap();
    for (name, t) in m.named_parameters() {
        let g = abs_max(
            grads
                .get(&t)
                .unwrap_or_else(|| panic!("no gradient for {name}")),
        );
        assert!(g.is_finite(), "{name}");
        if name.ends_with("convr.bias") {
            assert!(g < 1e-9, "{name}: {g}");
        } else {
            assert!(g > 0.0, "{name}: zero gradient");
        }
    }
}

/// Central finite differences against the backward pass of `loss` for the first, a middle
/// and the last element of every parameter in `entries` (f64); returns the worst error.
fn finite_difference_check(
    label: &str,
    entries: &[crate::layers::Entry],
    loss: impl Fn() -> Tensor,
) -> f64 {
    let dev = Device::Cpu;
    let grads = loss().backward().unwrap();
    let mut worst = 0f64;
    for e in entries {
        let crate::layers::Entry::Param { name, tensor: t } = e else {
            continue;
        };
        let g = grads
            .get(t)
            .unwrap_or_else(|| panic!("{label}: no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let var = Var::from_tensor(t).unwrap();
        let base = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let n = base.len();
        for i in [0, n / 2, n - 1] {
            let eps = 1e-6;
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                var.set(&Tensor::from_vec(v, t.shape(), &dev).unwrap())
                    .unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), t.shape(), &dev).unwrap())
                .unwrap();
            let err = (fd - g[i]).abs() / (1.0 + g[i].abs());
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{label}: {name}[{i}]: backward {} vs finite difference {fd}",
                g[i]
            );
        }
    }
    eprintln!("{label}: worst relative gradient error {worst:.1e}");
    worst
}

/// The blocks of the large models, small (f64): a MACNN residual block (convolutions, the
/// fused residual pool) and atrous convolution, and a micro-attention block in training mode
/// (BatchNorm on batch statistics, the attention softmax), against finite differences.
#[test]
fn large_models_blocks_gradients_match_finite_differences() {
    use crate::layers::Ctx;
    let dev = Device::Cpu;
    let x = fixed(2000, &[2, 3, 8, 8], 10.0);

    let vm = candle_nn::VarMap::new();
    let ctx = Ctx::new(VarBuilder::from_varmap(&vm, DType::F64, &dev));
    let block = super::macnn::ResVgg::new(&ctx.pp("res"), 3, 4).unwrap();
    let aconv = DilatedConv::new(&ctx.pp("aconv"), 4, 4, 3, 2, 2).unwrap();
    let r = fixed(2001, &[2, 4, 4, 4], 10.0);
    let entries = ctx.reg.entries();
    fill_fixed(&entries);
    finite_difference_check("macnn blocks", &entries, || {
        let h = aconv.forward(&block.forward(&x).unwrap()).unwrap();
        (crate::layers::relu(&h).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
    });

    let vm = candle_nn::VarMap::new();
    let ctx = Ctx::new(VarBuilder::from_varmap(&vm, DType::F64, &dev));
    let block = super::micro_attention::MaBlock::new(&ctx.pp("ma"), 3, 4).unwrap();
    let r = fixed(2002, &[2, 4, 8, 8], 10.0);
    let entries = ctx.reg.entries();
    fill_fixed(&entries);
    finite_difference_check("micro-attention block", &entries, || {
        let mut f = Fwd {
            train: true,
            stages: None,
            rng: None,
        };
        // Scaled so that the attention term is not negligible beside s.
        let y = block.forward(&(&x * 3.0).unwrap(), &mut f, "ma").unwrap();
        (y * &r).unwrap().sum_all().unwrap()
    });
}

/// Micro-Attention's block computes the channel mean of `convr` as three 1x1
/// convolutions with the weight's column means: the same output and gradients (every
/// parameter's, the `convr` weight's rows and bias included) as the full layer followed by
/// the mean, which the plain path computes (f64, to rounding).
#[test]
fn micro_attention_channel_mean_of_convr_equals_the_full_layer() {
    use crate::layers::Ctx;
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let ctx = Ctx::new(VarBuilder::from_varmap(&vm, DType::F64, &dev));
    let block = super::micro_attention::MaBlock::new(&ctx.pp("ma"), 3, 4).unwrap();
    let entries = ctx.reg.entries();
    fill_fixed(&entries);
    let x = (fixed(2100, &[2, 3, 8, 8], 10.0) * 3.0).unwrap();
    let r = fixed(2101, &[2, 4, 8, 8], 10.0);
    let run = || {
        let mut f = Fwd {
            train: true,
            stages: None,
            rng: None,
        };
        let y = block.forward(&x, &mut f, "ma").unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![("output".to_string(), y)];
        for e in &entries {
            if let crate::layers::Entry::Param { name, tensor } = e {
                let g = grads
                    .get(tensor)
                    .cloned()
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                out.push((name.clone(), g));
            }
        }
        out
    };
    let fast = run();
    let plain = crate::with_plain_ops(run);
    for ((name, a), (_, b)) in fast.iter().zip(&plain) {
        let scale = abs_max(b).max(1e-12);
        let d = max_abs_diff(a, b);
        assert!(
            d <= 1e-10 * scale.max(1.0),
            "{name}: differs by {d} (scale {scale})"
        );
    }
}

/// A baseline fits three random samples with the three labels (training through
/// [`crate::Trainer`] with its reference optimiser: Adam 1e-3, SGD with momentum 0.9 and
/// weight decay 5e-4 for Micro-Attention) to 100% accuracy in evaluation mode, and lowers
/// the loss to under half.
fn overfits(b: Baseline) {
    use crate::{AdamConfig, SgdConfig, Trainer};
    let dev = Device::Cpu;
    let labels: Vec<u32> = vec![0, 1, 2];
    let y = Tensor::new(labels.as_slice(), &dev).unwrap();
    let (c, s) = b.input_shape();
    let x = Tensor::randn(0f32, 1.0, (labels.len(), c, s, s), &dev).unwrap();
    let net = BaselineNet::random(b, &dev).unwrap();
    net.seed_dropout(7);
    let mut t = match b {
        Baseline::MicroAttention => Trainer::with_config(
            net,
            SgdConfig {
                lr: 1e-3,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
        ),
        _ => Trainer::with_config(net, AdamConfig::default()),
    }
    .unwrap();
    let accuracy = |t: &Trainer| {
        let p = t
            .model()
            .forward_t(&x, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        p.iter().zip(&labels).filter(|(a, b)| a == b).count()
    };
    let first = t.step(&x, &y).unwrap();
    let (mut last, mut steps) = (first, 1);
    while steps < 80 {
        last = t.step(&x, &y).unwrap();
        steps += 1;
        if steps % 5 == 0 && accuracy(&t) == labels.len() && last < 0.5 * first {
            break;
        }
    }
    let acc = accuracy(&t);
    eprintln!("{b}: {steps} steps, loss {first:.4} -> {last:.4}, {acc}/3");
    assert_eq!(
        acc,
        labels.len(),
        "{b}: after {steps} steps, loss {first} -> {last}"
    );
    assert!(last < 0.5 * first, "{b}: loss {first} -> {last}");
}

#[test]
fn off_apexnet_overfits() {
    overfits(Baseline::OffApexNet);
}

#[test]
fn ststnet_overfits() {
    overfits(Baseline::Ststnet);
}

#[test]
fn dual_inception_overfits() {
    overfits(Baseline::DualInception);
}

#[test]
fn macnn_overfits() {
    overfits(Baseline::Macnn);
}

#[test]
fn micro_attention_overfits() {
    overfits(Baseline::MicroAttention);
}
