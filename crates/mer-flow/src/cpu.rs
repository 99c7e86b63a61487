//! Run-time CPU feature detection (cached by the standard library).

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    std::env::var_os("MER_FLOW_NO_AVX512").is_none() && is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}
