// CUDA twin of the top-k threshold path (ringpress/cuda.h; semantics of ringpress/topk.h).
//
// Threshold compaction, ordered, in three kernels (no CUB, to keep nvcc time small):
//   count  one block per tile of 2048 elements counts |x| >= t (and NaNs)      1 read of x
//   scan   one block turns the tile counts into exclusive offsets + the total  n/2048 words
//   write  each tile re-evaluates its flags in 8 rounds of 256 consecutive elements; warp
//          ballots + a block scan give each selected element its rank          1 read of x
// so indices come out ascending and the result equals the CPU threshold_select exactly.
// Sampled estimate: one block draws the sample (counter-based PRNG shared with the CPU code) into
// shared memory and radix-selects the r-th largest bit pattern, 8 bits per round.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "ringpress/cuda.h"
#include "ringpress/error.h"

namespace ringpress::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;
constexpr int kTile = kThreads * kItems;
constexpr int kMaxSample = 8192;
constexpr std::uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr std::uint32_t kInfBits = 0x7F800000u;

__device__ __forceinline__ std::uint32_t abs_bits(float v) {
  return __float_as_uint(v) & kAbsMask;
}

__global__ void count_kernel(const float* __restrict__ x, std::size_t n,
                             const float* __restrict__ thr, std::uint32_t* __restrict__ tile_counts,
                             unsigned long long* __restrict__ counts) {
  const std::uint32_t tb = abs_bits(*thr);
  const std::size_t base = std::size_t(blockIdx.x) * kTile;
  unsigned hits = 0, nans = 0;
  for (int j = 0; j < kItems; ++j) {
    const std::size_t i = base + std::size_t(j) * kThreads + threadIdx.x;
    if (i < n) {
      const std::uint32_t b = abs_bits(x[i]);
      hits += b >= tb;
      nans += b > kInfBits;
    }
  }
  __shared__ unsigned s_hits, s_nans;
  if (threadIdx.x == 0) s_hits = s_nans = 0;
  __syncthreads();
  for (int o = 16; o > 0; o >>= 1) {
    hits += __shfl_down_sync(0xFFFFFFFFu, hits, o);
    nans += __shfl_down_sync(0xFFFFFFFFu, nans, o);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(&s_hits, hits);
    if (nans) atomicAdd(&s_nans, nans);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    tile_counts[blockIdx.x] = s_hits;
    if (s_nans) atomicAdd(counts + 1, static_cast<unsigned long long>(s_nans));
  }
}

// Exclusive scan of tile counts in place (one block of 1024 threads), total into counts[0].
__global__ void scan_kernel(std::uint32_t* __restrict__ tile_counts, std::size_t tiles,
                            unsigned long long* __restrict__ counts) {
  __shared__ unsigned long long s[1024];
  unsigned long long carry = 0;
  for (std::size_t b = 0; b < tiles; b += 1024) {
    const std::size_t i = b + threadIdx.x;
    const unsigned long long v = i < tiles ? tile_counts[i] : 0;
    s[threadIdx.x] = v;
    __syncthreads();
    for (int o = 1; o < 1024; o <<= 1) {  // Hillis-Steele inclusive scan
      const unsigned long long add = threadIdx.x >= o ? s[threadIdx.x - o] : 0;
      __syncthreads();
      s[threadIdx.x] += add;
      __syncthreads();
    }
    // Offsets fit 32 bits: n < 2^32.
    if (i < tiles) tile_counts[i] = static_cast<std::uint32_t>(carry + s[threadIdx.x] - v);
    carry += s[1023];
    __syncthreads();
  }
  if (threadIdx.x == 0) counts[0] = carry;
}

