// CUDA twins of the quantization kernels (contract: ringpress/quantize.h): blockwise int8 / int4 /
// int2 (nearest and seeded stochastic), 1-bit sign with a per-block mean|x| scale, ternary
// (TernGrad = stochastic int2) and fp16/bf16 conversion on device buffers.
//
// Bit-identical to the CPU: the same sequence of single IEEE fp32 (sign: fp64) operations, written
// with the explicit _rn intrinsics so nvcc cannot contract them into FMAs, the same counter-based
// PRNG (detail::prng_draw from quantize.h, __host__ __device__) and the same packed bit stream
// (element i at bits [i*b, i*b + b), unused high bits of the last byte 0). Non-finite input gets
// the CPU's treatment: such a block gets a NaN scale (every decoded element of it is NaN, never a
// silent wrong value) and all-zero codes. The device entry points are asynchronous on `stream`.
//
// Blockwise encode is three launches on one stream, with d_scales doubling as scratch:
//   1. block_max_kernel: d_scales[b] <- max |x| bit pattern of block b (zeroed, then atomicMax; a
//      warp whose 32 elements share a block reduces in registers and issues one atomic);
//   2. codes_kernel: one thread per 8 consecutive elements ("octet", = `bits` payload bytes, so
//      threads never share a byte whatever the block size), pre/inv from the block's max;
//   3. scales_kernel: max bit pattern -> scale, in place.
// Sign: sign_scale_kernel (8 threads per block, one per fp64 lane of the CPU's sum, combined in the
// CPU's order with shuffles) then codes_kernel with bits = 1. Decode: one thread per octet.
// Cost: encode reads x twice (max pass, code pass; the second mostly hits L2), decode once.
// Status: compiled on every build, never run on a GPU in this repository's CI (no device there);
// tests/cpp/test_cuda_quantize.cc and tests/python/test_cuda_quantize.py compare with the CPU byte
// for byte wherever a device is present.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "ringpress/cuda.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::cuda {
namespace {

namespace qd = ringpress::quant::detail;
constexpr int kThreads = 256;
constexpr std::uint32_t kInfBits = 0x7f800000u;
constexpr std::uint32_t kNaNBits = 0x7fc00000u;

__device__ __forceinline__ std::uint32_t warp_max(std::uint32_t v) {
  for (int o = 16; o > 0; o >>= 1) {
    const std::uint32_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// m[b] |= max over block b of the |x| bit patterns (m zeroed by the caller). The loop is uniform
// per warp (stride is a multiple of 32), so the full-mask shuffles are safe.
__global__ void block_max_kernel(const float* __restrict__ x, std::size_t n, std::size_t block,
                                 std::uint32_t* __restrict__ m) {
  const unsigned lane = threadIdx.x & 31u;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t base = blockIdx.x * std::size_t(blockDim.x) + (threadIdx.x - lane); base < n;
       base += stride) {
    const std::size_t i = base + lane;
    const bool ok = i < n;
    std::uint32_t v = ok ? (__float_as_uint(x[i]) & 0x7fffffffu) : 0u;
    const std::size_t last = n - 1 < base + 31 ? n - 1 : base + 31;
    const std::size_t b0 = base / block;
    if (b0 == last / block) {
      v = warp_max(v);
      if (lane == 0 && v != 0) atomicMax(m + b0, v);
    } else if (ok && v != 0) {
      atomicMax(m + i / block, v);
    }
  }
}

// Max bit pattern -> scale, in place (the CPU encoder's rule, including the step-down near
// FLT_MAX); a non-finite block gets a NaN scale.
__global__ void scales_kernel(std::uint32_t* ms, std::size_t nb, int qmax) {
  const float qf = static_cast<float>(qmax);
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < nb;
       b += std::size_t(gridDim.x) * blockDim.x) {
    const std::uint32_t mb = ms[b];
    float sc = mb == 0 ? 0.0f : __fdiv_rn(__uint_as_float(mb), qf);
    if (mb < kInfBits) {
      while (!isfinite(__fmul_rn(qf, sc))) sc = nextafterf(sc, 0.0f);
    }
    ms[b] = mb >= kInfBits ? kNaNBits : __float_as_uint(sc);
  }
}

// Sign scales: thread 8b+k sums |x| of block b's lane k (elements k, k+8, ... in order) in fp64,
// then ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)) by xor-shuffles (fp add is commutative, so every lane
// of the group computes the CPU's value); scale = float(sum / len), NaN if not finite.
__global__ void sign_scale_kernel(const float* __restrict__ x, std::size_t n, std::size_t block,
                                  std::size_t nb, float* __restrict__ scales) {
  const unsigned lane = threadIdx.x & 31u;
  const std::size_t total = nb * 8;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t base = blockIdx.x * std::size_t(blockDim.x) + (threadIdx.x - lane); base < total;
       base += stride) {
    const std::size_t t = base + lane;
    const std::size_t b = t / 8;
    const std::size_t k = t % 8;
    double acc = 0.0;
    std::size_t len = 0, s = 0;
    if (t < total) {
      s = b * block;
      len = n - s < block ? n - s : block;
      for (std::size_t j = k; j < len; j += 8) {
        acc = __dadd_rn(acc, static_cast<double>(fabsf(x[s + j])));
      }
    }
    acc = __dadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 1));
    acc = __dadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 2));
    acc = __dadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 4));
    if (t < total && k == 0) {
      scales[b] = isfinite(acc) ? __double2float_rn(__ddiv_rn(acc, static_cast<double>(len)))
                                : __uint_as_float(kNaNBits);
    }
  }
}

