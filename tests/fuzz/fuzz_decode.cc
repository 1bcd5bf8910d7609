// libFuzzer target for the frame decoder (wire::parse_frame + lossless_decode) and the
// compressed-tensor container decoder (parse_container + compressor_decode, version 2: a wire
// codec's payload, optionally inside a frame).
//
// The decoder's contract (ringpress/lossless.h, docs/wire-format.md): a hostile frame is rejected
// with a WireFormatError or CodecError, never a crash, overrun, other exception or silently wrong
// output. This target checks that contract and reports as a finding (abort) anything else:
//   - a sanitizer report (ASan/UBSan) or a crash in parse_frame / lossless_decode;
//   - an exception that is not a ringpress::Error, or an Error of another kind than
//     WireFormat/Codec out of the decoder;
//   - parse_frame accepting a frame whose FrameInfo breaks its own invariants (block offsets and
//     lengths must tile the buffer and nbytes), or frame_size() disagreeing with it;
//   - a decode that is not deterministic or does not write every output byte (decoded twice into
//     buffers pre-filled with different patterns);
//   - round-trip oracle: the decoded bytes re-encoded with lossless_encode (1-D, the frame's dtype
//     and codec) and decoded again must be bit-identical.
//
// Every input is tried up to three times: as is, with its checksums recomputed ("fix-up"), and
// with a size claim ("claim"): the frame's nbytes or the container's n (and shape) overwritten by
// one of 2^28, 2^29, 2^32 - 1, 2^32, 2^62, 2^62 + 1, 2^63, 2^64 - 1 or a u64 taken from the input,
// then fixed up. The header check and the per-block XXH3 checksums are hashes a mutator cannot get
// right, so without the fix-up almost every mutation would stop at the checksum comparison and
// the code behind it would never be fuzzed. Both are deterministic, so a saved input reproduces.
//
// Size claims (docs/wire-format.md, "What a decoder allocates"): an accepted frame's coded blocks
// must each satisfy length <= max_expansion(codec) x stored size, and a container accepted by
// parse_container_bounded() (the default cap) must claim n <= default_max_elements(size). The
// decoders must never allocate for a claim: scripts/fuzz.sh runs with -malloc_limit_mb=512, so a
// single allocation over 512 MiB is a finding (this harness itself allocates at most ~200 MiB).
//
// Allocations are capped: a frame may claim up to 2^62 decoded bytes; frames above kMaxDecode are
// only parsed. The flag --expect-valid (used by scripts/fuzz.sh on tests/golden/*.rpz) also
// aborts when an input does not decode as is: the golden frames must keep decoding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

#include "ringpress/codec.h"
#include "ringpress/compressor.h"
#include "ringpress/dtype.h"
#include "ringpress/error.h"
#include "ringpress/lossless.h"
#include "ringpress/wire.h"

namespace {

using namespace ringpress;

constexpr std::uint64_t kMaxDecode = 64ull << 20;    // skip decoding frames claiming more
constexpr std::uint64_t kMaxRecheck = 1ull << 20;    // second decode (determinism/full write)
constexpr std::uint64_t kMaxRoundTrip = 8ull << 20;  // re-encode oracle

bool g_expect_valid = false;

[[noreturn]] void finding(const char* what, const char* detail = "") {
  std::fprintf(stderr, "\n==ringpress fuzz finding== %s %s\n", what, detail);
  std::fflush(stderr);
  std::abort();
}

std::uint32_t ld32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
void st32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
void st64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::uint8_t(v >> (8 * i));
}

