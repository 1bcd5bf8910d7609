// Stand-ins for csrc/cuda/*.cu in builds without CUDA (RINGPRESS_WITH_CUDA == 0).
#include "ringpress/cuda.h"
#include "ringpress/error.h"

namespace ringpress::cuda {

bool built() noexcept { return false; }
int runtime_version() noexcept { return 0; }
int device_count() noexcept { return 0; }

namespace {
[[noreturn]] void not_built(const char* op) {
  ScopedErrorContext ctx(op);
  RP_THROW(UsageError, "this build of ringpress has no CUDA support (rebuild with -DRINGPRESS_CUDA=ON)");
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

}  // namespace ringpress::cuda
