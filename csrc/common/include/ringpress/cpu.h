// CPU feature detection and the SIMD level used by every dispatch table.
//
// Contract: simd_level() is decided once per process: the best level that is (1) compiled into
// this build (cmake/RingpressSimd.cmake), (2) reported by cpuid and (3) enabled by the OS (XCR0
// state bits via xgetbv), optionally capped by the environment variable RINGPRESS_SIMD
// (generic|sse2|avx2|avx512). An unknown RINGPRESS_SIMD value raises UsageError. Kernels for a
// level are only ever called when simd_level_supported(level) is true.
#pragma once

#include <string>

namespace ringpress {

enum class SimdLevel : int { kGeneric = 0, kSSE2 = 1, kAVX2 = 2, kAVX512 = 3 };

struct CpuFeatures {
  bool sse2 = false, ssse3 = false, sse41 = false, sse42 = false;
  bool avx = false, avx2 = false, bmi2 = false, f16c = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vbmi = false, gfni = false;
  bool os_avx = false;     // OS saves YMM state
  bool os_avx512 = false;  // OS saves ZMM/opmask state
  std::string vendor;
};

const CpuFeatures& cpu_features() noexcept;
const char* simd_level_name(SimdLevel level) noexcept;
SimdLevel parse_simd_level(const std::string& name);  // throws UsageError
bool simd_level_built(SimdLevel level) noexcept;      // compiled into this build
bool simd_level_supported(SimdLevel level) noexcept;  // built, and CPU+OS can run it
SimdLevel best_simd_level() noexcept;                 // highest supported
SimdLevel simd_level();                               // chosen once (env cap applied)

}  // namespace ringpress