// Recomputes the block checksums (for blocks that lie inside the buffer) and the header check.
// Returns false when the buffer is not even a frame header + table (nothing to fix).
bool fix_checksums(std::vector<std::uint8_t>& b) {
  if (b.size() < wire::kHeaderSize || std::memcmp(b.data(), wire::kMagic, 4) != 0) return false;
  const unsigned ndim = b[7];
  if (ndim > unsigned(wire::kMaxNdim)) return false;
  const std::uint64_t nblocks = ld32(b.data() + 24);
  const std::uint64_t tend = wire::table_end(int(ndim), nblocks);
  if (tend > b.size()) return false;
  std::uint8_t* table = b.data() + wire::kHeaderSize + 8 * ndim;
  std::uint64_t off = tend;
  for (std::uint64_t i = 0; i < nblocks; ++i) {
    std::uint8_t* e = table + wire::kBlockEntrySize * i;
    const std::uint64_t stored = ld32(e);
    if (off + stored <= b.size()) st64(e + 8, wire::checksum(b.data() + off, std::size_t(stored)));
    off += stored;
  }
  // header_check = low 32 bits of XXH3-64 over header[0, 28) followed by shape + table.
  std::vector<std::uint8_t> h(b.begin(), b.begin() + 28);
  h.insert(h.end(), b.begin() + wire::kHeaderSize, b.begin() + std::ptrdiff_t(tend));
  st32(b.data() + 28, std::uint32_t(wire::checksum(h.data(), h.size())));
  return true;
}

std::unique_ptr<std::uint8_t[]> filled(std::size_t n, std::uint8_t pattern) {
  std::unique_ptr<std::uint8_t[]> p(new std::uint8_t[n ? n : 1]);
  std::memset(p.get(), pattern, n);
  return p;
}

bool decoder_kind_ok(const Error& e) {
  return e.kind() == ErrorKind::kWireFormat || e.kind() == ErrorKind::kCodec;
}

// Re-encodes the decoded bytes and checks that they decode back to themselves.
void round_trip(const wire::FrameInfo& info, const std::uint8_t* data, std::size_t n,
                std::uint8_t variant) {
  LosslessOptions o;
  o.codec = info.codec;
  o.threads = 1;
  // The frame's level may be anything (it is informational); keep levels valid and fast.
  if (o.codec == wire::Codec::kZstd)
    o.level = 1 + (variant % 3);
  else if (o.codec == wire::Codec::kLz4)
    o.level = 1 + (variant % 8);
  else
    o.level = 0;
  o.shuffle = static_cast<ShuffleMode>(variant % 4);
  // The frame's block size, unless it would make a huge block table.
  const std::uint64_t nblocks = n ? (n + info.block_size - 1) / info.block_size : 0;
  o.block_size = nblocks <= 4096 ? info.block_size : 0;
  const std::uint64_t shape[1] = {n / info.elemsize};
  const std::size_t cap = encode_bound(n, 1, o.block_size);
  auto enc = filled(cap, 0);
  std::size_t len = 0;
  try {
    len = lossless_encode(data, n, info.dtype, shape, 1, o, enc.get(), cap);
  } catch (const Error& e) {
    finding("round trip: lossless_encode threw on decoded data:", e.what());
  }
  if (len > cap) finding("round trip: encoder wrote past encode_bound");
  auto back = filled(n, 0xC3);
  try {
    lossless_decode(enc.get(), len, back.get(), n, 1);
  } catch (const Error& e) {
    finding("round trip: decoding a freshly encoded frame failed:", e.what());
  }
  if (std::memcmp(back.get(), data, n) != 0) finding("round trip: decode(encode(x)) != x");
}

