// What this build of ringpress contains and what it chose at run time (ringpress.build_info()).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ringpress {

struct BuildInfo {
  std::string version;
  std::string compiler;                 // e.g. "GCC 12.2.0"
  std::string build_type;               // CMAKE_BUILD_TYPE
  std::string simd;                     // level chosen for this process (env cap applied)
  std::string simd_best;                // best level this CPU+OS+build supports
  std::vector<std::string> simd_built;  // levels compiled in
  std::string shuffle_kernel;           // isa of the shuffle table in use
  std::string reduce_kernel;            // isa of the reduction kernels in use (generic|avx2|avx512)
  std::string cpu_vendor;
  std::vector<std::string> cpu_features;  // detected flags relevant to ringpress
  bool cuda = false;                      // CUDA kernels compiled in
  std::string cuda_architectures;         // e.g. "80;90"
  int cuda_runtime_version = 0;           // CUDART_VERSION compiled against (0 without CUDA)
  int cuda_devices = 0;                   // visible devices now (0 without driver/GPU)
  std::string lz4;                        // runtime library version
  std::string lz4_compiled;               // header version compiled against
  std::string zstd;
  std::string zstd_compiled;
  std::string sanitize;  // sanitizers compiled in ("" = none)
};

BuildInfo build_info();

}  // namespace ringpress
