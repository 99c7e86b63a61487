//! Max pool 2x2 stride 2 (of a sum of two tensors: the residual join), with its backward.

use super::*;

/// Index (0..4, row-major) of the first maximum of a window.
#[inline]
pub(super) fn argmax4<T: PartialOrd + Copy>(v: [T; 4]) -> usize {
    let mut best = 0;
    for i in 1..4 {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

#[inline]
pub(super) fn window<T: Lane>(a: &[T], b: Option<&[T]>, i0: usize, i1: usize) -> [T; 4] {
    match b {
        Some(b) => [
            a[i0] + b[i0],
            a[i0 + 1] + b[i0 + 1],
            a[i1] + b[i1],
            a[i1 + 1] + b[i1 + 1],
        ],
        None => [a[i0], a[i0 + 1], a[i1], a[i1 + 1]],
    }
}

pub(super) fn pool_fwd<T: Lane>(
    a: &[T],
    b: Option<&[T]>,
    planes: usize,
    h: usize,
    w: usize,
) -> Vec<T> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = filled_later::<T>(planes * ho * wo);
    if ho * wo == 0 {
        return y;
    }
    let mx = |p: T, q: T| if q > p { q } else { p };
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, ys)| {
        let base = p * h * w;
        for (r, yr) in ys.chunks_exact_mut(wo).enumerate() {
            let t0 = base + 2 * r * w;
            let (top, bot) = (&a[t0..t0 + 2 * wo], &a[t0 + w..t0 + w + 2 * wo]);
            match b {
                Some(b) => {
                    let (tb, bb) = (&b[t0..t0 + 2 * wo], &b[t0 + w..t0 + w + 2 * wo]);
                    for (((o, t), u), (tb, ub)) in yr
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bot.chunks_exact(2))
                        .zip(tb.chunks_exact(2).zip(bb.chunks_exact(2)))
                    {
                        *o = mx(
                            mx(t[0] + tb[0], t[1] + tb[1]),
                            mx(u[0] + ub[0], u[1] + ub[1]),
                        );
                    }
                }
                None => {
                    for ((o, t), u) in yr
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bot.chunks_exact(2))
                    {
                        *o = mx(mx(t[0], t[1]), mx(u[0], u[1]));
                    }
                }
            }
        }
    });
    y
}

pub(super) fn pool_bwd<T: Lane>(
    a: &[T],
    b: Option<&[T]>,
    dy: &[T],
    planes: usize,
    h: usize,
    w: usize,
) -> Vec<T> {
    let (ho, wo) = (h / 2, w / 2);
    let odd = h % 2 == 1 || w % 2 == 1;
    let mut dx = if odd || ho * wo == 0 {
        vec![zero::<T>(); planes * h * w]
    } else {
        filled_later::<T>(planes * h * w)
    };
    if ho * wo == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
        let base = p * h * w;
        for r in 0..ho {
            for c in 0..wo {
                let l0 = 2 * r * w + 2 * c;
                let v = window(a, b, base + l0, base + l0 + w);
                let g = dy[(p * ho + r) * wo + c];
                let at = argmax4(v);
                let z = zero::<T>();
                d[l0] = if at == 0 { g } else { z };
                d[l0 + 1] = if at == 1 { g } else { z };
                d[l0 + w] = if at == 2 { g } else { z };
                d[l0 + w + 1] = if at == 3 { g } else { z };
            }
        }
    });
    dx
}

/// Max pool 2x2 stride 2 of `a + b` (`b` optional), `[N, C, H, W] -> [N, C, H/2, W/2]`,
/// odd trailing rows and columns dropped; the gradient goes to the first maximum of each
/// window (row-major), as PyTorch's.
pub(crate) struct PoolOp;

pub(super) fn pool_dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

impl PoolOp {
    pub(super) fn fwd<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = pool_dims(l1)?;
        let a = slice::<T>(s1, l1, "max-pool")?;
        let b = match s2 {
            Some((s, l)) => {
                if l.dims() != l1.dims() {
                    bail!(
                        "max-pool of a sum: shapes {:?} and {:?} differ",
                        l1.dims(),
                        l.dims()
                    );
                }
                Some(slice::<T>(s, l, "max-pool")?)
            }
            None => None,
        };
        let y = pool_fwd(a, b, n * c, h, w);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((n, c, h / 2, w / 2)),
        ))
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_float!(s, CustomOp1::name(self), T => self.fwd::<T>(s, l, None))
    }

    fn bwd(&self, a: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(a.apply_op2_no_bwd(&grad.contiguous()?, &PoolBwdOp)?))
    }
}

