//! Run-time CPU feature detection (cached by the standard library).

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    // The environment is read once (a `getenv` per dispatched call was measurable).
    static NO_AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*NO_AVX512.get_or_init(|| std::env::var_os("MER_FLOW_NO_AVX512").is_some())
        && is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Defines `fn $name(args) -> ret` running `$generic(args)` compiled for AVX-512F or AVX2
/// when the CPU has it (checked at run time), else the baseline build. `$generic` must be
/// `#[inline(always)]`, so that each copy is vectorised for its instruction set.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $generic:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if $crate::cpu::has_avx512() {
                    // SAFETY: the CPU supports AVX-512F (checked at run time).
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::cpu::has_avx2() {
                    // SAFETY: the CPU supports AVX2 (checked at run time).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
