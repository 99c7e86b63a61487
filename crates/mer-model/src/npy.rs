//! `.npy` files as candle tensors: the workspace's `.npy` reader and atomic writer
//! ([`mer_common::npy`]), adapted to [`Tensor`].

use std::path::Path;

use candle_core::{Device, Tensor};

pub use mer_common::npy::{read, NpyArray, NpyData};

use crate::Result;

/// Reads an `.npy` file of floats (`<f4`, or `<f8` narrowed) as an f32 tensor on `device`.
pub fn read_tensor(path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
    let path = path.as_ref();
    let (shape, data) = read(path)?.into_f32(path)?;
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Writes a float tensor as an f32 `.npy` file, atomically.
pub fn write_tensor(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let data = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(mer_common::npy::write_f32(path, t.dims(), &data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_integers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let p = dir.path().join("t.npy");
        let t = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        write_tensor(&p, &t).unwrap();
        let back = read_tensor(&p, &dev).unwrap();
        assert_eq!(back.dims(), &[2, 3, 4]);
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // An int64 file is refused, naming the file and the dtype.
        let q = dir.path().join("i.npy");
        let mut b = mer_common::npy::f32_bytes(&[2], &[1.0, 2.0]).unwrap();
        let at = b.windows(3).position(|w| w == b"<f4").unwrap();
        b[at..at + 3].copy_from_slice(b"<i8");
        b.extend_from_slice(&[0; 8]);
        std::fs::write(&q, &b).unwrap();
        let e = read_tensor(&q, &dev).unwrap_err().to_string();
        assert!(e.contains("i.npy") && e.contains("int64"), "{e}");
    }
}
