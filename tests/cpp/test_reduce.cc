// Element-wise reductions (ringpress/reduce.h): every ISA copy of reduce_isa.cc that this CPU can
// run, called directly, against scalar references written here (wider-integer arithmetic for the
// wrapping integer ops, double arithmetic + an independent round-to-nearest-even for f16/bf16),
// for every dtype x op x size (vector tails, f16/bf16 block boundaries) x pointer aliasing, with
// NaN/Inf/signed zeros mixed in; explicit wraparound, NaN-propagation, tie-rounding and scale_avg
// cases; the public dispatching API, names and UsageError cases. A disabled test measures GB/s.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/reduce.h"

namespace ringpress::reduce_isa {
#define RP_TEST_DECLARE_ISA(ns)                                                                   \
  namespace ns {                                                                                  \
  void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n); \
  void scale_avg(DType dtype, void* data, std::size_t n, int divisor);                            \
  const char* isa_name() noexcept;                                                                \
  }
RP_TEST_DECLARE_ISA(generic)
#if RINGPRESS_HAVE_AVX2
RP_TEST_DECLARE_ISA(avx2)
#endif
#if RINGPRESS_HAVE_AVX512
RP_TEST_DECLARE_ISA(avx512)
#endif
#undef RP_TEST_DECLARE_ISA
}  // namespace ringpress::reduce_isa

using namespace ringpress;

namespace {

// ------------------------------------------------------------------ the kernel sets under test
struct Isa {
  const char* name;
  void (*reduce3)(DType, ReduceOp, void*, const void*, const void*, std::size_t);
  void (*scale_avg)(DType, void*, std::size_t, int);
  const char* (*isa_name)() noexcept;
};

std::vector<Isa> runnable_isas() {
  std::vector<Isa> v;
  v.push_back({"generic", reduce_isa::generic::reduce3, reduce_isa::generic::scale_avg,
               reduce_isa::generic::isa_name});
#if RINGPRESS_HAVE_AVX2
  if (simd_level_supported(SimdLevel::kAVX2))
    v.push_back({"avx2", reduce_isa::avx2::reduce3, reduce_isa::avx2::scale_avg,
                 reduce_isa::avx2::isa_name});
#endif
#if RINGPRESS_HAVE_AVX512
  if (simd_level_supported(SimdLevel::kAVX512))
    v.push_back({"avx512", reduce_isa::avx512::reduce3, reduce_isa::avx512::scale_avg,
                 reduce_isa::avx512::isa_name});
#endif
  return v;
}

// The public API as a kernel set, so the same sweeps check the dispatch layer.
Isa public_api() {
  return {"public", ringpress::reduce3, ringpress::scale_avg, nullptr};
}

const DType kDTypes[] = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16,
                         DType::kI32, DType::kI64, DType::kU8,  DType::kI8,
                         DType::kI16, DType::kU16, DType::kU32, DType::kU64};
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax,
                         ReduceOp::kProd};
// Vector tails for 16/32/64-byte registers, and the f16/bf16 block size of 1024 elements.
const std::size_t kSizes[] = {0, 1, 7, 31, 64, 1000, 1024, 1025, 4099};

// ------------------------------------------------------------------ float helpers
template <typename T, typename U>
T bit_cast(const U& u) {
  static_assert(sizeof(T) == sizeof(U));
  T t;
  std::memcpy(&t, &u, sizeof(T));
  return t;
}

// Exact decode of binary16 / bfloat16 bits to double.
double f16_to_double(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(static_cast<double>(1024 + mant), exp - 25);
  }
  return sign ? -v : v;
}
double bf16_to_double(std::uint16_t h) {
  return static_cast<double>(bit_cast<float>(static_cast<std::uint32_t>(h) << 16));
}

// Independent reference: double -> a binary format with `mant` stored mantissa bits, exponent
// bias `bias` (minimum normal exponent 1 - bias, maximum finite exponent bias), rounding to
// nearest, ties to even (std::nearbyint in the default rounding mode), overflow to Inf.
std::uint16_t round_double(double v, int mant, int exp_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int emin = 1 - bias, emax = bias;
  const std::uint16_t sign = std::signbit(v) ? static_cast<std::uint16_t>(1u << 15) : 0;
  const std::uint16_t inf = static_cast<std::uint16_t>(((1u << exp_bits) - 1) << mant);
  if (std::isnan(v)) return static_cast<std::uint16_t>(sign | inf | (1u << (mant - 1)));
  const double a = std::fabs(v);
  if (std::isinf(a)) return static_cast<std::uint16_t>(sign | inf);
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  const int E = std::max(e - 1, emin);
  const double quantum = std::ldexp(1.0, E - mant);
  const double r = std::nearbyint(a / quantum) * quantum;
  if (r >= std::ldexp(1.0, emax + 1)) return static_cast<std::uint16_t>(sign | inf);
  if (r == 0) return sign;
  std::frexp(r, &e);
  const int E2 = e - 1;
  std::uint32_t bits;
  if (E2 < emin) {
    bits = static_cast<std::uint32_t>(r / std::ldexp(1.0, emin - mant));
  } else {
    bits = (static_cast<std::uint32_t>(E2 + bias) << mant) |
           (static_cast<std::uint32_t>(r / std::ldexp(1.0, E2 - mant)) - (1u << mant));
  }
  return static_cast<std::uint16_t>(sign | bits);
}
std::uint16_t double_to_f16(double v) {
  return round_double(v, 10, 5);
}
std::uint16_t double_to_bf16(double v) {
  return round_double(v, 7, 8);
}

bool f16_is_nan(std::uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}
bool bf16_is_nan(std::uint16_t h) {
  return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
}

// np.minimum / np.maximum on values: a NaN in either operand wins; equal values (+0/-0) give b.
template <typename T>
T ref_min(T a, T b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  return a < b ? a : b;
}
template <typename T>
T ref_max(T a, T b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  return a > b ? a : b;
}