// Returns true when the frame decoded.
bool try_frame(const std::uint8_t* data, std::size_t size, std::uint8_t variant) {
  wire::FrameInfo info;
  try {
    info = wire::parse_frame(data, size);
  } catch (const Error& e) {
    if (!decoder_kind_ok(e)) finding("parse_frame threw an unexpected error kind:", e.what());
    return false;
  }

  // Invariants of an accepted frame.
  if (info.frame_size != size)
    finding("parse_frame accepted a buffer of another size than frame_size");
  std::uint64_t off = wire::table_end(info.ndim, info.blocks.size()), total = 0;
  for (std::size_t i = 0; i < info.blocks.size(); ++i) {
    const wire::BlockEntry& e = info.blocks[i];
    if (e.offset != off || e.offset + e.stored_size > size)
      finding("block offsets do not tile the frame");
    if (e.length == 0 || e.length > info.block_size) finding("block length out of range");
    off += e.stored_size;
    total += e.length;
  }
  if (off != size || total != info.nbytes) finding("block table does not cover the frame / nbytes");
  for (const wire::BlockEntry& e : info.blocks) {
    if (e.coding != wire::Coding::kRaw &&
        std::uint64_t(e.length) > wire::max_expansion(info.codec) * e.stored_size) {
      finding("parse_frame accepted a block claiming more than its stored bytes can decode to");
    }
  }
  try {
    if (wire::frame_size(data, size) != size) finding("frame_size() disagrees with parse_frame()");
  } catch (const Error& e) {
    finding("frame_size() rejected a frame parse_frame() accepted:", e.what());
  }

  if (info.nbytes > kMaxDecode) return false;  // cap allocations (the fuzzer would OOM)
  const std::size_t n = std::size_t(info.nbytes);
  auto out = filled(n, 0xA5);
  try {
    lossless_decode(data, size, out.get(), n, 1);
  } catch (const Error& e) {
    if (!decoder_kind_ok(e)) finding("lossless_decode threw an unexpected error kind:", e.what());
    return false;
  }

  if (n <= kMaxRecheck) {
    auto again = filled(n, 0x5A);
    try {
      lossless_decode(data, size, again.get(), n, 1);
    } catch (const Error& e) {
      finding("second decode of the same frame failed:", e.what());
    }
    if (std::memcmp(out.get(), again.get(), n) != 0) {
      finding("decode is not deterministic or leaves output bytes unwritten");
    }
  }
  if (n <= kMaxRoundTrip) round_trip(info, out.get(), n, variant);
  return true;
}

}  // namespace

// `--expect-valid` on the command line: libFuzzer passes flags that start with "--" through to
// the target untouched (the project reads environment variables in one place only, env.cc).
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; argc && argv && i < *argc; ++i) {
    if (std::strcmp((*argv)[i], "--expect-valid") == 0) g_expect_valid = true;
  }
  return 0;
}

// Compressed-tensor containers (magic "RPZC", version 2): recomputes the payload checksum, the
// header check and, for a lossless stage, the inner frame's checksums, so that mutations reach
// the parameter checks and the codecs' decoders. Returns false when there is nothing to fix.
bool fix_container_checksums(std::vector<std::uint8_t>& b) {
  if (b.size() < kContainerHeader || std::memcmp(b.data(), "RPZC", 4) != 0 || b[4] != 2) {
    return false;
  }
  const unsigned ndim = b[9];
  if (ndim > unsigned(wire::kMaxNdim)) return false;
  const std::size_t tend = kContainerHeader + 8 * std::size_t(ndim);
  if (tend > b.size()) return false;
  if (b[5] & 1) {
    std::vector<std::uint8_t> frame(b.begin() + std::ptrdiff_t(tend), b.end());
    if (fix_checksums(frame))
      std::copy(frame.begin(), frame.end(), b.begin() + std::ptrdiff_t(tend));
  }
  st32(b.data() + 56, std::uint32_t(wire::checksum(b.data() + tend, b.size() - tend)));
  std::vector<std::uint8_t> h(b.begin(), b.begin() + 60);
  h.insert(h.end(), b.begin() + kContainerHeader, b.begin() + std::ptrdiff_t(tend));
  st32(b.data() + 60, std::uint32_t(wire::checksum(h.data(), h.size())));
  return true;
}

// Parse + decode (dense output capped at 16M floats); any error must be a
// WireFormatError/CodecError. Decoding twice into differently pre-filled outputs must give the
// same result (no output element left unwritten), and the payload container_payload() returns
// must decode, through the registry codec the header names, to the same tensor.
bool try_container(const std::uint8_t* data, std::size_t size) {
  try {
    const ContainerInfo info = parse_container(data, size);
    ContainerInfo bounded;
    try {
      bounded = parse_container_bounded(data, size, 0);  // the default cap
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kWireFormat) throw;
      if (info.n <= default_max_elements(size)) {
        finding("parse_container_bounded refused a claim within the default cap:", e.what());
      }
      return true;  // refused before anything of n elements is allocated
    }
    if (bounded.n != info.n || info.n > default_max_elements(size)) {
      finding("parse_container_bounded accepted a claim above the default cap");
    }
    if (info.n > (std::uint64_t(1) << 24)) return true;
    std::vector<float> a(info.n, 1.0f), b(info.n, -7.0f);
    compressor_decode(data, size, a.data(), a.size());
    compressor_decode(data, size, b.data(), b.size());
    if (!a.empty() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) {
      finding("container decode left output elements unwritten or is non-deterministic");
    }
    const std::vector<std::uint8_t> raw = container_payload(data, size);
    if (raw.size() != info.raw_size) finding("container_payload() size differs from raw_size");
    std::vector<std::uint64_t> aligned((raw.size() + 7) / 8 + 1);
    if (!raw.empty()) std::memcpy(aligned.data(), raw.data(), raw.size());
    std::vector<float> c(info.n, 3.0f);
    make_codec(info.codec, info.params, DType::kF32, ReduceOp::kSum)
        ->decode(aligned.data(), raw.size(), c.data(), c.size(), false);
    if (!a.empty() && std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) != 0) {
      finding("the container decodes differently from its codec payload");
    }
    return true;
  } catch (const Error& e) {
    if (!decoder_kind_ok(e)) finding("container decoder raised a non-wire error:", e.what());
    return false;
  }
}

