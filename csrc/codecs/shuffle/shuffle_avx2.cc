// AVX2 shuffle kernels (placeholder table: forwards to the generic kernels until the AVX2 kernels land).
#include "ringpress/shuffle.h"

namespace ringpress::shuffle_isa {
const ShuffleKernels kAVX2 = {"avx2", byte_shuffle_generic, byte_unshuffle_generic,
                            bit_shuffle_generic, bit_unshuffle_generic};
}  // namespace ringpress::shuffle_isa