template <typename T>
T ref_float(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return a + b;
    case ReduceOp::kProd: return a * b;
    case ReduceOp::kMin: return ref_min(a, b);
    case ReduceOp::kMax: return ref_max(a, b);
  }
  return T(0);
}

// Integer references in a wider type, wrapped by masking (independent of the kernels' unsigned
// arithmetic).
template <typename T>
T ref_int(ReduceOp op, T a, T b) {
  using Wide = std::conditional_t<sizeof(T) >= 4, unsigned __int128, std::int64_t>;
  const Wide x = static_cast<Wide>(a), y = static_cast<Wide>(b);
  Wide r = 0;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: r = x + y; break;
    case ReduceOp::kProd: r = x * y; break;
    case ReduceOp::kMin: return a < b ? a : b;
    case ReduceOp::kMax: return a > b ? a : b;
  }
  using U = std::make_unsigned_t<T>;
  const U low = static_cast<U>(r & static_cast<Wide>(std::numeric_limits<U>::max()));
  T out;
  std::memcpy(&out, &low, sizeof(T));
  return out;
}

// ------------------------------------------------------------------ test data
struct Buf {
  // One extra element in front so that the data is misaligned for every vector width.
  std::vector<std::uint8_t> bytes;
  std::size_t elem;
  Buf(std::size_t n, std::size_t elem_size) : bytes((n + 1) * elem_size), elem(elem_size) {}
  void* data() { return bytes.data() + elem; }
  const void* data() const { return bytes.data() + elem; }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data());
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data());
  }
};

// Specials mixed into float inputs at a few positions (NaN, +-Inf, +-0, tiny, huge).
template <typename T>
T float_special(std::size_t k) {
  const T specials[] = {std::numeric_limits<T>::quiet_NaN(),
                        std::numeric_limits<T>::infinity(),
                        -std::numeric_limits<T>::infinity(),
                        T(0),
                        -T(0),
                        std::numeric_limits<T>::denorm_min(),
                        std::numeric_limits<T>::max(),
                        -std::numeric_limits<T>::max()};
  return specials[k % (sizeof(specials) / sizeof(specials[0]))];
}

// Fill n elements of dtype with random values from `seed`.
void fill(DType dt, void* p, std::size_t n, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uni(-100.0, 100.0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t r = rng();
    const bool special = (r % 23) == 0;
    switch (dt) {
      case DType::kF32: {
        float v = special ? float_special<float>(r >> 8) : static_cast<float>(uni(rng));
        static_cast<float*>(p)[i] = v;
        break;
      }
      case DType::kF64: {
        double v = special ? float_special<double>(r >> 8) : uni(rng);
        static_cast<double*>(p)[i] = v;
        break;
      }
      case DType::kF16:
        // Uniform bit patterns: normals, subnormals, zeros, Inf and NaN of both signs.
        static_cast<std::uint16_t*>(p)[i] = static_cast<std::uint16_t>(r >> 20);
        break;
      case DType::kBF16: {
        // Exponents within 2^+-40 so that products stay normal in f32 (an f32-subnormal product
        // rounded twice may differ from one rounding, an accepted property of accumulating in
        // f32); specials as exact bit patterns.
        std::uint16_t h;
        if (special) {
          const std::uint16_t s[] = {0x7fc0, 0xffc1, 0x7f80, 0xff80, 0x0000, 0x8000, 0x7f7f};
          h = s[(r >> 8) % 7];
        } else {
          const std::uint32_t sign = (r >> 8) & 1, exp = 87 + ((r >> 9) % 81),
                              man = (r >> 20) & 0x7f;
          h = static_cast<std::uint16_t>((sign << 15) | (exp << 7) | man);
        }
        static_cast<std::uint16_t*>(p)[i] = h;
        break;
      }
      case DType::kI32: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(r >> 3); break;
      case DType::kI64: static_cast<std::int64_t*>(p)[i] = static_cast<std::int64_t>(r); break;
      case DType::kU8: static_cast<std::uint8_t*>(p)[i] = static_cast<std::uint8_t>(r >> 40); break;
      case DType::kI8: static_cast<std::int8_t*>(p)[i] = static_cast<std::int8_t>(r >> 40); break;
      case DType::kI16:
        static_cast<std::int16_t*>(p)[i] = static_cast<std::int16_t>(r >> 30);
        break;
      case DType::kU16:
        static_cast<std::uint16_t*>(p)[i] = static_cast<std::uint16_t>(r >> 30);
        break;
      case DType::kU32:
        static_cast<std::uint32_t*>(p)[i] = static_cast<std::uint32_t>(r >> 7);
        break;
      case DType::kU64: static_cast<std::uint64_t*>(p)[i] = r; break;
      default: FAIL() << "bad dtype in test";
    }
  }
}

template <typename T>
std::string check_int(ReduceOp op, const void* a, const void* b, const void* got, std::size_t i) {
  const T x = static_cast<const T*>(a)[i], y = static_cast<const T*>(b)[i];
  const T want = ref_int(op, x, y), g = static_cast<const T*>(got)[i];
  if (want == g) return "";
  return std::string(sizeof(T) * 8 == 64 ? "u64 " : "int ") + std::to_string(x) + " op " +
         std::to_string(y) + ": want " + std::to_string(want) + " got " + std::to_string(g);
}
template <typename T>
std::string check_int_scaled(const void* before, const void* got, std::size_t i, int d) {
  const T x = static_cast<const T*>(before)[i], g = static_cast<const T*>(got)[i];
  // C division truncates toward zero, in a type wide enough for every operand.
  const T want =
      std::is_signed_v<T>
          ? static_cast<T>(static_cast<std::int64_t>(x) / d)
          : static_cast<T>(static_cast<std::uint64_t>(x) / static_cast<std::uint64_t>(d));
  if (want == g) return "";
  return "int " + std::to_string(x) + " / " + std::to_string(d) + ": want " + std::to_string(want) +
         " got " + std::to_string(g);
}

