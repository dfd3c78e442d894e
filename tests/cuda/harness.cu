// The GPU half of the CUDA tests (see harness.hpp). No Eigen here.

#include "harness.hpp"

#include <cstring>
#include <stdexcept>

#include "lckv/cache/contiguous_cache.hpp"
#include "lckv/cache/paged_cache.hpp"
#include "lckv/cache/ring_cache.hpp"
#include "lckv/cuda/cuda.cuh"
#include "lckv/engine/transformer.hpp"

namespace lckv::cudatest {

using cuda::DeviceBuffer;

const char* name(DType t) { return t == DType::F32 ? "fp32" : t == DType::BF16 ? "bf16" : "fp16"; }
const char* name(Layout l) { return l == Layout::Contiguous ? "contiguous" : l == Layout::Paged ? "paged" : "ring"; }

bool gpu_available(std::string* why) { return cuda::device_available(why); }

std::string device_name() {
  cudaDeviceProp p{};
  int dev = 0;
  LCKV_CUDA_CHECK(cudaGetDevice(&dev));
  LCKV_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

float round_to(DType t, float x) {
  switch (t) {
    case DType::F32: return x;
    case DType::BF16: return __bfloat162float(__float2bfloat16_rn(x));
    case DType::F16: return __half2float(__float2half_rn(x));
  }
  return x;
}

namespace {

/// Device memory whose buffers start as NaN bytes: reads of unwritten memory show.
template <class T>
class PoisonedBuffer : public DeviceBuffer<T> {
public:
  PoisonedBuffer() = default;
  explicit PoisonedBuffer(std::size_t n) : DeviceBuffer<T>(n) { this->fill_bytes(0xFF); }
};
struct PoisonMemory {
  template <class T>
  using Buffer = PoisonedBuffer<T>;
  template <class T>
  static void upload(Buffer<T>& dst, const T* src, std::size_t n) {
    cuda::DeviceMemory::upload(dst, src, n);
  }
};

template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  cuda::copy_to_device(d.data(), host.data(), host.size());
  return d;
}
template <class T>
DeviceBuffer<T> converted(const std::vector<float>& host) {
  std::vector<T> c(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) c[i] = cuda::from_float<T>(host[i]);
  return to_device(c);
}
DeviceBuffer<float> poisoned(std::size_t n) {
  DeviceBuffer<float> d(n);
  d.fill_bytes(0xFF);
  return d;
}
std::vector<float> to_host(const DeviceBuffer<float>& d) {
  LCKV_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> h(d.size());
  cuda::copy_to_host(h.data(), d.data(), d.size());
  return h;
}
MatrixView<float> mat(DeviceBuffer<float>& b, int rows, int cols) { return {b.data(), rows, cols}; }
MatrixView<const float> cmat(const DeviceBuffer<float>& b, int rows, int cols) { return {b.data(), rows, cols}; }

template <class F>
decltype(auto) with_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F16: return f(__half{});
  }
  throw std::logic_error("dtype");
}

}  // namespace

std::vector<float> embed(const std::vector<int>& tokens, const std::vector<float>& table, int hidden, DType w) {
  return with_type(w, [&](auto tag) {
    using W = decltype(tag);
    auto t = to_device(tokens);
    auto tab = converted<W>(table);
    auto out = poisoned(tokens.size() * static_cast<std::size_t>(hidden));
    cuda::embed(t.data(), tab.data(), mat(out, static_cast<int>(tokens.size()), hidden), nullptr);
    return to_host(out);
  });
}

std::vector<float> rmsnorm(const std::vector<float>& x, int rows, int cols, const std::vector<float>& w, float eps, DType wt) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    auto dx = to_device(x);
    auto dw = converted<W>(w);
    auto out = poisoned(x.size());
    cuda::rmsnorm(cmat(dx, rows, cols), dw.data(), eps, mat(out, rows, cols), nullptr);
    return to_host(out);
  });
}

std::vector<float> linear(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out, DType wt,
                          const std::vector<float>* y0) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    cuda::Gemm gemm(stream.get());
    gemm.reserve_activation(x.size());
    auto dx = to_device(x);
    auto dw = converted<W>(w);
    auto y = y0 ? to_device(*y0) : poisoned(static_cast<std::size_t>(rows) * out);
    gemm.linear(cmat(dx, rows, in), dw.data(), mat(y, rows, out), y0 != nullptr);
    stream.synchronize();
    return to_host(y);
  });
}

