//! Tests of the network: parameter counts, parity with the reference PyTorch outputs,
//! state-dict I/O, errors, and finite-difference gradients.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::{npy, reference_or_skip};

const PTH: &str = "LOSO1_60epoch.pth";

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn parameter_counts_equal_the_reference() {
    // Reference counts (the paper's 59,403 and the reference code's ablation models,
    // counting the parameters the forward pass uses); all-ta and 2-channel counts are ours.
    for (variant, in_ch, want) in [
        (Variant::Ta, 3, 59_403),
        (Variant::Res, 3, 50_353),
        (Variant::Cbam, 3, 56_967),
        (Variant::Sa, 3, 55_549),
        (Variant::Bot, 3, 48_625),
        // res1 as an enhanced block 8->18: 2,362 (was 4,482); res2 18->28: 9,202 (was 12,292).
        (Variant::AllTa, 3, 54_193),
        (Variant::Ta, 2, 59_403 - 8 * 7 * 7),
    ] {
        let cfg = ModelConfig::new(variant).with_in_channels(in_ch);
        let net = OffTaNet::random(&cfg, &Device::Cpu).unwrap();
        assert_eq!(
            net.num_params(),
            want,
            "{variant} with {in_ch} input channels"
        );
        assert_eq!(
            net.trainable_vars()
                .iter()
                .map(|v| v.elem_count())
                .sum::<usize>(),
            want
        );
        let s = net.summary();
        assert_eq!(s.total_params(), want, "summary of {variant}");
        assert!(s.to_string().ends_with(&format!("total params: {want}")));
    }
}

#[test]
fn summary_of_ta_has_reference_shapes() {
    let s = OffTaNet::random(&ModelConfig::default(), &Device::Cpu)
        .unwrap()
        .summary();
    let shape = |name: &str| {
        s.rows
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .output_shape
            .clone()
    };
    for (name, want) in [
        ("conv1.2", vec![8, 56, 56]),
        ("res1.pool", vec![18, 28, 28]),
        ("res2.pool", vec![28, 14, 14]),
        ("eres.ca", vec![28, 1, 1]),
        ("eres.spa", vec![1, 14, 14]),
        ("eres.sa.sa_blocks.3", vec![7, 14, 14]),
        ("eres.pool", vec![8, 7, 7]),
        ("dense.6", vec![3]),
    ] {
        assert_eq!(shape(name), want, "{name}");
    }
    // Stem conv: 8*56*56 outputs, each 3*49 multiplications + 3*49 additions (bias included).
    assert_eq!(s.rows[0].madd, 8 * 56 * 56 * (2 * 147));
    // torchstat's Flops of the whole network: the paper's Table 2 gives 30.08M.
    assert_eq!(s.total_flops(), 30_079_946);
    // torchstat's MemR+W: 1,478,822 values of 4 bytes, printed "5.64MB" (the paper's).
    let values: u64 = s.rows.iter().map(|r| r.mem_rw).sum();
    assert_eq!(values, 1_478_822);
    assert_eq!(
        crate::baselines::torchstat_format(4.0 * values as f64, 1024.0),
        "5.64M"
    );
    assert!((s.total_mem_rw_mib() - 5.641).abs() < 1e-3);
}

/// The released weights: keys, logits of the four reference inputs, intermediates.
#[test]
fn released_weights_reproduce_pytorch_logits() {
    let Some(dir) = reference_or_skip("released_weights_reproduce_pytorch_logits", PTH) else {
        return;
    };
    let dev = Device::Cpu;
    let raw: HashMap<String, Tensor> = candle_core::pickle::read_all(dir.join(PTH))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(raw.len(), 88);
    let net = OffTaNet::load(&ModelConfig::default(), dir.join(PTH), &dev).unwrap();
    // Our state dict has exactly the reference keys and shapes.
    let sd = net.state_dict().unwrap();
    assert_eq!(sd.len(), raw.len());
    for (k, t) in &sd {
        assert_eq!(raw[k].dims(), t.dims(), "{k}");
    }
    let inputs =
        npy::read_tensor(dir.join("offtanet/inputs_seed0_4x1x3x112x112.npy"), &dev).unwrap();
    let want = npy::read_tensor(dir.join("offtanet/logits_seed0_4x3.npy"), &dev).unwrap();
    let mut worst = 0f32;
    for i in 0..4 {
        let got = net.forward_t(&inputs.get(i).unwrap(), false).unwrap();
        worst = worst.max(max_abs_diff(&got, &want.narrow(0, i, 1).unwrap()));
    }
    eprintln!("max |logit - PyTorch| over 4 inputs: {worst:e}");
    assert!(worst < 1e-4, "max |logit diff| {worst}");
    // Batched evaluation agrees with one-by-one.
    let batched = net.forward_t(&inputs.squeeze(1).unwrap(), false).unwrap();
    assert!(max_abs_diff(&batched, &want) < 1e-4);

    let (_, taps) = net.forward_with_taps(&inputs.get(0).unwrap()).unwrap();
    for (file, got) in [
        ("conv1", &taps.stem),
        ("res1", &taps.res1),
        ("res2", &taps.res2),
        ("eres_conv1", &taps.last_conv1),
        ("eres_ca", &taps.channel_attention),
        ("eres_spa", &taps.spatial_attention),
        ("eres_sa", &taps.self_attention),
        ("eres_conv2", &taps.last_conv2),
        ("eres", &taps.last_block),
    ] {
        let want = npy::read_tensor(dir.join(format!("offtanet/input0_{file}.npy")), &dev).unwrap();
        let d = max_abs_diff(got.as_ref().unwrap(), &want);
        eprintln!("input0 {file}: max |diff| {d:e}");
        assert!(d < 1e-4, "{file}: max |diff| {d}");
    }
}

