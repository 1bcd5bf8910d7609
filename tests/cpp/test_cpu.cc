// CPU detection and the SIMD level choice.
#include <gtest/gtest.h>

#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"

using namespace ringpress;

TEST(Cpu, ChosenLevelIsSupportedAndNotAboveBest) {
  const SimdLevel chosen = simd_level();
  EXPECT_TRUE(simd_level_supported(chosen));
  EXPECT_LE(static_cast<int>(chosen), static_cast<int>(best_simd_level()));
  EXPECT_TRUE(simd_level_supported(SimdLevel::kGeneric));
}

TEST(Cpu, SupportedImpliesBuiltAndCpuFlags) {
  const CpuFeatures& f = cpu_features();
  if (simd_level_supported(SimdLevel::kAVX2)) {
    EXPECT_TRUE(RINGPRESS_HAVE_AVX2);
    EXPECT_TRUE(f.avx2 && f.os_avx);
  }
  if (simd_level_supported(SimdLevel::kAVX512)) {
    EXPECT_TRUE(RINGPRESS_HAVE_AVX512);
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.os_avx512);
  }
#if defined(__x86_64__)
  EXPECT_TRUE(f.sse2);  // architectural on x86-64
  EXPECT_FALSE(f.vendor.empty());
#endif
}

TEST(Cpu, ParseLevelNames) {
  for (SimdLevel l :
       {SimdLevel::kGeneric, SimdLevel::kSSE2, SimdLevel::kAVX2, SimdLevel::kAVX512}) {
    EXPECT_EQ(parse_simd_level(simd_level_name(l)), l);
  }
  EXPECT_THROW(parse_simd_level("avx9000"), UsageError);
}
