//! Helpers of the kernels' tests: relative differences, random tensors, gradients and the
//! plain candle reference ops.

use super::*;
use candle_core::{Device, Var};

pub(super) fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    crate::abs_max(&(&a - &b).unwrap()) / crate::abs_max(&a).max(1e-30)
}

pub(super) fn randn(shape: &[usize], dt: DType) -> Tensor {
    Tensor::randn(0f64, 1.0, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dt)
        .unwrap()
}

/// `sum(y * r)` and its gradients with respect to `vars`.
pub(super) fn grads(y: &Tensor, r: &Tensor, vars: &[&Var]) -> Vec<Option<Tensor>> {
    let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect()
}

pub(super) fn plain_relu(y: Tensor) -> Tensor {
    crate::layers::relu(&y).unwrap()
}

pub(super) fn plain_bn(
    x: &Tensor,
    g: &Tensor,
    b: &Tensor,
    running: Option<(&Tensor, &Tensor)>,
) -> Tensor {
    let c = g.elem_count();
    let (mean, var) = match running {
        Some((m, v)) => (
            m.reshape((1, c, 1, 1)).unwrap(),
            v.reshape((1, c, 1, 1)).unwrap(),
        ),
        None => {
            let m = x.mean_keepdim((0, 2, 3)).unwrap();
            let v = x
                .broadcast_sub(&m)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_keepdim((0, 2, 3))
                .unwrap();
            (m, v)
        }
    };
    x.broadcast_sub(&mean)
        .unwrap()
        .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&g.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
}
