// CUDA twins of the quantization kernels (contract: ringpress/quantize.h): blockwise int8
// (nearest and stochastic) and fp16/bf16 conversion on device buffers.
//
// Bit-identical to the CPU: the same sequence of single IEEE fp32 operations, written with the
// explicit _rn intrinsics so nvcc cannot contract them into FMAs, and the same counter-based PRNG
// (detail::prng_draw from quantize.h, __host__ __device__). Non-finite input cannot raise on the
// device: such a block gets a NaN scale (every decoded element of it is NaN, never a silent wrong
// value) and all-zero codes; the host entry points are asynchronous on `stream`.
// Cost: int8 encode reads x twice (max pass, quantize pass; the second mostly hits L2), one CUDA
// block of 256 threads per quantization block; conversions are one grid-stride pass.
#include <cuda_runtime.h>

#include <cstdint>

#include "ringpress/cuda.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::cuda {
namespace {

namespace qd = ringpress::quant::detail;
constexpr int kThreads = 256;

__device__ __forceinline__ std::uint32_t warp_max(std::uint32_t v) {
  for (int o = 16; o > 0; o >>= 1) {
    const std::uint32_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

__global__ void int8_encode_kernel(const float* __restrict__ x, std::size_t n, std::size_t block,
                                   std::size_t nblocks, bool stochastic, std::uint32_t k0,
                                   std::uint32_t k1, std::uint64_t offset,
                                   std::int8_t* __restrict__ q, float* __restrict__ scales) {
  __shared__ std::uint32_t warp_maxes[kThreads / 32];
  for (std::size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    const std::size_t s = b * block;
    const std::size_t len = n - s < block ? n - s : block;
    std::uint32_t m = 0;
    for (std::size_t i = threadIdx.x; i < len; i += kThreads) {
      const std::uint32_t u = __float_as_uint(x[s + i]) & 0x7fffffffu;
      m = u > m ? u : m;
    }
    m = warp_max(m);
    if ((threadIdx.x & 31) == 0) warp_maxes[threadIdx.x >> 5] = m;
    __syncthreads();
    m = warp_maxes[0];
    for (int w = 1; w < kThreads / 32; ++w) m = warp_maxes[w] > m ? warp_maxes[w] : m;
    __syncthreads();  // warp_maxes is reused by the next block of this CUDA block
    const bool bad = m >= 0x7f800000u;
    const float mf = __uint_as_float(m);
    const float pre = mf < qd::kTinyBlock ? qd::kPreScale : 1.0f;
    const float inv = (m == 0 || bad) ? 0.0f : __fdiv_rn(127.0f, __fmul_rn(mf, pre));
    if (threadIdx.x == 0) {
      float sc = m == 0 ? 0.0f : __fdiv_rn(mf, 127.0f);
      while (!isfinite(__fmul_rn(127.0f, sc))) sc = nextafterf(sc, 0.0f);  // as the CPU encoder
      scales[b] = bad ? __uint_as_float(0x7fc00000u) : sc;
    }
    for (std::size_t i = threadIdx.x; i < len; i += kThreads) {
      std::int32_t c = 0;
      if (m != 0 && !bad) {
        const float v = __fmul_rn(__fmul_rn(x[s + i], pre), inv);
        if (!stochastic) {
          c = static_cast<std::int32_t>(__float_as_uint(__fadd_rn(v, qd::kRoundMagic)) -
                                        qd::kRoundMagicBits);
        } else {
          const std::uint64_t ctr = offset + s + i;
          const std::uint32_t h =
              qd::prng_draw(k0, qd::prng_hi_key(k1, static_cast<std::uint32_t>(ctr >> 32)),
                            static_cast<std::uint32_t>(ctr));
          std::int32_t t = __float2int_rz(v);
          t -= __int2float_rn(t) > v ? 1 : 0;
          const float frac = __fsub_rn(v, __int2float_rn(t));
          const float u = __int2float_rn(static_cast<std::int32_t>(h >> 8));
          c = t + (u < __fmul_rn(frac, 16777216.0f) ? 1 : 0);
        }
        c = c > 127 ? 127 : c;
        c = c < -127 ? -127 : c;
      }
      q[s + i] = static_cast<std::int8_t>(c);
    }
  }
}

__global__ void int8_decode_kernel(const std::int8_t* __restrict__ q,
                                   const float* __restrict__ scales, std::size_t n,
                                   std::size_t block, float* __restrict__ out) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    out[i] = __fmul_rn(__int2float_rn(q[i]), scales[i / block]);
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

void convert(int kind, const void* d_in, void* d_out, std::size_t n, void* stream) {
  RP_ENFORCE(n == 0 || (d_in && d_out), UsageError, "null device buffer for ", n, " elements");
  if (n == 0) return;
  convert_kernel<<<grid_for(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      kind, d_in, d_out, n);
  check_cuda(cudaGetLastError(), "kernel launch");
}

}  // namespace

void quantize_int8_device(const float* d_x, std::size_t n, std::size_t block, bool stochastic,
                          std::uint64_t seed, std::uint64_t offset, std::uint8_t* d_payload,
                          float* d_scales, void* stream) {
  ScopedErrorContext ctx("cuda.quantize_int8");
  RP_ENFORCE(block >= 1, UsageError, "block size must be >= 1, got ", block);
  RP_ENFORCE(n == 0 || (d_x && d_payload && d_scales), UsageError, "null device buffer for ", n,
             " elements");
  if (n == 0) return;
  const std::size_t nb = n / block + (n % block != 0);
  const std::uint64_t key = qd::splitmix64(seed);
  int8_encode_kernel<<<grid_for(nb, 1), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      d_x, n, block, nb, stochastic, static_cast<std::uint32_t>(key),
      static_cast<std::uint32_t>(key >> 32), offset, reinterpret_cast<std::int8_t*>(d_payload),
      d_scales);
  check_cuda(cudaGetLastError(), "kernel launch");
}

void dequantize_int8_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                            std::size_t block, float* d_out, void* stream) {
  ScopedErrorContext ctx("cuda.dequantize_int8");
  RP_ENFORCE(block >= 1, UsageError, "block size must be >= 1, got ", block);
  RP_ENFORCE(n == 0 || (d_payload && d_scales && d_out), UsageError, "null device buffer for ", n,
             " elements");
  if (n == 0) return;
  int8_decode_kernel<<<grid_for(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const std::int8_t*>(d_payload), d_scales, n, block, d_out);
  check_cuda(cudaGetLastError(), "kernel launch");
}

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
