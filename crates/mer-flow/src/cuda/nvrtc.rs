//! The CUDA backend: NVRTC compilation and the driver API through `cudarc`,
//! both loaded dynamically at run time.

use super::driver::{Arg, Backend, GpuTvL1, Kernel};
use crate::{Error, Result, TvL1Params};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Dual TV-L1 on an NVIDIA GPU through CUDA.
///
/// ```no_run
/// use mer_flow::{cuda::CudaTvL1, GrayImage, TvL1Params};
/// let tv = CudaTvL1::new(TvL1Params::default(), 0)?;
/// let a = GrayImage::zeros(112, 112)?;
/// let flows = tv.compute_batch(&[(&a, &a), (&a, &a)]);
/// # Ok::<(), mer_flow::Error>(())
/// ```
pub type CudaTvL1 = GpuTvL1<CudaBackend>;

impl GpuTvL1<CudaBackend> {
    /// A solver on CUDA device `ordinal` (the context and compiled kernels are
    /// shared by every solver on that device).
    pub fn new(params: TvL1Params, ordinal: usize) -> Result<Self> {
        Self::with_backend(CudaBackend::new(ordinal)?, params)
    }
}

fn gpu<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e:?}"))
}

/// Loads NVRTC: first `$MER_FLOW_NVRTC` (the full path of `libnvrtc.so.12`) if
/// set, so that cudarc's own look-up by name finds the loaded library, then
/// the loader's usual search (`LD_LIBRARY_PATH`, ...). Returns where it was found.
pub fn load_nvrtc() -> Result<String> {
    static LOADED: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("MER_FLOW_NVRTC") {
                // SAFETY: loading NVRTC runs only its initialisers, which have no preconditions.
                match unsafe { libloading::Library::new(&path) } {
                    // Kept loaded for the life of the process.
                    Ok(lib) => std::mem::forget(lib),
                    Err(e) => return Err(format!("MER_FLOW_NVRTC={}: {e}", path.to_string_lossy())),
                }
                // cudarc looks for these names; with the library loaded they resolve to it.
                return if nvrtc_available() {
                    Ok(path.to_string_lossy().into_owned())
                } else {
                    Err(format!("MER_FLOW_NVRTC={} loaded but is not libnvrtc.so.12", path.to_string_lossy()))
                };
            }
            if nvrtc_available() {
                Ok("found by the dynamic loader".into())
            } else {
                Err("libnvrtc (NVRTC 12) not found: install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12` \
                     and put <site-packages>/nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH (or set MER_FLOW_NVRTC to the \
                     full path of libnvrtc.so.12)"
                    .into())
            }
        })
        .clone()
        .map_err(Error::Gpu)
}

/// Whether cudarc can load NVRTC now.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles CUDA source to PTX with the options of the TV-L1 kernels: no FMA
/// contraction, IEEE division and square root, denormals kept, no fast math.
pub fn compile_ptx(source: &str) -> Result<String> {
    load_nvrtc()?;
    let opts = CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        use_fast_math: Some(false),
        name: Some("mer_flow_tvl1.cu".into()),
        ..Default::default()
    };
    let ptx = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(source, opts))
        .map_err(|_| Error::Gpu("NVRTC panicked (library not loadable?)".into()))?;
    match ptx {
        Ok(p) => Ok(p.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. }) => Err(Error::Gpu(
            format!("NVRTC failed ({nvrtc:?}):\n{}", log.to_string_lossy()),
        )),
        Err(e) => Err(Error::Gpu(format!("NVRTC: {e:?}"))),
    }
}

/// The PTX of all kernels, compiled once per process.
fn program_ptx() -> Result<String> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| compile_ptx(&super::program_source()).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Gpu)
}

struct DeviceState {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
}

/// A CUDA device with the TV-L1 kernels loaded: a context, one stream, the
/// module. Cheap to clone; one per ordinal per process.
#[derive(Clone)]
pub struct CudaBackend {
    state: Arc<DeviceState>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.state.ctx.ordinal())
            .finish_non_exhaustive()
    }
}