// Reference result for element i; returns a description of the mismatch or "" when equal.
std::string check_elem(DType dt, ReduceOp op, const void* a, const void* b, const void* got,
                       std::size_t i) {
  char msg[256];
  switch (dt) {
    case DType::kF32: {
      const float x = static_cast<const float*>(a)[i], y = static_cast<const float*>(b)[i];
      const float want = ref_float(op, x, y), g = static_cast<const float*>(got)[i];
      const bool ok = std::isnan(want)
                          ? std::isnan(g)
                          : bit_cast<std::uint32_t>(want) == bit_cast<std::uint32_t>(g);
      if (ok) return "";
      std::snprintf(msg, sizeof msg, "f32 %a op %a: want %a got %a", x, y, want, g);
      return msg;
    }
    case DType::kF64: {
      const double x = static_cast<const double*>(a)[i], y = static_cast<const double*>(b)[i];
      const double want = ref_float(op, x, y), g = static_cast<const double*>(got)[i];
      const bool ok = std::isnan(want)
                          ? std::isnan(g)
                          : bit_cast<std::uint64_t>(want) == bit_cast<std::uint64_t>(g);
      if (ok) return "";
      std::snprintf(msg, sizeof msg, "f64 %a op %a: want %a got %a", x, y, want, g);
      return msg;
    }
    case DType::kF16:
    case DType::kBF16: {
      const bool f16 = dt == DType::kF16;
      const std::uint16_t x = static_cast<const std::uint16_t*>(a)[i];
      const std::uint16_t y = static_cast<const std::uint16_t*>(b)[i];
      const std::uint16_t g = static_cast<const std::uint16_t*>(got)[i];
      const double xd = f16 ? f16_to_double(x) : bf16_to_double(x);
      const double yd = f16 ? f16_to_double(y) : bf16_to_double(y);
      const double wd = ref_float(op, xd, yd);
      const std::uint16_t want = f16 ? double_to_f16(wd) : double_to_bf16(wd);
      const bool ok = std::isnan(wd) ? (f16 ? f16_is_nan(g) : bf16_is_nan(g)) : want == g;
      if (ok) return "";
      std::snprintf(msg, sizeof msg, "%s 0x%04x op 0x%04x: want 0x%04x got 0x%04x",
                    f16 ? "f16" : "bf16", x, y, want, g);
      return msg;
    }
    case DType::kI32: {
      const auto x = static_cast<const std::int32_t*>(a)[i],
                 y = static_cast<const std::int32_t*>(b)[i];
      const auto want = ref_int(op, x, y), g = static_cast<const std::int32_t*>(got)[i];
      if (want == g) return "";
      return "i32 " + std::to_string(x) + " op " + std::to_string(y) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kI64: {
      const auto x = static_cast<const std::int64_t*>(a)[i],
                 y = static_cast<const std::int64_t*>(b)[i];
      const auto want = ref_int(op, x, y), g = static_cast<const std::int64_t*>(got)[i];
      if (want == g) return "";
      return "i64 " + std::to_string(x) + " op " + std::to_string(y) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kU8: {
      const auto x = static_cast<const std::uint8_t*>(a)[i],
                 y = static_cast<const std::uint8_t*>(b)[i];
      const auto want = ref_int(op, x, y), g = static_cast<const std::uint8_t*>(got)[i];
      if (want == g) return "";
      return "u8 " + std::to_string(x) + " op " + std::to_string(y) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kI8: return check_int<std::int8_t>(op, a, b, got, i);
    case DType::kI16: return check_int<std::int16_t>(op, a, b, got, i);
    case DType::kU16: return check_int<std::uint16_t>(op, a, b, got, i);
    case DType::kU32: return check_int<std::uint32_t>(op, a, b, got, i);
    case DType::kU64: return check_int<std::uint64_t>(op, a, b, got, i);
    default: return "bad dtype";
  }
}

enum class Alias { kDisjoint, kOutIsA, kOutIsB, kAllSame };
const Alias kAliases[] = {Alias::kDisjoint, Alias::kOutIsA, Alias::kOutIsB, Alias::kAllSame};
const char* alias_name(Alias m) {
  switch (m) {
    case Alias::kDisjoint: return "out!=a,b";
    case Alias::kOutIsA: return "out==a";
    case Alias::kOutIsB: return "out==b";
    case Alias::kAllSame: return "out==a==b";
  }
  return "?";
}

// Runs one case through `isa` and compares every element with the reference; also checks that
// the inputs that are not the output were not modified.
void check_case(const Isa& isa, DType dt, ReduceOp op, std::size_t n, Alias mode,
                std::uint32_t seed) {
  SCOPED_TRACE(std::string(isa.name) + " " + dtype_name(dt) + " " + reduce_op_name(op) +
               " n=" + std::to_string(n) + " " + alias_name(mode));
  const std::size_t es = dtype_size(dt);
  Buf a(n, es), b(n, es), out(n, es);
  fill(dt, a.data(), n, seed);
  fill(dt, b.data(), n, seed * 7919u + 1);
  fill(dt, out.data(), n, seed * 31u + 5);  // garbage that must be overwritten
  if (mode == Alias::kAllSame) b = a;
  const Buf a0 = a, b0 = mode == Alias::kAllSame ? a : b;
  void* o = out.data();
  const void* pa = a.data();
  const void* pb = b.data();
  switch (mode) {
    case Alias::kDisjoint: break;
    case Alias::kOutIsA: o = a.data(); break;
    case Alias::kOutIsB: o = b.data(); break;
    case Alias::kAllSame:
      o = a.data();
      pb = a.data();
      break;
  }
  isa.reduce3(dt, op, o, pa, pb, n);
  int failures = 0;
  for (std::size_t i = 0; i < n && failures < 5; ++i) {
    const std::string err = check_elem(dt, op, a0.data(), b0.data(), o, i);
    if (!err.empty()) {
      ADD_FAILURE() << "element " << i << ": " << err;
      ++failures;
    }
  }
  if (mode == Alias::kDisjoint) {
    EXPECT_EQ(a.bytes, a0.bytes) << "input a modified";
    EXPECT_EQ(b.bytes, b0.bytes) << "input b modified";
  }
}

// ------------------------------------------------------------------ scale_avg reference
std::string check_scaled(DType dt, const void* before, const void* got, std::size_t i, int d) {
  char msg[256];
  switch (dt) {
    case DType::kF32: {
      const float x = static_cast<const float*>(before)[i], g = static_cast<const float*>(got)[i];
      const float want = x / static_cast<float>(d);
      if (std::isnan(want) ? std::isnan(g)
                           : bit_cast<std::uint32_t>(want) == bit_cast<std::uint32_t>(g))
        return "";
      std::snprintf(msg, sizeof msg, "f32 %a / %d: want %a got %a", x, d, want, g);
      return msg;
    }
    case DType::kF64: {
      const double x = static_cast<const double*>(before)[i],
                   g = static_cast<const double*>(got)[i];
      const double want = x / d;
      if (std::isnan(want) ? std::isnan(g)
                           : bit_cast<std::uint64_t>(want) == bit_cast<std::uint64_t>(g))
        return "";
      std::snprintf(msg, sizeof msg, "f64 %a / %d: want %a got %a", x, d, want, g);
      return msg;
    }
    case DType::kF16:
    case DType::kBF16: {
      const bool f16 = dt == DType::kF16;
      const std::uint16_t x = static_cast<const std::uint16_t*>(before)[i];
      const std::uint16_t g = static_cast<const std::uint16_t*>(got)[i];
      const double wd = (f16 ? f16_to_double(x) : bf16_to_double(x)) / d;
      const std::uint16_t want = f16 ? double_to_f16(wd) : double_to_bf16(wd);
      if (std::isnan(wd) ? (f16 ? f16_is_nan(g) : bf16_is_nan(g)) : want == g) return "";
      std::snprintf(msg, sizeof msg, "%s 0x%04x / %d: want 0x%04x got 0x%04x", f16 ? "f16" : "bf16",
                    x, d, want, g);
      return msg;
    }
    case DType::kI32: {
      const auto x = static_cast<const std::int32_t*>(before)[i];
      const auto g = static_cast<const std::int32_t*>(got)[i];
      const auto want = static_cast<std::int32_t>(static_cast<std::int64_t>(x) / d);
      if (want == g) return "";
      return "i32 " + std::to_string(x) + " / " + std::to_string(d) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kI64: {
      const auto x = static_cast<const std::int64_t*>(before)[i];
      const auto g = static_cast<const std::int64_t*>(got)[i];
      const auto want = static_cast<std::int64_t>(static_cast<__int128>(x) / d);
      if (want == g) return "";
      return "i64 " + std::to_string(x) + " / " + std::to_string(d) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kU8: {
      const auto x = static_cast<const std::uint8_t*>(before)[i];
      const auto g = static_cast<const std::uint8_t*>(got)[i];
      const auto want = static_cast<std::uint8_t>(x / d);
      if (want == g) return "";
      return "u8 " + std::to_string(x) + " / " + std::to_string(d) + ": want " +
             std::to_string(want) + " got " + std::to_string(g);
    }
    case DType::kI8: return check_int_scaled<std::int8_t>(before, got, i, d);
    case DType::kI16: return check_int_scaled<std::int16_t>(before, got, i, d);
    case DType::kU16: return check_int_scaled<std::uint16_t>(before, got, i, d);
    case DType::kU32: return check_int_scaled<std::uint32_t>(before, got, i, d);
    case DType::kU64: return check_int_scaled<std::uint64_t>(before, got, i, d);
    default: return "bad dtype";
  }
}

void check_scale_case(const Isa& isa, DType dt, std::size_t n, int d, std::uint32_t seed) {
  SCOPED_TRACE(std::string(isa.name) + " scale_avg " + dtype_name(dt) + " n=" + std::to_string(n) +
               " d=" + std::to_string(d));
  Buf x(n, dtype_size(dt));
  fill(dt, x.data(), n, seed);
  const Buf before = x;
  isa.scale_avg(dt, x.data(), n, d);
  int failures = 0;
  for (std::size_t i = 0; i < n && failures < 5; ++i) {
    const std::string err = check_scaled(dt, before.data(), x.data(), i, d);
    if (!err.empty()) {
      ADD_FAILURE() << "element " << i << ": " << err;
      ++failures;
    }
  }
}

// ------------------------------------------------------------------ small typed helpers
template <typename T>
T run1(const Isa& isa, DType dt, ReduceOp op, T a, T b) {
  T out;
  isa.reduce3(dt, op, &out, &a, &b, 1);
  return out;
}
std::uint16_t f16(double v) {
  return double_to_f16(v);
}
std::uint16_t bf16(double v) {
  return double_to_bf16(v);
}

}  // namespace

// ====================================================================== reference self-checks
TEST(ReduceReference, RoundingHelpersMatchKnownEncodings) {
  // The test's own reference must be right before anything is compared with it.
  EXPECT_EQ(f16(1.0), 0x3c00);
  EXPECT_EQ(f16(-2.0), 0xc000);
  EXPECT_EQ(f16(65504.0), 0x7bff);
  EXPECT_EQ(f16(65519.99), 0x7bff);
  EXPECT_EQ(f16(65520.0), 0x7c00);  // tie between 65504 (odd) and 2^16 -> even -> Inf
  EXPECT_EQ(f16(std::ldexp(1.0, -24)), 0x0001);
  EXPECT_EQ(f16(std::ldexp(1.0, -25)), 0x0000);  // tie -> even (0)
  EXPECT_EQ(f16(std::ldexp(3.0, -25)), 0x0002);  // tie between 1 and 2 units -> 2
  EXPECT_EQ(f16(std::ldexp(1.0, -14)), 0x0400);
  EXPECT_EQ(f16(-0.0), 0x8000);
  EXPECT_EQ(bf16(1.0), 0x3f80);
  EXPECT_EQ(bf16(1.0 + std::ldexp(1.0, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(bf16(1.0 + std::ldexp(3.0, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(bf16(3.4e38), 0x7f80);                     // above (0x7f7f + half ulp): rounds to Inf
  EXPECT_EQ(bf16(3.3e38), 0x7f78);
  EXPECT_EQ(bf16(std::ldexp(1.0, 128)), 0x7f80);
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto u = static_cast<std::uint16_t>(h);
    if (!f16_is_nan(u)) {
      ASSERT_EQ(f16(f16_to_double(u)), u) << std::hex << h;
    }
    if (!bf16_is_nan(u)) {
      ASSERT_EQ(bf16(bf16_to_double(u)), u) << std::hex << h;
    }
  }
}

// ====================================================================== sweeps per ISA copy
TEST(ReduceIsa, EveryDtypeOpSizeAndAliasMatchesReference) {
  std::uint32_t seed = 1;
  for (const Isa& isa : runnable_isas()) {
    EXPECT_STREQ(isa.isa_name(), isa.name);
    for (DType dt : kDTypes)
      for (ReduceOp op : kOps)
        for (std::size_t n : kSizes)
          for (Alias mode : kAliases) check_case(isa, dt, op, n, mode, seed++);
  }
}

TEST(ReduceIsa, PublicApiMatchesReference) {
  const Isa api = public_api();
  std::uint32_t seed = 1000;
  for (DType dt : kDTypes)
    for (ReduceOp op : kOps)
      for (std::size_t n : {std::size_t{0}, std::size_t{33}, std::size_t{4099}})
        for (Alias mode : kAliases) check_case(api, dt, op, n, mode, seed++);
  // reduce_into(dst, src) == reduce3(dst, dst, src).
  std::vector<float> dst = {1.f, 2.f, 3.f}, src = {10.f, -20.f, 0.5f};
  reduce_into(DType::kF32, ReduceOp::kSum, dst.data(), src.data(), dst.size());
  EXPECT_EQ(dst, (std::vector<float>{11.f, -18.f, 3.5f}));
  reduce_into(DType::kF32, ReduceOp::kMax, dst.data(), src.data(), dst.size());
  EXPECT_EQ(dst, (std::vector<float>{11.f, -18.f, 3.5f}));
  reduce_into(DType::kF32, ReduceOp::kMin, dst.data(), src.data(), dst.size());
  EXPECT_EQ(dst, (std::vector<float>{10.f, -20.f, 0.5f}));
}

TEST(ReduceIsa, ScaleAvgMatchesReference) {
  std::uint32_t seed = 5000;
  std::vector<Isa> isas = runnable_isas();
  isas.push_back(public_api());
  for (const Isa& isa : isas)
    for (DType dt : kDTypes)
      for (int d : {1, 2, 3, 7, 8, 1000})
        for (std::size_t n : kSizes) check_scale_case(isa, dt, n, d, seed++);
}

// ====================================================================== explicit cases
TEST(ReduceIsa, IntegerWraparound) {
  for (const Isa& isa : runnable_isas()) {
    SCOPED_TRACE(isa.name);
    constexpr auto i32max = std::numeric_limits<std::int32_t>::max();
    constexpr auto i32min = std::numeric_limits<std::int32_t>::min();
    constexpr auto i64max = std::numeric_limits<std::int64_t>::max();
    constexpr auto i64min = std::numeric_limits<std::int64_t>::min();
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kSum, i32max, 1), i32min);
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kAvg, i32min, -1), i32max);
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kProd, 65536, 65536), 0);
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kProd, i32min, -1), i32min);
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kProd, 46341, 46341), -2147479015);
    EXPECT_EQ(run1<std::int64_t>(isa, DType::kI64, ReduceOp::kSum, i64max, 1), i64min);
    EXPECT_EQ(run1<std::int64_t>(isa, DType::kI64, ReduceOp::kProd, i64min, -1), i64min);
    EXPECT_EQ(run1<std::int64_t>(isa, DType::kI64, ReduceOp::kProd, std::int64_t{1} << 32,
                                 std::int64_t{1} << 32),
              0);
    EXPECT_EQ(run1<std::uint8_t>(isa, DType::kU8, ReduceOp::kSum, 200, 100), 44);
    EXPECT_EQ(run1<std::uint8_t>(isa, DType::kU8, ReduceOp::kProd, 16, 16), 0);
    EXPECT_EQ(run1<std::uint8_t>(isa, DType::kU8, ReduceOp::kProd, 255, 255), 1);
    EXPECT_EQ(run1<std::uint8_t>(isa, DType::kU8, ReduceOp::kMin, 200, 100), 100);
    EXPECT_EQ(run1<std::uint8_t>(isa, DType::kU8, ReduceOp::kMax, 200, 100), 200);  // unsigned
    EXPECT_EQ(run1<std::int32_t>(isa, DType::kI32, ReduceOp::kMin, i32min, i32max), i32min);
    EXPECT_EQ(run1<std::int64_t>(isa, DType::kI64, ReduceOp::kMax, i64min, -1), -1);

    // The same through full vectors (the scalar tail is not the only code path).
    std::vector<std::int32_t> a(67, i32max), b(67, 1), o(67);
    isa.reduce3(DType::kI32, ReduceOp::kSum, o.data(), a.data(), b.data(), o.size());
    for (auto v : o) ASSERT_EQ(v, i32min);
    std::vector<std::uint8_t> ua(131, 200), ub(131, 100);
    isa.reduce3(DType::kU8, ReduceOp::kSum, ua.data(), ua.data(), ub.data(), ua.size());
    for (auto v : ua) ASSERT_EQ(v, 44);
  }
}