#[test]
fn safetensors_round_trip_keeps_weights_and_statistics() {
    let Some(dir) = reference_or_skip("safetensors_round_trip_keeps_weights_and_statistics", PTH)
    else {
        return;
    };
    let dev = Device::Cpu;
    let net = OffTaNet::load(&ModelConfig::default(), dir.join(PTH), &dev).unwrap();
    let path =
        std::env::temp_dir().join(format!("mer-model-rt-{}.safetensors", std::process::id()));
    net.save_safetensors(&path).unwrap();
    let raw = candle_core::safetensors::load(&path, &dev).unwrap();
    assert_eq!(raw.len(), 88);
    let nbt = &raw["eres.conv2.1.num_batches_tracked"];
    assert_eq!(
        (nbt.dtype(), nbt.to_scalar::<i64>().unwrap()),
        (DType::I64, 305)
    );
    let back = OffTaNet::load(&ModelConfig::default(), &path, &dev).unwrap();
    std::fs::remove_file(&path).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 112, 112), &dev).unwrap();
    let d = max_abs_diff(
        &net.forward_t(&x, false).unwrap(),
        &back.forward_t(&x, false).unwrap(),
    );
    assert_eq!(d, 0.0);
    for ((ka, a), (kb, b)) in net
        .state_dict()
        .unwrap()
        .iter()
        .zip(back.state_dict().unwrap().iter())
    {
        assert_eq!(ka, kb);
        assert_eq!(max_abs_diff(a, b), 0.0, "{ka}");
    }
}

/// Error messages name what was expected and what was found.
#[test]
fn bad_checkpoints_and_inputs_give_clear_errors() {
    let dev = Device::Cpu;
    let ta = OffTaNet::random(&ModelConfig::default(), &dev).unwrap();
    let good: HashMap<String, Tensor> = ta.state_dict().unwrap().into_iter().collect();
    let check = |cfg: ModelConfig, tensors: &HashMap<String, Tensor>, needles: &[&str]| {
        let net = OffTaNet::random(&cfg, &dev).unwrap();
        let err = net
            .load_state_dict(tensors, "ckpt.pth")
            .unwrap_err()
            .to_string();
        for n in needles {
            assert!(err.contains(n), "`{n}` not in: {err}");
        }
        assert!(!err.ends_with('.'), "{err}");
    };
    check(
        ModelConfig::new(Variant::Res),
        &good,
        &[
            "ckpt.pth",
            "missing",
            "`eres.conv.0.weight` [8, 28, 3, 3]",
            "holds 88 tensors",
        ],
    );
    check(
        ModelConfig::default().with_in_channels(2),
        &good,
        &[
            "`conv1.0.weight`",
            "shape [8, 3, 7, 7]",
            "expected [8, 2, 7, 7]",
        ],
    );
    let mut no_stats = good.clone();
    no_stats.remove("res2.conv.4.running_var");
    check(
        ModelConfig::default(),
        &no_stats,
        &["missing 1 of", "`res2.conv.4.running_var` [28]"],
    );
    // Unexpected keys (e.g. the reference `sa` model's unused conv) are ignored.
    let mut extra = good.clone();
    extra.insert(
        "eres.unused.weight".into(),
        Tensor::zeros(3, DType::F32, &dev).unwrap(),
    );
    ta.load_state_dict(&extra, "extra.pth").unwrap();

    for dims in [&[1usize, 2, 112, 112][..], &[3, 112, 112], &[1, 3, 64, 64]] {
        let x = Tensor::zeros(dims, DType::F32, &dev).unwrap();
        let err = ta.forward_t(&x, false).unwrap_err().to_string();
        assert!(
            err.contains("[N, 3, 112, 112]") && err.contains(&format!("{dims:?}")),
            "{err}"
        );
    }
    let err = ta
        .load_file(Path::new("weights.bin"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("weights.bin"), "{err}");
}

#[test]
fn training_forward_updates_batch_norm_statistics_only() {
    let dev = Device::Cpu;
    let net = OffTaNet::random(&ModelConfig::default(), &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 112, 112), &dev).unwrap();
    let before = net.forward_t(&x, false).unwrap();
    let _ = net.forward_t(&x, true).unwrap();
    let sd: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
    assert_eq!(
        sd["conv1.2.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap(),
        1
    );
    assert!(
        max_abs_diff(
            &sd["conv1.2.running_var"],
            &Tensor::ones(8, DType::F32, &dev).unwrap()
        ) > 0.0
    );
    // Evaluation now uses the updated statistics.
    assert!(max_abs_diff(&before, &net.forward_t(&x, false).unwrap()) > 0.0);
    // Evaluation is deterministic, training (dropout) is not.
    let a = net.forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&a, &net.forward_t(&x, false).unwrap()), 0.0);
}

