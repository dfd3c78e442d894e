// The GPU half of the CUDA tests (see harness.hpp): device queries and the ops. No Eigen here.

#include "harness_common.cuh"

namespace lckv::cudatest {

const char* name(DType t) { return t == DType::F32 ? "fp32" : t == DType::BF16 ? "bf16" : "fp16"; }
const char* name(Layout l) { return l == Layout::Contiguous ? "contiguous" : l == Layout::Paged ? "paged" : "ring"; }

bool gpu_available(std::string* why) { return cuda::device_available(why); }

void set_overlapped_launches(bool on) { cuda::set_overlapped_launches(on); }

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
                          const std::vector<float>* y0, int w_offset) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    cuda::Gemm gemm(stream.get());
    gemm.reserve_activation(x.size());
    auto dx = to_device(x);
    auto dw = placed<W>(w, w_offset);
    auto y = y0 ? to_device(*y0) : poisoned(static_cast<std::size_t>(rows) * out);
    gemm.linear(cmat(dx, rows, in), dw.data(), mat(y, rows, out), y0 != nullptr);
    stream.synchronize();
    return to_host(y);
  });
}

std::vector<float> gemv_direct(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out,
                               DType wt, int w_offset) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    auto dx = to_device(x);
    auto dw = placed<W>(w, w_offset);
    auto y = poisoned(static_cast<std::size_t>(rows) * out);
    cuda::gemv(dx.data(), rows, in, cuda::LinearTargets<W>::single(dw.data(), mat(y, rows, out)), false,
               static_cast<const W*>(nullptr), cuda::InputNorm<W>{}, cuda::device_sms(), stream.get());
    stream.synchronize();
    return to_host(y);
  });
}

std::vector<float> gate_up_swiglu(const std::vector<float>& x, int rows, int in, const std::vector<float>& wg,
                                  const std::vector<float>& wu, int out, DType wt, bool fused,
                                  const std::vector<float>* norm, float eps, int w_offset) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    cuda::Gemm gemm(stream.get());
    gemm.set_fusion(fused);
    gemm.reserve_activation(x.size());
    auto dx = to_device(x);
    auto dg = placed<W>(wg, w_offset);
    auto du = placed<W>(wu, w_offset);
    auto dn = placed<W>(norm ? *norm : std::vector<float>{}, w_offset);
    auto xn = poisoned(x.size());
    auto gate = poisoned(static_cast<std::size_t>(rows) * out);
    auto up = poisoned(static_cast<std::size_t>(rows) * out);
    gemm.gate_up_swiglu(cmat(dx, rows, in), norm ? dn.data() : nullptr, eps, mat(xn, rows, in), dg.data(), du.data(),
                        mat(gate, rows, out), mat(up, rows, out));
    stream.synchronize();
    return to_host(gate);
  });
}

std::vector<float> norm_project(const std::vector<float>& x, int rows, int in, const std::vector<float>& norm, float eps,
                                const std::vector<std::vector<float>>& w, const std::vector<int>& out, DType wt,
                                bool fused, int w_offset) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::CudaBackend<W> backend;
    backend.set_fusion(fused);
    auto dx = to_device(x);
    auto dn = placed<W>(norm, w_offset);
    auto xn = poisoned(x.size());
    std::vector<Placed<W>> dw;
    std::vector<DeviceBuffer<float>> dy;
    std::vector<steps::Projection<W>> projections;
    for (std::size_t s = 0; s < w.size(); ++s) {
      dw.push_back(placed<W>(w[s], w_offset));
      dy.push_back(poisoned(static_cast<std::size_t>(rows) * out[s]));
      projections.push_back({dw.back().data(), mat(dy.back(), rows, out[s])});
    }
    backend.norm_project(cmat(dx, rows, in), dn.data(), eps, mat(xn, rows, in), projections);
    backend.synchronize();
    std::vector<float> all;
    for (auto& y : dy) {
      const auto h = to_host(y);
      all.insert(all.end(), h.begin(), h.end());
    }
    return all;
  });
}