impl CudaBackend {
    /// Device `ordinal`, created on first use. Fails with [`Error::Gpu`], never
    /// panics, when there is no driver, no such device, or no NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, CudaBackend>>> = OnceLock::new();
        let mut map = DEVICES
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| Error::Gpu("device table poisoned".into()))?;
        if let Some(d) = map.get(&ordinal) {
            return Ok(d.clone());
        }
        let d = Self::create(ordinal)?;
        map.insert(ordinal, d.clone());
        Ok(d)
    }

    fn create(ordinal: usize) -> Result<Self> {
        // cudarc panics when the driver library is missing: look for it first.
        // SAFETY: only tries to dlopen candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Gpu(
                "no NVIDIA driver (libcuda.so.1 not found): this machine has no usable GPU".into(),
            ));
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| Error::Gpu("the CUDA driver panicked on initialisation".into()))?
            .map_err(gpu(&format!("CUDA device {ordinal}")))?;
        let ptx = program_ptx()?;
        let module = ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(gpu("loading the TV-L1 kernels"))?;
        let funcs = Kernel::ALL
            .iter()
            .map(|k| module.load_function(k.name()).map_err(gpu(k.name())))
            .collect::<Result<Vec<_>>>()?;
        let stream = ctx.new_stream().map_err(gpu("creating a stream"))?;
        Ok(Self {
            state: Arc::new(DeviceState { ctx, stream, funcs }),
        })
    }

    /// The device's name.
    pub fn name(&self) -> Result<String> {
        self.state.ctx.name().map_err(gpu("device name"))
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.state.ctx.ordinal()
    }

    /// Waits for all the work queued on the device.
    pub fn synchronize(&self) -> Result<()> {
        self.state.stream.synchronize().map_err(gpu("synchronize"))
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<u8>;

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.state
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(gpu("alloc"))
    }

    fn zero(&self, buf: &mut CudaSlice<u8>) -> Result<()> {
        self.state.stream.memset_zeros(buf).map_err(gpu("memset"))
    }

    fn upload(&self, buf: &mut CudaSlice<u8>, data: &[u8]) -> Result<()> {
        if data.len() > buf.len() {
            return Err(Error::Gpu(format!(
                "upload of {} bytes into a buffer of {}",
                data.len(),
                buf.len()
            )));
        }
        self.state
            .stream
            .memcpy_htod(data, &mut buf.slice_mut(..data.len()))
            .map_err(gpu("upload"))
    }

    fn download(&self, buf: &CudaSlice<u8>, out: &mut [u8]) -> Result<()> {
        if out.len() > buf.len() {
            return Err(Error::Gpu(format!(
                "download of {} bytes from a buffer of {}",
                out.len(),
                buf.len()
            )));
        }
        self.state
            .stream
            .memcpy_dtoh(&buf.slice(..out.len()), out)
            .map_err(gpu("download"))?;
        self.synchronize()
    }

    fn copy(&self, src: &CudaSlice<u8>, dst: &mut CudaSlice<u8>, bytes: usize) -> Result<()> {
        if bytes > src.len() || bytes > dst.len() {
            return Err(Error::Gpu(format!(
                "copy of {bytes} bytes between buffers of {} and {}",
                src.len(),
                dst.len()
            )));
        }
        self.state
            .stream
            .memcpy_dtod(&src.slice(..bytes), &mut dst.slice_mut(..bytes))
            .map_err(gpu("copy"))
    }

    fn launch(
        &self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: &[Arg<'_, CudaSlice<u8>>],
    ) -> Result<()> {
        let idx = Kernel::ALL
            .iter()
            .position(|k| *k == kernel)
            .expect("every kernel is in ALL");
        let f = &self.state.funcs[idx];
        let mut lb = self.state.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Buf(b) => lb.arg(*b),
                Arg::I32(v) => lb.arg(v),
                Arg::F32(v) => lb.arg(v),
                Arg::F64(v) => lb.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.max(1), 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list follows the kernel's parameter list (see driver.rs
        // and cuda/*.cu), and every buffer is large enough for the launch's indices.
        unsafe { lb.launch(cfg) }.map_err(gpu(kernel.name()))?;
        Ok(())
    }
}
