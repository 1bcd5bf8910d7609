// Stand-ins for csrc/cuda/*.cu in builds without CUDA (RINGPRESS_WITH_CUDA == 0).
#include "ringpress/cuda.h"
#include "ringpress/error.h"

namespace ringpress::cuda {

bool built() noexcept {
  return false;
}
int runtime_version() noexcept {
  return 0;
}
int device_count() noexcept {
  return 0;
}

namespace {
[[noreturn]] void not_built(const char* op) {
  ScopedErrorContext ctx(op);
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
}  // namespace

void byte_shuffle_device(const void*, void*, std::size_t, std::size_t, void*) {
  not_built("cuda.byte_shuffle");
}
void byte_unshuffle_device(const void*, void*, std::size_t, std::size_t, void*) {
  not_built("cuda.byte_unshuffle");
}
void byte_shuffle_host_staged(const void*, void*, std::size_t, std::size_t, bool) {
  not_built("cuda.byte_shuffle_host_staged");
}

// Top-k (csrc/cuda/topk.cu).
std::size_t topk_threshold_scratch_bytes(std::size_t) noexcept {
  return 0;
}
void topk_threshold_select_device(const float*, std::size_t, const float*, unsigned*, float*,
                                  std::size_t, unsigned long long*, void*, std::size_t, void*) {
  not_built("cuda.topk_threshold_select");
}
void topk_sampled_threshold_device(const float*, std::size_t, std::size_t, unsigned long long,
                                   std::size_t, float*, void*) {
  not_built("cuda.topk_sampled_threshold");
}
std::size_t topk_threshold_select_host_staged(const float*, std::size_t, float, unsigned*, float*,
                                              std::size_t) {
  not_built("cuda.topk_threshold_select_host_staged");
}

}  // namespace ringpress::cuda

// Quantization twins (csrc/cuda/quantize.cu).
namespace ringpress::cuda {

void quantize_int8_device(const float*, std::size_t, std::size_t, bool, std::uint64_t,
                          std::uint64_t, std::uint8_t*, float*, void*) {
  ScopedErrorContext ctx("cuda.quantize_int8");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
void dequantize_int8_device(const std::uint8_t*, const float*, std::size_t, std::size_t, float*,
                            void*) {
  ScopedErrorContext ctx("cuda.dequantize_int8");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
void quantize_blockwise_device(const float*, std::size_t, int, std::size_t, bool, std::uint64_t,
                               std::uint64_t, std::uint8_t*, float*, void*) {
  not_built("cuda.quantize_blockwise");
}
void dequantize_blockwise_device(const std::uint8_t*, const float*, std::size_t, int, std::size_t,
                                 float*, void*) {
  not_built("cuda.dequantize_blockwise");
}
void quantize_blockwise_host_staged(const float*, std::size_t, int, std::size_t, bool,
                                    std::uint64_t, std::uint64_t, std::uint8_t*, float*) {
  not_built("cuda.quantize_blockwise_host_staged");
}
void dequantize_blockwise_host_staged(const std::uint8_t*, const float*, std::size_t, int,
                                      std::size_t, float*) {
  not_built("cuda.dequantize_blockwise_host_staged");
}
void sign_encode_device(const float*, std::size_t, std::size_t, std::uint8_t*, float*, void*) {
  not_built("cuda.sign_encode");
}
void sign_decode_device(const std::uint8_t*, const float*, std::size_t, std::size_t, float*,
                        void*) {
  not_built("cuda.sign_decode");
}
void sign_encode_host_staged(const float*, std::size_t, std::size_t, std::uint8_t*, float*) {
  not_built("cuda.sign_encode_host_staged");
}
void sign_decode_host_staged(const std::uint8_t*, const float*, std::size_t, std::size_t, float*) {
  not_built("cuda.sign_decode_host_staged");
}
void ternary_encode_device(const float*, std::size_t, std::size_t, std::uint64_t, std::uint64_t,
                           std::uint8_t*, float*, void*) {
  not_built("cuda.ternary_encode");
}
void ternary_decode_device(const std::uint8_t*, const float*, std::size_t, std::size_t, float*,
                           void*) {
  not_built("cuda.ternary_decode");
}
void ternary_encode_host_staged(const float*, std::size_t, std::size_t, std::uint64_t,
                                std::uint64_t, std::uint8_t*, float*) {
  not_built("cuda.ternary_encode_host_staged");
}
void ternary_decode_host_staged(const std::uint8_t*, const float*, std::size_t, std::size_t,
                                float*) {
  not_built("cuda.ternary_decode_host_staged");
}
void fp32_to_fp16_device(const float*, std::size_t, std::uint16_t*, void*) {
  ScopedErrorContext ctx("cuda.fp32_to_fp16");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
void fp16_to_fp32_device(const std::uint16_t*, std::size_t, float*, void*) {
  ScopedErrorContext ctx("cuda.fp16_to_fp32");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
void fp32_to_bf16_device(const float*, std::size_t, std::uint16_t*, void*) {
  ScopedErrorContext ctx("cuda.fp32_to_bf16");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}
void bf16_to_fp32_device(const std::uint16_t*, std::size_t, float*, void*) {
  ScopedErrorContext ctx("cuda.bf16_to_fp32");
  RP_THROW(UsageError,
           "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
}

}  // namespace ringpress::cuda
