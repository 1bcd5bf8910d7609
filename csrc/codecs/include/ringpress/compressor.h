// The compressed-tensor container "RPZC" (docs/wire-format.md, "Compressed-tensor container"):
// a thin frame around one wire codec's payload (ringpress/codec.h), for per-tensor compression
// outside a collective (ringpress.compressors: storage, custom transports). There is one lossy
// codec stack, the registry: the container adds only what a stand-alone payload lacks (the
// codec's id, version and parameters, the tensor's shape, checksums) and optionally a lossless
// stage on top of the payload.
//
// Contract
//   compressor_encode()  payload = Codec::encode of the registry codec `spec.codec` with
//                        `spec.params` (the parameters it reads are recorded in the header), then,
//                        if spec.lossless.codec is not none, the payload as one frame (shuffled by
//                        the codec's word(), zero-padded to a multiple of it). seed keys the
//                        codec's randomness (stochastic rounding, ternary, sampled top-k,
//                        random-k) for this call.
//   error feedback       with a residual r (n floats): the payload encodes x + r and r becomes
//                        (x + r) - decode(payload), through Codec::encode_feedback, the one
//                        error-feedback helper the collectives use too. So over any number of
//                        steps sum(decoded) + r == sum(x) up to fp32 rounding, except where
//                        the decoded value is not finite (NaN/Inf input): r = 0 there. If the
//                        codec refuses the input (UsageError), r holds x + r.
//   compressor_decode()  rebuilds the codec from the header and decodes into out[0..n).
//   Hostile input: parse_container() validates every header byte, the parameters (the codec's
//   own rules), the shape, min_payload(n) <= payload size <= bound(n) (before anything is
//   allocated), the payload checksum and, for a lossless stage, the frame; the codec's decode
//   validates the payload itself. Every violation is a WireFormatError. Version-1 containers
//   (per-method sections, ringpress before the codec registry) are refused with a
//   WireFormatError saying so.
// Cost: the codec's (docs/algorithms.md) + one XXH3 pass over the payload each way + the lossless
// stage if any; with feedback the codec's feedback cost (generic: one decode pass and one
// subtraction pass; sparse codecs: none).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringpress/codec.h"
#include "ringpress/lossless.h"

namespace ringpress {

constexpr std::uint8_t kContainerVersion = 2;
constexpr std::size_t kContainerHeader = 64;

struct CompressorSpec {
  WireCompression codec = WireCompression::kInt8;  // a registered lossy codec
  CodecParams params;                              // the codec's parameters
  LosslessOptions lossless{wire::Codec::kNone, 1, ShuffleMode::kAuto, 1, 0};  // stage on top
};

struct ContainerInfo {
  int version = 0;
  WireCompression codec = WireCompression::kNone;
  int codec_version = 0;
  CodecParams params;            // the header's; fields the codec does not read keep defaults
  std::uint32_t param_mask = 0;  // CodecInfo::params of the codec
  std::uint64_t n = 0;
  int ndim = 0;
  std::uint64_t shape[wire::kMaxNdim] = {};
  bool lossless = false;                            // a lossless stage holds the payload
  wire::Codec lossless_codec = wire::Codec::kNone;  // its entropy codec
  std::uint64_t raw_size = 0;                       // bytes of the codec payload
  std::uint64_t payload_offset = 0;                 // of the stored payload (or its frame)
  std::uint64_t stored_size = 0;                    // bytes stored (= raw_size without a stage)
  std::uint64_t size = 0;                           // of the whole container
};

// Largest container compressor_encode can produce for n elements (UsageError for a spec the
// codec refuses).
std::size_t compressor_bound(const CompressorSpec& spec, std::size_t n, int ndim);

// Encodes x[0..n) (n = product(shape)) into dst (capacity >= compressor_bound); returns the size.
// residual: nullptr, or n floats of error-feedback state, updated as described above.
// threads: for the lossless stage (the codecs run on one thread; their bytes never depend on it).
std::size_t compressor_encode(const CompressorSpec& spec, const float* x, std::size_t n,
                              const std::uint64_t* shape, int ndim, std::uint64_t seed,
                              float* residual, void* dst, std::size_t dst_cap, int threads = 1);

// Validates the header, the parameters, the sizes and the payload checksum (not the payload's
// contents: the codec's decode does that).
ContainerInfo parse_container(const void* buf, std::size_t len);

// The codec payload (the lossless stage undone), validated by parse_container, not decoded.
std::vector<std::uint8_t> container_payload(const void* buf, std::size_t len, int threads = 1);

// Reconstructs the dense tensor into out (out_n must equal the container's n: the caller's
// buffer is the bound on what is written; a mismatch is a UsageError before anything is decoded).
void compressor_decode(const void* buf, std::size_t len, float* out, std::size_t out_n,
                       int threads = 1);

// Bounding the output a caller allocates for a container it did not make (docs/wire-format.md,
// "What a decoder allocates"). parse_container() already refuses an n the payload cannot hold for
// the dense codecs, but a sparse payload of a few bytes may legitimately stand for up to 2^32 - 1
// elements (and a lossless stage may expand up to 32768x), so a caller that allocates n floats
// itself passes a cap:
//   max_elements > 0: that cap;
//   max_elements = 0: the default, max(kDefaultMaxElements, kDefaultElementsPerByte x len).
// Returns the container's info; WireFormatError when n exceeds the cap.
constexpr std::uint64_t kDefaultMaxElements = std::uint64_t(1) << 24;  // 64 MiB of float32
constexpr std::uint64_t kDefaultElementsPerByte = 64;  // 256 output bytes per container byte
std::uint64_t default_max_elements(std::size_t container_len) noexcept;
ContainerInfo parse_container_bounded(const void* buf, std::size_t len, std::uint64_t max_elements);

}  // namespace ringpress
