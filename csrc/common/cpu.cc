// CPU feature detection (cpuid + xgetbv) and the process-wide SIMD level (see ringpress/cpu.h).
#include "ringpress/cpu.h"

#include <cstdlib>
#include <cstring>

#include "ringpress/config.h"
#include "ringpress/env.h"
#include "ringpress/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define RP_X86 1
#else
#define RP_X86 0
#endif

namespace ringpress {
namespace {

#if RP_X86
// xgetbv via inline asm so this file needs no -mxsave (it is compiled for the baseline ISA).
std::uint64_t read_xcr0() {
  std::uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (std::uint64_t(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if RP_X86
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  const unsigned max_leaf = eax;
  char vendor[13];
  std::memcpy(vendor + 0, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  vendor[12] = 0;
  f.vendor = vendor;

  __get_cpuid(1, &eax, &ebx, &ecx, &edx);
  f.sse2 = edx & (1u << 26);
  f.ssse3 = ecx & (1u << 9);
  f.fma = ecx & (1u << 12);
  f.sse41 = ecx & (1u << 19);
  f.sse42 = ecx & (1u << 20);
  const bool osxsave = ecx & (1u << 27);
  f.avx = ecx & (1u << 28);
  f.f16c = ecx & (1u << 29);
  if (osxsave) {
    const std::uint64_t xcr0 = read_xcr0();
    f.os_avx = (xcr0 & 0x6) == 0x6;       // XMM + YMM state
    f.os_avx512 = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (max_leaf >= 7) {
    __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx);
    f.avx2 = ebx & (1u << 5);
    f.bmi2 = ebx & (1u << 8);
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512vbmi = ecx & (1u << 1);
    f.gfni = ecx & (1u << 8);
  }
#endif
  return f;
}

bool cpu_can_run(SimdLevel level) {
  const CpuFeatures& f = cpu_features();
  switch (level) {
    case SimdLevel::kGeneric: return true;
    case SimdLevel::kSSE2: return f.sse2;
    case SimdLevel::kAVX2: return f.avx2 && f.bmi2 && f.f16c && f.fma && f.os_avx;
    case SimdLevel::kAVX512:
      return f.avx512f && f.f16c && f.fma && f.avx512bw && f.avx512vl && f.avx512dq && f.bmi2 &&
             f.os_avx && f.os_avx512;
  }
  return false;
}

}  // namespace

const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = detect();
  return features;
}

const char* simd_level_name(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::kGeneric: return "generic";
    case SimdLevel::kSSE2: return "sse2";
    case SimdLevel::kAVX2: return "avx2";
    case SimdLevel::kAVX512: return "avx512";
  }
  return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
  for (SimdLevel l :
       {SimdLevel::kGeneric, SimdLevel::kSSE2, SimdLevel::kAVX2, SimdLevel::kAVX512}) {
    if (name == simd_level_name(l)) return l;
  }
  ScopedErrorContext ctx("simd_level");
  RP_THROW(UsageError, "unknown SIMD level '", name, "' (expected generic, sse2, avx2 or avx512)");
}

bool simd_level_built(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::kGeneric: return true;
    case SimdLevel::kSSE2: return RINGPRESS_HAVE_SSE2;
    case SimdLevel::kAVX2: return RINGPRESS_HAVE_AVX2;
    case SimdLevel::kAVX512: return RINGPRESS_HAVE_AVX512;
  }
  return false;
}

bool simd_level_supported(SimdLevel level) noexcept {
  return simd_level_built(level) && cpu_can_run(level);
}

SimdLevel best_simd_level() noexcept {
  for (SimdLevel l : {SimdLevel::kAVX512, SimdLevel::kAVX2, SimdLevel::kSSE2}) {
    if (simd_level_supported(l)) return l;
  }
  return SimdLevel::kGeneric;
}

SimdLevel simd_level() {
  // A throwing initializer leaves the static uninitialised, so a bad RINGPRESS_SIMD raises a
  // UsageError on every call rather than being silently ignored.
  static const SimdLevel chosen = [] {
    SimdLevel best = best_simd_level();
    if (const auto env = env::raw("RINGPRESS_SIMD")) {
      SimdLevel cap = parse_simd_level(*env);
      if (static_cast<int>(cap) < static_cast<int>(best)) best = cap;
      // A cap above what the machine supports keeps the best supported level.
      while (!simd_level_supported(best)) best = static_cast<SimdLevel>(static_cast<int>(best) - 1);
    }
    return best;
  }();
  return chosen;
}

}  // namespace ringpress