// Codes of elements [8o, 8o + 8) into payload bytes [o*bits, o*bits + bits). m[b]: bits 8/4/2:
// the block's max |x| bit pattern; bits 1 (sign): the block's scale (only NaN = bad is used).
__global__ void codes_kernel(const float* __restrict__ x, std::size_t n, std::size_t block,
                             int bits, bool stochastic, std::uint32_t k0, std::uint32_t k1,
                             std::uint64_t offset, const std::uint32_t* __restrict__ m,
                             std::uint8_t* __restrict__ payload) {
  const std::int32_t qmax = qd::qmax_for_bits(bits);
  const float qf = static_cast<float>(qmax);
  const std::uint32_t mask = bits == 8 ? 0xffu : (1u << bits) - 1u;
  const std::size_t octets = n / 8 + (n % 8 != 0);
  for (std::size_t o = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; o < octets;
       o += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t i0 = o * 8;
    const int cnt = n - i0 < 8 ? static_cast<int>(n - i0) : 8;
    std::size_t b = i0 / block;
    std::size_t r = i0 - b * block;
    std::size_t cur = ~std::size_t(0);
    std::uint32_t mb = 0;
    float pre = 1.0f, inv = 0.0f;
    unsigned long long word = 0;
    for (int j = 0; j < cnt; ++j) {
      if (b != cur) {
        cur = b;
        mb = m[b];
        const float mf = __uint_as_float(mb);
        pre = mf < qd::kTinyBlock ? qd::kPreScale : 1.0f;
        inv = (mb == 0 || mb >= kInfBits) ? 0.0f : __fdiv_rn(qf, __fmul_rn(mf, pre));
      }
      const std::size_t i = i0 + j;
      std::int32_t c = 0;
      if (bits == 1) {
        c = mb >= kInfBits ? 0 : static_cast<std::int32_t>(__float_as_uint(x[i]) >> 31);
      } else if (mb != 0 && mb < kInfBits) {
        const float v = __fmul_rn(__fmul_rn(x[i], pre), inv);
        if (!stochastic) {
          c = static_cast<std::int32_t>(__float_as_uint(__fadd_rn(v, qd::kRoundMagic)) -
                                        qd::kRoundMagicBits);
        } else {
          const std::uint64_t ctr = offset + i;
          const std::uint32_t h =
              qd::prng_draw(k0, qd::prng_hi_key(k1, static_cast<std::uint32_t>(ctr >> 32)),
                            static_cast<std::uint32_t>(ctr));
          std::int32_t t = __float2int_rz(v);
          t -= __int2float_rn(t) > v ? 1 : 0;
          const float frac = __fsub_rn(v, __int2float_rn(t));
          const float u = __int2float_rn(static_cast<std::int32_t>(h >> 8));
          c = t + (u < __fmul_rn(frac, 16777216.0f) ? 1 : 0);
        }
        c = c > qmax ? qmax : c;
        c = c < -qmax ? -qmax : c;
      }
      word |= static_cast<unsigned long long>(static_cast<std::uint32_t>(c) & mask) << (j * bits);
      if (++r == block) {
        r = 0;
        ++b;
      }
    }
    std::uint8_t* p = payload + o * bits;
    const int nbytes = (cnt * bits + 7) / 8;
    for (int k = 0; k < nbytes; ++k) p[k] = static_cast<std::uint8_t>(word >> (8 * k));
  }
}