std::vector<float> gate_up_swiglu(const std::vector<float>& x, int rows, int in, const std::vector<float>& wg,
                                  const std::vector<float>& wu, int out, DType wt, bool fused) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    cuda::Gemm gemm(stream.get());
    gemm.set_fuse_glu(fused);
    gemm.reserve_activation(x.size());
    auto dx = to_device(x);
    auto dg = converted<W>(wg);
    auto du = converted<W>(wu);
    auto gate = poisoned(static_cast<std::size_t>(rows) * out);
    auto up = poisoned(static_cast<std::size_t>(rows) * out);
    gemm.gate_up_swiglu(cmat(dx, rows, in), dg.data(), du.data(), mat(gate, rows, out), mat(up, rows, out));
    stream.synchronize();
    return to_host(gate);
  });
}

std::vector<float> rope(const std::vector<float>& x, int cols, int heads, int head_dim, const std::vector<RowInfo>& rows,
                        float theta) {
  auto dx = to_device(x);
  auto dr = to_device(rows);
  cuda::rope(mat(dx, static_cast<int>(rows.size()), cols), heads, head_dim, dr.data(), theta, nullptr);
  return to_host(dx);
}

std::vector<float> swiglu(const std::vector<float>& gate, const std::vector<float>& up) {
  auto g = to_device(gate);
  auto u = to_device(up);
  const int n = static_cast<int>(gate.size());
  cuda::swiglu(mat(g, 1, n), cmat(u, 1, n), nullptr);
  return to_host(g);
}

std::vector<float> copy(const std::vector<float>& x) {
  auto s = to_device(x);
  auto d = poisoned(x.size());
  const int n = static_cast<int>(x.size());
  cuda::copy(cmat(s, 1, n), mat(d, 1, n), nullptr);
  return to_host(d);
}

std::vector<float> gather_rows(const std::vector<float>& src, int cols, const std::vector<int>& index) {
  auto s = to_device(src);
  auto i = to_device(index);
  auto d = poisoned(index.size() * static_cast<std::size_t>(cols));
  cuda::gather_rows(cmat(s, static_cast<int>(src.size()) / cols, cols), i.data(), mat(d, static_cast<int>(index.size()), cols),
                    nullptr);
  return to_host(d);
}

namespace {

/// Builds the case's cache on the device, stores every position, calls f(cache).
template <class F>
auto with_case_cache(const AttentionCase& c, F&& f) {
  return with_type(c.kv, [&](auto tag) {
    using T = decltype(tag);
    const int seqs = static_cast<int>(c.length.size());
    const CacheGeometry g{1, c.kv_heads, c.head_dim, static_cast<int>(sizeof(T))};
    auto fill = [&](auto& cache) {
      for (int s = 0; s < seqs; ++s) cache.open();
      // Interleave page reservations across sequences so pages are not in order.
      for (int step = 1; step <= c.max_len; ++step)
        for (int s = 0; s < seqs; ++s)
          if (step <= c.length[static_cast<std::size_t>(s)]) cache.reserve(s, step);
      std::vector<RowInfo> rows;
      std::vector<float> k, v;
      for (int s = 0; s < seqs; ++s)
        for (int p = 0; p < c.length[static_cast<std::size_t>(s)]; ++p) {
          rows.push_back({s, p});
          const auto& ks = c.k[static_cast<std::size_t>(s)];
          const auto& vs = c.v[static_cast<std::size_t>(s)];
          const std::size_t w = static_cast<std::size_t>(c.kv_heads) * c.head_dim;
          k.insert(k.end(), ks.begin() + static_cast<std::ptrdiff_t>(p * w), ks.begin() + static_cast<std::ptrdiff_t>((p + 1) * w));
          v.insert(v.end(), vs.begin() + static_cast<std::ptrdiff_t>(p * w), vs.begin() + static_cast<std::ptrdiff_t>((p + 1) * w));
        }
      auto dk = to_device(k), dv = to_device(v);
      auto dr = to_device(rows);
      const int n = static_cast<int>(rows.size()), w = c.kv_heads * c.head_dim;
      cuda::store_kv(cmat(dk, n, w), cmat(dv, n, w), cache.slot(0), dr.data(), nullptr);
      for (int s = 0; s < seqs; ++s) cache.commit(s, c.length[static_cast<std::size_t>(s)]);
      return f(cache, tag);
    };
    if (c.layout == Layout::Paged) {
      const int pages = seqs * pages_for(c.max_len, c.page_size) + 3;
      PagedCache<T, PoisonMemory> cache(g, seqs, c.max_len, pages, c.page_size);
      return fill(cache);
    }
    ContiguousCache<T, PoisonMemory> cache(g, seqs, c.max_len);
    return fill(cache);
  });
}

}  // namespace