TEST(ReduceIsa, FloatMinMaxPropagateNaN) {
  const float fnan = std::numeric_limits<float>::quiet_NaN();
  const double dnan = std::numeric_limits<double>::quiet_NaN();
  for (const Isa& isa : runnable_isas()) {
    SCOPED_TRACE(isa.name);
    for (ReduceOp op : {ReduceOp::kMin, ReduceOp::kMax}) {
      EXPECT_TRUE(std::isnan(run1<float>(isa, DType::kF32, op, fnan, 1.f)));
      EXPECT_TRUE(std::isnan(run1<float>(isa, DType::kF32, op, 1.f, fnan)));
      EXPECT_TRUE(std::isnan(run1<float>(isa, DType::kF32, op, fnan, fnan)));
      EXPECT_TRUE(std::isnan(run1<double>(isa, DType::kF64, op, dnan, -1.0)));
      EXPECT_TRUE(std::isnan(run1<double>(isa, DType::kF64, op, -1.0, dnan)));
      EXPECT_TRUE(f16_is_nan(run1<std::uint16_t>(isa, DType::kF16, op, 0x7e00, f16(1.0))));
      EXPECT_TRUE(f16_is_nan(run1<std::uint16_t>(isa, DType::kF16, op, f16(1.0), 0xfe01)));
      EXPECT_TRUE(bf16_is_nan(run1<std::uint16_t>(isa, DType::kBF16, op, 0x7fc0, bf16(1.0))));
      EXPECT_TRUE(bf16_is_nan(run1<std::uint16_t>(isa, DType::kBF16, op, bf16(1.0), 0x7f81)));
      // Vector path: NaN in every lane position of both operands.
      for (std::size_t pos = 0; pos < 40; ++pos) {
        std::vector<float> a(40, 2.f), b(40, 3.f), o(40);
        (pos % 2 ? a : b)[pos] = fnan;
        isa.reduce3(DType::kF32, op, o.data(), a.data(), b.data(), o.size());
        for (std::size_t i = 0; i < o.size(); ++i) {
          if (i == pos) {
            ASSERT_TRUE(std::isnan(o[i])) << "pos " << pos;
          } else {
            ASSERT_EQ(o[i], op == ReduceOp::kMin ? 2.f : 3.f);
          }
        }
        std::vector<double> da(40, 2.0), db(40, 3.0), dout(40);
        (pos % 2 ? db : da)[pos] = dnan;
        isa.reduce3(DType::kF64, op, dout.data(), da.data(), db.data(), dout.size());
        for (std::size_t i = 0; i < dout.size(); ++i)
          ASSERT_EQ(std::isnan(dout[i]), i == pos) << "pos " << pos;
      }
    }
    // Inf is an ordinary value for min/max.
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_EQ(run1<float>(isa, DType::kF32, ReduceOp::kMin, -inf, 1.f), -inf);
    EXPECT_EQ(run1<float>(isa, DType::kF32, ReduceOp::kMax, -inf, 1.f), 1.f);
  }
}