// The size claim of the third try: a fixed ladder up to 2^64 - 1, or 8 bytes of the input.
std::uint64_t claim_of(const std::uint8_t* data, std::size_t size) {
  static constexpr std::uint64_t kClaims[] = {1ull << 28, 1ull << 29, (1ull << 32) - 1,
                                              1ull << 32, 1ull << 62, (1ull << 62) + 1,
                                              1ull << 63, ~0ull};
  const std::uint8_t pick = size >= 2 ? data[size - 2] : 0;
  if (pick % 9 < 8) return kClaims[pick % 9];
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i + 3 <= size; ++i)
    v |= std::uint64_t(data[size - 3 - i]) << (8 * i);
  return v;
}

// Overwrites the claimed size (container: n and the first dimension; frame: nbytes and the first
// dimension, in elements) and fixes the checksums. False when there is no header to patch.
bool patch_claim(std::vector<std::uint8_t>& b, std::uint64_t claim, bool container) {
  if (container) {
    if (b.size() < kContainerHeader) return false;
    st64(b.data() + 16, claim);
    if (b[9] >= 1 && b.size() >= kContainerHeader + 8) st64(b.data() + kContainerHeader, claim);
    return fix_container_checksums(b);
  }
  if (b.size() < wire::kHeaderSize + 8) return false;
  st64(b.data() + 16, claim);
  const std::uint64_t elem = b[11] ? b[11] : 1;
  if (b[7] >= 1) st64(b.data() + wire::kHeaderSize, claim / elem);
  return fix_checksums(b);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t variant = size ? data[size - 1] : 0;
  if (size >= 4 && std::memcmp(data, "RPZC", 4) == 0) {
    try {
      const bool ok = try_container(data, size);
      if (g_expect_valid && !ok) finding("a container expected to decode did not decode");
      if (!ok) {
        std::vector<std::uint8_t> fixed(data, data + size);  // exact size too
        if (fix_container_checksums(fixed) && !std::equal(fixed.begin(), fixed.end(), data)) {
          try_container(fixed.data(), fixed.size());
        }
      }
      std::vector<std::uint8_t> claimed(data, data + size);
      if (patch_claim(claimed, claim_of(data, size), true)) {
        try_container(claimed.data(), claimed.size());
      }
    } catch (const std::exception& e) {
      finding("exception that is not a ringpress::Error:", e.what());
    } catch (...) {
      finding("unknown exception");
    }
    return 0;
  }
  try {
    // libFuzzer hands over an exact-size heap copy, so overreads of the input hit ASan's redzone.
    const bool ok = try_frame(data, size, variant);
    if (g_expect_valid && !ok) finding("a frame expected to decode (golden) did not decode");
    if (!ok) {
      std::vector<std::uint8_t> fixed(data, data + size);  // exact size too
      if (fix_checksums(fixed) && !std::equal(fixed.begin(), fixed.end(), data)) {
        try_frame(fixed.data(), fixed.size(), variant);
      }
    }
    std::vector<std::uint8_t> claimed(data, data + size);
    if (patch_claim(claimed, claim_of(data, size), false)) {
      try_frame(claimed.data(), claimed.size(), variant);
    }
  } catch (const std::exception& e) {
    finding("exception that is not a ringpress::Error:", e.what());
  } catch (...) {
    finding("unknown exception");
  }
  return 0;
}