std::vector<float> attention(const AttentionCase& c) {
  return with_case_cache(c, [&](auto& cache, auto) {
    const int n = static_cast<int>(c.rows.size());
    auto dq = to_device(c.q);
    auto dr = to_device(c.rows);
    auto out = poisoned(c.q.size());
    int sms = 1;
    LCKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    cuda::AttentionLaunch l = cuda::plan_attention(n, c.heads, c.kv_heads, c.prefill_tiles, sms);
    if (c.splits > 0) l.splits = c.splits;
    DeviceBuffer<float> ws(cuda::attention_workspace_floats(n, c.heads, c.head_dim, l));
    ws.fill_bytes(0xFF);
    const int w = c.heads * c.head_dim;
    cuda::attention(cmat(dq, n, w), cache.slot(0), dr.data(), c.mask, c.heads, mat(out, n, w), l,
                    ws.size() ? ws.data() : nullptr, nullptr);
    return to_host(out);
  });
}

std::vector<float> store_then_zero(const AttentionCase& c, const std::vector<RowInfo>& zero_rows) {
  return with_case_cache(c, [&](auto& cache, auto tag) {
    using T = decltype(tag);
    auto dz = to_device(zero_rows);
    cuda::zero_kv(cache.slot(0), dz.data(), static_cast<int>(zero_rows.size()), nullptr);
    LCKV_CUDA_CHECK(cudaDeviceSynchronize());
    // Read back through the slot view, position by position.
    std::vector<float> out;
    const auto slot = cache.slot(0);
    for (int part = 0; part < 2; ++part)
      for (std::size_t s = 0; s < c.length.size(); ++s)
        for (int p = 0; p < c.length[s]; ++p)
          for (int h = 0; h < c.kv_heads; ++h) {
            std::vector<T> tmp(static_cast<std::size_t>(c.head_dim));
            // Paged views read the block table on the host side too: use a host copy of the table.
            const T* src;
            if constexpr (requires { slot.block_table; }) {
              int page = 0;
              cuda::copy_to_host(&page, slot.block_table + static_cast<int>(s) * slot.max_pages_per_seq + p / slot.page_size, 1);
              const std::int64_t off = page * slot.page_stride + slot.slot_offset +
                                       (static_cast<std::int64_t>(p % slot.page_size) * slot.kv_heads + h) * slot.head_dim;
              src = (part == 0 ? slot.k_pool : slot.v_pool) + off;
            } else {
              src = part == 0 ? slot.key(static_cast<int>(s), p, h) : slot.value(static_cast<int>(s), p, h);
            }
            cuda::copy_to_host(tmp.data(), src, tmp.size());
            for (T x : tmp) out.push_back(cuda::to_float(x));
          }
    return out;
  });
}

std::vector<int> sample(const std::vector<float>& logits, int rows, int vocab, const SamplingParams& p,
                        const std::vector<double>& u) {
  auto d = to_device(logits);
  cuda::Sampler sampler;
  return sampler.sample(cmat(d, rows, vocab), p, u, nullptr);
}

std::string provoke_cuda_error() {
  try {
    int x = 0;
    LCKV_CUDA_CHECK(cudaMemcpy(&x, reinterpret_cast<const void*>(std::uintptr_t{16}), sizeof x, cudaMemcpyDeviceToHost));
  } catch (const cuda::CudaError& e) {
    cudaGetLastError();
    return e.what();
  }
  return "no error";
}

// ---------------------------------------------------------------- GpuModel

struct GpuModel::Impl {
  virtual ~Impl() = default;
  virtual int open() = 0;
  virtual void close(int seq) = 0;
  virtual Logits forward(std::span<const SequenceChunk> chunks, ForwardOptions options) = 0;
  virtual long captures() const = 0;
  virtual long replays() const = 0;
  virtual std::size_t cache_bytes() const = 0;
  virtual void another(int max_sequences, long long max_length) = 0;
};

