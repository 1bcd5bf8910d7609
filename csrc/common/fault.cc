// Fault injection (see fault.h). The specification is parsed once; counting is per process.
#include "ringpress/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ringpress/env.h"
#include "ringpress/error.h"

namespace ringpress::fault {

namespace {
struct Spec {
  bool on = false;
  std::string point;
  Action action = Action::kNone;
  long when = 1;
  std::atomic<long> hits{0};
};

const char* const kPoints[] = {"rendezvous",
                               "ring.reduce_scatter",
                               "ring.allgather",
                               "recursive_doubling",
                               "broadcast",
                               "barrier",
                               "send",
                               "ring.encode",
                               "ring.decode",
                               "sparse.encode",
                               "recovery.mesh",
                               "recovery.agree",
                               "recovery.round",
                               "grow.list",
                               "send.ref",
                               "halving.reduce_scatter",
                               "halving.allgather",
                               "halving.encode",
                               "doubling.allgather",
                               "allgather_leaders",
                               "reduce_scatter_leaders"};

Spec& spec() {
  static Spec* s = [] {
    auto* sp = new Spec();
    const auto v = env::raw("RINGPRESS_FAULT");
    if (!v) return sp;
    std::string text(*v);
    auto c1 = text.find(':');
    RP_ENFORCE(c1 != std::string::npos, UsageError, "RINGPRESS_FAULT='", text,
               "': expected <point>:<action>[:<n>]");
    sp->point = text.substr(0, c1);
    std::string rest = text.substr(c1 + 1);
    auto c2 = rest.find(':');
    std::string action = rest.substr(0, c2);
    if (c2 != std::string::npos) sp->when = std::strtol(rest.c_str() + c2 + 1, nullptr, 10);
    bool known = false;
    for (const char* p : kPoints) known = known || sp->point == p;
    RP_ENFORCE(known, UsageError, "RINGPRESS_FAULT: unknown point '", sp->point, "'");
    if (action == "kill")
      sp->action = Action::kKill;
    else if (action == "stop")
      sp->action = Action::kStop;
    else if (action == "exit")
      sp->action = Action::kExit;
    else if (action == "garbage")
      sp->action = Action::kGarbage;
    else if (action == "truncate")
      sp->action = Action::kTruncate;
    else if (action == "corrupt")
      sp->action = Action::kCorrupt;
    else
      RP_THROW(UsageError, "RINGPRESS_FAULT: unknown action '", action, "'");
    const bool on_send = sp->point == "send";
    const bool on_ref = sp->point == "send.ref";
    const bool on_encode =
        sp->point == "ring.encode" || sp->point == "sparse.encode" || sp->point == "halving.encode";
    RP_ENFORCE(sp->action != Action::kGarbage || on_send || on_ref, UsageError,
               "RINGPRESS_FAULT: 'garbage' needs the point 'send' or 'send.ref'");
    RP_ENFORCE(sp->action != Action::kTruncate || on_send, UsageError,
               "RINGPRESS_FAULT: 'truncate' needs the point 'send'");
    RP_ENFORCE(sp->action != Action::kCorrupt || on_encode || on_ref, UsageError,
               "RINGPRESS_FAULT: 'corrupt' needs the point 'ring.encode', 'sparse.encode' or "
               "'send.ref'");
    RP_ENFORCE(sp->when >= 1, UsageError, "RINGPRESS_FAULT: hit count must be >= 1");
    sp->on = true;
    return sp;
  }();
  return *s;
}
}  // namespace

void corrupt(void* payload, std::size_t len) {
  auto* p = static_cast<unsigned char*>(payload);
  for (std::size_t i = 0; i < len && i < 8; ++i) p[i] = static_cast<unsigned char>(~p[i]);
}

void exit_after_truncate(int peer) {
  std::fprintf(stderr, "ringpress: RINGPRESS_FAULT truncated a message to peer %d\n", peer);
  std::fflush(stderr);
  _exit(3);
}

Action hit(const char* point) {
  Spec& s = spec();
  if (!s.on || s.point != point) return Action::kNone;
  if (s.hits.fetch_add(1) + 1 != s.when) return Action::kNone;
  std::fprintf(stderr, "ringpress: RINGPRESS_FAULT fires at %s (pid %d)\n", point, getpid());
  std::fflush(stderr);
  switch (s.action) {
    case Action::kKill: ::raise(SIGKILL); break;
    case Action::kStop: ::raise(SIGSTOP); break;
    case Action::kExit: _exit(3);
    default: return s.action;
  }
  return Action::kNone;
}

}  // namespace ringpress::fault