// Dequantize elements [8o, 8o + 8): q * scale (bits 8/4/2, two's complement; int2 code 10 -> -2),
// bits 1: bit ? -scale : scale.
__global__ void decode_kernel(const std::uint8_t* __restrict__ payload,
                              const float* __restrict__ scales, std::size_t n, std::size_t block,
                              int bits, float* __restrict__ out) {
  const std::uint32_t mask = bits == 8 ? 0xffu : (1u << bits) - 1u;
  const std::size_t octets = n / 8 + (n % 8 != 0);
  for (std::size_t o = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; o < octets;
       o += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t i0 = o * 8;
    const int cnt = n - i0 < 8 ? static_cast<int>(n - i0) : 8;
    std::size_t b = i0 / block;
    std::size_t r = i0 - b * block;
    const std::uint8_t* p = payload + o * bits;
    const int nbytes = (cnt * bits + 7) / 8;
    unsigned long long word = 0;
    for (int k = 0; k < nbytes; ++k) word |= static_cast<unsigned long long>(p[k]) << (8 * k);
    std::size_t cur = b;
    float sc = scales[b];
    for (int j = 0; j < cnt; ++j) {
      if (b != cur) {
        cur = b;
        sc = scales[b];
      }
      const std::uint32_t u = static_cast<std::uint32_t>(word >> (j * bits)) & mask;
      float v;
      if (bits == 1) {
        v = u ? -sc : sc;
      } else {
        const std::int32_t q = static_cast<std::int32_t>(u << (32 - bits)) >> (32 - bits);
        // A NaN scale (a non-finite block) decodes to itself, the CPU's bits: the device's
        // multiply would give its canonical NaN (0x7fffffff) instead.
        v = sc != sc ? sc : __fmul_rn(__int2float_rn(q), sc);
      }
      out[i0 + j] = v;
      if (++r == block) {
        r = 0;
        ++b;
      }
    }
  }
}

__device__ __forceinline__ std::uint16_t f32_to_f16_bits(float xf) {
  const std::uint32_t u = __float_as_uint(xf);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  const std::uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const std::uint32_t sub = __float_as_uint(__fadd_rn(__uint_as_float(a), 0.5f)) - 0x3f000000u;
  const std::uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  std::uint32_t r = a < 0x38800000u ? sub : normal;
  r = a >= 0x477ff000u ? 0x7c00u : r;
  r = a > 0x7f800000u ? nan : r;
  return static_cast<std::uint16_t>(sign | r);
}

__device__ __forceinline__ float f16_to_f32_value(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t a = h & 0x7fffu;
  const std::uint32_t normal = (a << 13) + 0x38000000u;
  const std::uint32_t special = (a << 13) | 0x7f800000u | (a > 0x7c00u ? 0x00400000u : 0u);
  const std::uint32_t sub = __float_as_uint(__fsub_rn(__uint_as_float(0x3f000000u + a), 0.5f));
  std::uint32_t r = a >= 0x7c00u ? special : normal;
  r = a < 0x400u ? sub : r;
  return __uint_as_float(r | sign);
}