namespace {
/// The K and V a slot holds at each row's (seq, pos): [rows, kv_heads * head_dim] each.
template <class Slot>
RopeStoreResult stored_kv(const Slot& slot, const std::vector<RowInfo>& rows, std::vector<float> q) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
  RopeStoreResult result{std::move(q), {}, {}};
  std::vector<T> tmp(static_cast<std::size_t>(slot.head_dim));
  for (const RowInfo& r : rows)
    for (int part = 0; part < 2; ++part)
      for (int h = 0; h < slot.kv_heads; ++h) {
        cuda::copy_to_host(tmp.data(), part == 0 ? slot.key(r.seq, r.pos, h) : slot.value(r.seq, r.pos, h), tmp.size());
        for (T x : tmp) (part == 0 ? result.k : result.v).push_back(cuda::to_float(x));
      }
  return result;
}

int sequences(const std::vector<RowInfo>& rows) {
  int seqs = 0;
  for (const RowInfo& r : rows) seqs = std::max(seqs, r.seq + 1);
  return seqs;
}
}  // namespace

RopeStoreResult rope_store_kv(const std::vector<float>& q, int heads, const std::vector<float>& k,
                              const std::vector<float>& v, int kv_heads, int head_dim, const std::vector<RowInfo>& rows,
                              float theta, DType kv, int max_len) {
  return with_type(kv, [&](auto tag) {
    using T = decltype(tag);
    ContiguousCache<T, PoisonMemory> cache(CacheGeometry{1, kv_heads, head_dim, static_cast<int>(sizeof(T))},
                                           sequences(rows), max_len);
    const int n = static_cast<int>(rows.size()), w = kv_heads * head_dim;
    auto dq = to_device(q), dk = to_device(k), dv = to_device(v);
    auto dr = to_device(rows);
    cuda::rope_store_kv(mat(dq, n, heads * head_dim), heads, cmat(dk, n, w), cmat(dv, n, w), cache.slot(0), dr.data(),
                        theta, nullptr);
    LCKV_CUDA_CHECK(cudaDeviceSynchronize());
    return stored_kv(cache.slot(0), rows, to_host(dq));
  });
}

RopeStoreResult attention_input(const std::vector<float>& x, const std::vector<RowInfo>& rows, int in,
                                const std::vector<float>& norm, const std::vector<float>& wq,
                                const std::vector<float>& wk, const std::vector<float>& wv, int heads, int kv_heads,
                                int head_dim, float theta, DType wt, int max_len, bool fused, bool packed,
                                int w_offset, int skinny_splits) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::CudaBackend<W> backend;
    backend.set_fusion(fused);
    backend.set_skinny_splits(skinny_splits);
    ContiguousCache<W, PoisonMemory> cache(CacheGeometry{1, kv_heads, head_dim, static_cast<int>(sizeof(W))},
                                           sequences(rows), max_len);
    const int n = static_cast<int>(rows.size()), qc = heads * head_dim, kc = kv_heads * head_dim;
    auto dx = to_device(x);
    auto dr = to_device(rows);
    auto dn = placed<W>(norm, w_offset);
    // packed: the three matrices back to back in one allocation (as DeviceWeights lays them out).
    std::vector<float> stacked = wq;
    if (packed) {
      stacked.insert(stacked.end(), wk.begin(), wk.end());
      stacked.insert(stacked.end(), wv.begin(), wv.end());
    }
    auto dwq = placed<W>(stacked, w_offset), dwk = placed<W>(packed ? std::vector<float>{} : wk, w_offset),
         dwv = placed<W>(packed ? std::vector<float>{} : wv, w_offset);
    const W* pk = packed ? dwq.data() + wq.size() : dwk.data();
    const W* pv = packed ? pk + wk.size() : dwv.data();
    auto xn = poisoned(x.size());
    auto q = poisoned(static_cast<std::size_t>(n) * qc), k = poisoned(static_cast<std::size_t>(n) * kc),
         v = poisoned(static_cast<std::size_t>(n) * kc);
    const steps::Projection<W> qkv[] = {{dwq.data(), mat(q, n, qc)}, {pk, mat(k, n, kc)}, {pv, mat(v, n, kc)}};
    const std::size_t count = wk.empty() ? 1 : 3;
    steps::attention_input(backend, cmat(dx, n, in), dn.data(), 1e-5f, mat(xn, n, in),
                           std::span<const steps::Projection<W>>(qkv, count), heads, cache.slot(0), dr.data(), theta);
    backend.synchronize();
    return stored_kv(cache.slot(0), rows, to_host(q));
  });
}

