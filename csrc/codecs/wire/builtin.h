// Factories of the builtin wire codecs (one file each in csrc/codecs/wire/), for the registry's
// rows in registry.cc. Internal header.
#pragma once

#include <memory>

#include "ringpress/codec.h"

namespace ringpress::wire_codecs {

std::unique_ptr<Codec> make_lossless(const CodecParams& p, DType dtype,
                                     ReduceOp op);  // lossless_segment.cc
std::unique_ptr<Codec> make_bf16(const CodecParams& p, DType dtype, ReduceOp op);  // half_float.cc
std::unique_ptr<Codec> make_fp16(const CodecParams& p, DType dtype, ReduceOp op);  // half_float.cc
std::unique_ptr<Codec> make_int8(const CodecParams& p, DType dtype,
                                 ReduceOp op);  // blockwise_int.cc
std::unique_ptr<Codec> make_int4(const CodecParams& p, DType dtype,
                                 ReduceOp op);  // blockwise_int.cc
std::unique_ptr<Codec> make_topk(const CodecParams& p, DType dtype, ReduceOp op);  // topk_sparse.cc

// Per-thread scratch that survives between calls (its pages stay mapped). Each slot is a distinct
// buffer: decode() uses kDecode, encode_feedback() kFeedback, so one can call the other.
enum class Scratch { kDecode = 0, kFeedback = 1, kBytes = 2 };
void* scratch(Scratch which, std::size_t bytes);

}  // namespace ringpress::wire_codecs
