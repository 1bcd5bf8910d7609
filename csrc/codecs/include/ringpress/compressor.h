// Gradient compressors behind the compressed-tensor container (docs/wire-format.md, "RPZC").
//
// Contract: compressor_encode() turns a float32 tensor into a container whose sections are
// ordinary frames (lossless stage = spec.lossless: codec none stores them, zstd/lz4 stack a
// lossless stage on the lossy one). compressor_decode() reconstructs the dense float32 tensor;
// every byte is validated (WireFormatError), never trusted.
// Error feedback: with a residual buffer r (n floats), encode compresses x + r and leaves in r
// what the receiver will not see: r <- (x + r) - decode(payload), so over any number of steps
// sum(decoded) + r == sum(x) up to fp32 rounding (the dropped mass is carried, not lost).
// Cost: the kernels' (docs/algorithms.md) + the lossless stage on the sections; with feedback one
// more pass (decode into scratch and subtract).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringpress/lossless.h"

namespace ringpress {

enum class CompressMethod : std::uint8_t {
  kFP16 = 1,
  kBF16 = 2,
  kInt = 3,
  kSign = 4,
  kTernary = 5,
  kSparse = 6,
};
enum class SparseSelector : std::uint8_t { kExact = 0, kSampled = 1, kRandom = 2, kThreshold = 3 };

struct CompressorSpec {
  CompressMethod method = CompressMethod::kInt;
  int bits = 8;               // int: 8/4/2; sparse: bits per value, 32 or 16
  std::uint32_t block = 512;  // int/sign/ternary: elements per scale
  bool stochastic = false;    // int
  SparseSelector selector = SparseSelector::kSampled;
  double ratio = 0.01;      // sparse exact/sampled/random: k = max(1, round(ratio * n))
  double tolerance = 0.05;  // sparse sampled
  float threshold = 0.0f;   // sparse threshold
  LosslessOptions lossless{wire::Codec::kNone, 1, ShuffleMode::kAuto, 1, 0};
};

struct ContainerInfo {
  CompressMethod method = CompressMethod::kInt;
  int bits = 0;
  std::uint32_t block = 0;
  std::uint64_t n = 0;
  int ndim = 0;
  std::uint64_t shape[wire::kMaxNdim] = {};
  std::vector<std::uint64_t> section_offsets;  // from the container start
  std::vector<std::uint64_t> section_sizes;
  std::uint64_t size = 0;
};

const char* compress_method_name(CompressMethod m) noexcept;
std::size_t sparse_k(const CompressorSpec& spec, std::size_t n) noexcept;

// Largest container compressor_encode can produce for n elements.
std::size_t compressor_bound(const CompressorSpec& spec, std::size_t n, int ndim);

// Encodes x[0..n) (n = product(shape)) into dst (capacity >= compressor_bound); returns the size.
// seed keys the stochastic stream (int stochastic, ternary, sparse random/sampled) of this call.
// residual: nullptr, or n floats of error-feedback state, updated as described above.
std::size_t compressor_encode(const CompressorSpec& spec, const float* x, std::size_t n,
                              const std::uint64_t* shape, int ndim, std::uint64_t seed,
                              float* residual, void* dst, std::size_t dst_cap, int threads = 1);

// Validates the header, the section table and every section's frame header.
ContainerInfo parse_container(const void* buf, std::size_t len);

// Reconstructs the dense tensor into out (out_n must equal the container's n).
void compressor_decode(const void* buf, std::size_t len, float* out, std::size_t out_n,
                       int threads = 1);

}  // namespace ringpress
