// The wire codec registry (ringpress/codec.h) end to end, ranks as threads over the real
// transports:
//   * a toy codec defined in this file and registered with one row runs through the compressed
//     ring with no other change anywhere (the registry's promise);
//   * a sweep of every registered codec x P in 2..8 x sizes x two parameter sets (defaults, and
//     the alternatives: stochastic rounding, exact top-k, fp16 sparse values, a threshold that
//     drops entries): exact codecs give the exact sum, lossy ones the same bits on every rank, and
//     with error feedback outputs + residuals = inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "rank_threads.h"
#include "ringpress/codec.h"
#include "ringpress/engine.h"
#include "ringpress/store.h"

namespace rp = ringpress;

namespace {

// ---- the toy codec: exact, any reducible dtype; every byte XOR 0x5A, a 4-byte tag in front.
class XorCodec final : public rp::Codec {
 public:
  XorCodec(rp::DType d, rp::ReduceOp op) : dtype_(d), op_(op) {}
  std::size_t bound(std::size_t count) const override { return 4 + count * rp::dtype_size(dtype_); }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t) override {
    auto* o = static_cast<unsigned char*>(out);
    std::memcpy(o, "XOR1", 4);
    const auto* s = static_cast<const unsigned char*>(src);
    for (std::size_t i = 0; i < count * rp::dtype_size(dtype_); ++i) o[4 + i] = s[i] ^ 0x5A;
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    if (len != bound(count) || std::memcmp(in, "XOR1", 4) != 0) {
      RP_THROW(WireFormatError, "toy payload of the wrong size or tag");
    }
    std::vector<unsigned char> tmp(count * rp::dtype_size(dtype_));
    const auto* p = static_cast<const unsigned char*>(in) + 4;
    for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] = p[i] ^ 0x5A;
    if (reduce) {
      rp::reduce_into(dtype_, op_, dst, tmp.data(), count);
    } else if (!tmp.empty()) {
      std::memcpy(dst, tmp.data(), tmp.size());
    }
  }

 private:
  rp::DType dtype_;
  rp::ReduceOp op_;
};

constexpr std::uint8_t kToyId = 20;
std::unique_ptr<rp::Codec> make_xor(const rp::CodecParams&, rp::DType d, rp::ReduceOp op) {
  return std::make_unique<XorCodec>(d, op);
}
// The one registry row.
const bool kToyRegistered = [] {
  rp::register_codec({kToyId, "xor-toy", 1, true, rp::CodecDTypes::kReducible,
                      rp::CodecSchedule::kRing, &make_xor, "test codec: bytes XOR 0x5A"});
  return true;
}();

void run_threads(int P, const std::function<void(rp::Communicator&)>& body) {
  rp_test::run_rank_threads(
      P,
      [](rp::CommOptions& o) {
        o.context.timeout = std::chrono::seconds(60);
        o.context.shm_ring_bytes = 1u << 16;
        o.segment_bytes = 4096;  // many segments even for small sizes: the pipeline is exercised
      },
      body);
}

}  // namespace

