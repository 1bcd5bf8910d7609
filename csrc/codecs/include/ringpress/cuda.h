// Host-side entry points of the CUDA kernels (csrc/cuda/*.cu).
//
// Contract: every function is callable in every build. Without CUDA support compiled in
// (RINGPRESS_WITH_CUDA == 0, csrc/cuda/cuda_stub.cc) or without a usable device, the query
// functions report 0 and the kernel entry points throw UsageError naming the reason.
#pragma once

#include <cstddef>

namespace ringpress::cuda {

bool built() noexcept;           // kernels compiled into this build
int runtime_version() noexcept;  // CUDART_VERSION compiled against, 0 without CUDA
int device_count() noexcept;     // usable devices now; 0 if no driver/GPU

// Byte shuffle on the device (layout as ringpress/shuffle.h). d_src/d_dst are device pointers;
// stream is a cudaStream_t (nullptr = default stream). Asynchronous with respect to the host.
void byte_shuffle_device(const void* d_src, void* d_dst, std::size_t nbytes, std::size_t elemsize,
                         void* stream);
void byte_unshuffle_device(const void* d_src, void* d_dst, std::size_t nbytes, std::size_t elemsize,
                           void* stream);
// Host-staged variant (copy in, kernel, copy out, synchronous): for tests and host buffers.
void byte_shuffle_host_staged(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize,
                              bool unshuffle);

// Top-k support on the device (csrc/cuda/topk.cu; selection semantics as ringpress/topk.h).
// Threshold compaction: every i with |d_x[i]| >= *d_threshold (bit-pattern compare, like the CPU
// threshold_select), written in ascending index order to d_idx/d_val, at most capacity of them.
// d_counts[0] = number selected (> capacity means the output holds only the first capacity);
// d_counts[1] = number of NaN inputs (selected like any |x| >= t, as on the CPU: a NaN's bit
// pattern exceeds every allowed threshold). d_scratch must hold
// topk_threshold_scratch_bytes(n) bytes. Cost: 2 reads of d_x + a scan of n/2048 tile counts.
std::size_t topk_threshold_scratch_bytes(std::size_t n) noexcept;
void topk_threshold_select_device(const float* d_x, std::size_t n, const float* d_threshold,
                                  unsigned* d_idx, float* d_val, std::size_t capacity,
                                  unsigned long long* d_counts, void* d_scratch,
                                  std::size_t scratch_bytes, void* stream);
// Sampled threshold estimate (one block): the r-th largest |x| over sample_size (<= 8192)
// positions drawn with the same counter-based PRNG as the CPU topk_sampled, r = mu + 4 sqrt(mu)
// + 4 with mu = k * sample_size / n, so {|x| >= t} holds the top-k with high probability and
// about k (1 + 4 / sqrt(mu)) elements; refine on the host (topk compact) or re-run if too few.
void topk_sampled_threshold_device(const float* d_x, std::size_t n, std::size_t k,
                                   unsigned long long seed, std::size_t sample_size,
                                   float* d_threshold, void* stream);
// Host-staged threshold selection (synchronous; for tests): returns the count selected (the
// first min(count, capacity) are written). NaNs are selected, as on the CPU.
std::size_t topk_threshold_select_host_staged(const float* x, std::size_t n, float t, unsigned* idx,
                                              float* val, std::size_t capacity);

}  // namespace ringpress::cuda

// ---------------------------------------------------------------- quantization (quantize.cu)
// Device twins of ringpress/quantize.h, asynchronous on `stream` (a cudaStream_t, nullptr =
// default). Same codes, scales and payload bytes as the CPU kernels (blockwise_encode/decode,
// sign_*, ternary_*; any block >= 1; packing, rounding and PRNG as quantize.h), so a payload
// encoded on either side decodes identically on the other, bit for bit (a NaN block too: its
// scale's bits, 0x7fc00000, on both). d_payload holds
// ceil(n * bits / 8) bytes, d_scales ceil(n / block) floats (encode also uses d_scales as
// scratch). A block holding NaN/Inf gets a NaN scale (0x7fc00000) and zero codes, as on the CPU.
// Bad bits/block/null buffers throw UsageError before anything is launched.
// The *_host_staged variants take host buffers (copy in, kernels, copy out, synchronous; for
// tests and host data) and need a device (UsageError otherwise).
#include <cstdint>

namespace ringpress::cuda {

// Blockwise symmetric int8/int4/int2 (bits 8, 4 or 2), nearest or stochastic (seed/offset as
// quant::BlockwiseParams).
void quantize_blockwise_device(const float* d_x, std::size_t n, int bits, std::size_t block,
                               bool stochastic, std::uint64_t seed, std::uint64_t offset,
                               std::uint8_t* d_payload, float* d_scales, void* stream);
void dequantize_blockwise_device(const std::uint8_t* d_payload, const float* d_scales,
                                 std::size_t n, int bits, std::size_t block, float* d_out,
                                 void* stream);
void quantize_blockwise_host_staged(const float* x, std::size_t n, int bits, std::size_t block,
                                    bool stochastic, std::uint64_t seed, std::uint64_t offset,
                                    std::uint8_t* payload, float* scales);
void dequantize_blockwise_host_staged(const std::uint8_t* payload, const float* scales,
                                      std::size_t n, int bits, std::size_t block, float* out);
// bits = 8 shorthands of the above.
void quantize_int8_device(const float* d_x, std::size_t n, std::size_t block, bool stochastic,
                          std::uint64_t seed, std::uint64_t offset, std::uint8_t* d_payload,
                          float* d_scales, void* stream);
void dequantize_int8_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                            std::size_t block, float* d_out, void* stream);

// 1-bit sign, scale = mean|x| per block (summed in fp64 over the CPU's 8 fixed lanes and order).
// Cost note: each block's sum is 8 serial lanes, so a very large block is latency-bound.
void sign_encode_device(const float* d_x, std::size_t n, std::size_t block, std::uint8_t* d_payload,
                        float* d_scales, void* stream);
void sign_decode_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                        std::size_t block, float* d_out, void* stream);
void sign_encode_host_staged(const float* x, std::size_t n, std::size_t block,
                             std::uint8_t* payload, float* scales);
void sign_decode_host_staged(const std::uint8_t* payload, const float* scales, std::size_t n,
                             std::size_t block, float* out);

// Ternary (TernGrad): exactly blockwise int2 with stochastic rounding.
void ternary_encode_device(const float* d_x, std::size_t n, std::size_t block, std::uint64_t seed,
                           std::uint64_t offset, std::uint8_t* d_payload, float* d_scales,
                           void* stream);
void ternary_decode_device(const std::uint8_t* d_payload, const float* d_scales, std::size_t n,
                           std::size_t block, float* d_out, void* stream);
void ternary_encode_host_staged(const float* x, std::size_t n, std::size_t block,
                                std::uint64_t seed, std::uint64_t offset, std::uint8_t* payload,
                                float* scales);
void ternary_decode_host_staged(const std::uint8_t* payload, const float* scales, std::size_t n,
                                std::size_t block, float* out);

void fp32_to_fp16_device(const float* d_x, std::size_t n, std::uint16_t* d_out, void* stream);
void fp16_to_fp32_device(const std::uint16_t* d_h, std::size_t n, float* d_out, void* stream);
void fp32_to_bf16_device(const float* d_x, std::size_t n, std::uint16_t* d_out, void* stream);
void bf16_to_fp32_device(const std::uint16_t* d_h, std::size_t n, float* d_out, void* stream);

}  // namespace ringpress::cuda
