// Auto mode for allreduce, all of it in one place: a cost model of each wire compression on this
// link and CPU, fitted by measurement, that picks the fastest kind the user allows for each
// request, and the collective that calibrates, chooses and runs (allreduce_auto). The model is
// written out in docs/algorithms.md, "Auto mode". The engine only owns the AutoState.
//
// Contract
//   * calibrate() measures on this rank (link latency and bandwidth with plain allreduces of a
//     scratch buffer, codec speeds and ratios on a sample of the caller's data) and then agrees on
//     the model with every rank (allreduce, max: the slowest rank's costs), so every rank predicts
//     the same times and picks the same kind: a collective; all ranks call it at the same request.
//   * choose() is a pure function of (model, size, allowed kinds): deterministic on every rank.
//   * Compression is chosen only when its predicted time beats plain by more than 5%.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "ringpress/collectives.h"

namespace ringpress::autosel {

constexpr int kKinds = kMaxCodecs;  // indexed by codec id (ringpress/codec.h)

struct Model {
  bool valid = false;
  // The network: per-message latency and seconds per byte. One level: on the slowest link of a
  // ring over all ranks. Two levels: in the inter-host groups (one rank per host), measured with
  // every local index's group running at once, so byte_s includes their share of a host's link.
  double alpha_s = 0;
  double byte_s = 0;
  // Two levels (hosts >= 2 and local >= 2, P = hosts * local), when the allreduce runs the
  // hierarchical paths (allreduce.cc): H hosts of L ranks, and the shared-memory level.
  int hosts = 0;
  int local = 0;
  double intra_alpha_s = 0;
  double intra_byte_s = 0;
  std::array<double, kKinds> enc_s{};  // encode seconds per input byte
  std::array<double, kKinds> dec_s{};  // decode (+reduce) seconds per input byte
  std::array<double, kKinds> ratio{};  // input bytes / wire bytes
  // Live correction: the smallest actual / predicted among the requests run with each kind since
  // the previous calibration (see Observed), the largest over ranks, agreed at the next
  // calibration (1 = the model was right). predict() scales by it.
  std::array<double, kKinds> correction = ones();

  static std::array<double, kKinds> ones() {
    std::array<double, kKinds> a{};
    a.fill(1.0);
    return a;
  }
};

// What a rank observed between calibrations (actual / predicted per kind), folded into the next.
// Live transfers: the smallest actual / predicted per kind since the last calibration (0 = not
// run). The smallest, not the mean: a request's time includes waiting for peers that are still
// computing (DDP issues buckets while backward runs), which only ever adds, so the fastest
// request is the one closest to the transfer's own cost. With the mean, whichever kind was just
// used looked slow and auto drifted to kinds it had not tried (int8 -> bf16 -> plain at 1 Gbit/s).
struct Observed {
  std::array<double, kKinds> best{};
  void add(WireCompression k, double actual_s, double predicted_s) {
    if (predicted_s <= 0 || actual_s <= 0) return;
    const double r = actual_s / predicted_s;
    double& b = best[static_cast<std::size_t>(k)];
    b = b == 0 ? r : (r < b ? r : b);
  }
};

struct Choice {
  WireCompression kind = WireCompression::kNone;
  std::array<double, kKinds> predicted_s{};  // < 0: not allowed
};

// Bit for each allowed kind: 1u << static_cast<int>(WireCompression::k...).
inline std::uint32_t bit(WireCompression k) {
  return 1u << static_cast<int>(k);
}

// The sizes at which plain allreduce changes algorithm (allreduce.cc, allreduce_flat): recursive
// doubling at or below small_bytes; recursive halving above it and up to halving_bytes where P is
// a power of two of 4 or more; the ring otherwise. Lossless follows plain's choice, so the model
// gives both the algorithm they will run; lossy codecs always run their codec's schedule.
// Two levels: at or below small_bytes exact kinds go through one leader per host
// (allreduce_small_hier.cc); above it, and lossy kinds at every size, the hierarchical allreduce,
// pipelined in chunks of L H segments (segment_bytes, 0 = the default) where it has two or more.
struct Thresholds {
  std::size_t small_bytes = 0;
  std::size_t halving_bytes = 0;
  std::size_t segment_bytes = 0;
};

double predict(const Model& m, WireCompression kind, std::size_t bytes, int P, const Thresholds& t);
Choice choose(const Model& m, std::size_t bytes, int P, std::uint32_t allow, const Thresholds& t);

// Collective: all ranks call it at the same request. `sample` is float32 data of the request.
// `seen` (may be empty) feeds the corrections; `prev` keeps the corrections of kinds not seen.
// two_levels: the request takes the hierarchical paths (group.h, two_level_allreduce): measure
// the shared-memory groups and the inter-host groups instead of one ring over all ranks.
Model calibrate(const OpContext& oc, const float* sample, std::size_t n, std::uint32_t allow,
                const CompressionOptions& c, const Observed& seen = Observed(),
                const Model& prev = Model(), bool two_levels = false);

// State across requests; owned by whichever thread runs requests (one at a time).
struct AutoState {
  Model model;
  Observed seen;               // actual / predicted since the last calibration
  std::uint32_t measured = 0;  // kinds the model has measured
  int since_calibration = 0;
};

struct AutoOutcome {
  bool calibrated = false;  // this request (re)calibrated the model
  Choice choice;
  double actual_s = 0;  // time the chosen kind took
};

// Collective (every rank calls it for the same request): (re)calibrate at the same request on
// every rank (the first auto request, when new kinds are allowed, then every 64th), pick the kind
// with the lowest predicted time, run it with ringpress::allreduce, and record actual/predicted,
// which corrects the model at the next calibration (agreed by all ranks, so choices stay
// identical everywhere). When an exact kind is picked for float32 sum/avg data, the residual of
// earlier lossy requests is delivered (x += r, r = 0).
AutoOutcome allreduce_auto(const OpContext& oc, AllreduceOptions o, AutoState& st);

}  // namespace ringpress::autosel
