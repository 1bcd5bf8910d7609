// SingleCopyPolicy: the order of its trials, the choice it settles on, and what it leaves alone.
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "ringpress/single_copy_policy.h"

using namespace ringpress;
using std::chrono::nanoseconds;

namespace {

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

// Runs `calls` requests of `bytes` through the policy; a request by reference takes ref_ns, one
// through the ring ring_ns. Returns the ways chosen (true = by reference).
std::vector<bool> drive(SingleCopyPolicy& p, const char* op, std::uint64_t bytes, int calls,
                        long ring_ns, long ref_ns) {
  std::vector<bool> ways;
  for (int i = 0; i < calls; ++i) {
    const bool by_ref = p.choose(op, bytes);
    ways.push_back(by_ref);
    p.record(op, bytes, by_ref, nanoseconds(by_ref ? ref_ns : ring_ns));
  }
  return ways;
}

}  // namespace

TEST(SingleCopyPolicy, WarmsUpThenAlternatesThenKeepsTheFasterWay) {
  SingleCopyPolicy p;
  const int n = 1 + 2 * SingleCopyPolicy::kTrials;
  // Call 0 by reference (untimed), then ring, reference, ring, ...
  const std::vector<bool> trials = drive(p, "allreduce", 4 * kMiB, n, 200, 300);
  std::vector<bool> want{true};
  for (int i = 0; i < 2 * SingleCopyPolicy::kTrials; ++i) want.push_back(i % 2 == 1);
  EXPECT_EQ(trials, want);
  // The ring was faster: it is kept from now on.
  EXPECT_EQ(drive(p, "allreduce", 4 * kMiB, 5, 200, 300), std::vector<bool>(5, false));
  const auto s = p.settled();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].op, "allreduce");
  EXPECT_EQ(s[0].bytes, kSingleCopyMinTotal);  // the class [2.5, 5) MiB
  EXPECT_FALSE(s[0].by_reference);
  EXPECT_LT(s[0].ring_s_per_gb, s[0].reference_s_per_gb);
}

TEST(SingleCopyPolicy, KeepsTheReferenceWhenItWasFaster) {
  SingleCopyPolicy p;
  drive(p, "allgather", 12 * kMiB, 1 + 2 * SingleCopyPolicy::kTrials, 900, 600);
  EXPECT_EQ(drive(p, "allgather", 12 * kMiB, 3, 900, 600), std::vector<bool>(3, true));
}

TEST(SingleCopyPolicy, ComparesTheBestTimeOfEachWay) {
  // One slow outlier by reference (a busy machine) does not decide: the best times do.
  SingleCopyPolicy p;
  const char* op = "allreduce";
  const std::uint64_t b = 8 * kMiB;
  const long times[] = {0, 500, 9000, 500, 300, 500, 300};  // call 0, then ring/ref in turn
  for (long t : times) p.record(op, b, p.choose(op, b), nanoseconds(t));
  EXPECT_TRUE(p.choose(op, b));
}

TEST(SingleCopyPolicy, ComparesTimePerByteWithinAClass) {
  // 5 and 9 MiB share the class [5, 10) MiB. The ring's trials ran on 5 MiB (100 ns per MiB),
  // the reference's on 9 MiB (95 ns per MiB): longer, but faster per byte.
  SingleCopyPolicy p;
  const char* op = "allreduce";
  p.record(op, 5 * kMiB, p.choose(op, 5 * kMiB), nanoseconds(1));  // warm-up
  for (int i = 0; i < SingleCopyPolicy::kTrials; ++i) {
    ASSERT_FALSE(p.choose(op, 5 * kMiB));
    p.record(op, 5 * kMiB, false, nanoseconds(500));  // 100 ns per MiB
    ASSERT_TRUE(p.choose(op, 9 * kMiB));
    p.record(op, 9 * kMiB, true, nanoseconds(855));  // 95 ns per MiB, though longer
  }
  EXPECT_TRUE(p.choose(op, 7 * kMiB));
}

TEST(SingleCopyPolicy, ClassesAreSeparateByOpAndSize) {
  SingleCopyPolicy p;
  drive(p, "allreduce", 4 * kMiB, 1 + 2 * SingleCopyPolicy::kTrials, 200, 300);  // ring kept
  // Another op and another size class start with their own warm-up and trials.
  EXPECT_EQ(drive(p, "broadcast", 4 * kMiB, 2, 200, 300), (std::vector<bool>{true, false}));
  EXPECT_EQ(drive(p, "allreduce", 64 * kMiB, 2, 200, 300), (std::vector<bool>{true, false}));
  EXPECT_FALSE(p.choose("allreduce", 3 * kMiB));
  EXPECT_EQ(p.settled().size(), 1u);
}

TEST(SingleCopyPolicy, LeavesRequestsBelowTheThresholdAlone) {
  // The transport never sends those by reference: nothing to learn, nothing recorded.
  SingleCopyPolicy p;
  const std::uint64_t b = kSingleCopyMinTotal - 1;
  EXPECT_EQ(drive(p, "allreduce", b, 20, 100, 900), std::vector<bool>(20, true));
  EXPECT_TRUE(p.settled().empty());
  // ... and they do not count towards the class above.
  EXPECT_EQ(drive(p, "allreduce", kSingleCopyMinTotal, 2, 200, 300),
            (std::vector<bool>{true, false}));
}
