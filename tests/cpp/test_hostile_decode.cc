// Decoders against hostile size claims (issue 16): checked size arithmetic, frames whose blocks
// claim more than their stored bytes can decode to, containers that claim more elements than
// their payload or the caller's cap allow, and codec decoders asked for impossible counts.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ringpress/checked.h"
#include "ringpress/codec.h"
#include "ringpress/compressor.h"
#include "ringpress/error.h"
#include "ringpress/hash.h"
#include "ringpress/lossless.h"
#include "ringpress/wire.h"

namespace rp = ringpress;

namespace {

void st32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
void st64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::uint8_t(v >> (8 * i));
}

template <class F>
rp::ErrorKind kind_of(F&& f) {
  try {
    f();
  } catch (const rp::Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no ringpress error was raised";
  return rp::ErrorKind::kInternal;
}

// A 1-D float32 frame of n zeros in one zstd block (block_size = its whole size).
std::vector<std::uint8_t> zero_frame(std::size_t n) {
  std::vector<float> x(n, 0.0f);
  rp::LosslessOptions o;
  o.codec = rp::wire::Codec::kZstd;
  o.block_size = std::uint32_t(n * 4);
  const std::uint64_t shape[1] = {n};
  std::vector<std::uint8_t> f(rp::encode_bound(n * 4, 1, o.block_size));
  f.resize(rp::lossless_encode(x.data(), n * 4, rp::DType::kF32, shape, 1, o, f.data(), f.size()));
  return f;
}

// Re-signs a frame's header after a patch (header_check = XXH3 of bytes 0..27 + shape + table).
void resign_frame(std::vector<std::uint8_t>& f, int ndim, std::size_t nblocks) {
  std::vector<std::uint8_t> h(f.begin(), f.begin() + 28);
  h.insert(h.end(), f.begin() + 32, f.begin() + 32 + 8 * ndim + 16 * nblocks);
  st32(f.data() + 28, std::uint32_t(rp::wire::checksum(h.data(), h.size())));
}

}  // namespace

TEST(CheckedArithmetic, ExactOrTheNamedError) {
  EXPECT_EQ(rp::checked_mul<rp::WireFormatError>(std::size_t(1) << 31, std::size_t(4), "x"),
            std::size_t(1) << 33);
  EXPECT_EQ(rp::checked_add<rp::UsageError>(std::uint64_t(5), std::uint64_t(7), "x"), 12u);
  const std::uint64_t big = std::uint64_t(1) << 62;
  EXPECT_EQ(kind_of([&] { rp::checked_mul<rp::WireFormatError>(big, std::uint64_t(4), "x"); }),
            rp::ErrorKind::kWireFormat);
  EXPECT_EQ(kind_of([&] {
              rp::checked_add<rp::UsageError>(std::numeric_limits<std::uint64_t>::max(),
                                              std::uint64_t(1), "x");
            }),
            rp::ErrorKind::kUsage);
  std::uint32_t r = 0;
  EXPECT_TRUE(rp::mul_overflows(std::uint32_t(1) << 16, std::uint32_t(1) << 16, &r));
  EXPECT_FALSE(rp::add_overflows(std::uint32_t(1), std::uint32_t(2), &r));
  EXPECT_EQ(r, 3u);
}

TEST(HostileFrame, BlockClaimingMoreThanItsBytesCanDecodeToIsRefusedBeforeDecoding) {
  const std::size_t n = 1 << 16;  // 256 KiB of zeros: a zstd frame of a few dozen bytes
  std::vector<std::uint8_t> f = zero_frame(n);
  const rp::wire::FrameInfo ok = rp::wire::parse_frame(f.data(), f.size());
  ASSERT_EQ(ok.blocks.size(), 1u);
  const std::uint32_t stored = ok.blocks[0].stored_size;
  // Claim 2^30 bytes (the largest block) in that one block: more than 32768 x stored.
  ASSERT_LT(std::uint64_t(stored) * rp::wire::max_expansion(rp::wire::Codec::kZstd), 1ull << 30);
  st32(f.data() + 12, 1u << 30);          // block_size
  st64(f.data() + 16, 1ull << 30);        // nbytes
  st64(f.data() + 32, (1ull << 30) / 4);  // shape
  resign_frame(f, 1, 1);
  try {
    rp::wire::parse_frame(f.data(), f.size());
    FAIL() << "a 2^30-byte claim from " << stored << " bytes was accepted";
  } catch (const rp::Error& e) {
    EXPECT_EQ(e.kind(), rp::ErrorKind::kWireFormat);
    EXPECT_NE(e.detail().find("cannot decode to"), std::string::npos) << e.detail();
  }
  // The same claim within the bound parses (the check is the expansion bound, not the size).
  std::vector<std::uint8_t> g = zero_frame(n);
  const std::uint64_t within = std::uint64_t(stored) * 32768 / 4 * 4;
  const std::uint64_t claim = within < n * 4 ? within : std::uint64_t(n) * 8;
  st32(g.data() + 12, std::uint32_t(claim));
  st64(g.data() + 16, claim);
  st64(g.data() + 32, claim / 4);
  resign_frame(g, 1, 1);
  EXPECT_NO_THROW(rp::wire::parse_frame(g.data(), g.size()));
}

