//! The device choice: CPU or a CUDA GPU, with the same API (no `cfg` needed by
//! callers: without the `cuda` feature, the CUDA device returns [`Error::Gpu`]).

use crate::{Error, Flow, GrayImage, Result, TvL1};

/// Where a flow is computed.
///
/// ```
/// use mer_flow::{Device, GrayImage, TvL1, TvL1Params};
/// let tv = TvL1::new(TvL1Params::default())?;
/// let a = GrayImage::zeros(32, 32)?;
/// // Falls back to the CPU when the GPU path is not there.
/// let dev = Device::cuda_if_available(0);
/// let flow = tv.compute_on(dev, &a, &a)?;
/// assert_eq!(flow.width(), 32);
/// # Ok::<(), mer_flow::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU path (vectorised, rayon for batches).
    #[default]
    Cpu,
    /// CUDA device with this ordinal (needs the `cuda` feature, an NVIDIA
    /// driver and NVRTC at run time).
    Cuda(usize),
}

impl Device {
    /// `Cuda(ordinal)` when that device can be used, else `Cpu`.
    pub fn cuda_if_available(ordinal: usize) -> Device {
        if Device::Cuda(ordinal).check().is_ok() {
            Device::Cuda(ordinal)
        } else {
            Device::Cpu
        }
    }

    /// Whether the device can be used; the error says why not.
    pub fn check(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(ordinal) => cuda_check(ordinal),
        }
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_check(ordinal: usize) -> Result<()> {
    crate::cuda::CudaBackend::new(ordinal).map(|_| ())
}

#[cfg(not(feature = "cuda"))]
fn cuda_check(_ordinal: usize) -> Result<()> {
    Err(not_compiled())
}

#[cfg(not(feature = "cuda"))]
fn not_compiled() -> Error {
    Error::Gpu("not compiled with the cuda feature (build mer-flow with `--features cuda`)".into())
}

impl TvL1 {
    /// [`TvL1::compute`] on `device`.
    pub fn compute_on(&self, device: Device, prev: &GrayImage, next: &GrayImage) -> Result<Flow> {
        match device {
            Device::Cpu => self.compute(prev, next),
            Device::Cuda(ordinal) => cuda_batch(self, ordinal, &[(prev, next)])?
                .pop()
                .expect("one result per pair"),
        }
    }

    /// [`TvL1::compute_batch`] on `device`. On a GPU, pairs of one size go
    /// through each kernel together (up to 256 per launch): this is where a
    /// GPU wins, hundreds of small pairs. When the device cannot be used, every
    /// pair gets that error.
    pub fn compute_batch_on(
        &self,
        device: Device,
        pairs: &[(&GrayImage, &GrayImage)],
    ) -> Vec<Result<Flow>> {
        match device {
            Device::Cpu => self.compute_batch(pairs),
            Device::Cuda(ordinal) => match cuda_batch(self, ordinal, pairs) {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    pairs.iter().map(|_| Err(Error::Gpu(msg.clone()))).collect()
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_batch(
    tv: &TvL1,
    ordinal: usize,
    pairs: &[(&GrayImage, &GrayImage)],
) -> Result<Vec<Result<Flow>>> {
    let gpu = crate::cuda::CudaTvL1::new(tv.params().clone(), ordinal)?;
    Ok(gpu.compute_batch(pairs))
}

#[cfg(not(feature = "cuda"))]
fn cuda_batch(
    _tv: &TvL1,
    _ordinal: usize,
    _pairs: &[(&GrayImage, &GrayImage)],
) -> Result<Vec<Result<Flow>>> {
    Err(not_compiled())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TvL1Params;

    #[test]
    fn cpu_device_equals_cpu_path_and_cuda_fails_cleanly_without_gpu() {
        let tv = TvL1::new(TvL1Params::default()).unwrap();
        let a =
            GrayImage::new(24, 20, (0..480).map(|i| ((i * 37) % 251) as f32).collect()).unwrap();
        let b =
            GrayImage::new(24, 20, (0..480).map(|i| ((i * 41) % 251) as f32).collect()).unwrap();
        assert_eq!(
            tv.compute_on(Device::Cpu, &a, &b).unwrap(),
            tv.compute(&a, &b).unwrap()
        );
        assert_eq!(Device::default(), Device::Cpu);
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
        // Without a GPU (or without the feature) the CUDA device is an error, not a panic.
        if Device::Cuda(0).check().is_err() {
            let e = tv.compute_on(Device::Cuda(0), &a, &b).unwrap_err();
            assert!(matches!(e, Error::Gpu(_)), "{e}");
            let r = tv.compute_batch_on(Device::Cuda(0), &[(&a, &b), (&b, &a)]);
            assert!(r.iter().all(|r| matches!(r, Err(Error::Gpu(_)))));
            assert_eq!(Device::cuda_if_available(0), Device::Cpu);
        }
    }
}