TEST(CodecRegistry, BuiltinRowsAndNames) {
  ASSERT_TRUE(kToyRegistered);
  std::vector<std::string> names;
  for (const auto& c : rp::codecs()) names.push_back(c.name);
  for (const char* want : {"none", "lossless", "bf16", "fp16", "int8", "int4", "topk", "int2",
                           "sign", "ternary", "randomk", "threshold", "xor-toy"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  // Ids are wire format: the builtin ones never move.
  const std::pair<int, const char*> ids[] = {
      {1, "lossless"}, {2, "bf16"}, {3, "fp16"},    {4, "int8"},     {5, "int4"},      {6, "topk"},
      {7, "int2"},     {8, "sign"}, {9, "ternary"}, {10, "randomk"}, {11, "threshold"}};
  for (const auto& [id, name] : ids) {
    const rp::CodecInfo* info = rp::find_codec(id);
    ASSERT_NE(info, nullptr) << id;
    EXPECT_STREQ(info->name, name);
  }
  // Sparse codecs (payload sizes differ per rank) take the allgather schedule, dense ones the
  // ring; the parameter names a row reads come from its mask.
  for (const char* sparse : {"topk", "randomk", "threshold"}) {
    EXPECT_EQ(rp::codec_by_name(sparse).schedule, rp::CodecSchedule::kAllgather) << sparse;
  }
  for (const char* dense : {"bf16", "int8", "int2", "sign", "ternary"}) {
    EXPECT_EQ(rp::codec_by_name(dense).schedule, rp::CodecSchedule::kRing) << dense;
  }
  EXPECT_EQ(rp::codec_param_names(rp::codec_by_name("threshold").params),
            (std::vector<std::string>{"threshold", "values"}));
  EXPECT_EQ(rp::wire_compression_from_name("xor-toy"), static_cast<rp::WireCompression>(kToyId));
  EXPECT_STREQ(rp::wire_compression_name(static_cast<rp::WireCompression>(kToyId)), "xor-toy");
  EXPECT_EQ(rp::wire_compression_from_name("auto"), rp::WireCompression::kAuto);
  EXPECT_THROW(rp::wire_compression_from_name("zip"), rp::UsageError);
  // Ids and names are unique, and ids stay below the auto mode's bit mask.
  EXPECT_THROW(rp::register_codec({kToyId, "other", 1, true, rp::CodecDTypes::kReducible,
                                   rp::CodecSchedule::kRing, &make_xor, ""}),
               rp::UsageError);
  EXPECT_THROW(rp::register_codec({21, "int8", 1, true, rp::CodecDTypes::kReducible,
                                   rp::CodecSchedule::kRing, &make_xor, ""}),
               rp::UsageError);
  EXPECT_THROW(rp::register_codec({rp::kMaxCodecs, "far", 1, true, rp::CodecDTypes::kReducible,
                                   rp::CodecSchedule::kRing, &make_xor, ""}),
               rp::UsageError);
}

TEST(CodecRegistry, ToyCodecRunsThroughTheCompressedRing) {
  rp_test::ThreadBarrier all_done(3);
  run_threads(3, [&](rp::Communicator& c) {
    const int P = c.size();
    rp::CompressionOptions co;
    co.kind = static_cast<rp::WireCompression>(kToyId);
    for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{30001}}) {
      std::vector<std::int64_t> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<std::int64_t>(i) * (c.rank() + 1);
      c.allreduce(x.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false, co);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(x[i], static_cast<std::int64_t>(i) * P * (P + 1) / 2) << "n=" << n << " i=" << i;
      }
    }
    // The codec id travels in the header: ranks disagreeing on the codec is a collective mismatch.
    all_done.wait();
    std::vector<float> y(20000, 1.0f);
    rp::CompressionOptions mine = co;
    if (c.rank() == 1) mine.kind = rp::WireCompression::kLossless;
    try {
      c.allreduce(y.data(), y.size(), rp::DType::kF32, rp::ReduceOp::kSum, false, mine);
      ADD_FAILURE() << "rank " << c.rank() << ": a codec mismatch went unnoticed";
    } catch (const rp::Error& e) {
      // The rank that sees the mismatch names both codecs; the others are told by its abort.
      const std::string what = e.what();
      EXPECT_TRUE(what.find("xor-toy") != std::string::npos || e.kind() != rp::ErrorKind::kUsage)
          << what;
    }
  });
}

// Error feedback: a codec's encode_feedback (the sparse codecs override it) must equal the generic
// helper Codec::encode_feedback (encode, decode, subtract) bit for bit: payload, residual, and with
// keep the decoded input; also with r aliasing x (how allreduce_sparse.cc and the container call
// it).
TEST(CodecRegistry, EncodeFeedbackEqualsTheGenericHelper) {
  for (const rp::CodecInfo& info : rp::codecs()) {
    if (info.make == nullptr || info.exact) continue;
    for (bool alt : {false, true}) {
      rp::CodecParams p;
      p.block = 16;
      p.ratio = 0.2;
      p.threshold = 0.5;
      if (alt) {
        p.values = "fp16";
        p.sampled = false;
        p.stochastic = true;
      }
      const std::size_t n = 1000;
      std::vector<float> x0(n);
      for (std::size_t i = 0; i < n; ++i) {
        x0[i] = std::sin(0.37f * static_cast<float>(i)) * (i % 3 == 0 ? 70000.0f : 1.3f);
      }
      auto codec = rp::make_codec(static_cast<rp::WireCompression>(info.id), p, rp::DType::kF32,
                                  rp::ReduceOp::kSum);
      for (bool keep : {false, true}) {
        std::vector<float> xa = x0, xb = x0, ra(n, 9.0f), rb(n, -9.0f);
        std::vector<unsigned char> oa(codec->bound(n)), ob(codec->bound(n));
        const std::size_t la = codec->encode_feedback(xa.data(), ra.data(), n, oa.data(), 7, keep);
        const std::size_t lb =
            codec->rp::Codec::encode_feedback(xb.data(), rb.data(), n, ob.data(), 7, keep);
        ASSERT_EQ(la, lb) << info.name;
        EXPECT_EQ(0, std::memcmp(oa.data(), ob.data(), la)) << info.name;
        EXPECT_EQ(0, std::memcmp(ra.data(), rb.data(), n * sizeof(float)))
            << info.name << (alt ? " alt" : "") << (keep ? " keep" : "");
        EXPECT_EQ(0, std::memcmp(xa.data(), xb.data(), n * sizeof(float))) << info.name;
      }
      std::vector<float> xa = x0, xb = x0, rb(n);
      std::vector<unsigned char> oa(codec->bound(n)), ob(codec->bound(n));
      codec->encode_feedback(xa.data(), xa.data(), n, oa.data(), 7, false);  // r is x
      codec->rp::Codec::encode_feedback(xb.data(), rb.data(), n, ob.data(), 7, false);
      EXPECT_EQ(0, std::memcmp(xa.data(), rb.data(), n * sizeof(float))) << info.name << " alias";
    }
  }
}

