// Auto mode: calibration and the cost model (see auto_select.h and docs/algorithms.md).
#include "ringpress/auto_select.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "group.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/trace.h"

namespace ringpress::autosel {

namespace {
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
int k_of(WireCompression k) {
  return static_cast<int>(k);
}
}  // namespace

namespace {
double predict_raw(const Model& m, WireCompression kind, std::size_t bytes, int P,
                   const Thresholds& t);
}

double predict(const Model& m, WireCompression kind, std::size_t bytes, int P,
               const Thresholds& t) {
  return predict_raw(m, kind, bytes, P, t) * m.correction[static_cast<std::size_t>(kind)];
}

namespace {
struct Link {
  double alpha_s;
  double byte_s;
};

// Plain's algorithm at this size (Thresholds): its latency terms and the bytes each rank sends.
struct Schedule {
  double rounds;
  double per_rank;
  bool doubling;  // recursive doubling: an exact codec sends these messages uncompressed
};
Schedule plain_schedule(std::size_t bytes, int P, const Thresholds& t, bool ring_only) {
  const double n = static_cast<double>(bytes);
  int lg = 0;
  while ((2 << lg) <= P) ++lg;  // floor(log2 P)
  const bool pow2 = (P & (P - 1)) == 0;
  const double per_rank = 2.0 * (P - 1) / P * n;  // halving and the ring send the same
  if (ring_only) return {2.0 * (P - 1), per_rank, false};
  if (bytes <= t.small_bytes) {
    const double rounds = lg + (pow2 ? 0 : 2);  // the fold and unfold of the extra ranks
    return {rounds, rounds * n, true};
  }
  if (pow2 && P >= 4 && bytes <= t.halving_bytes) return {2.0 * lg, per_rank, false};
  return {2.0 * (P - 1), per_rank, false};
}

// One flat group of P ranks on link `x` (allreduce_flat's choice; ring_only: the ring at every
// size, as the hierarchy's pipelined inter-host step runs).
double predict_flat(const Model& m, const Link& x, WireCompression kind, std::size_t bytes, int P,
                    const Thresholds& t, bool ring_only) {
  if (P <= 1) return 0.0;
  const double n = static_cast<double>(bytes);
  const double hops = 2.0 * (P - 1);
  const double per_rank = hops / P * n;  // bytes each rank sends in a ring allreduce
  const int k = k_of(kind);
  const Schedule plain = plain_schedule(bytes, P, t, ring_only);
  const double plain_s = plain.rounds * x.alpha_s + plain.per_rank * x.byte_s;
  if (kind == WireCompression::kNone) return plain_s;
  const CodecInfo* info = find_codec(k);
  if (info == nullptr) return 1e30;
  if (info->exact && plain.doubling) return plain_s;  // sent uncompressed (allreduce.cc)
  if (info->schedule == CodecSchedule::kAllgather) {
    // Two allgathers (sizes, payloads); every rank sends (P-1) payloads of n / ratio bytes;
    // encoding on this rank, then P payloads decoded and added (dec_s per input byte each).
    const double payload = n / std::max(m.ratio[k], 1.0);
    return 2.0 * (P - 1) * x.alpha_s + (P - 1) * payload * x.byte_s + n * m.enc_s[k] +
           P * n * m.dec_s[k];
  }
  // Ring (or, for an exact codec, plain's halving) with encoded messages: wire time at the
  // compressed size plus the codec work. The pipeline can hide one behind the other only when
  // they use different resources; over shared memory the "wire" is CPU copies too, so the model
  // adds them (conservative: on a slow network the wire term dominates either way).
  const double rounds = info->exact ? plain.rounds : hops;
  const double wire = per_rank / std::max(m.ratio[k], 1e-9) * x.byte_s;
  const double cpu = per_rank * (m.enc_s[k] + m.dec_s[k]);
  return rounds * x.alpha_s + wire + cpu;
}

// Two levels, H hosts of L ranks (allreduce.cc's choice; cost in allreduce_hier.cc and
// allreduce_small_hier.cc). Compression applies only to the inter-host step, on n / L bytes per
// rank among H ranks; the shared-memory phases cost every kind the same.
double predict_two_levels(const Model& m, WireCompression kind, std::size_t bytes,
                          const Thresholds& t) {
  const int H = m.hosts, L = m.local;
  const Link x{m.alpha_s, m.byte_s}, s{m.intra_alpha_s, m.intra_byte_s};
  const CodecInfo* info = kind == WireCompression::kNone ? nullptr : find_codec(k_of(kind));
  if (kind != WireCompression::kNone && info == nullptr) return 1e30;
  const bool exact = info == nullptr || info->exact;
  const double n = static_cast<double>(bytes);
  if (exact && bytes <= t.small_bytes) {
    // One leader per host: L - 1 messages into it and back over shared memory, recursive
    // doubling of the whole buffer among the H leaders (uncompressed, as plain).
    return 2.0 * (s.alpha_s + (L - 1) * n * s.byte_s) +
           predict_flat(m, x, WireCompression::kNone, bytes, H, t, false);
  }
  // Phases 1 and 3: a ring reduce-scatter and allgather among the L ranks of a host.
  auto intra = [&](double b) {
    return 2.0 * (L - 1) * s.alpha_s + 2.0 * (L - 1) / L * b * s.byte_s;
  };
  const std::size_t block = bytes / static_cast<std::size_t>(L);
  const bool ring_schedule = info == nullptr || info->schedule == CodecSchedule::kRing;
  const std::size_t K = ring_schedule ? hierarchical_chunks(bytes, L, H, t.segment_bytes) : 0;
  if (K >= 2) {
    // Pipelined: K chunks, the levels side by side: the slower level plus one chunk of the
    // shared-memory phases (the first reduce-scatter and the last allgather), each level paying
    // its latency once per chunk.
    const double k = static_cast<double>(K);
    const double inter = k * predict_flat(m, x, kind, block / K, H, t, true);
    const double local = k * intra(n / k);
    return std::max(inter, local) + local / k;
  }
  return intra(n) + predict_flat(m, x, kind, block, H, t, false);
}

double predict_raw(const Model& m, WireCompression kind, std::size_t bytes, int P,
                   const Thresholds& t) {
  if (m.hosts >= 2 && m.local >= 2 && m.hosts * m.local == P)
    return predict_two_levels(m, kind, bytes, t);
  return predict_flat(m, Link{m.alpha_s, m.byte_s}, kind, bytes, P, t, false);
}
}  // namespace

Choice choose(const Model& m, std::size_t bytes, int P, std::uint32_t allow, const Thresholds& t) {
  Choice c;
  c.predicted_s.fill(-1.0);
  c.predicted_s[0] = predict(m, WireCompression::kNone, bytes, P, t);
  double best = c.predicted_s[0];
  for (int k = 1; k < kKinds; ++k) {
    // A kind calibration did not measure (ratio 0: no float32 sample) is no candidate.
    if (!(allow & (1u << k)) || !m.valid || find_codec(k) == nullptr ||
        m.ratio[static_cast<std::size_t>(k)] <= 0)
      continue;
    const auto kind = static_cast<WireCompression>(k);
    c.predicted_s[static_cast<std::size_t>(k)] = predict(m, kind, bytes, P, t);
    // Compression must beat plain by more than 5% (model error, and plain is the safe choice).
    if (c.predicted_s[static_cast<std::size_t>(k)] < best &&
        c.predicted_s[static_cast<std::size_t>(k)] < 0.95 * c.predicted_s[0]) {
      best = c.predicted_s[static_cast<std::size_t>(k)];
      c.kind = kind;
    }
  }
  return c;
}

namespace {
// Latency from small recursive-doubling allreduces (best of 3), seconds per byte from ring
// allreduces of `bytes` of scratch (best of 2), on this group. Every member calls it.
Link measure_link(const OpContext& oc, std::size_t bytes) {
  const int P = oc.ctx.size();
  if (P <= 1) return {0.0, 0.0};
  std::vector<float> tiny(2, 0.0f);
  double t_small = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    AllreduceOptions o;
    o.data = tiny.data();
    o.count = tiny.size();
    auto t0 = Clock::now();
    allreduce_recursive_doubling(oc, o);
    t_small = std::min(t_small, seconds_since(t0));
  }
  int rounds = 0;
  for (int d = 1; d < P; d <<= 1) ++rounds;
  const double alpha = t_small / std::max(1, rounds);
  std::shared_ptr<Buffer> scratch = Buffer::acquire(bytes);
  std::fill(reinterpret_cast<float*>(scratch->data()),
            reinterpret_cast<float*>(scratch->data()) + bytes / 4, 0.0f);
  double t_big = 1e30;
  for (int rep = 0; rep < 2; ++rep) {
    AllreduceOptions o;
    o.data = scratch->data();
    o.count = bytes / 4;
    auto t0 = Clock::now();
    allreduce_ring(oc, o);
    t_big = std::min(t_big, seconds_since(t0));
  }
  const double per_rank = 2.0 * (P - 1) / P * static_cast<double>(bytes);
  return {alpha, std::max(t_big - 2.0 * (P - 1) * alpha, 0.1 * t_big) / per_rank};
}
}  // namespace

