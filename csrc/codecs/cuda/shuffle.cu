// CUDA byte shuffle / unshuffle (layout: ringpress/shuffle.h), the device twin of the CPU
// kernels, so GPU buffers can be shuffled before the lossless stage without a host round trip.
// Cost: one read + one write of the buffer in global memory; each thread moves one element,
// reading it as a whole and scattering its bytes to the s planes (coalesced per plane).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "ringpress/cuda.h"
#include "ringpress/error.h"

namespace ringpress::cuda {
namespace {

__global__ void byte_shuffle_kernel(const std::uint8_t* __restrict__ src,
                                    std::uint8_t* __restrict__ dst, std::size_t n, int s) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::uint8_t* e = src + i * s;
    for (int b = 0; b < s; ++b) dst[b * n + i] = e[b];
  }
}

__global__ void byte_unshuffle_kernel(const std::uint8_t* __restrict__ src,
                                      std::uint8_t* __restrict__ dst, std::size_t n, int s) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint8_t* e = dst + i * s;
    for (int b = 0; b < s; ++b) e[b] = src[b * n + i];
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    RP_THROW(UsageError, what, ": ", cudaGetErrorString(err));
  }
}

void launch(bool unshuffle, const void* d_src, void* d_dst, std::size_t nbytes,
            std::size_t elemsize, void* stream) {
  RP_ENFORCE(elemsize >= 1 && elemsize <= 255, UsageError, "element size must be in [1, 255], got ",
             elemsize);
  auto st = static_cast<cudaStream_t>(stream);
  const std::size_t n = nbytes / elemsize;
  const std::size_t tail = nbytes - n * elemsize;
  if (n) {
    const int threads = 256;
    const std::size_t want = (n + threads - 1) / threads;
    const int blocks = static_cast<int>(want < 65535 ? want : 65535);
    auto in = static_cast<const std::uint8_t*>(d_src);
    auto out = static_cast<std::uint8_t*>(d_dst);
    if (unshuffle) {
      byte_unshuffle_kernel<<<blocks, threads, 0, st>>>(in, out, n, int(elemsize));
    } else {
      byte_shuffle_kernel<<<blocks, threads, 0, st>>>(in, out, n, int(elemsize));
    }
    check(cudaGetLastError(), "kernel launch");
  }
  if (tail) {
    check(cudaMemcpyAsync(static_cast<std::uint8_t*>(d_dst) + n * elemsize,
                          static_cast<const std::uint8_t*>(d_src) + n * elemsize, tail,
                          cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
  }
}

}  // namespace

bool built() noexcept {
  return true;
}
int runtime_version() noexcept {
  return CUDART_VERSION;
}

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

void byte_shuffle_device(const void* d_src, void* d_dst, std::size_t nbytes, std::size_t elemsize,
                         void* stream) {
  ScopedErrorContext ctx("cuda.byte_shuffle");
  launch(false, d_src, d_dst, nbytes, elemsize, stream);
}

void byte_unshuffle_device(const void* d_src, void* d_dst, std::size_t nbytes, std::size_t elemsize,
                           void* stream) {
  ScopedErrorContext ctx("cuda.byte_unshuffle");
  launch(true, d_src, d_dst, nbytes, elemsize, stream);
}

void byte_shuffle_host_staged(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize,
                              bool unshuffle) {
  ScopedErrorContext ctx("cuda.byte_shuffle_host_staged");
  RP_ENFORCE(device_count() > 0, UsageError, "no CUDA device is available");
  if (nbytes == 0) return;
  void* d_in = nullptr;
  void* d_out = nullptr;
  check(cudaMalloc(&d_in, nbytes), "cudaMalloc");
  cudaError_t err = cudaMalloc(&d_out, nbytes);
  if (err != cudaSuccess) {
    cudaFree(d_in);
    check(err, "cudaMalloc");
  }
  err = cudaMemcpy(d_in, src, nbytes, cudaMemcpyHostToDevice);
  try {
    check(err, "cudaMemcpy H2D");
    launch(unshuffle, d_in, d_out, nbytes, elemsize, nullptr);
    check(cudaMemcpy(dst, d_out, nbytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  } catch (...) {
    cudaFree(d_in);
    cudaFree(d_out);
    throw;
  }
  cudaFree(d_in);
  cudaFree(d_out);
}

}  // namespace ringpress::cuda
