// Chrome trace-event timeline (see trace.h). Events are appended under a mutex; recording is
// off unless enabled, and a scope costs one branch then.
#include "ringpress/trace.h"

#include <cstdio>

#include "ringpress/error.h"

namespace ringpress {

const char* stage_name(Stage s) noexcept {
  switch (s) {
    case Stage::kWait: return "wait";
    case Stage::kReduce: return "reduce";
    case Stage::kEncode: return "encode";
    case Stage::kDecode: return "decode";
    case Stage::kSelect: return "select";
    case Stage::kScatterAdd: return "scatter_add";
    case Stage::kCount: break;
  }
  return "?";
}

void Timeline::add(const char* name, const char* cat, int tid, Clock::time_point t0,
                   Clock::time_point t1, std::uint32_t seq, std::uint64_t bytes) {
  if (!enabled_) return;
  Event e{name,
          cat,
          tid,
          std::chrono::duration_cast<std::chrono::nanoseconds>(t0 - origin_).count(),
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
          seq,
          bytes};
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() < (4u << 20)) events_.push_back(e);  // bounded: ~200 MB at most
}

std::size_t Timeline::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

std::size_t Timeline::write(const std::string& path, int rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::FILE* f = std::fopen(path.c_str(), "w");
  RP_ENFORCE(f != nullptr, UsageError, "cannot write the timeline to '", path, "'");
  std::fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
  std::fprintf(
      f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d\"}}",
      rank, rank);
  for (const Event& e : events_) {
    std::fprintf(f,
                 ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,"
                 "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"seq\":%u,\"bytes\":%llu}}",
                 e.name, e.cat, rank, e.tid, static_cast<double>(e.ts_ns) / 1e3,
                 static_cast<double>(e.dur_ns) / 1e3, e.seq,
                 static_cast<unsigned long long>(e.bytes));
  }
  std::fprintf(f, "\n]}\n");
  std::fclose(f);
  return events_.size();
}

}  // namespace ringpress
