// Element-wise reductions: names, argument checks and the per-ISA dispatch (contract:
// ringpress/reduce.h; kernels in reduce_isa.cc).
//
// The kernel set is chosen once per process from simd_level() (which honours RINGPRESS_SIMD):
// avx512 / avx2 when built and supported, otherwise the generic copy (the SSE2 level uses the
// generic copy, which the baseline x86-64 compiler already vectorises with SSE2).
// Argument errors are UsageError naming the dtype / op / pointers; the checks cost O(1) per call,
// so every ring hop may call these on segments without measurable overhead.
#include "ringpress/reduce.h"

#include <cstdint>

#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"

namespace ringpress {

// The per-ISA copies of reduce_isa.cc (one namespace each; see CMakeLists.txt "# Reductions").
#define RP_DECLARE_REDUCE_ISA(ns)                                                                 \
  namespace reduce_isa::ns {                                                                      \
  void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n); \
  void scale_avg(DType dtype, void* data, std::size_t n, int divisor);                            \
  const char* isa_name() noexcept;                                                                \
  }
RP_DECLARE_REDUCE_ISA(generic)
#if RINGPRESS_HAVE_AVX2
RP_DECLARE_REDUCE_ISA(avx2)
#endif
#if RINGPRESS_HAVE_AVX512
RP_DECLARE_REDUCE_ISA(avx512)
#endif
#undef RP_DECLARE_REDUCE_ISA

namespace {

struct ReduceKernels {
  void (*reduce3)(DType, ReduceOp, void*, const void*, const void*, std::size_t);
  void (*scale_avg)(DType, void*, std::size_t, int);
  const char* (*name)() noexcept;
};

const ReduceKernels& kernels() {
  static const ReduceKernels k = [] {
    const SimdLevel level = simd_level();
    (void)level;
#if RINGPRESS_HAVE_AVX512
    if (level >= SimdLevel::kAVX512 && simd_level_supported(SimdLevel::kAVX512)) {
      return ReduceKernels{reduce_isa::avx512::reduce3, reduce_isa::avx512::scale_avg,
                           reduce_isa::avx512::isa_name};
    }
#endif
#if RINGPRESS_HAVE_AVX2
    if (level >= SimdLevel::kAVX2 && simd_level_supported(SimdLevel::kAVX2)) {
      return ReduceKernels{reduce_isa::avx2::reduce3, reduce_isa::avx2::scale_avg,
                           reduce_isa::avx2::isa_name};
    }
#endif
    return ReduceKernels{reduce_isa::generic::reduce3, reduce_isa::generic::scale_avg,
                         reduce_isa::generic::isa_name};
  }();
  return k;
}

constexpr const char* kOpNames[kNumReduceOps] = {"sum", "avg", "min", "max", "prod"};
constexpr const char* kSupportedDTypes =
    "float32, float64, float16, bfloat16, int8, int16, int32, int64, uint8, uint16, uint32, uint64";

void check_dtype(DType dtype, const char* fn) {
  if (!reduce_supported(dtype)) {
    const auto code = static_cast<unsigned>(dtype);
    const char* name = dtype_valid(static_cast<std::uint8_t>(code)) ? dtype_name(dtype) : "invalid";
    RP_THROW(UsageError, fn, ": dtype ", name, " (code ", code,
             ") is not supported by reductions (supported: ", kSupportedDTypes, ")");
  }
}

void check_op(ReduceOp op, const char* fn) {
  const auto code = static_cast<unsigned>(op);
  if (code >= static_cast<unsigned>(kNumReduceOps)) {
    RP_THROW(UsageError, fn, ": invalid reduce op code ", code,
             " (valid: sum, avg, min, max, prod)");
  }
}

// True when [p, p+bytes) and [q, q+bytes) share a byte. Compared as integers: relational
// comparison of pointers into different objects is unspecified.
bool overlaps(const void* p, const void* q, std::size_t bytes) {
  const auto x = reinterpret_cast<std::uintptr_t>(p);
  const auto y = reinterpret_cast<std::uintptr_t>(q);
  return x < y ? y - x < bytes : x - y < bytes;
}

}  // namespace

const char* reduce_op_name(ReduceOp op) noexcept {
  const auto code = static_cast<unsigned>(op);
  return code < static_cast<unsigned>(kNumReduceOps) ? kOpNames[code] : "invalid";
}

ReduceOp reduce_op_from_name(const std::string& name) {
  for (int i = 0; i < kNumReduceOps; ++i) {
    if (name == kOpNames[i]) return static_cast<ReduceOp>(i);
  }
  RP_THROW(UsageError, "unknown reduce op '", name, "' (valid: sum, avg, min, max, prod)");
}

bool reduce_supported(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
    case DType::kF64:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
    case DType::kI8:
    case DType::kI16:
    case DType::kU16:
    case DType::kU32:
    case DType::kU64: return true;
    default: return false;
  }
}

void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n) {
  check_dtype(dtype, "reduce");
  check_op(op, "reduce");
  if (n == 0) return;
  RP_ENFORCE(out != nullptr && a != nullptr && b != nullptr, UsageError, "reduce of ", n,
             " elements got a null buffer");
  const std::size_t elem = dtype_size(dtype);
  RP_ENFORCE_LE(n, SIZE_MAX / elem, UsageError, "reduce: element count overflows size_t");
  const std::size_t bytes = n * elem;
  // out may be exactly a or b (in place); a partial overlap would read already-written results.
  RP_ENFORCE(out == a || !overlaps(out, a, bytes), UsageError,
             "reduce: output partially overlaps the first input (", bytes, " bytes)");
  RP_ENFORCE(out == b || !overlaps(out, b, bytes), UsageError,
             "reduce: output partially overlaps the second input (", bytes, " bytes)");
  kernels().reduce3(dtype, op, out, a, b, n);
}

void reduce_into(DType dtype, ReduceOp op, void* dst, const void* src, std::size_t n) {
  reduce3(dtype, op, dst, dst, src, n);
}

void scale_avg(DType dtype, void* data, std::size_t n, int divisor) {
  check_dtype(dtype, "scale_avg");
  RP_ENFORCE_GE(divisor, 1, UsageError, "scale_avg divides by the number of ranks");
  if (n == 0) return;
  RP_ENFORCE(data != nullptr, UsageError, "scale_avg of ", n, " elements got a null buffer");
  kernels().scale_avg(dtype, data, n, divisor);
}

const char* reduce_kernel_name() {
  return kernels().name();
}

}  // namespace ringpress
