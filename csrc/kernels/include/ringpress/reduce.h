// Element-wise reductions used by every collective: dst = dst (op) src.
//
// Contract
//   dtypes  float32, float64, float16, bfloat16, int32, int64, uint8 (reduce_supported()); others
//           raise UsageError naming the dtype.
//   ops     sum, avg, min, max, prod. avg reduces as sum; the collective divides once at the end
//           with scale_avg(). Integer sum/prod wrap modulo 2^bits (numpy semantics, no UB);
//           float min/max propagate NaN (np.minimum/np.maximum semantics).
//   f16/bf16 are widened to float32, combined in float32 and rounded to nearest-even once per call
//           (per ring hop), the usual accumulate-in-f32 rule.
//   dst and src may be the same pointer; otherwise they must not overlap.
// Cost: one pass over 2n elements read + n written; vectorised per ISA (reduce_isa.cc compiled for
// generic/AVX2/AVX-512, chosen once from simd_level()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ringpress/dtype.h"

namespace ringpress {

enum class ReduceOp : std::uint8_t { kSum = 0, kAvg = 1, kMin = 2, kMax = 3, kProd = 4 };
constexpr int kNumReduceOps = 5;

const char* reduce_op_name(ReduceOp op) noexcept;       // "sum", "avg", ...
ReduceOp reduce_op_from_name(const std::string& name);  // throws UsageError
bool reduce_supported(DType dtype) noexcept;

// dst[i] = dst[i] op src[i], i < n.
void reduce_into(DType dtype, ReduceOp op, void* dst, const void* src, std::size_t n);
// out[i] = a[i] op b[i]; out may equal a or b.
void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n);
// Finish an avg: floats x / divisor (true division, rounded once, f16/bf16 via f32); integers
// truncate toward zero (C division). divisor >= 1.
void scale_avg(DType dtype, void* data, std::size_t n, int divisor);

// Name of the reduction kernel set in use ("avx512", "avx2", "generic"), for build_info().
const char* reduce_kernel_name();

}  // namespace ringpress