TEST(ReduceIsa, HalfPrecisionRoundsToNearestEven) {
  for (const Isa& isa : runnable_isas()) {
    SCOPED_TRACE(isa.name);
    auto f16sum = [&](std::uint16_t a, std::uint16_t b) {
      return run1<std::uint16_t>(isa, DType::kF16, ReduceOp::kSum, a, b);
    };
    auto bf16sum = [&](std::uint16_t a, std::uint16_t b) {
      return run1<std::uint16_t>(isa, DType::kBF16, ReduceOp::kSum, a, b);
    };
    const std::uint16_t f16_half_ulp_of_1 = f16(std::ldexp(1.0, -11));
    EXPECT_EQ(f16sum(0x3c00, f16_half_ulp_of_1), 0x3c00);  // 1 + 2^-11: tie -> even (1.0)
    EXPECT_EQ(f16sum(0x3c01, f16_half_ulp_of_1), 0x3c02);  // tie -> even (up)
    EXPECT_EQ(f16sum(0x3c00, f16(std::ldexp(1.0, -11) + std::ldexp(1.0, -20))), 0x3c01);
    EXPECT_EQ(f16sum(0x7bff, f16(16.0)), 0x7c00);  // 65504 + 16 = 65520: tie -> Inf
    EXPECT_EQ(f16sum(0x7bff, f16(8.0)), 0x7bff);
    EXPECT_EQ(f16sum(0x0001, 0x0001), 0x0002);           // subnormals add exactly
    EXPECT_EQ(f16sum(0x7c00, 0xfc00) & 0x7c00, 0x7c00);  // Inf - Inf = NaN
    EXPECT_TRUE(f16_is_nan(f16sum(0x7c00, 0xfc00)));
    EXPECT_EQ(run1<std::uint16_t>(isa, DType::kF16, ReduceOp::kProd, f16(std::ldexp(1.0, -12)),
                                  f16(std::ldexp(1.0, -13))),
              0x0000);  // 2^-25: tie between 0 and 2^-24 -> 0
    EXPECT_EQ(run1<std::uint16_t>(isa, DType::kF16, ReduceOp::kProd, f16(std::ldexp(3.0, -13)),
                                  f16(std::ldexp(1.0, -12))),
              0x0002);  // 3*2^-25 -> 2*2^-24

    EXPECT_EQ(bf16sum(0x3f80, bf16(std::ldexp(1.0, -8))), 0x3f80);  // tie -> even
    EXPECT_EQ(bf16sum(0x3f81, bf16(std::ldexp(1.0, -8))), 0x3f82);  // tie -> even (up)
    EXPECT_EQ(bf16sum(0x3f80, bf16(std::ldexp(1.0, -8) + std::ldexp(1.0, -14))), 0x3f81);
    EXPECT_EQ(bf16sum(0x7f7f, 0x7f7f), 0x7f80);  // overflow -> Inf
    EXPECT_TRUE(bf16_is_nan(bf16sum(0x7f80, 0xff80)));
    EXPECT_TRUE(bf16_is_nan(bf16sum(0x7fc0, 0x3f80)));

    // Every f16 value plus a fixed addend and times a factor, through the vector path.
    std::vector<std::uint16_t> all(0x10000), addend(0x10000, f16(0.3)), out(0x10000);
    for (std::uint32_t h = 0; h < 0x10000; ++h) all[h] = static_cast<std::uint16_t>(h);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax}) {
      isa.reduce3(DType::kF16, op, out.data(), all.data(), addend.data(), all.size());
      int failures = 0;
      for (std::size_t i = 0; i < all.size() && failures < 5; ++i) {
        const std::string err =
            check_elem(DType::kF16, op, all.data(), addend.data(), out.data(), i);
        if (!err.empty()) {
          ADD_FAILURE() << err;
          ++failures;
        }
      }
      // bf16: every value with a finite-range addend (sum / min / max stay exact in f32).
      if (op != ReduceOp::kProd) {
        std::vector<std::uint16_t> badd(0x10000, bf16(-1.7e-3));
        isa.reduce3(DType::kBF16, op, out.data(), all.data(), badd.data(), all.size());
        for (std::size_t i = 0; i < all.size() && failures < 5; ++i) {
          const std::string err =
              check_elem(DType::kBF16, op, all.data(), badd.data(), out.data(), i);
          if (!err.empty()) {
            ADD_FAILURE() << err;
            ++failures;
          }
        }
      }
    }
  }
}