/// Finite differences along a random direction per parameter tensor, in f64, training mode
/// (batch statistics), dropout off, cross-entropy loss.
///
/// A ReLU or max kink between `theta` and `theta +- eps d` spoils a difference quotient;
/// the chance shrinks with the step and a kink spoils one side only. A wrong gradient (a pool
/// scaling it by 1/4, tied maxima each receiving the full gradient) spoils every quotient.
/// So a tensor passes when, for one of the steps 1e-7, 1e-8, 1e-6, the central, forward or
/// backward quotient agrees: `|a - n| <= 1e-4 max(|a|, |n|) + 1e-7`.
fn gradient_check(variant: Variant) {
    let dev = Device::Cpu;
    let cfg = ModelConfig::new(variant).with_dropout(0.0);
    let net = OffTaNet::random_with_dtype(&cfg, DType::F64, &dev).unwrap();
    let x = Tensor::randn(0f64, 1.0, (2, 3, 112, 112), &dev).unwrap();
    let labels = Tensor::new(&[0u32, 2], &dev).unwrap();
    let loss = || -> f64 {
        let logits = net.forward_t(&x, true).unwrap();
        candle_nn::loss::cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let logits = net.forward_t(&x, true).unwrap();
    let l0_t = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let l0 = l0_t.to_scalar::<f64>().unwrap();
    let grads = l0_t.backward().unwrap();
    let mut worst = (0f64, String::new());
    for (name, t) in net.named_parameters() {
        let var = Var::from_tensor(&t).unwrap();
        let orig = t.copy().unwrap();
        let dir = Tensor::randn(0f64, 1.0, t.shape(), &dev).unwrap();
        let analytic = match grads.get(&t) {
            Some(g) => (g * &dir)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            None => 0.0,
        };
        let mut best = (f64::INFINITY, 0.0, 0.0);
        for eps in [1e-7, 1e-8, 1e-6] {
            var.set(&(&orig + (&dir * eps).unwrap()).unwrap()).unwrap();
            let lp = loss();
            var.set(&(&orig - (&dir * eps).unwrap()).unwrap()).unwrap();
            let lm = loss();
            var.set(&orig).unwrap();
            for numeric in [(lp - lm) / (2.0 * eps), (lp - l0) / eps, (l0 - lm) / eps] {
                let err =
                    (analytic - numeric).abs() / (1e-4 * analytic.abs().max(numeric.abs()) + 1e-7);
                if err < best.0 {
                    best = (err, numeric, eps);
                }
            }
            if best.0 <= 1.0 {
                break;
            }
        }
        let msg = format!(
            "{name}: analytic {analytic:e}, numeric {:e} (step {:e}), error {:.3} of the tolerance",
            best.1, best.2, best.0
        );
        assert!(best.0 <= 1.0, "{variant}: {msg}");
        if best.0 >= worst.0 {
            worst = (best.0, msg);
        }
    }
    eprintln!("{variant}: worst {}", worst.1);
}

#[test]
fn gradients_match_finite_differences_ta() {
    gradient_check(Variant::Ta);
}

#[test]
fn gradients_match_finite_differences_res() {
    gradient_check(Variant::Res);
}

#[test]
fn gradients_match_finite_differences_cbam() {
    gradient_check(Variant::Cbam);
}

#[test]
fn gradients_match_finite_differences_sa() {
    gradient_check(Variant::Sa);
}

#[test]
fn gradients_match_finite_differences_bot() {
    gradient_check(Variant::Bot);
}

#[test]
fn gradients_match_finite_differences_all_ta() {
    gradient_check(Variant::AllTa);
}

/// The fast kernels (the default path) against the plain candle graph, whole network, every
/// variant, f64, training mode: logits, every parameter gradient and the running statistics.
#[test]
fn fast_kernels_equal_the_plain_candle_graph_for_every_variant() {
    let dev = Device::Cpu;
    for variant in Variant::ALL {
        let cfg = ModelConfig::new(variant).with_dropout(0.0);
        let net = OffTaNet::random_with_dtype(&cfg, DType::F64, &dev).unwrap();
        let x = Tensor::randn(0f64, 1.0, (3, 3, 112, 112), &dev).unwrap();
        let labels = Tensor::new(&[0u32, 2, 1], &dev).unwrap();
        let run = || {
            let logits = net.forward_t(&x, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
            let g = loss.backward().unwrap();
            let eval = net.forward_t(&x, false).unwrap();
            (logits, g, eval)
        };
        let sd0: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        let (lf, gf, ef) = run();
        let sd_fast: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        net.load_state_dict(&sd0, "before").unwrap();
        let (lp, gp, ep) = crate::kernels::with_plain_ops(run);
        let sd_plain: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        // Relative to the largest entry, with an absolute floor: a conv bias before a
        // training-mode BatchNorm has an exactly-zero gradient, computed as rounding noise.
        let rel =
            |a: &Tensor, b: &Tensor| crate::abs_max(&(a - b).unwrap()) / (crate::abs_max(b) + 1e-6);
        assert!(rel(&lf, &lp) < 1e-6, "{variant}: logits");
        assert!(rel(&ef, &ep) < 1e-6, "{variant}: evaluation logits");
        for (name, t) in net.named_parameters() {
            match (gf.get(&t), gp.get(&t)) {
                (Some(a), Some(b)) => {
                    let e = rel(a, b);
                    assert!(
                        e < 1e-6,
                        "{variant}: gradient of {name} differs by {e:e} (relative)"
                    );
                }
                (None, None) => {}
                (a, b) => panic!(
                    "{variant}: gradient of {name}: fast {}, plain {}",
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        for (k, v) in &sd_plain {
            assert!(
                rel(
                    &sd_fast[k].to_dtype(DType::F64).unwrap(),
                    &v.to_dtype(DType::F64).unwrap()
                ) < 1e-6,
                "{variant}: {k}"
            );
        }
    }
}

#[test]
fn seeded_dropout_is_reproducible_and_keeps_half() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::default();
    let a = OffTaNet::random(&cfg, &dev).unwrap();
    let b = OffTaNet::random(&cfg, &dev).unwrap();
    let sd: HashMap<String, Tensor> = a.state_dict().unwrap().into_iter().collect();
    b.load_state_dict(&sd, "a's weights").unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 3, 112, 112), &dev).unwrap();
    a.seed_dropout(7);
    b.seed_dropout(7);
    let (ya, yb) = (
        a.forward_t(&x, true).unwrap(),
        b.forward_t(&x, true).unwrap(),
    );
    assert_eq!(max_abs_diff(&ya, &yb), 0.0, "same seed, same masks");
    // The next masks are new ones, and another seed gives other masks.
    assert!(max_abs_diff(&ya, &a.forward_t(&x, true).unwrap()) > 0.0);
    b.seed_dropout(8);
    a.seed_dropout(7);
    let ya2 = a.forward_t(&x, true).unwrap();
    assert_eq!(
        max_abs_diff(&ya, &ya2),
        0.0,
        "reseeding restarts the stream"
    );
    assert!(max_abs_diff(&ya2, &b.forward_t(&x, true).unwrap()) > 0.0);
    // Keep fraction and scale: 1e5 draws at p = 0.5 keep 50% +- 0.5% (10 sigma is 1.6%).
    let kept = (0..100_000u64)
        .filter(|&i| dropout_uniform(7, 3, i) >= 0.5)
        .count();
    assert!((49_500..=50_500).contains(&kept), "kept {kept}");
    let ones = Tensor::ones((1, 1000), DType::F32, &dev).unwrap();
    a.seed_dropout(1);
    let d: Vec<f32> = a
        .dropout(&ones, 0.5)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(d.iter().all(|&v| v == 0.0 || v == 2.0), "scaled by 1/(1-p)");
}
