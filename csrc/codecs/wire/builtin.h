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
std::unique_ptr<Codec> make_int2(const CodecParams& p, DType dtype,
                                 ReduceOp op);  // blockwise_int.cc
std::unique_ptr<Codec> make_topk(const CodecParams& p, DType dtype, ReduceOp op);  // topk_sparse.cc
std::unique_ptr<Codec> make_sign(const CodecParams& p, DType dtype, ReduceOp op);  // sign_1bit.cc
std::unique_ptr<Codec> make_ternary(const CodecParams& p, DType dtype,
                                    ReduceOp op);  // ternary_2bit.cc
std::unique_ptr<Codec> make_randomk(const CodecParams& p, DType dtype,
                                    ReduceOp op);  // randomk_sparse.cc
std::unique_ptr<Codec> make_threshold(const CodecParams& p, DType dtype,
                                      ReduceOp op);  // threshold_sparse.cc

// Per-thread scratch that survives between calls (its pages stay mapped). Each slot is a distinct
// buffer: decode() uses kDecode, encode_feedback() kFeedback, so one can call the other.
enum class Scratch { kDecode = 0, kFeedback = 1, kBytes = 2 };
void* scratch(Scratch which, std::size_t bytes);

// The payload length a fixed-size codec's decoder expects for `count` elements: c.bound(count),
// except that a count whose payload size does not fit in size_t is a WireFormatError (no payload
// can have that length; bound() raises UsageError, meant for a caller's argument).
std::size_t fixed_payload_len(const Codec& c, std::size_t count);

// The block-scaled codecs (int8/int4/int2, sign, ternary):
// UsageError unless 1 <= p.block <= 2^20.
void check_block(const CodecParams& p);
// Copies the `nb` float32 scales at the start of a payload (unaligned inside a message) into
// kDecode scratch, followed by room for `count` more floats when `reduce` (a decode target), and
// raises WireFormatError for a negative or infinite scale or a NaN other than 0x7fc00000 (the
// non-finite block's scale, quantize.h). Returns the scales.
float* checked_scales(const void* in, std::size_t nb, std::size_t count, bool reduce);

}  // namespace ringpress::wire_codecs