TEST(ReduceIsa, ScaleAvgExplicitCases) {
  std::vector<Isa> isas = runnable_isas();
  isas.push_back(public_api());
  for (const Isa& isa : isas) {
    SCOPED_TRACE(isa.name);
    std::vector<std::int32_t> i32 = {-7,
                                     7,
                                     -1,
                                     1,
                                     0,
                                     std::numeric_limits<std::int32_t>::min(),
                                     std::numeric_limits<std::int32_t>::max(),
                                     -8,
                                     9,
                                     -9,
                                     2,
                                     -3};
    // Repeat to get through the vector body, not only the tail.
    std::vector<std::int32_t> big;
    for (int r = 0; r < 5; ++r) big.insert(big.end(), i32.begin(), i32.end());
    isa.scale_avg(DType::kI32, big.data(), big.size(), 2);
    for (std::size_t k = 0; k < big.size(); ++k) {
      const std::int32_t want = static_cast<std::int32_t>(i32[k % i32.size()] / 2);
      ASSERT_EQ(big[k], want) << "i32 " << i32[k % i32.size()] << " / 2";
    }
    EXPECT_EQ(big[0], -3);  // truncation toward zero: -7/2 == -3, not -4
    std::vector<std::int64_t> i64(37, -7);
    i64[5] = std::numeric_limits<std::int64_t>::min();
    i64[6] = std::numeric_limits<std::int64_t>::max();
    isa.scale_avg(DType::kI64, i64.data(), i64.size(), 2);
    EXPECT_EQ(i64[0], -3);
    EXPECT_EQ(i64[36], -3);
    EXPECT_EQ(i64[5], std::numeric_limits<std::int64_t>::min() / 2);
    EXPECT_EQ(i64[6], std::numeric_limits<std::int64_t>::max() / 2);
    std::vector<std::uint8_t> u8(70, 255);
    isa.scale_avg(DType::kU8, u8.data(), u8.size(), 2);
    for (auto v : u8) ASSERT_EQ(v, 127);
    std::vector<std::int32_t> three(40, 2147483646);
    isa.scale_avg(DType::kI32, three.data(), three.size(), 3);
    for (auto v : three) ASSERT_EQ(v, 715827882);
    std::vector<float> f(19, 1.f);
    isa.scale_avg(DType::kF32, f.data(), f.size(), 3);
    for (auto v : f) ASSERT_EQ(v, 1.f / 3.f);
    // Divisors beyond 2^24 (not exact in f32) and near INT_MAX.
    std::vector<float> fbig(19, 3.f);
    isa.scale_avg(DType::kF32, fbig.data(), fbig.size(), (1 << 24) + 1);
    for (auto v : fbig) ASSERT_EQ(v, static_cast<float>(3.0 / 16777217.0));
    std::vector<std::int32_t> ibig(19, std::numeric_limits<std::int32_t>::min());
    ibig[3] = -7;
    ibig[4] = std::numeric_limits<std::int32_t>::max();
    isa.scale_avg(DType::kI32, ibig.data(), ibig.size(), std::numeric_limits<int>::max());
    EXPECT_EQ(ibig[0], -1);
    EXPECT_EQ(ibig[3], 0);
    EXPECT_EQ(ibig[4], 1);
    std::vector<std::uint8_t> ubig(19, 255);
    isa.scale_avg(DType::kU8, ubig.data(), ubig.size(), 256);
    for (auto v : ubig) ASSERT_EQ(v, 0);
    std::vector<std::uint16_t> h(19, f16(1.0));
    isa.scale_avg(DType::kF16, h.data(), h.size(), 3);
    for (auto v : h) ASSERT_EQ(v, f16(1.0 / 3.0));
    std::vector<std::uint16_t> bh(19, bf16(1.0));
    isa.scale_avg(DType::kBF16, bh.data(), bh.size(), 3);
    for (auto v : bh) ASSERT_EQ(v, bf16(1.0 / 3.0));
  }
}