Model calibrate(const OpContext& oc, const float* sample, std::size_t n, std::uint32_t allow,
                const CompressionOptions& copts, const Observed& seen, const Model& prev,
                bool two_levels) {
  const int P = oc.ctx.size();
  Model m;
  // Codecs, on up to 1 Mi elements (4 MiB) of the caller's data, best of 2 runs: large enough to
  // stream from memory as the real request will, not from cache.
  const std::size_t ns = std::min<std::size_t>(n, 1u << 20);
  // What the ranks agree on (the slowest rank's figure of each wins everywhere): per kind its
  // encode and decode time and 1/ratio, the two links, and per kind the observed
  // actual/predicted (0 = not seen).
  constexpr std::size_t kEnc = 0, kDec = kKinds, kInv = 2 * kKinds, kLinks = 3 * kKinds,
                        kSeen = kLinks + 4;
  std::vector<double> v(kSeen + kKinds, 0.0);
  for (std::size_t i = 0; i < static_cast<std::size_t>(kKinds); ++i) v[kSeen + i] = seen.best[i];
  for (int k = 1; k < kKinds; ++k) {
    const CodecInfo* info = find_codec(k);
    if (!(allow & (1u << k)) || ns == 0 || info == nullptr || info->make == nullptr) continue;
    const auto kind = static_cast<WireCompression>(k);
    double enc = 1e30, dec = 1e30, inv_ratio = 1.0;
    std::unique_ptr<Codec> codec = make_codec(kind, copts, DType::kF32, ReduceOp::kSum);
    std::vector<unsigned char> buf(codec->bound(ns));
    std::vector<float> out(ns, 0.0f);
    for (int rep = 0; rep < 2; ++rep) {
      auto t0 = Clock::now();
      const std::size_t len = codec->encode(sample, ns, buf.data(), oc.seq);
      enc = std::min(enc, seconds_since(t0) / (4.0 * ns));
      t0 = Clock::now();
      codec->decode(buf.data(), len, out.data(), ns, true);
      dec = std::min(dec, seconds_since(t0) / (4.0 * ns));
      inv_ratio = static_cast<double>(len) / (4.0 * ns);
    }
    const auto i = static_cast<std::size_t>(k);
    v[kEnc + i] = enc;
    v[kDec + i] = dec;
    v[kInv + i] = inv_ratio;
  }
  int hosts = 0, local = 0;
  if (P > 1) {
    // Up to 4 MiB of scratch for the bandwidth, at least 1 MiB.
    const std::size_t bytes =
        std::min<std::size_t>(std::max<std::size_t>(4 * n, 1u << 20), 4u << 20);
    if (two_levels) {
      // Each level as the hierarchy runs it: every host's ranks over shared memory, then the
      // inter-host groups of one rank per host, all L at once (as phase 2 runs them) on blocks
      // of bytes / L. The groups are disjoint, so they run side by side.
      const HostLevels lev = host_levels(oc.ctx);
      hosts = oc.ctx.topology().hosts;
      local = static_cast<int>(lev.local.size());
      GroupView lv(oc.ctx, lev.local), xv(oc.ctx, lev.cross);
      const Link s = measure_link(OpContext{lv, oc.seq, oc.deadline, nullptr, nullptr}, bytes);
      const std::size_t block =
          std::max<std::size_t>(bytes / static_cast<std::size_t>(local) / 4 * 4, 64u << 10);
      const Link x = measure_link(OpContext{xv, oc.seq, oc.deadline, nullptr, nullptr}, block);
      v[kLinks] = x.alpha_s;
      v[kLinks + 1] = x.byte_s;
      v[kLinks + 2] = s.alpha_s;
      v[kLinks + 3] = s.byte_s;
    } else {
      const Link x = measure_link(oc, bytes);
      v[kLinks] = x.alpha_s;
      v[kLinks + 1] = x.byte_s;
    }
    // Agree: the slowest rank's costs everywhere, so every rank predicts the same times.
    AllreduceOptions agree;
    agree.data = v.data();
    agree.count = v.size();
    agree.dtype = DType::kF64;
    agree.op = ReduceOp::kMax;
    allreduce_recursive_doubling(oc, agree);
  }
  for (int k = 1; k < kKinds; ++k) {
    const auto i = static_cast<std::size_t>(k);
    m.enc_s[i] = v[kEnc + i];
    m.dec_s[i] = v[kDec + i];
    m.ratio[i] = v[kInv + i] > 0 ? 1.0 / v[kInv + i] : 0.0;  // 0: not measured
  }
  m.alpha_s = v[kLinks];
  m.byte_s = v[kLinks + 1];
  m.hosts = hosts;
  m.local = local;
  m.intra_alpha_s = v[kLinks + 2];
  m.intra_byte_s = v[kLinks + 3];
  for (std::size_t i = 0; i < static_cast<std::size_t>(kKinds); ++i) {
    const double c = v[kSeen + i];
    // The observed ratio was against predictions that already included the old correction.
    m.correction[i] =
        c > 0 ? std::min(std::max(prev.correction[i] * c, 0.25), 4.0) : prev.correction[i];
  }
  m.valid = true;
  return m;
}

