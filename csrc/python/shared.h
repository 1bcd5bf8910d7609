// What both extensions bind the same way (_core with the pip pybind11, _c10d with torch's):
// error translation, the stats dict, compression options from keyword arguments. Header-only, so
// each module compiles it with its own pybind11.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <string>
#include <vector>

#include "ringpress/codec.h"
#include "ringpress/collectives.h"
#include "ringpress/engine.h"
#include "ringpress/error.h"

namespace ringpress::python {

// ringpress::Error -> ringpress.errors.<Kind> with .rank/.peer/.op/.detail set.
inline void translate_error(std::exception_ptr p) {
  namespace py = pybind11;
  try {
    if (p) std::rethrow_exception(p);
  } catch (const Error& e) {
    py::object errors = py::module_::import("ringpress.errors");
    py::object cls = errors.attr(error_kind_name(e.kind()));
    py::object exc = cls(e.what(), py::arg("rank") = e.rank(), py::arg("peer") = e.peer(),
                         py::arg("op") = e.op(), py::arg("detail") = e.detail());
    PyErr_SetObject(cls.ptr(), exc.ptr());
  }
}

// "lossless, bf16, ..." from the codec registry (every codec but none).
inline std::string codec_list() {
  std::string s;
  for (const CodecInfo& info : codecs()) {
    if (info.make != nullptr) s += std::string(s.empty() ? "" : ", ") + info.name;
  }
  return s;
}

// The compression keyword arguments of allreduce (Communicator.allreduce, the DDP bucket path).
struct CompressionArgs {
  std::string compression = "none", codec = "zstd", values = "fp32";
  int level = 1;
  std::size_t block = 512;
  double ratio = 0.01, tolerance = 0.05, threshold = 0.0;
  bool sampled = true, stochastic = false;
  std::vector<std::string> allow{"lossless"};
};

inline CompressionOptions compression_options(const CompressionArgs& a) {
  CompressionOptions co;
  co.kind = wire_compression_from_name(a.compression);
  co.codec = a.codec;
  co.level = a.level;
  co.block = a.block;
  co.ratio = a.ratio;
  co.sampled = a.sampled;
  co.tolerance = a.tolerance;
  co.stochastic = a.stochastic;
  co.threshold = a.threshold;
  co.values = a.values;
  co.allow = 0;
  for (const auto& name : a.allow) {
    const auto k = wire_compression_from_name(name);
    if (k == WireCompression::kNone || k == WireCompression::kAuto) {
      RP_THROW(UsageError, "allow lists codecs (", codec_list(), "), got '", name, "'");
    }
    co.allow |= 1u << static_cast<int>(k);
  }
  return co;
}

inline pybind11::dict stats_dict(const CommStats& s) {
  namespace py = pybind11;
  py::dict d;
  d["ops"] = s.ops;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
  d["tcp_bytes_sent"] = s.tcp_bytes_sent;
  d["single_copy_bytes"] = s.single_copy_bytes;
  d["payload_bytes"] = s.payload_bytes;
  py::dict a;
  py::dict counts;
  py::dict predicted;
  for (const CodecInfo& info : codecs()) {
    const auto k = static_cast<std::size_t>(info.id);
    if (s.auto_counts[k]) counts[info.name] = s.auto_counts[k];
    if (s.auto_last >= 0 && s.auto_predicted_s[k] >= 0)
      predicted[info.name] = s.auto_predicted_s[k];
  }
  a["counts"] = counts;
  a["last"] =
      s.auto_last >= 0
          ? py::object(py::str(wire_compression_name(static_cast<WireCompression>(s.auto_last))))
          : py::object(py::none());
  a["predicted_s"] = predicted;
  a["actual_s"] = s.auto_actual_s;
  a["calibrations"] = s.auto_calibrations;
  // (hosts, ranks per host) of the model: (H, L) when it models the two levels, else (1, P).
  a["levels"] = s.auto_last >= 0 ? py::object(py::make_tuple(s.auto_hosts, s.auto_ranks_per_host))
                                 : py::object(py::none());
  d["auto"] = a;
  py::dict st;
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i) {
    py::dict e;
    e["seconds"] = s.stage_s[static_cast<std::size_t>(i)];
    e["bytes"] = s.stage_bytes[static_cast<std::size_t>(i)];
    st[stage_name(static_cast<Stage>(i))] = e;
  }
  d["stages"] = st;
  py::list sc;
  for (const SingleCopyChoice& c : s.single_copy) {
    py::dict e;
    e["op"] = c.op;
    e["bytes"] = c.bytes;
    e["by_reference"] = c.by_reference;
    e["ring_s_per_gb"] = c.ring_s_per_gb;
    e["reference_s_per_gb"] = c.reference_s_per_gb;
    sc.append(e);
  }
  d["single_copy"] = sc;
  return d;
}

}  // namespace ringpress::python
