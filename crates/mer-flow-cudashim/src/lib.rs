//! Test-only: mer-flow's CUDA kernels (`crates/mer-flow/cuda/*.cu`) compiled as
//! plain C++ with a host shim (`shim/`) that runs each launch's grid
//! sequentially on the CPU, so that the kernels' logic is tested on machines
//! without a GPU. mer-flow's tests implement its `cuda::Backend` on top of
//! [`launch`] (`crates/mer-flow/tests/cuda_shim.rs`).
//!
//! Not published, and not a dependency of anything but mer-flow's tests.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};

extern "C" {
    fn mer_shim_launch(
        name: *const c_char,
        grid: c_uint,
        block: c_uint,
        args: *mut *mut c_void,
    ) -> c_int;
}

/// Runs kernel `name` on a 1-D grid of `grid` blocks of `block` threads, one
/// thread after the other. `args` holds one pointer per kernel parameter, to
/// that parameter's value (as `cuLaunchKernel`).
///
/// # Safety
/// `args` must match the kernel's parameter list in number and types, and
/// every pointer parameter must point to memory that is valid for every index
/// the kernel touches for this grid.
pub unsafe fn launch(
    name: &str,
    grid: u32,
    block: u32,
    args: &mut [*mut c_void],
) -> Result<(), String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: the caller upholds the argument contract; `c` is a valid C string.
    let rc = unsafe { mer_shim_launch(c.as_ptr(), grid, block, args.as_mut_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("the shim has no kernel named {name}"))
    }
}