TEST(HostileFrame, HugeDecodedSizesAreWireFormatErrors) {
  std::vector<std::uint8_t> f = zero_frame(1024);
  for (std::uint64_t claim : {1ull << 29, (1ull << 32) - 1, 1ull << 62, ~0ull}) {
    std::vector<std::uint8_t> g = f;
    st64(g.data() + 16, claim);
    st64(g.data() + 32, claim / 4);
    resign_frame(g, 1, 1);
    EXPECT_EQ(kind_of([&] { rp::wire::parse_frame(g.data(), g.size()); }),
              rp::ErrorKind::kWireFormat)
        << claim;
    EXPECT_EQ(kind_of([&] { rp::wire::frame_size(g.data(), g.size()); }),
              rp::ErrorKind::kWireFormat)
        << claim;
  }
}

TEST(HostileCodec, EveryLossyDecoderRefusesCountsNoPayloadCanHold) {
  // A receiver passes the count it expects; a payload can never match a count whose size
  // overflows, and the decoder must say so with a WireFormatError (not wrap, not UsageError).
  std::vector<std::uint8_t> payload(64, 0);
  // The shortest valid sparse payload: I = 4, then an index stream of count 0 (no entries).
  std::vector<std::uint8_t> empty_sparse(12, 0);
  empty_sparse[0] = 4;
  rp::CodecParams p;
  p.block = 1;  // the most scales per element: the largest payload for a count
  for (const rp::CodecInfo& info : rp::codecs()) {
    if (!info.make || info.exact) continue;
    auto c = rp::make_codec(static_cast<rp::WireCompression>(info.id), p, rp::DType::kF32,
                            rp::ReduceOp::kSum);
    for (std::uint64_t count : {1ull << 62, ~0ull, ~0ull / 2 + 1}) {
      for (const auto* in : {&payload, &empty_sparse}) {
        float dst = 0;
        EXPECT_EQ(kind_of([&] { c->decode(in->data(), in->size(), &dst, count, false); }),
                  rp::ErrorKind::kWireFormat)
            << info.name << " count " << count;
      }
    }
    // bound() for such counts is a UsageError (a caller's argument) or a true size, never a
    // wrapped one.
    for (std::uint64_t count : {1ull << 62, ~0ull}) {
      try {
        EXPECT_GE(c->bound(count), count / 8) << info.name;
      } catch (const rp::Error& e) {
        EXPECT_EQ(e.kind(), rp::ErrorKind::kUsage) << info.name;
      }
    }
  }
}

TEST(HostileContainer, SparseClaimIsBoundedByTheCallersCap) {
  rp::CompressorSpec s;
  s.codec = rp::WireCompression::kTopK;
  s.params.ratio = 0.05;
  std::vector<float> x(256);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 17) - 8.0f;
  std::uint64_t shape[1] = {x.size()};
  std::vector<std::uint8_t> buf(rp::compressor_bound(s, x.size(), 1));
  buf.resize(
      rp::compressor_encode(s, x.data(), x.size(), shape, 1, 7, nullptr, buf.data(), buf.size()));
  const std::uint64_t claim = 1ull << 28;
  st64(buf.data() + 16, claim);
  st64(buf.data() + 64, claim);
  std::vector<std::uint8_t> h(buf.begin(), buf.begin() + 60);
  h.insert(h.end(), buf.begin() + 64, buf.begin() + 72);
  st32(buf.data() + 60, std::uint32_t(rp::wire::checksum(h.data(), h.size())));
  // The header is consistent: parse_container accepts it (a sparse payload may stand for 2^28).
  EXPECT_EQ(rp::parse_container(buf.data(), buf.size()).n, claim);
  // The default cap and an explicit one refuse it; a cap that admits it accepts it.
  EXPECT_EQ(kind_of([&] { rp::parse_container_bounded(buf.data(), buf.size(), 0); }),
            rp::ErrorKind::kWireFormat);
  EXPECT_EQ(kind_of([&] { rp::parse_container_bounded(buf.data(), buf.size(), claim - 1); }),
            rp::ErrorKind::kWireFormat);
  EXPECT_EQ(rp::parse_container_bounded(buf.data(), buf.size(), claim).n, claim);
  EXPECT_EQ(rp::default_max_elements(100), rp::kDefaultMaxElements);
  EXPECT_EQ(rp::default_max_elements(std::size_t(1) << 20), (1ull << 20) * 64);
  // compressor_decode writes only into the caller's buffer, whose size must match.
  std::vector<float> out(x.size());
  EXPECT_EQ(kind_of([&] { rp::compressor_decode(buf.data(), buf.size(), out.data(), out.size()); }),
            rp::ErrorKind::kUsage);
}