AutoOutcome allreduce_auto(const OpContext& oc, AllreduceOptions o, AutoState& st) {
  AutoOutcome out;
  const bool f32 = o.dtype == DType::kF32 && (o.op == ReduceOp::kSum || o.op == ReduceOp::kAvg);
  // Codecs are measured on float32 data only: for other dtypes no kind is a candidate (lossless
  // would need a dtype-aware sample: not done yet), and none counts as measured.
  const std::uint32_t allow = f32 ? o.compression.allow : 0u;
  const Thresholds t{o.small_bytes ? o.small_bytes : default_small_bytes(),
                     o.halving_bytes ? o.halving_bytes : default_halving_bytes(), o.segment_bytes};
  if (o.count == 0) {  // nothing to send (count is the same on every rank): plain, no model
    o.compression.kind = WireCompression::kNone;
    ringpress::allreduce(oc, o);
    out.choice.predicted_s.fill(-1.0);
    out.choice.predicted_s[0] = 0.0;
    return out;
  }
  // The same on every rank (topology and the request's algo), so every rank calibrates alike.
  const bool two_levels = two_level_allreduce(oc.ctx, o.algo);
  if (!st.model.valid || (allow & ~st.measured) != 0 || ++st.since_calibration >= 64 ||
      (st.model.hosts > 0) != two_levels) {
    TimelineScope ts(oc.timeline, "auto:calibrate", "engine", 1, oc.seq);
    st.model = calibrate(oc, f32 ? static_cast<const float*>(o.data) : nullptr, f32 ? o.count : 0,
                         allow, o.compression, st.seen, st.model, two_levels);
    st.seen = Observed();
    st.since_calibration = 0;
    st.measured = allow;
    out.calibrated = true;
  }
  Choice ch = choose(st.model, o.count * dtype_size(o.dtype), oc.ctx.size(), allow, t);
  o.compression.kind = ch.kind;
  if (f32 && (ch.kind == WireCompression::kNone || ch.kind == WireCompression::kLossless) &&
      o.residual != nullptr) {
    // Exact this time: deliver what earlier lossy requests held back (x += r, r = 0) rather than
    // keep it for a lossy request that may never come (auto can settle on plain for good).
    // Only float32 sum/avg data can hold a lossy kind's residual; for anything else no lossy kind
    // was ever allowed, and the residual is left alone as the exact kinds leave it.
    auto* x = static_cast<float*>(o.data);
    for (std::size_t i = 0; i < o.count; ++i) {
      x[i] += o.residual[i];
      o.residual[i] = 0.0f;
    }
    o.residual = nullptr;
  }
  const auto t0 = Clock::now();
  {
    TimelineScope ts(oc.timeline, wire_compression_name(ch.kind), "auto", 1, oc.seq);
    ringpress::allreduce(oc, o);
  }
  const double actual = std::chrono::duration<double>(Clock::now() - t0).count();
  st.seen.add(ch.kind, actual, ch.predicted_s[static_cast<std::size_t>(ch.kind)]);
  out.choice = ch;
  out.actual_s = actual;
  return out;
}

}  // namespace ringpress::autosel