std::vector<float> mlp(const std::vector<float>& x, int rows, int in, const std::vector<float>& norm,
                       const std::vector<float>& wg, const std::vector<float>& wu, const std::vector<float>& wd, int inter,
                       DType wt, bool fused, bool packed, int w_offset, int skinny_splits) {
  return with_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::CudaBackend<W> backend;
    backend.set_fusion(fused);
    backend.set_skinny_splits(skinny_splits);
    std::vector<float> stacked = wg;
    if (packed) stacked.insert(stacked.end(), wu.begin(), wu.end());
    auto dg = placed<W>(stacked, w_offset), du = placed<W>(packed ? std::vector<float>{} : wu, w_offset),
         dd = placed<W>(wd, w_offset);
    auto dn = placed<W>(norm, w_offset);
    auto dx = to_device(x);
    auto xn = poisoned(x.size());
    auto gate = poisoned(static_cast<std::size_t>(rows) * inter), up = poisoned(static_cast<std::size_t>(rows) * inter);
    steps::mlp(backend, mat(dx, rows, in), dn.data(), 1e-5f, mat(xn, rows, in), dg.data(),
               packed ? dg.data() + wg.size() : du.data(), dd.data(), mat(gate, rows, inter), mat(up, rows, inter));
    backend.synchronize();
    return to_host(dx);
  });
}

namespace {
/// f(W{}) for the 16-bit types the skinny GEMM takes.
template <class F>
decltype(auto) with_16bit_type(DType t, F&& f) {
  if (t == DType::BF16) return f(__nv_bfloat16{});
  if (t == DType::F16) return f(__half{});
  throw std::logic_error("skinny GEMM: 16-bit weights only");
}
}  // namespace

std::vector<float> linear_tc(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out, DType wt,
                             const std::vector<float>* y0, int splits, int group_rows) {
  return with_16bit_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    auto dx = to_device(x);
    auto dw = converted<W>(w);
    auto y = y0 ? to_device(*y0) : poisoned(static_cast<std::size_t>(rows) * out);
    cuda::skinny_linear(cmat(dx, rows, in), dw.data(), mat(y, rows, out), y0 != nullptr,
                        cuda::SkinnyOptions{cuda::device_sms(), splits, group_rows}, stream.get());
    stream.synchronize();
    return to_host(y);
  });
}

std::vector<float> gate_up_swiglu_tc(const std::vector<float>& x, int rows, int in, const std::vector<float>& wg,
                                     const std::vector<float>& wu, int out, DType wt, int splits, int group_rows) {
  return with_16bit_type(wt, [&](auto tag) {
    using W = decltype(tag);
    cuda::Stream stream;
    auto dx = to_device(x);
    auto dg = converted<W>(wg);
    auto du = converted<W>(wu);
    auto y = poisoned(static_cast<std::size_t>(rows) * out);
    cuda::skinny_gate_up_swiglu(cmat(dx, rows, in), dg.data(), du.data(), mat(y, rows, out),
                                cuda::SkinnyOptions{cuda::device_sms(), splits, group_rows}, stream.get());
    stream.synchronize();
    return to_host(y);
  });
}