// Error feedback with the add folded in: encode_feedback_add(g, r) must give the payload and the
// residual of `r += g; encode_feedback(r, r)` bit for bit, for every lossy codec. n is above
// 4 x the sampled top-k's sample size, so its folded path (the add inside the collecting pass)
// runs; the residual starts nonzero so the add matters.
TEST(CodecRegistry, EncodeFeedbackAddEqualsAddThenEncodeFeedback) {
  const std::size_t n = 300007;
  std::vector<float> g(n), r0(n);
  for (std::size_t i = 0; i < n; ++i) {
    g[i] = std::sin(0.37f * static_cast<float>(i)) * (i % 97 == 0 ? 50.0f : 1.0f);
    r0[i] = std::cos(0.11f * static_cast<float>(i)) * 0.3f;
  }
  int checked = 0;
  for (const rp::CodecInfo& info : rp::codecs()) {
    if (info.make == nullptr || info.exact) continue;
    for (bool alt : {false, true}) {
      rp::CodecParams p;
      p.block = 16;
      p.ratio = 0.01;
      p.threshold = 0.9;
      if (alt) p.values = "fp16";
      for (bool sampled : {true, false}) {
        p.sampled = sampled;
        auto codec = rp::make_codec(static_cast<rp::WireCompression>(info.id), p, rp::DType::kF32,
                                    rp::ReduceOp::kSum);
        std::vector<float> ra = r0, rb = r0;
        std::vector<unsigned char> oa(codec->bound(n)), ob(codec->bound(n));
        const std::size_t la = codec->encode_feedback_add(g.data(), ra.data(), n, oa.data(), 11);
        for (std::size_t i = 0; i < n; ++i) rb[i] += g[i];
        const std::size_t lb =
            codec->encode_feedback(rb.data(), rb.data(), n, ob.data(), 11, false);
        ASSERT_EQ(la, lb) << info.name;
        EXPECT_EQ(0, std::memcmp(oa.data(), ob.data(), la)) << info.name;
        EXPECT_EQ(0, std::memcmp(ra.data(), rb.data(), n * sizeof(float)))
            << info.name << (alt ? " fp16" : "") << (sampled ? " sampled" : "");
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 8);
}

// The sweep: every registered codec, P in 2..8, sizes around the segment and block boundaries.
class CodecSweep : public ::testing::TestWithParam<std::tuple<int, std::string, bool>> {};

TEST_P(CodecSweep, EveryCodecEveryRankCount) {
  const int P = std::get<0>(GetParam());
  const std::string name = std::get<1>(GetParam());
  const bool alt = std::get<2>(GetParam());
  const rp::CodecInfo& info = rp::codec_by_name(name);
  const std::vector<std::size_t> sizes = {0, 1, 7, 1023, 4099, 70001};
  std::mutex mu;
  // Per size: every rank's output and residual, to compare across ranks afterwards.
  std::vector<std::vector<std::vector<float>>> outs(sizes.size(),
                                                    std::vector<std::vector<float>>(P));
  std::vector<std::vector<std::vector<float>>> res(sizes.size(),
                                                   std::vector<std::vector<float>>(P));
  auto input = [](int r, std::size_t i) {
    return static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(r) * 13) % 23) -
                              11) *
           0.25f;
  };
  run_threads(P, [&](rp::Communicator& c) {
    rp::CompressionOptions co;
    co.kind = static_cast<rp::WireCompression>(info.id);
    co.block = 64;
    co.ratio = 0.1;
    if (alt) {  // each codec reads the ones it knows (CodecInfo::params)
      co.stochastic = true;
      co.sampled = false;
      co.values = "fp16";
      co.threshold = 1.25;  // inputs are multiples of 0.25 in [-2.75, 2.75]: some drop
    }
    for (std::size_t s = 0; s < sizes.size(); ++s) {
      const std::size_t n = sizes[s];
      std::vector<float> x(n), r(n, 0.0f);
      for (std::size_t i = 0; i < n; ++i) x[i] = input(c.rank(), i);
      c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co,
                  info.exact ? nullptr : r.data());
      std::lock_guard<std::mutex> lock(mu);
      outs[s][static_cast<std::size_t>(c.rank())] = x;
      res[s][static_cast<std::size_t>(c.rank())] = r;
    }
  });
  if (HasFailure()) return;
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    const std::size_t n = sizes[s];
    for (int q = 1; q < P && n > 0; ++q) {  // (memcmp of an empty vector's null data() is UB)
      ASSERT_EQ(0, std::memcmp(outs[s][0].data(), outs[s][static_cast<std::size_t>(q)].data(),
                               n * sizeof(float)))
          << name << " P=" << P << " n=" << n << ": rank " << q << " differs from rank 0";
    }
    for (std::size_t i = 0; i < n; ++i) {
      double want = 0, got = outs[s][0][i];
      for (int q = 0; q < P; ++q) {
        want += input(q, i);
        if (!info.exact) got += res[s][static_cast<std::size_t>(q)][i];
      }
      // Exact codecs: the exact sum (these inputs add exactly in float32). Lossy ones with error
      // feedback: output + every rank's residual = the inputs, up to float32 rounding.
      const double tol = info.exact ? 0.0 : 1e-4 * (1.0 + std::fabs(want)) * P;
      ASSERT_LE(std::fabs(got - want), tol)
          << name << (alt ? " (alt)" : "") << " P=" << P << " n=" << n << " i=" << i;
    }
  }
}

