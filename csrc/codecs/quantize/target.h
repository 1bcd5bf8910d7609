// SIMD by function attributes for the quantizers (private to csrc/codecs/quantize/).
// Functions marked RP_TARGET_AVX2 / RP_TARGET_AVX512 are compiled for that ISA inside an otherwise
// baseline translation unit and are only called after simd_level() allows it; out-of-line copies
// of shared templates stay baseline, so nothing ISA-specific leaks into generic code.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define RP_Q_X86 1
#define RP_TARGET_AVX2 __attribute__((target("avx2")))
#if defined(__clang__)
#define RP_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define RP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#endif
#else
#define RP_Q_X86 0
#endif