// ====================================================================== names, dispatch, errors
TEST(Reduce, OpNamesRoundTrip) {
  for (ReduceOp op : kOps) EXPECT_EQ(reduce_op_from_name(reduce_op_name(op)), op);
  EXPECT_STREQ(reduce_op_name(ReduceOp::kSum), "sum");
  EXPECT_STREQ(reduce_op_name(ReduceOp::kAvg), "avg");
  EXPECT_STREQ(reduce_op_name(ReduceOp::kMin), "min");
  EXPECT_STREQ(reduce_op_name(ReduceOp::kMax), "max");
  EXPECT_STREQ(reduce_op_name(ReduceOp::kProd), "prod");
  EXPECT_STREQ(reduce_op_name(static_cast<ReduceOp>(99)), "invalid");
}

TEST(Reduce, UnknownOpNameIsUsageError) {
  for (const char* bad : {"", "SUM", "mean", "product", "sum "}) {
    try {
      reduce_op_from_name(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("sum, avg, min, max, prod"), std::string::npos)
          << e.what();
    }
  }
}

TEST(Reduce, SupportedDtypes) {
  for (DType dt : kDTypes) EXPECT_TRUE(reduce_supported(dt)) << dtype_name(dt);
  for (DType dt : {DType::kBytes, DType::kBool})
    EXPECT_FALSE(reduce_supported(dt)) << dtype_name(dt);
}

