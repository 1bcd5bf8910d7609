// ringpress._c10d: the "ringpress" torch.distributed backend (process_group.h), as a subclass of
// torch's own c10d Backend Python type. Bindings only; python/ringpress/torch/__init__.py
// registers it with dist.Backend.register_backend.
//
// Built with the pybind11 copy torch ships, so these classes share torch's type registry: torch
// receives a c10d::Backend, routes dispatcher ops to it per device, and its Work objects are
// torch Works. ringpress errors reach Python as ringpress.errors classes (the translator below)
// from any torch binding that lets them through (Work.wait, Future.wait, the c10d ops).
#include <pybind11/chrono.h>
#include <pybind11/stl.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/utils/pybind.h>

#include <chrono>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "../python/shared.h"
#include "process_group.h"
#include "ringpress/error.h"

namespace py = pybind11;
namespace rp = ringpress;
using rp::torchpg::ProcessGroupRingpress;

PYBIND11_MODULE(_c10d, m) {
  m.doc() = "ringpress torch.distributed backend (private: use ringpress.torch)";
  m.attr("torch_version") = RP_TORCH_VERSION;
  m.attr("cuda") = bool(RP_TORCH_CUDA);
  py::module_::import("torch.distributed");  // registers c10d.Backend / Work with pybind11
  py::register_exception_translator(&rp::python::translate_error);

  m.def("_close_all", &ProcessGroupRingpress::close_all, py::call_guard<py::gil_scoped_release>(),
        "Close every ringpress group's communicator (ringpress.torch calls it at exit)");

  py::class_<ProcessGroupRingpress, c10d::Backend, c10::intrusive_ptr<ProcessGroupRingpress>>(
      m, "ProcessGroupRingpress")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::chrono::milliseconds timeout) {
             return c10::make_intrusive<ProcessGroupRingpress>(store, rank, size, timeout);
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "transport",
          [](ProcessGroupRingpress& pg, int peer) { return pg.comm().transport(peer); },
          py::arg("peer"))
      // The deadline of each op from now on (gloo's and NCCL's name too; torch's _set_pg_timeout
      // only looks for those two types).
      .def("_set_default_timeout", &ProcessGroupRingpress::setTimeout, py::arg("timeout"))
      .def("set_timeout", &ProcessGroupRingpress::setTimeout, py::arg("timeout"))
      .def_property_readonly("timeout",
                             [](ProcessGroupRingpress& pg) { return pg.comm().timeout(); })
      .def("stats",
           [](ProcessGroupRingpress& pg) { return rp::python::stats_dict(pg.comm().stats()); })
      .def(
          "allreduce_bucket",
          [](ProcessGroupRingpress& pg, const at::Tensor& bucket, const std::string& op,
             const std::string& compression, const std::string& codec, int level, std::size_t block,
             double ratio, bool sampled, double tolerance, bool stochastic, double threshold,
             const std::string& values, std::optional<at::Tensor> residual,
             std::optional<at::Tensor> velocity, const std::vector<std::string>& allow) {
            const rp::CompressionOptions co =
                rp::python::compression_options({compression, codec, values, level, block, ratio,
                                                 tolerance, threshold, sampled, stochastic, allow});
            const rp::ReduceOp o = rp::reduce_op_from_name(op);
            // A Python comm hook's future holds a Python object (DDP's PythonCommHook reads it
            // back as one): made here, with the GIL, so completion needs none.
            c10::IValue value = torch::jit::toIValue(py::cast(bucket), c10::PyObjectType::get());
            c10::intrusive_ptr<c10::ivalue::Future> fut;
            {
              py::gil_scoped_release nogil;
              fut = pg.allreduce_bucket(bucket, o, co, residual, velocity, std::move(value),
                                        c10::PyObjectType::get());
            }
            return std::make_shared<torch::jit::PythonFutureWrapper>(fut);
          },
          py::arg("bucket"), py::arg("op") = "sum", py::arg("compression") = "none",
          py::arg("codec") = "zstd", py::arg("level") = 1, py::arg("block") = 512,
          py::arg("ratio") = 0.01, py::arg("sampled") = true, py::arg("tolerance") = 0.05,
          py::arg("stochastic") = false, py::arg("threshold") = 0.0, py::arg("values") = "fp32",
          py::arg("residual") = py::none(), py::arg("velocity") = py::none(),
          py::arg("allow") = std::vector<std::string>{"lossless"});
}