std::vector<std::string> all_codec_names() {
  std::vector<std::string> v;
  for (const auto& c : rp::codecs()) {
    if (c.make != nullptr && std::string(c.name) != "xor-toy") v.push_back(c.name);
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecSweep,
                         ::testing::Combine(::testing::Range(2, 9),
                                            ::testing::ValuesIn(all_codec_names()),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           std::string n = std::get<1>(info.param);
                           for (auto& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return "P" + std::to_string(std::get<0>(info.param)) + "_" + n +
                                  (std::get<2>(info.param) ? "_alt" : "");
                         });

// Auto mode over the registry: every rank calibrates at the same request, picks the same codec
// every time (the choice is a function of the agreed model), and the result is what that codec
// gives (here the toy exact codec is allowed too, so a registered codec takes part with no change).
TEST(CodecRegistry, AutoPicksTheSameCodecOnEveryRank) {
  std::mutex mu;
  std::vector<std::vector<int>> picks(3);
  run_threads(3, [&](rp::Communicator& c) {
    rp::CompressionOptions co;
    co.kind = rp::WireCompression::kAuto;
    co.allow = (1u << static_cast<int>(rp::WireCompression::kLossless)) |
               (1u << static_cast<int>(rp::WireCompression::kInt8)) | (1u << kToyId);
    std::vector<int> mine;
    for (int step = 0; step < 6; ++step) {
      const std::size_t n = 50000;
      std::vector<float> x(n), r(n, 0.0f);
      for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i + step) % 17) - 8.0f;
      c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co, r.data());
      const rp::CommStats s = c.stats();
      ASSERT_GE(s.auto_last, 0);
      mine.push_back(s.auto_last);
      const rp::CodecInfo* info = rp::find_codec(s.auto_last);
      ASSERT_NE(info, nullptr);
      // Exact picks give the exact sum; the residual (error feedback) then stays zero.
      if (info->exact) {
        for (std::size_t i = 0; i < n; i += 997) {
          ASSERT_EQ(x[i], 3.0f * (static_cast<float>((i + step) % 17) - 8.0f)) << info->name;
        }
      }
    }
    const rp::CommStats s = c.stats();
    std::uint64_t total = 0;
    for (auto v : s.auto_counts) total += v;
    EXPECT_EQ(total, 6u);
    EXPECT_GE(s.auto_calibrations, 1);
    std::lock_guard<std::mutex> lock(mu);
    picks[static_cast<std::size_t>(c.rank())] = mine;
  });
  EXPECT_EQ(picks[0], picks[1]);
  EXPECT_EQ(picks[0], picks[2]);
}