__global__ void write_kernel(const float* __restrict__ x, std::size_t n,
                             const float* __restrict__ thr,
                             const std::uint32_t* __restrict__ tile_offsets,
                             std::uint32_t* __restrict__ idx, float* __restrict__ val,
                             std::size_t capacity) {
  __shared__ unsigned s_warp[kThreads / 32];
  const std::uint32_t tb = abs_bits(*thr);
  const std::size_t base = std::size_t(blockIdx.x) * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  std::size_t offset = tile_offsets[blockIdx.x];
  for (int j = 0; j < kItems; ++j) {
    const std::size_t i = base + std::size_t(j) * kThreads + threadIdx.x;
    float v = 0.0f;
    bool hit = false;
    if (i < n) {
      v = x[i];
      hit = abs_bits(v) >= tb;
    }
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, hit);
    if (lane == 0) s_warp[warp] = __popc(ballot);
    __syncthreads();
    unsigned before = 0, total = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      const unsigned c = s_warp[w];
      before += w < warp ? c : 0;
      total += c;
    }
    if (hit) {
      const std::size_t pos = offset + before + __popc(ballot & ((1u << lane) - 1u));
      if (pos < capacity) {
        idx[pos] = static_cast<std::uint32_t>(i);
        val[pos] = v;
      }
    }
    offset += total;
    __syncthreads();
  }
}

__device__ __forceinline__ std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// r-th largest |x| over s sampled positions; one block of 1024 threads.
__global__ void sample_select_kernel(const float* __restrict__ x, std::size_t n, std::uint64_t seed,
                                     int s, int r, float* __restrict__ out) {
  __shared__ std::uint32_t sample[kMaxSample];
  __shared__ unsigned hist[256];
  __shared__ std::uint32_t s_prefix;
  __shared__ int s_r;
  const std::uint64_t key = mix64(seed ^ 0x6A09E667F3BCC909ull);
  for (int j = threadIdx.x; j < s; j += blockDim.x) {
    const std::uint64_t rnd = mix64(key + std::uint64_t(j + 1) * 0x9E3779B97F4A7C15ull);
    sample[j] = abs_bits(x[__umul64hi(rnd, n)]);
  }
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_r = r;
  }
  __syncthreads();
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const std::uint32_t prefix = s_prefix;
    const std::uint32_t hi_mask = shift == 24 ? 0u : (0xFFFFFFFFu << (shift + 8));
    for (int j = threadIdx.x; j < s; j += blockDim.x) {
      const std::uint32_t b = sample[j];
      if ((b & hi_mask) == prefix) atomicAdd(&hist[(b >> shift) & 0xFFu], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int need = s_r, digit = 255;
      for (; digit > 0; --digit) {
        if (need <= static_cast<int>(hist[digit])) break;
        need -= static_cast<int>(hist[digit]);
      }
      s_prefix = prefix | (std::uint32_t(digit) << shift);
      s_r = need;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = __uint_as_float(s_prefix);
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) RP_THROW(UsageError, what, ": ", cudaGetErrorString(err));
}

std::size_t tiles_for(std::size_t n) {
  return (n + kTile - 1) / kTile;
}

}  // namespace

std::size_t topk_threshold_scratch_bytes(std::size_t n) noexcept {
  return tiles_for(n) * sizeof(std::uint32_t);
}

void topk_threshold_select_device(const float* d_x, std::size_t n, const float* d_threshold,
                                  unsigned* d_idx, float* d_val, std::size_t capacity,
                                  unsigned long long* d_counts, void* d_scratch,
                                  std::size_t scratch_bytes, void* stream) {
  ScopedErrorContext ctx("cuda.topk_threshold_select");
  RP_ENFORCE_LE(n, std::size_t{0xFFFFFFFFu}, UsageError, "indices are uint32");
  RP_ENFORCE_GE(scratch_bytes, topk_threshold_scratch_bytes(n), UsageError, "scratch too small");
  RP_ENFORCE(d_counts != nullptr && d_threshold != nullptr, UsageError, "null device pointer");
  auto st = static_cast<cudaStream_t>(stream);
  check(cudaMemsetAsync(d_counts, 0, 2 * sizeof(unsigned long long), st), "cudaMemsetAsync");
  if (n == 0) return;
  const std::size_t tiles = tiles_for(n);
  auto* offsets = static_cast<std::uint32_t*>(d_scratch);
  count_kernel<<<static_cast<unsigned>(tiles), kThreads, 0, st>>>(d_x, n, d_threshold, offsets,
                                                                  d_counts);
  check(cudaGetLastError(), "count kernel launch");
  scan_kernel<<<1, 1024, 0, st>>>(offsets, tiles, d_counts);
  check(cudaGetLastError(), "scan kernel launch");
  write_kernel<<<static_cast<unsigned>(tiles), kThreads, 0, st>>>(d_x, n, d_threshold, offsets,
                                                                  d_idx, d_val, capacity);
  check(cudaGetLastError(), "write kernel launch");
}

