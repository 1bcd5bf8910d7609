// pybind11 bindings of ringpress._core. Bindings only: argument conversion, GIL release and
// exception translation; every decision lives in the C++ core or in python/ringpress.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringpress/buffer_pool.h"
#include "ringpress/build_info.h"
#include "ringpress/codec.h"
#include "ringpress/compressor.h"
#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/cuda.h"
#include "ringpress/env.h"
#include "ringpress/error.h"
#include "ringpress/lossless.h"
#include "ringpress/quantize.h"
#include "ringpress/shuffle.h"
#include "shared.h"

namespace py = pybind11;
namespace rp = ringpress;

void bind_comm(py::module_& m);  // comm_bindings.cc

namespace {

// A C-contiguous view of any buffer-protocol object (released on destruction).
class BufferView {
 public:
  BufferView(py::handle obj, bool writable, const char* what) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) {
      PyErr_Clear();
      rp::ScopedErrorContext ctx("buffer");
      RP_THROW(UsageError, what, " must be a C-contiguous", writable ? " writable" : "",
               " buffer-protocol object (bytes, bytearray, numpy array, torch CPU tensor), got ",
               std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  void* data() const { return view_.buf; }
  std::size_t size() const { return static_cast<std::size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

// In-place or overlapping input/output would be read after being overwritten: refuse it.
void check_no_overlap(const BufferView& a, const BufferView& b, const char* what) {
  auto a0 = reinterpret_cast<std::uintptr_t>(a.data()),
       b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a.size() && b.size() && a0 < b0 + b.size() && b0 < a0 + a.size()) {
    RP_THROW(UsageError, what, " overlap in memory; pass separate buffers");
  }
}

const rp::ShuffleKernels& kernels_for(const std::optional<std::string>& level) {
  if (!level) return rp::shuffle_kernels();
  rp::SimdLevel l = rp::parse_simd_level(*level);
  const rp::ShuffleKernels* k = rp::shuffle_kernels_for(l);
  if (!k) {
    rp::ScopedErrorContext ctx("shuffle");
    RP_THROW(UsageError, "SIMD level '", *level, "' is not supported by this build/CPU");
  }
  return *k;
}

using WholeBufferFn = void (*)(const rp::ShuffleKernels&, const void*, void*, std::size_t,
                               std::size_t);

void run_shuffle(WholeBufferFn fn, const char* op, py::handle src, py::handle dst,
                 std::size_t elemsize, const std::optional<std::string>& level) {
  BufferView in(src, false, "src");
  BufferView out(dst, true, "dst");
  rp::ScopedErrorContext ctx(op);
  RP_ENFORCE_EQ(in.size(), out.size(), UsageError, "src and dst must have the same size in bytes");
  check_no_overlap(in, out, "src and dst");
  const rp::ShuffleKernels& k = kernels_for(level);
  py::gil_scoped_release release;
  fn(k, in.data(), out.data(), in.size(), elemsize);
}

py::dict to_dict(const rp::BuildInfo& b) {
  py::dict d;
  d["version"] = b.version;
  d["compiler"] = b.compiler;
  d["build_type"] = b.build_type;
  d["simd"] = b.simd;
  d["simd_best"] = b.simd_best;
  d["simd_built"] = b.simd_built;
  d["shuffle_kernel"] = b.shuffle_kernel;
  d["reduce_kernel"] = b.reduce_kernel;
  d["cpu_vendor"] = b.cpu_vendor;
  d["cpu_features"] = b.cpu_features;
  d["cuda"] = b.cuda;
  d["cuda_architectures"] = b.cuda_architectures;
  d["cuda_runtime_version"] = b.cuda_runtime_version;
  d["cuda_devices"] = b.cuda_devices;
  d["lz4"] = b.lz4;
  d["lz4_compiled"] = b.lz4_compiled;
  d["zstd"] = b.zstd;
  d["zstd_compiled"] = b.zstd_compiled;
  d["sanitize"] = b.sanitize;
  return d;
}

py::dict frame_info_dict(const rp::wire::FrameInfo& f) {
  static const char* kFilters[] = {"none", "byte", "bit"};
  static const char* kCodings[] = {"raw", "whole", "planes"};
  py::dict d;
  d["version"] = int(rp::wire::kVersion);
  d["dtype"] = rp::dtype_name(f.dtype);
  py::list shape;
  for (int i = 0; i < f.ndim; ++i) shape.append(f.shape[i]);
  d["shape"] = py::tuple(shape);
  d["ndim"] = f.ndim;
  d["codec"] = rp::wire::codec_name(f.codec);
  d["level"] = int(f.level);
  d["elemsize"] = f.elemsize;
  d["block_size"] = f.block_size;
  d["nbytes"] = f.nbytes;
  d["nblocks"] = f.blocks.size();
  d["frame_size"] = f.frame_size;
  py::list blocks;
  for (const auto& b : f.blocks) {
    py::dict e;
    e["stored_size"] = b.stored_size;
    e["length"] = b.length;
    e["filter"] = kFilters[int(b.filter)];
    e["coding"] = kCodings[int(b.coding)];
    e["plane_mask"] = b.plane_mask;
    blocks.append(e);
  }
  d["blocks"] = blocks;
  return d;
}

// Decoders allocate only what a payload justifies (docs/wire-format.md); should an allocation
// still fail, the caller sees ringpress's CodecError (out of memory), never Python's builtin
// MemoryError or ValueError (std::bad_alloc / std::length_error).
template <class F>
auto decode_guard(const char* op, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    rp::ScopedErrorContext ctx(op);
    RP_THROW(CodecError, "out of memory");
  } catch (const std::length_error& e) {
    rp::ScopedErrorContext ctx(op);
    RP_THROW(CodecError, "out of memory (", e.what(), ")");
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ringpress native core (private: use the ringpress package)";
  m.attr("__version__") = RINGPRESS_VERSION;
  py::register_exception_translator(&rp::python::translate_error);

  m.def("build_info", [] { return to_dict(rp::build_info()); });
  // The wire codec registry (ringpress/codec.h): Python's kind lists derive from it.
  m.def("codecs", [] {
    py::list rows;
    for (const rp::CodecInfo& c : rp::codecs()) {
      py::dict d;
      d["id"] = static_cast<int>(c.id);
      d["name"] = c.name;
      d["version"] = static_cast<int>(c.version);
      d["exact"] = c.exact;
      d["dtypes"] = c.dtypes == rp::CodecDTypes::kReducible ? "reducible" : "float32-sum";
      d["schedule"] = c.schedule == rp::CodecSchedule::kRing ? "ring" : "allgather";
      d["doc"] = c.doc;
      d["params"] = rp::codec_param_names(c.params);
      rows.append(d);
    }
    return rows;
  });
  // One wire codec on one buffer (tests, golden payloads, fuzzing from Python): the same bytes a
  // collective puts on the wire for a segment of `count` elements.
  auto params_of = [](std::size_t block, double ratio, bool sampled, const std::string& codec,
                      int level, double tolerance, bool stochastic, double threshold,
                      const std::string& values) {
    rp::CodecParams p;
    p.block = block;
    p.ratio = ratio;
    p.sampled = sampled;
    p.codec = codec;
    p.level = level;
    p.tolerance = tolerance;
    p.stochastic = stochastic;
    p.threshold = threshold;
    p.values = values;
    return p;
  };
  m.def(
      "wire_encode",
      [params_of](const std::string& name, py::buffer data, const std::string& dtype,
                  const std::string& op, std::size_t block, double ratio, bool sampled,
                  const std::string& codec, int level, double tolerance, bool stochastic,
                  double threshold, const std::string& values, std::uint64_t seed) {
        py::buffer_info in = data.request();
        const rp::DType d = rp::dtype_from_name(dtype);
        RP_ENFORCE(in.size * in.itemsize % static_cast<py::ssize_t>(rp::dtype_size(d)) == 0,
                   UsageError, "wire_encode: the buffer is not a whole number of ", dtype,
                   " elements");
        const std::size_t count =
            static_cast<std::size_t>(in.size * in.itemsize) / rp::dtype_size(d);
        auto c = rp::make_codec(rp::wire_compression_from_name(name),
                                params_of(block, ratio, sampled, codec, level, tolerance,
                                          stochastic, threshold, values),
                                d, rp::reduce_op_from_name(op));
        // 8-aligned output: the codecs write through typed pointers.
        std::vector<std::uint64_t> out((c->bound(count) + 7) / 8);
        const std::size_t n = c->encode(in.ptr, count, out.data(), seed);
        return py::bytes(reinterpret_cast<const char*>(out.data()), n);
      },
      py::arg("name"), py::arg("data"), py::arg("dtype") = "float32", py::arg("op") = "sum",
      py::arg("block") = 512, py::arg("ratio") = 0.01, py::arg("sampled") = true,
      py::arg("codec") = "zstd", py::arg("level") = 1, py::arg("tolerance") = 0.05,
      py::arg("stochastic") = false, py::arg("threshold") = 0.0, py::arg("values") = "fp32",
      py::arg("seed") = 0);
  m.def(
      "wire_decode",
      [params_of](const std::string& name, py::bytes payload, std::size_t count,
                  const std::string& dtype, const std::string& op, std::size_t block, double ratio,
                  bool sampled, const std::string& codec, int level, double tolerance,
                  bool stochastic, double threshold, const std::string& values) {
        const rp::DType d = rp::dtype_from_name(dtype);
        auto c = rp::make_codec(rp::wire_compression_from_name(name),
                                params_of(block, ratio, sampled, codec, level, tolerance,
                                          stochastic, threshold, values),
                                d, rp::reduce_op_from_name(op));
        const std::string in = payload;
        RP_ENFORCE(count <= (std::size_t{1} << 28), UsageError,
                   "wire_decode: count too large for a test");
        std::string out(count * rp::dtype_size(d), '\0');
        c->decode(in.data(), in.size(), out.data(), count, false);
        return py::bytes(out);
      },
      py::arg("name"), py::arg("payload"), py::arg("count"), py::arg("dtype") = "float32",
      py::arg("op") = "sum", py::arg("block") = 512, py::arg("ratio") = 0.01,
      py::arg("sampled") = true, py::arg("codec") = "zstd", py::arg("level") = 1,
      py::arg("tolerance") = 0.05, py::arg("stochastic") = false, py::arg("threshold") = 0.0,
      py::arg("values") = "fp32");
  // Configuration (ringpress/env.h): the one table of RINGPRESS_* variables, read in C++.
  m.def("env_table", [] {
    py::list rows;
    for (const rp::env::Var& v : rp::env::table()) {
      py::dict d;
      d["name"] = v.name;
      d["type"] = v.type;
      d["default"] = v.default_value;
      d["read"] = v.read;
      d["doc"] = v.doc;
      rows.append(d);
    }
    return rows;
  });
  m.def("env_raw", [](const std::string& name) { return rp::env::raw(name); }, py::arg("name"));
  m.def(
      "env_string", [](const std::string& name) { return rp::env::string(name); }, py::arg("name"));
  m.def(
      "env_seconds",
      [](const std::string& name) {
        return static_cast<double>(rp::env::seconds(name).count()) / 1000.0;
      },
      py::arg("name"));
  bind_comm(m);
  m.def("simd_levels_supported", [] {
    py::list out;
    for (rp::SimdLevel l : {rp::SimdLevel::kGeneric, rp::SimdLevel::kSSE2, rp::SimdLevel::kAVX2,
                            rp::SimdLevel::kAVX512}) {
      if (rp::simd_level_supported(l)) out.append(rp::simd_level_name(l));
    }
    return out;
  });

  auto bind_shuffle = [&m](const char* name, WholeBufferFn fn) {
    m.def(
        name,
        [fn, name](py::handle src, py::handle dst, std::size_t elemsize,
                   std::optional<std::string> level) {
          run_shuffle(fn, name, src, dst, elemsize, level);
        },
        py::arg("src"), py::arg("dst"), py::arg("elemsize"), py::arg("level") = py::none());
  };
  bind_shuffle("byte_shuffle", static_cast<WholeBufferFn>(&rp::byte_shuffle));
  bind_shuffle("byte_unshuffle", static_cast<WholeBufferFn>(&rp::byte_unshuffle));
  bind_shuffle("bit_shuffle", static_cast<WholeBufferFn>(&rp::bit_shuffle));
  bind_shuffle("bit_unshuffle", static_cast<WholeBufferFn>(&rp::bit_unshuffle));

  // ------------------------------------------------------------ pooled buffers
  py::class_<rp::Buffer, std::shared_ptr<rp::Buffer>>(
      m, "Buffer", py::buffer_protocol(), "bytes-like result backed by a pooled allocation")
      .def_buffer([](rp::Buffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {py::ssize_t(b.size())}, {py::ssize_t(1)});
      })
      .def("__len__", &rp::Buffer::size)
      .def("__bytes__", [](rp::Buffer& b) {
        return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
      });
  m.def("buffer_pool_stats", [] {
    rp::BufferPoolStats s = rp::buffer_pool_stats();
    py::dict d;
    d["cached_buffers"] = s.cached_buffers;
    d["cached_bytes"] = s.cached_bytes;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    return d;
  });
  m.def("buffer_pool_clear", &rp::buffer_pool_clear);

  // ------------------------------------------------------------ lossless stage
  m.def(
      "lossless_compress",
      [](py::handle src, const std::string& dtype, const std::vector<std::uint64_t>& shape,
         const std::string& codec, int level, const std::string& shuffle, int threads,
         std::uint32_t block_size, py::handle out) -> py::object {
        BufferView in(src, false, "x");
        rp::ScopedErrorContext ctx("compress");
        rp::LosslessOptions o;
        o.codec = rp::codec_from_name(codec.c_str());
        o.level = level;
        o.shuffle = rp::shuffle_mode_from_name(shuffle.c_str());
        o.threads = threads;
        o.block_size = block_size;
        const rp::DType dt = rp::dtype_from_name(dtype);
        RP_ENFORCE_LE(shape.size(), std::size_t(rp::wire::kMaxNdim), UsageError,
                      "too many dimensions");
        const std::size_t bound =
            rp::encode_bound(in.size(), int(shape.size()),
                             block_size ? block_size : rp::default_block_size(rp::dtype_size(dt)));
        if (!out.is_none()) {
          BufferView dst(out, true, "out");
          RP_ENFORCE_GE(dst.size(), bound, UsageError,
                        "out is too small: compress_bound(x) bytes are needed");
          check_no_overlap(in, dst, "x and out");
          std::size_t n;
          {
            py::gil_scoped_release release;
            n = rp::lossless_encode(in.data(), in.size(), dt, shape.data(), int(shape.size()), o,
                                    dst.data(), dst.size());
          }
          return py::int_(n);
        }
        std::shared_ptr<rp::Buffer> buf = rp::Buffer::acquire(bound);
        {
          py::gil_scoped_release release;
          buf->resize(rp::lossless_encode(in.data(), in.size(), dt, shape.data(), int(shape.size()),
                                          o, buf->data(), buf->size()));
        }
        return py::cast(buf);
      },
      py::arg("x"), py::arg("dtype"), py::arg("shape"), py::arg("codec"), py::arg("level"),
      py::arg("shuffle"), py::arg("threads"), py::arg("block_size"), py::arg("out"));
  m.def(
      "compress_bound",
      [](std::size_t nbytes, int ndim, std::uint32_t block_size) {
        return rp::encode_bound(nbytes, ndim, block_size);
      },
      py::arg("nbytes"), py::arg("ndim"), py::arg("block_size"));
  m.def(
      "frame_info",
      [](py::handle frame) {
        BufferView in(frame, false, "buf");
        return frame_info_dict(rp::wire::parse_frame(in.data(), in.size()));
      },
      py::arg("buf"));
  m.def(
      "frame_header",
      [](py::handle frame) {  // frame_info without the per-block list (validates the same)
        BufferView in(frame, false, "buf");
        const rp::wire::FrameInfo f = rp::wire::parse_frame(in.data(), in.size());
        py::list shape;
        for (int i = 0; i < f.ndim; ++i) shape.append(f.shape[i]);
        py::dict d;
        d["dtype"] = rp::dtype_name(f.dtype);
        d["shape"] = py::tuple(shape);
        d["ndim"] = f.ndim;
        d["nbytes"] = f.nbytes;
        return d;
      },
      py::arg("buf"));
  m.def(
      "frame_size",
      [](py::handle frame) {
        BufferView in(frame, false, "buf");
        return rp::wire::frame_size(in.data(), in.size());
      },
      py::arg("buf"));
  m.def(
      "lossless_decompress",
      [](py::handle frame, py::handle out, int threads) -> py::object {
        BufferView in(frame, false, "buf");
        if (!out.is_none()) {
          BufferView dst(out, true, "out");
          check_no_overlap(in, dst, "buf and out");
          py::gil_scoped_release release;
          decode_guard("decompress", [&] {
            rp::lossless_decode(in.data(), in.size(), dst.data(), dst.size(), threads);
          });
          return py::none();
        }
        // parse_frame bounds nbytes by the frame's own bytes (rp::wire::max_expansion).
        const rp::wire::FrameInfo info = rp::wire::parse_frame(in.data(), in.size());
        std::shared_ptr<rp::Buffer> buf = decode_guard(
            "decompress", [&] { return rp::Buffer::acquire(std::size_t(info.nbytes)); });
        {
          py::gil_scoped_release release;
          decode_guard("decompress", [&] {
            rp::lossless_decode(info, in.data(), buf->data(), buf->size(), threads);
          });
        }
        return py::cast(buf);
      },
      py::arg("buf"), py::arg("out"), py::arg("threads"));

  // ------------------------------------------------------------ compressed-tensor container
  // (ringpress/compressor.h): a registry codec's payload in an "RPZC" frame.
  m.def(
      "compressor_encode",
      [params_of](py::handle x, const std::vector<std::uint64_t>& shape, const std::string& name,
                  std::size_t block, double ratio, bool sampled, double tolerance, bool stochastic,
                  double threshold, const std::string& values, const std::string& lossless,
                  int level, const std::string& shuffle, std::uint64_t seed, py::handle residual,
                  int threads) -> py::object {
        BufferView in(x, false, "x");
        rp::ScopedErrorContext ctx("compress");
        rp::CompressorSpec s;
        s.codec = rp::wire_compression_from_name(name);
        RP_ENFORCE(s.codec != rp::WireCompression::kAuto, UsageError,
                   "a container holds one codec, not 'auto'");
        s.params =
            params_of(block, ratio, sampled, "zstd", 1, tolerance, stochastic, threshold, values);
        s.lossless.codec = rp::codec_from_name(lossless.c_str());
        s.lossless.level = level;
        s.lossless.shuffle = rp::shuffle_mode_from_name(shuffle.c_str());
        RP_ENFORCE_EQ(in.size() % sizeof(float), std::size_t(0), UsageError, "x must hold float32");
        const std::size_t n = in.size() / sizeof(float);
        RP_ENFORCE_LE(shape.size(), std::size_t(rp::wire::kMaxNdim), UsageError,
                      "too many dimensions");
        std::unique_ptr<BufferView> res;
        if (!residual.is_none()) {
          res = std::make_unique<BufferView>(residual, true, "residual");
          RP_ENFORCE_EQ(res->size(), in.size(), UsageError, "residual size must match x");
          check_no_overlap(in, *res, "x and residual");
        }
        std::shared_ptr<rp::Buffer> buf =
            rp::Buffer::acquire(rp::compressor_bound(s, n, int(shape.size())));
        {
          py::gil_scoped_release release;
          buf->resize(rp::compressor_encode(
              s, static_cast<const float*>(in.data()), n, shape.data(), int(shape.size()), seed,
              res ? static_cast<float*>(res->data()) : nullptr, buf->data(), buf->size(), threads));
        }
        return py::cast(buf);
      },
      py::arg("x"), py::arg("shape"), py::arg("codec"), py::arg("block") = 512,
      py::arg("ratio") = 0.01, py::arg("sampled") = true, py::arg("tolerance") = 0.05,
      py::arg("stochastic") = false, py::arg("threshold") = 0.0, py::arg("values") = "fp32",
      py::arg("lossless") = "none", py::arg("level") = 1, py::arg("shuffle") = "auto",
      py::arg("seed") = 0, py::arg("residual") = py::none(), py::arg("threads") = 1);
  m.def(
      "container_info",
      [](py::handle buf) {
        BufferView in(buf, false, "payload");
        const rp::ContainerInfo c = rp::parse_container(in.data(), in.size());
        py::dict d;
        d["version"] = c.version;
        d["codec"] = rp::wire_compression_name(c.codec);
        d["codec_id"] = static_cast<int>(c.codec);
        d["codec_version"] = c.codec_version;
        py::dict params;
        for (const std::string& name : rp::codec_param_names(c.param_mask)) {
          if (name == "block") params["block"] = c.params.block;
          if (name == "ratio") params["ratio"] = c.params.ratio;
          if (name == "sampled") params["sampled"] = c.params.sampled;
          if (name == "tolerance") params["tolerance"] = c.params.tolerance;
          if (name == "stochastic") params["stochastic"] = c.params.stochastic;
          if (name == "threshold") params["threshold"] = c.params.threshold;
          if (name == "values") params["values"] = c.params.values;
        }
        d["params"] = params;
        d["n"] = c.n;
        py::list shape;
        for (int i = 0; i < c.ndim; ++i) shape.append(c.shape[i]);
        d["shape"] = py::tuple(shape);
        d["lossless"] = c.lossless ? rp::wire::codec_name(c.lossless_codec) : "none";
        d["staged"] = c.lossless;
        d["raw_size"] = c.raw_size;
        d["payload_offset"] = c.payload_offset;
        d["stored_size"] = c.stored_size;
        d["size"] = c.size;
        return d;
      },
      py::arg("payload"));
  m.def(
      "container_payload",
      [](py::handle buf, int threads) {
        BufferView in(buf, false, "payload");
        std::vector<std::uint8_t> p;
        {
          py::gil_scoped_release release;
          p = decode_guard("decompress.container",
                           [&] { return rp::container_payload(in.data(), in.size(), threads); });
        }
        return py::bytes(reinterpret_cast<const char*>(p.data()), p.size());
      },
      py::arg("payload"), py::arg("threads") = 1);
  m.def(
      "compressor_decode",
      [](py::handle buf, py::handle out, int threads, std::uint64_t max_elements) -> py::object {
        BufferView in(buf, false, "payload");
        if (!out.is_none()) {
          BufferView dst(out, true, "out");
          RP_ENFORCE_EQ(dst.size() % sizeof(float), std::size_t(0), UsageError,
                        "out must hold float32");
          check_no_overlap(in, dst, "payload and out");
          py::gil_scoped_release release;
          decode_guard("decompress", [&] {
            rp::compressor_decode(in.data(), in.size(), static_cast<float*>(dst.data()),
                                  dst.size() / sizeof(float), threads);
          });
          return py::none();
        }
        // parse_container checked min_payload(n) <= payload <= bound(n); the cap (max_elements,
        // else the default) bounds what a sparse payload may claim, before this allocation.
        const rp::ContainerInfo c = rp::parse_container_bounded(in.data(), in.size(), max_elements);
        std::shared_ptr<rp::Buffer> b = decode_guard("decompress", [&] {
          return rp::Buffer::acquire(std::size_t(c.n) * sizeof(float));  // n <= 2^62 / cap
        });
        {
          py::gil_scoped_release release;
          decode_guard("decompress", [&] {
            rp::compressor_decode(in.data(), in.size(), reinterpret_cast<float*>(b->data()),
                                  std::size_t(c.n), threads);
          });
        }
        return py::cast(b);
      },
      py::arg("payload"), py::arg("out"), py::arg("threads"), py::arg("max_elements") = 0);

  m.def(
      "cuda_byte_shuffle_host_staged",
      [](py::handle src, py::handle dst, std::size_t elemsize, bool unshuffle) {
        BufferView in(src, false, "src");
        BufferView out(dst, true, "dst");
        rp::ScopedErrorContext ctx("cuda.byte_shuffle_host_staged");
        RP_ENFORCE_EQ(in.size(), out.size(), UsageError, "src and dst must have the same size");
        py::gil_scoped_release release;
        rp::cuda::byte_shuffle_host_staged(in.data(), out.data(), in.size(), elemsize, unshuffle);
      },
      py::arg("src"), py::arg("dst"), py::arg("elemsize"), py::arg("unshuffle") = false);

  // Host-staged CUDA quantizers (copy in, kernels, copy out; synchronous), for tests against the
  // CPU compressors. x / out: float32 of n elements; payload: exactly the CPU payload size
  // (ceil(n * code_bits / 8)); scales: float32 of ceil(n / block).
  auto quant_n = [](const BufferView& f, const BufferView& payload, const BufferView& scales,
                    int code_bits, std::size_t block) {
    RP_ENFORCE(code_bits == 8 || code_bits == 4 || code_bits == 2 || code_bits == 1, UsageError,
               "bits must be 8, 4 or 2, got ", code_bits);
    RP_ENFORCE_EQ(f.size() % sizeof(float), std::size_t(0), UsageError, "x/out must hold float32");
    const std::size_t n = f.size() / sizeof(float);
    const std::size_t nb = rp::quant::num_blocks(n, block);  // UsageError for block 0
    RP_ENFORCE_EQ(payload.size(), (n * std::size_t(code_bits) + 7) / 8, UsageError,
                  "payload size for ", n, " elements of ", code_bits, " bits");
    RP_ENFORCE_EQ(scales.size(), nb * sizeof(float), UsageError, "scales size (float32 of ", nb,
                  " blocks)");
    return n;
  };
  m.def(
      "cuda_blockwise_encode_host_staged",
      [quant_n](py::handle x, py::handle payload, py::handle scales, int bits, std::size_t block,
                bool stochastic, std::uint64_t seed, std::uint64_t offset) {
        BufferView in(x, false, "x"), p(payload, true, "payload"), s(scales, true, "scales");
        rp::ScopedErrorContext ctx("cuda.quantize_blockwise_host_staged");
        RP_ENFORCE(bits == 8 || bits == 4 || bits == 2, UsageError, "bits must be 8, 4 or 2, got ",
                   bits);
        const std::size_t n = quant_n(in, p, s, bits, block);
        py::gil_scoped_release release;
        rp::cuda::quantize_blockwise_host_staged(
            static_cast<const float*>(in.data()), n, bits, block, stochastic, seed, offset,
            static_cast<std::uint8_t*>(p.data()), static_cast<float*>(s.data()));
      },
      py::arg("x"), py::arg("payload"), py::arg("scales"), py::arg("bits"), py::arg("block"),
      py::arg("stochastic") = false, py::arg("seed") = 0, py::arg("offset") = 0);
  m.def(
      "cuda_blockwise_decode_host_staged",
      [quant_n](py::handle payload, py::handle scales, py::handle out, int bits,
                std::size_t block) {
        BufferView p(payload, false, "payload"), s(scales, false, "scales"), o(out, true, "out");
        rp::ScopedErrorContext ctx("cuda.dequantize_blockwise_host_staged");
        RP_ENFORCE(bits == 8 || bits == 4 || bits == 2, UsageError, "bits must be 8, 4 or 2, got ",
                   bits);
        const std::size_t n = quant_n(o, p, s, bits, block);
        py::gil_scoped_release release;
        rp::cuda::dequantize_blockwise_host_staged(static_cast<const std::uint8_t*>(p.data()),
                                                   static_cast<const float*>(s.data()), n, bits,
                                                   block, static_cast<float*>(o.data()));
      },
      py::arg("payload"), py::arg("scales"), py::arg("out"), py::arg("bits"), py::arg("block"));
  m.def(
      "cuda_sign_encode_host_staged",
      [quant_n](py::handle x, py::handle payload, py::handle scales, std::size_t block) {
        BufferView in(x, false, "x"), p(payload, true, "payload"), s(scales, true, "scales");
        rp::ScopedErrorContext ctx("cuda.sign_encode_host_staged");
        const std::size_t n = quant_n(in, p, s, 1, block);
        py::gil_scoped_release release;
        rp::cuda::sign_encode_host_staged(static_cast<const float*>(in.data()), n, block,
                                          static_cast<std::uint8_t*>(p.data()),
                                          static_cast<float*>(s.data()));
      },
      py::arg("x"), py::arg("payload"), py::arg("scales"), py::arg("block"));
  m.def(
      "cuda_sign_decode_host_staged",
      [quant_n](py::handle payload, py::handle scales, py::handle out, std::size_t block) {
        BufferView p(payload, false, "payload"), s(scales, false, "scales"), o(out, true, "out");
        rp::ScopedErrorContext ctx("cuda.sign_decode_host_staged");
        const std::size_t n = quant_n(o, p, s, 1, block);
        py::gil_scoped_release release;
        rp::cuda::sign_decode_host_staged(static_cast<const std::uint8_t*>(p.data()),
                                          static_cast<const float*>(s.data()), n, block,
                                          static_cast<float*>(o.data()));
      },
      py::arg("payload"), py::arg("scales"), py::arg("out"), py::arg("block"));
  m.def(
      "cuda_ternary_encode_host_staged",
      [quant_n](py::handle x, py::handle payload, py::handle scales, std::size_t block,
                std::uint64_t seed, std::uint64_t offset) {
        BufferView in(x, false, "x"), p(payload, true, "payload"), s(scales, true, "scales");
        rp::ScopedErrorContext ctx("cuda.ternary_encode_host_staged");
        const std::size_t n = quant_n(in, p, s, 2, block);
        py::gil_scoped_release release;
        rp::cuda::ternary_encode_host_staged(static_cast<const float*>(in.data()), n, block, seed,
                                             offset, static_cast<std::uint8_t*>(p.data()),
                                             static_cast<float*>(s.data()));
      },
      py::arg("x"), py::arg("payload"), py::arg("scales"), py::arg("block"), py::arg("seed") = 0,
      py::arg("offset") = 0);
  m.def(
      "cuda_ternary_decode_host_staged",
      [quant_n](py::handle payload, py::handle scales, py::handle out, std::size_t block) {
        BufferView p(payload, false, "payload"), s(scales, false, "scales"), o(out, true, "out");
        rp::ScopedErrorContext ctx("cuda.ternary_decode_host_staged");
        const std::size_t n = quant_n(o, p, s, 2, block);
        py::gil_scoped_release release;
        rp::cuda::ternary_decode_host_staged(static_cast<const std::uint8_t*>(p.data()),
                                             static_cast<const float*>(s.data()), n, block,
                                             static_cast<float*>(o.data()));
      },
      py::arg("payload"), py::arg("scales"), py::arg("out"), py::arg("block"));

  // Test hooks: raise a core error of a given kind through the real ENFORCE/translation path.
  py::module_ testing = m.def_submodule("_testing", "hooks for ringpress's own tests");
  testing.def(
      "raise_error",
      [](const std::string& kind, const std::string& detail, int rank, int peer,
         const std::string& op) {
        rp::ScopedErrorContext ctx(op, rank, peer);
        if (kind == "UsageError") RP_THROW(UsageError, detail);
        if (kind == "TransportError") RP_THROW(TransportError, detail);
        if (kind == "TimeoutError") RP_THROW(TimeoutError, detail);
        if (kind == "WireFormatError") RP_THROW(WireFormatError, detail);
        if (kind == "CodecError") RP_THROW(CodecError, detail);
        if (kind == "InternalError") RP_THROW(InternalError, detail);
        RP_THROW(UsageError, "unknown error kind '", kind, "'");
      },
      py::arg("kind"), py::arg("detail"), py::arg("rank") = -1, py::arg("peer") = -1,
      py::arg("op") = "");
  testing.def(
      "enforce_eq",
      [](long long a, long long b, int rank, int peer, const std::string& op) {
        rp::ScopedErrorContext ctx(op, rank, peer);
        RP_ENFORCE_EQ(a, b, UsageError, "sizes differ across ranks");
      },
      py::arg("a"), py::arg("b"), py::arg("rank") = -1, py::arg("peer") = -1, py::arg("op") = "");
}
