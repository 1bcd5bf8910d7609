// CommStats as the Python dict both extensions return (ringpress.Communicator.stats() and the
// torch backend's stats()): one definition, compiled into each module with its own pybind11.
#pragma once

#include <pybind11/pybind11.h>

#include "ringpress/codec.h"
#include "ringpress/engine.h"

namespace ringpress::python {

inline pybind11::dict stats_dict(const CommStats& s) {
  namespace py = pybind11;
  py::dict d;
  d["ops"] = s.ops;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
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
  d["auto"] = a;
  py::dict st;
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i) {
    py::dict e;
    e["seconds"] = s.stage_s[static_cast<std::size_t>(i)];
    e["bytes"] = s.stage_bytes[static_cast<std::size_t>(i)];
    st[stage_name(static_cast<Stage>(i))] = e;
  }
  d["stages"] = st;
  return d;
}

}  // namespace ringpress::python