TEST(Reduce, UnsupportedDtypeIsUsageErrorNamingIt) {
  std::vector<std::uint64_t> a(4), b(4);
  for (DType dt : {DType::kBool, DType::kBytes}) {
    const std::string name = dtype_name(dt);
    try {
      reduce_into(dt, ReduceOp::kSum, a.data(), b.data(), 4);
      ADD_FAILURE() << "no error for " << name;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
    EXPECT_THROW(reduce3(dt, ReduceOp::kMax, a.data(), a.data(), b.data(), 0), UsageError);
    EXPECT_THROW(scale_avg(dt, a.data(), 4, 2), UsageError);
  }
  EXPECT_THROW(reduce_into(static_cast<DType>(200), ReduceOp::kSum, a.data(), b.data(), 1),
               UsageError);
}

TEST(Reduce, BadArgumentsAreUsageErrors) {
  std::vector<float> a(16, 1.f), b(16, 2.f);
  EXPECT_THROW(reduce_into(DType::kF32, static_cast<ReduceOp>(7), a.data(), b.data(), 4),
               UsageError);
  EXPECT_THROW(scale_avg(DType::kF32, a.data(), a.size(), 0), UsageError);
  EXPECT_THROW(scale_avg(DType::kI32, a.data(), a.size(), -2), UsageError);
  EXPECT_THROW(reduce_into(DType::kF32, ReduceOp::kSum, nullptr, b.data(), 4), UsageError);
  EXPECT_THROW(reduce_into(DType::kF32, ReduceOp::kSum, a.data(), nullptr, 4), UsageError);
  // Partial overlap between output and an input is rejected; exact aliasing is fine.
  EXPECT_THROW(reduce3(DType::kF32, ReduceOp::kSum, a.data() + 1, a.data(), b.data(), 8),
               UsageError);
  EXPECT_THROW(reduce3(DType::kF32, ReduceOp::kSum, b.data(), a.data(), b.data() + 3, 8),
               UsageError);
  EXPECT_NO_THROW(reduce3(DType::kF32, ReduceOp::kSum, a.data() + 8, a.data(), b.data(), 8));
  EXPECT_NO_THROW(reduce3(DType::kF32, ReduceOp::kSum, a.data(), a.data(), a.data(), 8));
  EXPECT_FLOAT_EQ(a[0], 2.f);  // 1 + 1
  // n == 0 with null pointers is a no-op.
  EXPECT_NO_THROW(reduce_into(DType::kF32, ReduceOp::kSum, nullptr, nullptr, 0));
  EXPECT_NO_THROW(scale_avg(DType::kF32, nullptr, 0, 3));
}

TEST(Reduce, KernelNameFollowsSimdLevel) {
  const std::string name = reduce_kernel_name();
  const SimdLevel level = simd_level();
  std::string want = "generic";
#if RINGPRESS_HAVE_AVX512
  if (level >= SimdLevel::kAVX512) want = "avx512";
#endif
#if RINGPRESS_HAVE_AVX2
  if (want == "generic" && level >= SimdLevel::kAVX2) want = "avx2";
#endif
  EXPECT_EQ(name, want) << "simd_level " << simd_level_name(level);
}

// ====================================================================== throughput (manual)
// build/.../rp_cpp_tests --gtest_also_run_disabled_tests --gtest_filter='*ReduceBench*'
TEST(ReduceBench, DISABLED_Throughput) {
  constexpr std::size_t n = std::size_t{16} << 20;
  for (const Isa& isa : runnable_isas()) {
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kU8}) {
      const std::size_t es = dtype_size(dt);
      std::vector<std::uint8_t> dst(n * es), src(n * es);
      fill(dt, dst.data(), n, 1);
      fill(dt, src.data(), n, 2);
      // Floats: finite normal values only (no NaN/denormal slow paths in the timing).
      for (std::size_t i = 0; i < n && dt != DType::kI32 && dt != DType::kU8; ++i) {
        const double v = 0.25 + static_cast<double>(i % 100) * 0.01;
        if (dt == DType::kF32) {
          reinterpret_cast<float*>(dst.data())[i] = reinterpret_cast<float*>(src.data())[i] =
              static_cast<float>(v);
        } else {
          const std::uint16_t h = dt == DType::kF16 ? f16(v) : bf16(v);
          reinterpret_cast<std::uint16_t*>(dst.data())[i] = h;
          reinterpret_cast<std::uint16_t*>(src.data())[i] = h;
        }
      }
      isa.reduce3(dt, ReduceOp::kSum, dst.data(), dst.data(), src.data(), n);  // warm up
      double best = 1e9;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        isa.reduce3(dt, ReduceOp::kSum, dst.data(), dst.data(), src.data(), n);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, s);
      }
      std::printf("[reduce bench] %-7s %-9s sum 16M: %6.2f ms  %6.2f GB/s (3 x %zu MiB moved)\n",
                  isa.name, dtype_name(dt), best * 1e3, 3.0 * n * es / best / 1e9, n * es >> 20);
    }
  }
}