int graph_eager_runs_after_a_throw() {
  cuda::StepGraphs graphs;
  const cuda::StepGraphs::Key key{1, 2, 3};
  int eager = 0;
  try {
    graphs.run(key, nullptr, [&](bool capturing) {
      eager += capturing ? 0 : 1;
      throw InvalidArgument("the first run fails");
    });
  } catch (const InvalidArgument&) {
  }
  graphs.run(key, nullptr, [&](bool capturing) { eager += capturing ? 0 : 1; });
  return eager;
}

int skinny_splits(int blocks, int ktiles, int num_sms, int forced) {
  return cuda::skinny_splits(blocks, ktiles, cuda::SkinnyOptions{num_sms, forced});
}

int skinny_group_rows(int rows, int forced) { return cuda::skinny_group_rows(rows, cuda::SkinnyOptions{1, 0, forced}); }

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

std::vector<float> convert_bf16(const std::vector<float>& x, int offset) {
  auto s = to_device(x);
  DeviceBuffer<__nv_bfloat16> d(x.size());
  d.fill_bytes(0xFF);
  const std::size_t n = x.size() - static_cast<std::size_t>(offset);
  cuda::convert(s.data() + offset, d.data() + offset, static_cast<std::int64_t>(n), nullptr);
  LCKV_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<__nv_bfloat16> h(n);
  cuda::copy_to_host(h.data(), d.data() + offset, n);
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) f[i] = cuda::to_float(h[i]);
  return f;
}

std::vector<float> gather_rows(const std::vector<float>& src, int cols, const std::vector<int>& index) {
  auto s = to_device(src);
  auto i = to_device(index);
  auto d = poisoned(index.size() * static_cast<std::size_t>(cols));
  cuda::gather_rows(cmat(s, static_cast<int>(src.size()) / cols, cols), i.data(), mat(d, static_cast<int>(index.size()), cols),
                    nullptr);
  return to_host(d);
}


std::vector<int> sample(const std::vector<float>& logits, int rows, int vocab, const SamplingParams& p,
                        const std::vector<double>& u, bool sort_rows, int* sorted_rows) {
  return sample(logits, rows, vocab, std::vector<SamplingParams>(static_cast<std::size_t>(rows), p), u, sort_rows,
                sorted_rows);
}
std::vector<int> sample(const std::vector<float>& logits, int rows, int vocab, const std::vector<SamplingParams>& each,
                        const std::vector<double>& u, bool sort_rows, int* sorted_rows) {
  auto d = to_device(logits);
  cuda::Sampler sampler;
  sampler.set_sort_rows(sort_rows);
  auto tokens = sampler.sample(cmat(d, rows, vocab), std::span<const SamplingParams>(each), u, nullptr);
  if (sorted_rows) *sorted_rows = sampler.sorted_rows();
  return tokens;
}

bool last_error_clear() { return cudaPeekAtLastError() == cudaSuccess; }

std::string device_buffer_error(std::size_t n) {
  try {
    cuda::DeviceBuffer<float> b(n);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string sort_too_many_logits(int rows, int vocab) {
  cuda::DeviceBuffer<float> tiny(64);
  cuda::Sampler sampler;
  sampler.set_sort_rows(true);
  const std::vector<SamplingParams> each(static_cast<std::size_t>(rows), SamplingParams{0.8f, 0, 0.9f});
  const std::vector<double> u(static_cast<std::size_t>(rows), 0.5);
  try {
    sampler.sample(MatrixView<const float>{tiny.data(), rows, vocab}, std::span<const SamplingParams>(each), u, nullptr);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

std::string provoke_cuda_error() {
  try {
    int x = 0;
    LCKV_CUDA_CHECK(cudaMemcpy(&x, reinterpret_cast<const void*>(std::uintptr_t{16}), sizeof x, cudaMemcpyDeviceToHost));
  } catch (const cuda::CudaError& e) {
    return e.what();  // the check cleared the runtime's last error (tested after this call)
  }
  return "no error";
}

}  // namespace lckv::cudatest
