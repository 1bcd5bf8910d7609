// Tracing: a Chrome trace-event timeline and per-stage time/byte counters. Lives in common so
// every layer (collectives, engine) can time its stages without including a higher layer.
//
// Contract
//   * Timeline::add is thread-safe (one mutex); recording is off unless enabled, and a scope then
//     costs one branch. At most 4 Mi events are kept (the rest are dropped).
//   * StageScope adds its duration and bytes to a StageTimes (relaxed atomics) and, when a
//     timeline is on, one "X" event.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace ringpress {

using Clock = std::chrono::steady_clock;

// Chrome trace-event recorder ("X" complete events; load the file in chrome://tracing or Perfetto).
class Timeline {
 public:
  bool enabled() const noexcept { return enabled_; }
  void enable(bool on) { enabled_ = on; }
  void add(const char* name, const char* cat, int tid, Clock::time_point t0, Clock::time_point t1,
           std::uint32_t seq = 0, std::uint64_t bytes = 0);
  std::size_t size() const;
  // Writes the trace JSON (rank as pid) and returns the number of events written.
  std::size_t write(const std::string& path, int rank) const;

 private:
  struct Event {
    const char* name;
    const char* cat;
    int tid;
    std::int64_t ts_ns;
    std::int64_t dur_ns;
    std::uint32_t seq;
    std::uint64_t bytes;
  };
  bool enabled_ = false;
  mutable std::mutex mu_;
  std::vector<Event> events_;
  Clock::time_point origin_ = Clock::now();
};

// Scoped timeline event; free when the timeline is off.
class TimelineScope {
 public:
  TimelineScope(Timeline* tl, const char* name, const char* cat, int tid, std::uint32_t seq = 0,
                std::uint64_t bytes = 0)
      : tl_(tl && tl->enabled() ? tl : nullptr),
        name_(name),
        cat_(cat),
        tid_(tid),
        seq_(seq),
        bytes_(bytes) {
    if (tl_) t0_ = Clock::now();
  }
  ~TimelineScope() {
    if (tl_) tl_->add(name_, cat_, tid_, t0_, Clock::now(), seq_, bytes_);
  }

 private:
  Timeline* tl_;
  const char* name_;
  const char* cat_;
  int tid_;
  std::uint32_t seq_;
  std::uint64_t bytes_;
  Clock::time_point t0_;
};

// Time and bytes per pipeline stage, summed over requests (Communicator::stats()).
enum class Stage : int { kWait = 0, kReduce, kEncode, kDecode, kSelect, kScatterAdd, kCount };
const char* stage_name(Stage s) noexcept;
struct StageTimes {
  std::array<std::atomic<std::uint64_t>, static_cast<int>(Stage::kCount)> ns{};
  std::array<std::atomic<std::uint64_t>, static_cast<int>(Stage::kCount)> bytes{};
};

// Scoped stage: adds its duration to the counters and, when the timeline is on, an event.
class StageScope {
 public:
  // `oc` is any context with `stages`, `timeline` and `seq` members (collectives' OpContext).
  template <class Ctx>
  StageScope(const Ctx& oc, Stage stage, const char* label, std::uint64_t bytes)
      : stages_(oc.stages),
        timeline_(oc.timeline),
        seq_(oc.seq),
        stage_(stage),
        label_(label),
        bytes_(bytes),
        t0_(Clock::now()) {}
  ~StageScope() {
    const auto t1 = Clock::now();
    if (stages_) {
      const auto i = static_cast<std::size_t>(stage_);
      stages_->ns[i].fetch_add(
          static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0_).count()),
          std::memory_order_relaxed);
      stages_->bytes[i].fetch_add(bytes_, std::memory_order_relaxed);
    }
    if (timeline_ && timeline_->enabled()) {
      timeline_->add(label_, stage_ == Stage::kWait ? "comm" : "compute", 1, t0_, t1, seq_, bytes_);
    }
  }
  StageScope(const StageScope&) = delete;
  StageScope& operator=(const StageScope&) = delete;

 private:
  StageTimes* stages_;
  Timeline* timeline_;
  std::uint32_t seq_;
  Stage stage_;
  const char* label_;
  std::uint64_t bytes_;
  Clock::time_point t0_;
};

}  // namespace ringpress
