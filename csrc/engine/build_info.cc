// ringpress::build_info(): compile-time switches plus run-time choices, one place.
#include "ringpress/build_info.h"

#include <lz4.h>
#include <zstd.h>

#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/cuda.h"
#include "ringpress/reduce.h"
#include "ringpress/shuffle.h"

namespace ringpress {
namespace {

std::string compiler_string() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

}  // namespace

BuildInfo build_info() {
  BuildInfo b;
  b.version = RINGPRESS_VERSION;
  b.compiler = compiler_string();
  b.build_type = RINGPRESS_BUILD_TYPE;
  b.simd = simd_level_name(simd_level());
  b.simd_best = simd_level_name(best_simd_level());
  for (SimdLevel l :
       {SimdLevel::kGeneric, SimdLevel::kSSE2, SimdLevel::kAVX2, SimdLevel::kAVX512}) {
    if (simd_level_built(l)) b.simd_built.emplace_back(simd_level_name(l));
  }
  b.shuffle_kernel = shuffle_kernels().isa;
  b.reduce_kernel = reduce_kernel_name();
  const CpuFeatures& f = cpu_features();
  b.cpu_vendor = f.vendor;
  const std::pair<const char*, bool> flags[] = {{"sse2", f.sse2},
                                                {"ssse3", f.ssse3},
                                                {"sse4.1", f.sse41},
                                                {"sse4.2", f.sse42},
                                                {"avx", f.avx},
                                                {"avx2", f.avx2},
                                                {"bmi2", f.bmi2},
                                                {"f16c", f.f16c},
                                                {"fma", f.fma},
                                                {"avx512f", f.avx512f},
                                                {"avx512bw", f.avx512bw},
                                                {"avx512vl", f.avx512vl},
                                                {"avx512dq", f.avx512dq},
                                                {"avx512vbmi", f.avx512vbmi},
                                                {"gfni", f.gfni},
                                                {"os_avx", f.os_avx},
                                                {"os_avx512", f.os_avx512}};
  for (const auto& [name, on] : flags) {
    if (on) b.cpu_features.emplace_back(name);
  }
  b.cuda = cuda::built();
  b.cuda_architectures = RINGPRESS_WITH_CUDA ? RINGPRESS_CUDA_ARCHITECTURES : "";
  b.cuda_runtime_version = cuda::runtime_version();
  b.cuda_devices = cuda::device_count();
  b.lz4 = LZ4_versionString();
  b.lz4_compiled = std::to_string(LZ4_VERSION_MAJOR) + "." + std::to_string(LZ4_VERSION_MINOR) +
                   "." + std::to_string(LZ4_VERSION_RELEASE);
  b.zstd = ZSTD_versionString();
  b.zstd_compiled = ZSTD_VERSION_STRING;
  b.sanitize = RINGPRESS_SANITIZE;
  return b;
}

}  // namespace ringpress