impl CustomOp2 for PoolOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, CustomOp2::name(self), T => self.fwd::<T>(s1, l1, Some((s2, l2))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = a.apply_op3_no_bwd(b, &grad.contiguous()?, &PoolBwdOp)?;
        Ok((a.track_op().then(|| d.clone()), b.track_op().then_some(d)))
    }
}

/// Backward of [`PoolOp`]: `(a, dy)` or `(a, b, dy)` -> `da` (= `db`).
pub(super) struct PoolBwdOp;

impl PoolBwdOp {
    pub(super) fn go<T: Lane>(
        &self,
        a: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
        dy: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = pool_dims(a.1)?;
        let av = slice::<T>(a.0, a.1, "max-pool-bwd")?;
        let bv = b
            .map(|(s, l)| slice::<T>(s, l, "max-pool-bwd"))
            .transpose()?;
        let g = slice::<T>(dy.0, dy.1, "max-pool-bwd")?;
        let dx = pool_bwd(av, bv, g, n * c, h, w);
        Ok((T::to_cpu_storage_owned(dx), a.1.shape().clone()))
    }
}

impl CustomOp2 for PoolBwdOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, CustomOp2::name(self), T => self.go::<T>((s1, l1), None, (s2, l2)))
    }
}

impl CustomOp3 for PoolBwdOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-sum-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, CustomOp3::name(self), T => self.go::<T>((s1, l1), Some((s2, l2)), (s3, l3)))
    }
}

/// Max pool 2x2 of `a` (plus `b` when given) on the fast kernels.
pub(crate) fn max_pool2(a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let a = a.contiguous()?;
    match b {
        Some(b) => a.apply_op2(&b.contiguous()?, PoolOp),
        None => a.apply_op1(PoolOp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;
    use candle_core::{Var, D};

    #[test]
    fn max_pool_matches_candle_forward_and_backward_with_ties() {
        for dt in [DType::F64, DType::F32] {
            for &(n, c, h, w) in &[(2, 3, 7, 9), (1, 2, 4, 4), (3, 1, 5, 2), (1, 1, 1, 3)] {
                for sum in [false, true] {
                    // Rounded values: many tied maxima.
                    let a = Var::from_tensor(&randn(&[n, c, h, w], dt).round().unwrap()).unwrap();
                    let b = Var::from_tensor(&randn(&[n, c, h, w], dt).round().unwrap()).unwrap();
                    if h < 2 || w < 2 {
                        let y = max_pool2(a.as_tensor(), Some(b.as_tensor())).unwrap();
                        assert_eq!(y.dims(), &[n, c, h / 2, w / 2]);
                        continue;
                    }
                    let (fast, plain) = if sum {
                        (
                            max_pool2(a.as_tensor(), Some(b.as_tensor())).unwrap(),
                            crate::layers::max_pool2_plain(
                                &(a.as_tensor() + b.as_tensor()).unwrap(),
                            )
                            .unwrap(),
                        )
                    } else {
                        (
                            max_pool2(a.as_tensor(), None).unwrap(),
                            crate::layers::max_pool2_plain(a.as_tensor()).unwrap(),
                        )
                    };
                    let what = format!("{dt:?} {:?} sum {sum}", (n, c, h, w));
                    assert_eq!(max_rel(&fast, &plain), 0.0, "{what}");
                    if fast.elem_count() == 0 {
                        continue;
                    }
                    let r = randn(plain.dims(), dt);
                    let gf = grads(&fast, &r, &[&a, &b]);
                    let gp = grads(&plain, &r, &[&a, &b]);
                    for (i, (x, y)) in gf.iter().zip(&gp).enumerate() {
                        match (x, y) {
                            (Some(x), Some(y)) => {
                                assert_eq!(max_rel(x, y), 0.0, "{what}: gradient {i}")
                            }
                            (None, None) => {}
                            _ => panic!("{what}: gradient {i} present in one graph only"),
                        }
                    }
                }
            }
        }
        let _ = D::Minus1;
    }
}
