// Host-side entry points of the CUDA kernels (csrc/cuda/*.cu).
//
// Contract: every function is callable in every build. Without CUDA support compiled in
// (RINGPRESS_WITH_CUDA == 0, csrc/cuda/cuda_stub.cc) or without a usable device, the query
// functions report 0 and the kernel entry points throw UsageError naming the reason.
#pragma once

#include <cstddef>

namespace ringpress::cuda {

bool built() noexcept;               // kernels compiled into this build
int runtime_version() noexcept;      // CUDART_VERSION compiled against, 0 without CUDA
int device_count() noexcept;         // usable devices now; 0 if no driver/GPU

// Byte shuffle on the device (layout as ringpress/shuffle.h). d_src/d_dst are device pointers;
// stream is a cudaStream_t (nullptr = default stream). Asynchronous with respect to the host.
void byte_shuffle_device(const void* d_src, void* d_dst, std::size_t nbytes, std::size_t elemsize,
                         void* stream);
void byte_unshuffle_device(const void* d_src, void* d_dst, std::size_t nbytes,
                           std::size_t elemsize, void* stream);
// Host-staged variant (copy in, kernel, copy out, synchronous): for tests and host buffers.
void byte_shuffle_host_staged(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize,
                              bool unshuffle);

}  // namespace ringpress::cuda