namespace {

template <class W, class Cache>
struct ModelImpl final : GpuModel::Impl {
  using Backend = cuda::CudaBackend<W>;
  template <class... CacheArgs>
  ModelImpl(const ModelConfig& config, const HostWeights& host, bool graphs, CacheArgs&&... args)
      : config_(config), weights_(host), cache_(std::forward<CacheArgs>(args)...),
        model_(config, weights_.view(), make_backend(graphs)) {}
  static Backend make_backend(bool graphs) {
    cuda::CudaBackendOptions o;
    o.graphs = graphs;
    o.poison = true;
    return Backend(o);
  }
  int open() override { return cache_.open(); }
  void close(int seq) override { cache_.close(seq); }
  Logits forward(std::span<const SequenceChunk> chunks, ForwardOptions options) override {
    return model_.forward(chunks, cache_, options);
  }
  long captures() const override { return model_.backend().graphs().captures(); }
  long replays() const override { return model_.backend().graphs().replays(); }
  std::size_t cache_bytes() const override { return cache_.allocated_bytes(); }
  void another(int max_sequences, long long max_length) override {
    using T = typename Cache::value_type;
    ContiguousCache<T, cuda::DeviceMemory> extra(CacheGeometry::of(config_), max_sequences,
                                                 static_cast<int>(std::min<long long>(max_length, 2147483647LL)));
  }
  ModelConfig config_;
  cuda::DeviceWeights<W> weights_;
  Cache cache_;
  mutable Transformer<Backend, Cache> model_;
};

template <class W, class T>
std::unique_ptr<GpuModel::Impl> make_impl(const ModelConfig& c, const HostWeights& w, const GpuModel::Options& o) {
  const CacheGeometry g = CacheGeometry::of(c);
  switch (o.layout) {
    case Layout::Contiguous:
      return std::make_unique<ModelImpl<W, ContiguousCache<T, PoisonMemory>>>(c, w, o.graphs, g, o.max_sequences, o.max_length);
    case Layout::Paged:
      return std::make_unique<ModelImpl<W, PagedCache<T, PoisonMemory>>>(
          c, w, o.graphs, g, o.max_sequences, o.max_length, o.max_sequences * pages_for(o.max_length, o.page_size) + 2,
          o.page_size);
    case Layout::Ring:
      if constexpr (std::is_same_v<W, float>)
        return std::make_unique<ModelImpl<W, RingCache<T, PoisonMemory>>>(c, w, o.graphs, c, o.max_sequences, o.max_length,
                                                                          o.ring_chunk);
      break;
  }
  throw InvalidArgument(std::string("GpuModel: layout ") + name(o.layout) + " is only built for fp32");
}

}  // namespace

GpuModel::GpuModel(const ModelConfig& config, const HostWeights& weights, const Options& o) {
  if (o.weights == DType::F32 && o.kv == DType::F32) impl_ = make_impl<float, float>(config, weights, o);
  else if (o.weights == DType::BF16 && o.kv == DType::BF16 && o.layout != Layout::Ring)
    impl_ = make_impl<__nv_bfloat16, __nv_bfloat16>(config, weights, o);
  else if (o.weights == DType::F16 && o.kv == DType::F16 && o.layout == Layout::Contiguous)
    impl_ = make_impl<__half, __half>(config, weights, o);
  else
    throw InvalidArgument(std::string("GpuModel: weights ") + name(o.weights) + " / kv " + name(o.kv) + " / " +
                          name(o.layout) + " is not instantiated in the test harness");
}
GpuModel::~GpuModel() = default;
int GpuModel::open() { return impl_->open(); }
void GpuModel::close(int seq) { impl_->close(seq); }
Logits GpuModel::forward(std::span<const SequenceChunk> chunks, ForwardOptions options) {
  return impl_->forward(chunks, options);
}
long GpuModel::graph_captures() const { return impl_->captures(); }
long GpuModel::graph_replays() const { return impl_->replays(); }
std::size_t GpuModel::cache_bytes() const { return impl_->cache_bytes(); }
void GpuModel::allocate_another_cache(int max_sequences, long long max_length) { impl_->another(max_sequences, max_length); }

}  // namespace lckv::cudatest