// kind: 0 fp32->fp16, 1 fp16->fp32, 2 fp32->bf16, 3 bf16->fp32
__global__ void convert_kernel(int kind, const void* __restrict__ in, void* __restrict__ out,
                               std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    if (kind == 0) {
      static_cast<std::uint16_t*>(out)[i] = f32_to_f16_bits(static_cast<const float*>(in)[i]);
    } else if (kind == 1) {
      static_cast<float*>(out)[i] = f16_to_f32_value(static_cast<const std::uint16_t*>(in)[i]);
    } else if (kind == 2) {
      const std::uint32_t u = __float_as_uint(static_cast<const float*>(in)[i]);
      const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      const std::uint32_t nan = (u >> 16) | 0x0040u;
      static_cast<std::uint16_t*>(out)[i] =
          static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    } else {
      const std::uint32_t u = static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(in)[i])
                              << 16;
      const std::uint32_t q = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) : u;
      static_cast<float*>(out)[i] = __uint_as_float(q);
    }
  }
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    RP_THROW(UsageError, what, ": ", cudaGetErrorString(err));
  }
}

int grid_for(std::size_t work, int per_block) {
  const std::size_t want = (work + per_block - 1) / per_block;
  return static_cast<int>(want < 65535 ? (want ? want : 1) : 65535);
}

std::size_t octets_of(std::size_t n) {
  return n / 8 + (n % 8 != 0);
}

void convert(int kind, const void* d_in, void* d_out, std::size_t n, void* stream) {
  RP_ENFORCE(n == 0 || (d_in && d_out), UsageError, "null device buffer for ", n, " elements");
  if (n == 0) return;
  convert_kernel<<<grid_for(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      kind, d_in, d_out, n);
  check_cuda(cudaGetLastError(), "kernel launch");
}

// Argument checks shared by every quantizer entry point (same rules and messages as the CPU).
std::size_t check_args(std::size_t n, int bits, std::size_t block, const void* a, const void* b,
                       const void* c) {
  RP_ENFORCE(bits == 8 || bits == 4 || bits == 2 || bits == 1, UsageError,
             "bits must be 8, 4 or 2, got ", bits);
  RP_ENFORCE(block >= 1, UsageError, "block size must be >= 1, got ", block);
  RP_ENFORCE(n <= (~std::size_t(0)) / 8, UsageError, "element count ", n, " too large");
  RP_ENFORCE(n == 0 || (a && b && c), UsageError, "null buffer for ", n, " elements");
  return n / block + (n % block != 0);
}

std::size_t payload_bytes(std::size_t n, int bits) {
  return (n * static_cast<std::size_t>(bits) + 7) / 8;
}

