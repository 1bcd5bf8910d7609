// In-process stores: HashStore (ranks as threads in one process) and PrefixStore (namespaces).
//
// Contract: see ringpress/store.h. Integer values written by add() are decimal ASCII
// ("42", "-7"), as in torch's c10d stores, so get() of a counter returns its decimal text and a
// counter can be pre-set with set(key, "10"). add() on a value that is not a decimal int64, or an
// add that would overflow int64, raises UsageError and leaves the value unchanged.
// Timeouts: get(key, t) with t <= 0 only checks (no wait); very long timeouts are clamped so the
// deadline arithmetic cannot overflow.
//
// Locking: HashStore::Impl::mutex guards the map; every set/add notifies the condition variable
// (all waiters re-check their own key). No user code runs under the lock.
// Cost: set/get/add are one hash-map operation each; get copies the value out.
#include "ringpress/store.h"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "ringpress/error.h"

namespace ringpress {

// Shared with store_tcp.cc (the server applies the same add() rule). Declared there too rather than
// in a header because it is private to the two store files.
namespace store_internal {

// Parses `value` as a decimal int64 (optional '-', digits only, no overflow).
bool parse_decimal_i64(const Bytes& value, std::int64_t* out) {
  if (value.empty()) return false;
  std::size_t i = 0;
  const bool negative = value[0] == '-';
  if (negative) i = 1;
  if (i == value.size()) return false;
  std::int64_t acc = 0;
  for (; i < value.size(); ++i) {
    const std::uint8_t c = value[i];
    if (c < '0' || c > '9') return false;
    const int digit = c - '0';
    // Accumulate towards the sign so that INT64_MIN parses.
    if (__builtin_mul_overflow(acc, 10, &acc)) return false;
    if (negative ? __builtin_sub_overflow(acc, digit, &acc)
                 : __builtin_add_overflow(acc, digit, &acc))
      return false;
  }
  *out = acc;
  return true;
}

// The add() rule of every store: `current` is the key's value or nullptr when the key is unset.
// On success writes the new decimal value to *updated, the sum to *result and returns "";
// otherwise returns why (and changes nothing).
std::string add_decimal(const std::string& key, const Bytes* current, std::int64_t delta,
                        Bytes* updated, std::int64_t* result) {
  std::int64_t base = 0;
  if (current != nullptr && !parse_decimal_i64(*current, &base)) {
    return detail::str_cat("value of key '", key, "' is not a decimal integer (", current->size(),
                           " bytes); add() needs a key created by add() or set to decimal text");
  }
  std::int64_t sum = 0;
  if (__builtin_add_overflow(base, delta, &sum)) {
    return detail::str_cat("add(", delta, ") to key '", key, "' holding ", base,
                           " overflows int64");
  }
  const std::string text = std::to_string(sum);
  updated->assign(text.begin(), text.end());
  *result = sum;
  return std::string();
}

// now + timeout without overflow: waits longer than ~10 years are treated as 10 years.
std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  constexpr std::chrono::milliseconds kMax = std::chrono::hours(24 * 365 * 10);
  const auto t = std::clamp(timeout, std::chrono::milliseconds(0), kMax);
  return std::chrono::steady_clock::now() + t;
}

}  // namespace store_internal

bool Store::delete_key(const std::string& key) {
  ScopedErrorContext ctx("store.delete_key");
  RP_THROW(UsageError, "this store cannot delete keys (delete_key('", key, "'))");
}

// ------------------------------------------------------------------------------------ HashStore

struct HashStore::Impl {
  std::mutex mutex;
  std::condition_variable changed;  // notified (all) after every set/add
  std::unordered_map<std::string, Bytes> values;
};

HashStore::HashStore() : impl_(std::make_unique<Impl>()) {}
HashStore::~HashStore() = default;

void HashStore::set(const std::string& key, const Bytes& value) {
  Bytes copy = value;  // allocate outside the lock
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->values[key] = std::move(copy);
  }
  impl_->changed.notify_all();
}

Bytes HashStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  ScopedErrorContext ctx("store.get");
  const auto deadline = store_internal::deadline_after(timeout);
  {
    std::unique_lock<std::mutex> lock(impl_->mutex);
    auto it = impl_->values.end();
    const bool found = impl_->changed.wait_until(lock, deadline, [&] {
      it = impl_->values.find(key);
      return it != impl_->values.end();
    });
    if (found) return it->second;
  }
  RP_THROW(TimeoutError, "key '", key, "' not set within ", timeout.count(),
           " ms (in-process store)");
}

std::int64_t HashStore::add(const std::string& key, std::int64_t delta) {
  ScopedErrorContext ctx("store.add");
  std::int64_t result = 0;
  std::string why;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    auto it = impl_->values.find(key);
    Bytes updated;
    why = store_internal::add_decimal(key, it == impl_->values.end() ? nullptr : &it->second, delta,
                                      &updated, &result);
    if (why.empty()) impl_->values[key] = std::move(updated);
  }
  if (!why.empty()) RP_THROW(UsageError, why);
  impl_->changed.notify_all();
  return result;
}

bool HashStore::delete_key(const std::string& key) {
  Bytes gone;  // freed outside the lock
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->values.find(key);
  if (it == impl_->values.end()) return false;
  gone = std::move(it->second);
  impl_->values.erase(it);
  return true;
}

// ---------------------------------------------------------------------------------- PrefixStore

PrefixStore::PrefixStore(std::string prefix, std::shared_ptr<Store> base)
    : prefix_(std::move(prefix)), base_(std::move(base)) {
  ScopedErrorContext ctx("store.prefix");
  RP_ENFORCE(base_ != nullptr, UsageError, "PrefixStore '", prefix_, "' needs a base store");
  prefix_ += '/';
}

void PrefixStore::set(const std::string& key, const Bytes& value) {
  base_->set(prefix_ + key, value);
}

Bytes PrefixStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  return base_->get(prefix_ + key, timeout);
}

std::int64_t PrefixStore::add(const std::string& key, std::int64_t delta) {
  return base_->add(prefix_ + key, delta);
}

bool PrefixStore::delete_key(const std::string& key) {
  return base_->delete_key(prefix_ + key);
}

std::vector<std::string> rendezvous_records(int rank) {
  RP_ENFORCE(rank >= 0, UsageError, "rendezvous_records: rank must be >= 0, got ", rank);
  std::vector<std::string> keys{"addr/" + std::to_string(rank)};
  if (rank == 0) keys.emplace_back("secret");
  return keys;
}

}  // namespace ringpress
