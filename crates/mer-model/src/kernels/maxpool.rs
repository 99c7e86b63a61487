//! Max pool with a `k x k` window, stride `s` and padding `p` (PyTorch's semantics: padded
//! cells never win, no ceil mode), with its backward: the gradient of each output goes to
//! the first maximum of its window in row-major order. The baselines' padded pools
//! (STSTNet's 3x3/3 pad 1, Dual-Inception's 3x3/1 pad 1, Micro-Attention's 3x3/2 pad 1).
//! Planes run in parallel; within a plane the scatter of the backward is sequential, so
//! the bits do not depend on the thread count.

use super::*;

/// The pool's geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxPoolK {
    pub(crate) k: usize,
    pub(crate) s: usize,
    pub(crate) p: usize,
}

impl MaxPoolK {
    fn out(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.p - self.k) / self.s + 1,
            (w + 2 * self.p - self.k) / self.s + 1,
        )
    }

    /// The flat index (within the plane) of the first maximum of output `(i, j)`'s window.
    #[inline]
    fn argmax<T: Lane>(&self, x: &[T], h: usize, w: usize, i: usize, j: usize) -> usize {
        let r0 = (i * self.s) as isize - self.p as isize;
        let c0 = (j * self.s) as isize - self.p as isize;
        let (ra, rb) = (r0.max(0) as usize, ((r0 + self.k as isize) as usize).min(h));
        let (ca, cb) = (c0.max(0) as usize, ((c0 + self.k as isize) as usize).min(w));
        let mut best = ra * w + ca;
        for r in ra..rb {
            for c in ca..cb {
                if x[r * w + c] > x[best] {
                    best = r * w + c;
                }
            }
        }
        best
    }
}

impl CustomOp1 for MaxPoolK {
    fn name(&self) -> &'static str {
        "mer-max-pool-k"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_float!(st, "mer-max-pool-k", T => {
            let x = slice::<T>(st, l, "mer-max-pool-k")?;
            let (n, c, h, w) = l.shape().dims4()?;
            let (ho, wo) = self.out(h, w);
            let mut y = vec![T::from_f64(0.0); n * c * ho * wo];
            y.par_chunks_mut(ho * wo).enumerate().for_each(|(pl, ys)| {
                let xp = &x[pl * h * w..(pl + 1) * h * w];
                for i in 0..ho {
                    for j in 0..wo {
                        ys[i * wo + j] = xp[self.argmax(xp, h, w, i, j)];
                    }
                }
            });
            Ok((T::to_cpu_storage_owned(y), Shape::from((n, c, ho, wo))))
        })
    }

    fn bwd(&self, a: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(a.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolKBwd(*self),
        )?))
    }
}

/// Backward of [`MaxPoolK`]: `(x, dy) -> dx`.
struct MaxPoolKBwd(MaxPoolK);

impl CustomOp2 for MaxPoolKBwd {
    fn name(&self) -> &'static str {
        "mer-max-pool-k-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, "mer-max-pool-k-bwd", T => {
            let x = slice::<T>(s1, l1, "mer-max-pool-k-bwd")?;
            let dy = slice::<T>(s2, l2, "mer-max-pool-k-bwd")?;
            let (n, c, h, w) = l1.shape().dims4()?;
            let (ho, wo) = self.0.out(h, w);
            if dy.len() != n * c * ho * wo {
                bail!("mer-max-pool-k-bwd: gradient of {} values for {n}x{c}x{ho}x{wo}", dy.len());
            }
            let mut dx = vec![T::from_f64(0.0); n * c * h * w];
            dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, dxs)| {
                let xp = &x[pl * h * w..(pl + 1) * h * w];
                let g = &dy[pl * ho * wo..(pl + 1) * ho * wo];
                for i in 0..ho {
                    for j in 0..wo {
                        dxs[self.0.argmax(xp, h, w, i, j)] += g[i * wo + j];
                    }
                }
            });
            Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
        })
    }
}