// bits 8/4/2 (blockwise) or 1 (sign); device buffers, asynchronous.
void encode(const float* d_x, std::size_t n, int bits, std::size_t block, bool stochastic,
            std::uint64_t seed, std::uint64_t offset, std::uint8_t* d_payload, float* d_scales,
            void* stream) {
  const std::size_t nb = check_args(n, bits, block, d_x, d_payload, d_scales);
  if (n == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  auto* ms = reinterpret_cast<std::uint32_t*>(d_scales);
  if (bits == 1) {
    sign_scale_kernel<<<grid_for(nb * 8, kThreads), kThreads, 0, st>>>(d_x, n, block, nb, d_scales);
    check_cuda(cudaGetLastError(), "kernel launch");
  } else {
    check_cuda(cudaMemsetAsync(d_scales, 0, nb * sizeof(float), st), "cudaMemsetAsync");
    block_max_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(d_x, n, block, ms);
    check_cuda(cudaGetLastError(), "kernel launch");
  }
  const std::uint64_t key = qd::splitmix64(seed);
  codes_kernel<<<grid_for(octets_of(n), kThreads), kThreads, 0, st>>>(
      d_x, n, block, bits, stochastic && bits != 1, static_cast<std::uint32_t>(key),
      static_cast<std::uint32_t>(key >> 32), offset, ms, d_payload);
  check_cuda(cudaGetLastError(), "kernel launch");
  if (bits != 1) {
    scales_kernel<<<grid_for(nb, kThreads), kThreads, 0, st>>>(ms, nb, qd::qmax_for_bits(bits));
    check_cuda(cudaGetLastError(), "kernel launch");
  }
}

void decode(const std::uint8_t* d_payload, const float* d_scales, std::size_t n, int bits,
            std::size_t block, float* d_out, void* stream) {
  check_args(n, bits, block, d_payload, d_scales, d_out);
  if (n == 0) return;
  decode_kernel<<<grid_for(octets_of(n), kThreads), kThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(d_payload, d_scales, n, block, bits, d_out);
  check_cuda(cudaGetLastError(), "kernel launch");
}

// One device allocation, freed on scope exit.
class DeviceMem {
 public:
  explicit DeviceMem(std::size_t bytes) {
    if (bytes) check_cuda(cudaMalloc(&p_, bytes), "cudaMalloc");
  }
  ~DeviceMem() {
    if (p_) cudaFree(p_);
  }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

void to_device(void* d, const void* h, std::size_t bytes) {
  if (bytes) check_cuda(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
void to_host(void* h, const void* d, std::size_t bytes) {
  if (bytes) check_cuda(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

// Host in, host out, synchronous (a non-finite block: a NaN scale, as on the CPU).
void encode_staged(const float* x, std::size_t n, int bits, std::size_t block, bool stochastic,
                   std::uint64_t seed, std::uint64_t offset, std::uint8_t* payload, float* scales) {
  const std::size_t nb = check_args(n, bits, block, x, payload, scales);
  RP_ENFORCE(device_count() > 0, UsageError, "no CUDA device is available");
  if (n == 0) return;
  const std::size_t pb = payload_bytes(n, bits);
  DeviceMem dx(n * sizeof(float)), dp(pb), ds(nb * sizeof(float));
  to_device(dx.as<void>(), x, n * sizeof(float));
  encode(dx.as<float>(), n, bits, block, stochastic, seed, offset, dp.as<std::uint8_t>(),
         ds.as<float>(), nullptr);
  to_host(payload, dp.as<void>(), pb);
  to_host(scales, ds.as<void>(), nb * sizeof(float));
}

void decode_staged(const std::uint8_t* payload, const float* scales, std::size_t n, int bits,
                   std::size_t block, float* out) {
  const std::size_t nb = check_args(n, bits, block, payload, scales, out);
  RP_ENFORCE(device_count() > 0, UsageError, "no CUDA device is available");
  if (n == 0) return;
  const std::size_t pb = payload_bytes(n, bits);
  DeviceMem dp(pb), ds(nb * sizeof(float)), dout(n * sizeof(float));
  to_device(dp.as<void>(), payload, pb);
  to_device(ds.as<void>(), scales, nb * sizeof(float));
  decode(dp.as<std::uint8_t>(), ds.as<float>(), n, bits, block, dout.as<float>(), nullptr);
  to_host(out, dout.as<void>(), n * sizeof(float));
}

void check_int_bits(int bits) {
  RP_ENFORCE(bits == 8 || bits == 4 || bits == 2, UsageError, "bits must be 8, 4 or 2, got ", bits);
}

}  // namespace

// ---------------------------------------------------------------- blockwise int8 / int4 / int2
void quantize_blockwise_device(const float* d_x, std::size_t n, int bits, std::size_t block,
                               bool stochastic, std::uint64_t seed, std::uint64_t offset,
                               std::uint8_t* d_payload, float* d_scales, void* stream) {
  ScopedErrorContext ctx("cuda.quantize_blockwise");
  check_int_bits(bits);
  encode(d_x, n, bits, block, stochastic, seed, offset, d_payload, d_scales, stream);
}

void dequantize_blockwise_device(const std::uint8_t* d_payload, const float* d_scales,
                                 std::size_t n, int bits, std::size_t block, float* d_out,
                                 void* stream) {
  ScopedErrorContext ctx("cuda.dequantize_blockwise");
  check_int_bits(bits);
  decode(d_payload, d_scales, n, bits, block, d_out, stream);
}

void quantize_int8_device(const float* d_x, std::size_t n, std::size_t block, bool stochastic,
                          std::uint64_t seed, std::uint64_t offset, std::uint8_t* d_payload,
                          float* d_scales, void* stream) {
  ScopedErrorContext ctx("cuda.quantize_int8");
  encode(d_x, n, 8, block, stochastic, seed, offset, d_payload, d_scales, stream);
}

void dequantize_int8_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                            std::size_t block, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.dequantize_int8");
  decode(d_payload, d_scales, n, 8, block, d_out, stream);
}

void quantize_blockwise_host_staged(const float* x, std::size_t n, int bits, std::size_t block,
                                    bool stochastic, std::uint64_t seed, std::uint64_t offset,
                                    std::uint8_t* payload, float* scales) {
  ScopedErrorContext ctx("cuda.quantize_blockwise_host_staged");
  check_int_bits(bits);
  encode_staged(x, n, bits, block, stochastic, seed, offset, payload, scales);
}

void dequantize_blockwise_host_staged(const std::uint8_t* payload, const float* scales,
                                      std::size_t n, int bits, std::size_t block, float* out) {
  ScopedErrorContext ctx("cuda.dequantize_blockwise_host_staged");
  check_int_bits(bits);
  decode_staged(payload, scales, n, bits, block, out);
}

// ---------------------------------------------------------------- sign (EF-SignSGD)
void sign_encode_device(const float* d_x, std::size_t n, std::size_t block, std::uint8_t* d_payload,
                        float* d_scales, void* stream) {
  ScopedErrorContext ctx("cuda.sign_encode");
  encode(d_x, n, 1, block, false, 0, 0, d_payload, d_scales, stream);
}

void sign_decode_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                        std::size_t block, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.sign_decode");
  decode(d_payload, d_scales, n, 1, block, d_out, stream);
}

void sign_encode_host_staged(const float* x, std::size_t n, std::size_t block,
                             std::uint8_t* payload, float* scales) {
  ScopedErrorContext ctx("cuda.sign_encode_host_staged");
  encode_staged(x, n, 1, block, false, 0, 0, payload, scales);
}

void sign_decode_host_staged(const std::uint8_t* payload, const float* scales, std::size_t n,
                             std::size_t block, float* out) {
  ScopedErrorContext ctx("cuda.sign_decode_host_staged");
  decode_staged(payload, scales, n, 1, block, out);
}

// ---------------------------------------------------------------- ternary (TernGrad)
void ternary_encode_device(const float* d_x, std::size_t n, std::size_t block, std::uint64_t seed,
                           std::uint64_t offset, std::uint8_t* d_payload, float* d_scales,
                           void* stream) {
  ScopedErrorContext ctx("cuda.ternary_encode");
  encode(d_x, n, 2, block, true, seed, offset, d_payload, d_scales, stream);
}

void ternary_decode_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                           std::size_t block, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.ternary_decode");
  decode(d_payload, d_scales, n, 2, block, d_out, stream);
}

void ternary_encode_host_staged(const float* x, std::size_t n, std::size_t block,
                                std::uint64_t seed, std::uint64_t offset, std::uint8_t* payload,
                                float* scales) {
  ScopedErrorContext ctx("cuda.ternary_encode_host_staged");
  encode_staged(x, n, 2, block, true, seed, offset, payload, scales);
}

void ternary_decode_host_staged(const std::uint8_t* payload, const float* scales, std::size_t n,
                                std::size_t block, float* out) {
  ScopedErrorContext ctx("cuda.ternary_decode_host_staged");
  decode_staged(payload, scales, n, 2, block, out);
}

// ---------------------------------------------------------------- fp16 / bf16
void fp32_to_fp16_device(const float* d_x, std::size_t n, std::uint16_t* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.fp32_to_fp16");
  convert(0, d_x, d_out, n, stream);
}
void fp16_to_fp32_device(const std::uint16_t* d_h, std::size_t n, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.fp16_to_fp32");
  convert(1, d_h, d_out, n, stream);
}
void fp32_to_bf16_device(const float* d_x, std::size_t n, std::uint16_t* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.fp32_to_bf16");
  convert(2, d_x, d_out, n, stream);
}
void bf16_to_fp32_device(const std::uint16_t* d_h, std::size_t n, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.bf16_to_fp32");
  convert(3, d_h, d_out, n, stream);
}

}  // namespace ringpress::cuda