void topk_sampled_threshold_device(const float* d_x, std::size_t n, std::size_t k,
                                   unsigned long long seed, std::size_t sample_size,
                                   float* d_threshold, void* stream) {
  ScopedErrorContext ctx("cuda.topk_sampled_threshold");
  RP_ENFORCE(n > 0 && k > 0 && k <= n, UsageError, "need 0 < k <= n, got k=", k, " n=", n);
  RP_ENFORCE(sample_size >= 1 && sample_size <= std::size_t(kMaxSample), UsageError,
             "sample_size must be in [1, ", kMaxSample, "], got ", sample_size);
  const double mu = double(k) * double(sample_size) / double(n);
  double r = std::ceil(mu + 4.0 * std::sqrt(mu) + 4.0);
  if (r > double(sample_size)) r = double(sample_size);
  sample_select_kernel<<<1, 1024, 0, static_cast<cudaStream_t>(stream)>>>(
      d_x, n, seed, int(sample_size), int(r), d_threshold);
  check(cudaGetLastError(), "sample kernel launch");
}

std::size_t topk_threshold_select_host_staged(const float* x, std::size_t n, float t, unsigned* idx,
                                              float* val, std::size_t capacity) {
  ScopedErrorContext ctx("cuda.topk_threshold_select_host_staged");
  RP_ENFORCE(device_count() > 0, UsageError, "no CUDA device is available");
  RP_ENFORCE(!std::isnan(t) && !(t < 0.0f), UsageError, "threshold must be >= 0, got ", t);
  const std::size_t scratch = topk_threshold_scratch_bytes(n);
  const std::size_t cap = capacity;
  const std::size_t bytes = n * 4 + 4 + 16 + scratch + 2 * (cap ? cap : 1) * 4 + 64;
  char* d = nullptr;
  check(cudaMalloc(&d, bytes), "cudaMalloc");
  unsigned long long counts[2] = {0, 0};
  try {
    auto* d_counts = reinterpret_cast<unsigned long long*>(d);
    auto* d_thr = reinterpret_cast<float*>(d + 16);
    auto* d_x = reinterpret_cast<float*>(d + 32);
    auto* d_idx = reinterpret_cast<unsigned*>(d + 32 + n * 4);
    auto* d_val = reinterpret_cast<float*>(d + 32 + n * 4 + (cap ? cap : 1) * 4);
    void* d_scratch = d + 32 + n * 4 + 2 * (cap ? cap : 1) * 4;
    check(cudaMemcpy(d_thr, &t, 4, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    if (n) check(cudaMemcpy(d_x, x, n * 4, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    topk_threshold_select_device(d_x, n, d_thr, d_idx, d_val, cap, d_counts, d_scratch, scratch,
                                 nullptr);
    check(cudaMemcpy(counts, d_counts, sizeof counts, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    const std::size_t m = counts[0] < cap ? std::size_t(counts[0]) : cap;
    if (m) {
      check(cudaMemcpy(idx, d_idx, m * 4, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
      check(cudaMemcpy(val, d_val, m * 4, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    }
  } catch (...) {
    cudaFree(d);
    throw;
  }
  cudaFree(d);
  return std::size_t(counts[0]);
}

}  // namespace ringpress::cuda
