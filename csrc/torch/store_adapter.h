// A torch c10d::Store seen as a ringpress::Store, so the communicator rendezvouses through the
// store torch.distributed already made for the group (its PrefixStore: nothing else to set up).
//
// Contract: as ringpress/store.h. get() waits at most `timeout` for the key (c10d's wait), then
// reads it; torch's errors (a lost store server, a timeout) arrive as ringpress errors naming the
// key. Values are opaque bytes; the communicator validates whatever it reads (transport.h).
#pragma once

#include <chrono>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <utility>
#include <vector>

#include "ringpress/error.h"
#include "ringpress/store.h"

namespace ringpress::torchpg {

class TorchStore final : public Store {
 public:
  explicit TorchStore(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}

  void set(const std::string& key, const Bytes& value) override {
    try {
      store_->set(key, value);
    } catch (const std::exception& e) {
      RP_THROW(TransportError, "store set of '", key, "' failed: ", e.what());
    }
  }

  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override {
    try {
      store_->wait({key}, timeout);
    } catch (const std::exception& e) {
      RP_THROW(TimeoutError, "store key '", key, "' did not appear within ", timeout.count(),
               " ms: ", e.what());
    }
    try {
      return store_->get(key);
    } catch (const std::exception& e) {
      RP_THROW(TransportError, "store get of '", key, "' failed: ", e.what());
    }
  }

  std::int64_t add(const std::string& key, std::int64_t delta) override {
    try {
      return store_->add(key, delta);
    } catch (const std::exception& e) {
      RP_THROW(TransportError, "store add on '", key, "' failed: ", e.what());
    }
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace ringpress::torchpg
