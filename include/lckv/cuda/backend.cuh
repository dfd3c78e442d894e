#pragma once
/// \file backend.cuh
/// The CUDA backend: the op set of CpuBackend (lckv/cpu/backend.hpp) on the
/// GPU, so the model code is shared:
///
/// \code
///   lckv::cuda::DeviceWeights<__nv_bfloat16> weights(host_weights);
///   lckv::ContiguousCache<__nv_bfloat16, lckv::cuda::DeviceMemory> cache(lckv::CacheGeometry::of(config), 8, 4096);
///   lckv::Transformer<lckv::cuda::CudaBackend<__nv_bfloat16>, decltype(cache)> model(config, weights.view());
/// \endcode
///
/// Weights are `W` (fp32, bf16, fp16), activations fp32, the cache's element
/// type is the KV type. All work goes to one stream; `download` synchronises.
/// Decode steps (every chunk one token) are recorded once as a CUDA Graph and
/// replayed (Transformer calls `step`); prefill runs launch eagerly.
/// Copies of a backend share one context (stream, cuBLAS handle, scratch).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/engine/fused_steps.hpp"
#include "lckv/cuda/attention.cuh"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/gemm.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/graph.cuh"
#include "lckv/cuda/ops.cuh"
#include "lckv/cuda/sampling.cuh"
#include "lckv/cuda/stream.cuh"

namespace lckv::cuda {

struct CudaBackendOptions {
  bool graphs = true;   ///< record decode steps as CUDA Graphs
  bool poison = false;  ///< fill new activation buffers with NaN bytes (tests: unwritten reads show)
};

template <StorageType W = __nv_bfloat16>
class CudaBackend {
public:
  using Memory = DeviceMemory;
  using WeightT = W;
  template <class T>
  using Buffer = DeviceBuffer<T>;
  static constexpr const char* name = "cuda";

  CudaBackend() : CudaBackend(CudaBackendOptions{}) {}
  explicit CudaBackend(CudaBackendOptions o) : ctx_(std::make_shared<Context>(o)) {}

  cudaStream_t stream() const { return ctx_->stream.get(); }
  void synchronize() const { ctx_->stream.synchronize(); }
  const StepGraphs& graphs() const { return ctx_->graphs; }
  void set_graphs(bool on) { ctx_->options.graphs = on; }
  /// Benchmarks: false runs every fused step (steps::attention_input, norm_project,
  /// norm_gate_up_swiglu, rope_store_kv, attention_output, mlp) as its plain ops, one launch each.
  void set_fusion(bool on) { ctx_->gemm.set_fusion(on); }
  /// Gemm::set_skinny: 2-32 rows (16-bit weights) through the skinny tensor-core GEMM and its
  /// fused epilogues (on by default; off: cuBLAS).
  void set_skinny(bool on) { ctx_->gemm.set_skinny(on); }
  /// Benchmarks: Gemm::set_skinny_rows.
  void set_skinny_rows(int plain, int fused) { ctx_->gemm.set_skinny_rows(plain, fused); }
  /// Benchmarks: Gemm::set_gemv_rows.
  void set_gemv_rows(int rows) { ctx_->gemm.set_gemv_rows(rows); }
  /// Benchmarks: Gemm::set_skinny_splits.
  void set_skinny_splits(int splits) { ctx_->gemm.set_skinny_splits(splits); }
  /// Benchmarks: Gemm::set_skinny_group_rows.
  void set_skinny_group_rows(int rows) { ctx_->gemm.set_skinny_group_rows(rows); }
  /// Benchmarks: Sampler::set_sort_rows (every non-greedy row through the full sort).
  void set_sort_sampling(bool on) { ctx_->sampler.set_sort_rows(on); }

  template <class T>
  Buffer<T> alloc(std::size_t n) const {
    Buffer<T> b(n);
    if (ctx_->options.poison) b.fill_bytes(0xFF);
    return b;
  }

  /// Copies row / index metadata to device memory. Each run's stages land at
  /// the same offsets of one arena (reset by `step`), so a graph recorded for
  /// one step reads the next step's data.
  const RowInfo* stage(const std::vector<RowInfo>& rows) {
    bool runs = false;
    int longest = 1;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (i > 0) runs = runs || rows[i].seq == rows[i - 1].seq;
      longest = std::max(longest, rows[i].pos + 1);
    }
    ctx_->prefill_rows = runs;
    // Keys per row, rounded up to a power of two: bounds the split count (and is part of a graph's key).
    int bucket = 64;
    while (bucket < longest) bucket *= 2;
    ctx_->key_bucket = bucket;
    return static_cast<const RowInfo*>(ctx_->stage_bytes(rows.data(), rows.size() * sizeof(RowInfo)));
  }
  const int* stage(const std::vector<int>& ints) {
    return static_cast<const int*>(ctx_->stage_bytes(ints.data(), ints.size() * sizeof(int)));
  }
  /// Device -> host copy of a result (synchronises the stream).
  void download(MatrixView<const float> src, float* host) const {
    if (src.size() == 0) return;
    LCKV_CUDA_CHECK(cudaMemcpyAsync(host, src.data, static_cast<std::size_t>(src.size()) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream()));
    synchronize();
  }

  void embed(const int* tokens, const W* table, MatrixView<float> out) const { cuda::embed(tokens, table, out, stream()); }
  void rmsnorm(MatrixView<const float> x, const W* w, float eps, MatrixView<float> out) const {
    cuda::rmsnorm(x, w, eps, out, stream());
  }
  void linear(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate = false) const {
    if constexpr (!std::is_same_v<W, float>)
      if (!ctx_->capturing) ctx_->gemm.reserve_activation(static_cast<std::size_t>(x.size()));
    ctx_->gemm.linear(x, w, y, accumulate);
  }
  /// steps::norm_project in one launch at decode row counts (else rmsnorm + linear each).
  void norm_project(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                    std::span<const steps::Projection<W>> projections) const {
    if (!ctx_->gemm.template fuses<W>(x.rows, x.cols) || !Gemm::vector_loads(x.data, norm, projections)) {
      if constexpr (!std::is_same_v<W, float>)
        if (!ctx_->capturing) ctx_->gemm.reserve_activation(static_cast<std::size_t>(x.size()));
      ctx_->gemm.norm_then_project(x, norm, eps, xn, projections);
      return;
    }
    ctx_->gemm.norm_project(x, norm, eps, projections);
  }
  /// steps::norm_gate_up_swiglu in one launch at decode row counts.
  void norm_gate_up_swiglu(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn, const W* wg,
                           const W* wu, MatrixView<float> gate, MatrixView<float> up) const {
    if constexpr (!std::is_same_v<W, float>)
      if (!ctx_->capturing) ctx_->gemm.reserve_activation(static_cast<std::size_t>(x.size()));
    ctx_->gemm.gate_up_swiglu(x, norm, eps, xn, wg, wu, gate, up);
  }
  /// steps::rope_store_kv in one launch; false (nothing done) with fusion off.
  template <class Slot>
  bool rope_store_kv(MatrixView<float> q, int heads, MatrixView<float> k, MatrixView<const float> v, const Slot& slot,
                     const RowInfo* rows, float theta) const {
    if (!ctx_->gemm.fusion()) return false;
    cuda::rope_store_kv(q, heads, k, v, slot, rows, theta, stream());
    return true;
  }
  /// steps::attention_input: at 1-32 rows one launch (RMSNorm, q / k / v, RoPE, K/V into
  /// the slot: the GEMV, or at 2-32 rows with 16-bit weights the skinny GEMM); at larger
  /// decode batches with q / k / v back to back in memory, RMSNorm, one cuBLAS GEMM over
  /// the stacked weights and one RoPE + store launch. False (nothing done) elsewhere or
  /// with fusion off.
  template <class Slot>
  bool attention_input(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                       std::span<const steps::Projection<W>> qkv, int heads, const Slot& slot, const RowInfo* rows,
                       float theta) const {
    Gemm& g = ctx_->gemm;
    if (g.template fuses_rope<W>(x.rows, x.cols, slot.head_dim) && (qkv.size() == 1 || qkv.size() == 3) &&
        Gemm::vector_loads(x.data, norm, qkv)) {
      g.norm_project(x, norm, eps, qkv, RopeStore<Slot>{rows, theta, slot.head_dim, slot});
      return true;
    }
    if (qkv.size() != 3 || !g.packs(x.rows, x.cols, qkv)) return false;
    reserve_packed(x, qkv[0].out.cols + qkv[1].out.cols + qkv[2].out.cols);
    const auto packed = g.packed_project(x, norm, eps, xn, qkv);
    cuda::rope_store_kv_packed(packed, qkv[0].out, heads, slot, rows, theta, stream());
    return true;
  }
  /// steps::mlp past the GEMV: with 16-bit weights up to 32 rows a skinny launch (RMSNorm +
  /// gate / up + SwiGLU writing the down projection's input rounded), then down adding into x
  /// (skinny as well); above, with gate / up back to back in memory, RMSNorm, one cuBLAS GEMM
  /// over [Wg; Wu], SwiGLU straight into the down projection's input, the down GEMM adding into
  /// x; the GEMM writes fp32 up to Gemm::kPackedRows rows (decode batches), 16-bit gate / up into
  /// `gate`'s memory above (prefill with 16-bit weights: Gemm::prefill_mlp). False (nothing
  /// done) elsewhere.
  bool mlp(MatrixView<float> x, const W* norm, float eps, MatrixView<float> xn, const W* wg, const W* wu, const W* wd,
           MatrixView<float> gate) const {
    Gemm& g = ctx_->gemm;
    const steps::Projection<W> both[] = {{wg, gate}, {wu, gate}};  // views give the checks the widths only
    const std::span<const steps::Projection<W>> gate_up(both);
    if constexpr (!std::is_same_v<W, float>) {
      if (g.fusion() && g.template skinny_fused_fits<W>(x.rows, x.cols) && Gemm::vector_loads({x.data, norm, wg, wu})) {
        if (!ctx_->capturing) g.reserve_activation(static_cast<std::size_t>(x.rows) * gate.cols);
        g.skinny_mlp(x, norm, eps, wg, wu, wd, gate.cols);
        return true;
      }
      if (g.prefill_mlp_fits(x.rows, x.cols, gate_up)) {
        if (!ctx_->capturing) g.reserve_activation(static_cast<std::size_t>(x.rows) * std::max(x.cols, gate.cols));
        // gate: fp32 [rows, inter] scratch, the bytes of [rows, 2 * inter] in W.
        g.prefill_mlp(x, norm, eps, wg, wd, gate.cols, reinterpret_cast<W*>(gate.data));
        return true;
      }
    }
    if (!g.packs(x.rows, x.cols, gate_up)) return false;
    reserve_packed(x, 2 * gate.cols);
    if constexpr (!std::is_same_v<W, float>)
      if (!ctx_->capturing) g.reserve_activation(static_cast<std::size_t>(x.rows) * gate.cols);
    g.swiglu_down(g.packed_project(x, norm, eps, xn, gate_up), wd, gate, x);
    return true;
  }
  void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta) const {
    cuda::rope(x, heads, head_dim, rows, theta, stream());
  }
  void swiglu(MatrixView<float> gate, MatrixView<const float> up) const { cuda::swiglu(gate, up, stream()); }
  void copy(MatrixView<const float> src, MatrixView<float> dst) const { cuda::copy(src, dst, stream()); }
  void gather_rows(MatrixView<const float> src, const int* index, MatrixView<float> dst) const {
    cuda::gather_rows(src, index, dst, stream());
  }
  template <class Slot>
  void store_kv(MatrixView<const float> k, MatrixView<const float> v, const Slot& slot, const RowInfo* rows) const {
    cuda::store_kv(k, v, slot, rows, stream());
  }
  template <class Slot>
  void zero_kv(const Slot& slot, const RowInfo* rows, int n) const {
    cuda::zero_kv(slot, rows, n, stream());
  }
  template <class Slot>
  void attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask, int heads,
                 MatrixView<float> out) const {
    run_attention(q, slot, rows, mask, heads, out, nullptr);
  }
  /// steps::attention_output past the GEMV's rows with 16-bit weights of the KV type: decode rows on
  /// tensor cores write the attention output rounded straight into the o_proj GEMM's input
  /// (no fp32 copy, no rounding pass). False (nothing done) elsewhere or with fusion off.
  template <class Slot>
  bool attention_output(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask,
                        int heads, MatrixView<float> attn, const W* wo, MatrixView<float> x) const {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
    if constexpr (std::is_same_v<W, float> || !std::is_same_v<W, T>) {
      return false;
    } else {
      Gemm& g = ctx_->gemm;
      if (!g.fusion() || q.rows <= g.template gemv_rows<W>()) return false;
      if (!ctx_->capturing) g.reserve_activation(static_cast<std::size_t>(attn.size()));
      W* rounded = g.template activation<W>(attn.size());
      if (run_attention(q, slot, rows, mask, heads, attn, rounded))
        g.linear_from_rounded(rounded, attn.rows, attn.cols, wo, x, /*accumulate=*/true);
      else
        linear(attn, wo, x, /*accumulate=*/true);
      return true;
    }
  }

  /// Tokens for rows of device logits [rows, vocab], one uniform each (see sampling.cuh).
  std::vector<int> sample(MatrixView<const float> logits, const SamplingParams& params, std::span<const double> u) const {
    return ctx_->sampler.sample(logits, params, u, stream());
  }
  /// The same with row r's own parameters params[r], in one launch sequence.
  std::vector<int> sample(MatrixView<const float> logits, std::span<const SamplingParams> params,
                          std::span<const double> u) const {
    return ctx_->sampler.sample(logits, params, u, stream());
  }

  /// Device milliseconds of the last run's compute (excludes staging and the logits download).
  float last_step_ms() const { return ctx_->step_end.since(ctx_->step_begin); }

  /// The Transformer's hook around one run's compute: decode steps
  /// (`capturable`) go through a CUDA Graph keyed by `key` plus this
  /// backend's own buffer addresses. Resets the staging arena afterwards.
  template <class F>
  void step(std::vector<std::int64_t> key, bool capturable, F&& compute) {
    struct Reset {
      Context* c;
      ~Reset() { c->end_run(); }
    } reset{ctx_.get()};
    ctx_->step_begin.record(stream());
    struct Timed {
      Context* c;
      cudaStream_t s;
      ~Timed() {
        if (cudaEventRecord(c->step_end.get(), s) != cudaSuccess) (void)cudaGetLastError();  // no throw here
      }
    } timed{ctx_.get(), stream()};
    if (!capturable || !ctx_->options.graphs) {
      compute();
      return;
    }
    key.push_back(reinterpret_cast<std::int64_t>(ctx_->arena.data()));
    key.push_back(reinterpret_cast<std::int64_t>(ctx_->attn_ws.data()));
    key.push_back(static_cast<std::int64_t>(ctx_->attn_ws.floats()));
    key.push_back(reinterpret_cast<std::int64_t>(ctx_->gemm.activation_data()));
    key.push_back(reinterpret_cast<std::int64_t>(ctx_->gemm.packed_data()));
    key.push_back(ctx_->key_bucket);
    key.push_back(ctx_->gemm.fusion() ? 1 : 0);
    key.push_back(ctx_->gemm.skinny_rows());
    key.push_back(ctx_->gemm.template gemv_rows<W>());
    key.push_back(ctx_->gemm.skinny_group_rows());
    key.push_back(ctx_->gemm.forced_skinny_splits());
    key.push_back(overlapped_launches() ? 1 : 0);
    ctx_->graphs.run(key, stream(), [&](bool capturing) {
      ctx_->capturing = capturing;
      struct Off {
        Context* c;
        ~Off() { c->capturing = false; }
      } off{ctx_.get()};
      compute();
    });
  }

private:
  /// cuda::attention with the plan for these rows; true when the output went to out16 instead of out.
  template <class Slot>
  bool run_attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask, int heads,
                     MatrixView<float> out, void* out16) const {
    // Short contexts get few splits (the merge costs a launch and a pass).
    const AttentionLaunch l =
        plan_attention(q.rows, heads, slot.kv_heads, ctx_->prefill_rows, ctx_->num_sms, ctx_->key_bucket,
                       prefill_on_tensor_cores(slot, heads));
    const std::size_t ws = attention_workspace_floats(q.rows, heads, slot.head_dim, l);
    if (ws > ctx_->attn_ws.floats()) {
      if (ctx_->capturing) throw CudaError("cuda attention: workspace would grow during graph capture");
      ctx_->attn_ws.reserve(ws);
    }
    return cuda::attention(q, slot, rows, mask, heads, out, l, ctx_->attn_ws, stream(), out16);
  }
  /// Room for a packed GEMM over x with `cols` outputs (and for x's 16-bit copy); outside capture only.
  void reserve_packed(MatrixView<const float> x, int cols) const {
    if (ctx_->capturing) return;
    ctx_->gemm.reserve_packed(static_cast<std::size_t>(x.rows) * cols);
    if constexpr (!std::is_same_v<W, float>) ctx_->gemm.reserve_activation(static_cast<std::size_t>(x.size()));
  }

  struct Context {
    explicit Context(CudaBackendOptions o) : options(o), gemm(stream.get()), num_sms(device_sms()) {}
    const void* stage_bytes(const void* host, std::size_t bytes) {
      const std::size_t at = (offset + 255) / 256 * 256;
      if (at + bytes > arena.size()) {
        // Earlier stages of this run still point into the old arena: keep it until the run ends.
        if (arena.size()) retired.push_back(std::move(arena));
        arena = DeviceBuffer<unsigned char>(std::max<std::size_t>(2 * (at + bytes), 1u << 16));
        offset = 0;
        return stage_bytes(host, bytes);
      }
      if (bytes) LCKV_CUDA_CHECK(cudaMemcpyAsync(arena.data() + at, host, bytes, cudaMemcpyHostToDevice, stream.get()));
      offset = at + bytes;
      return arena.data() + at;
    }
    /// Runs from a destructor, so it must not throw: a failed wait (a device fault, which every
    /// later checked call reports) keeps the retired arenas, whose stages may still be read.
    void end_run() noexcept {
      offset = 0;
      if (retired.empty()) return;
      if (cudaStreamSynchronize(stream.get()) == cudaSuccess) retired.clear();
      else (void)cudaGetLastError();  // not to be blamed on a later launch check
    }

    CudaBackendOptions options;
    Stream stream;
    Gemm gemm;
    Sampler sampler;
    StepGraphs graphs;
    Event step_begin, step_end;
    DeviceBuffer<unsigned char> arena;
    std::vector<DeviceBuffer<unsigned char>> retired;
    std::size_t offset = 0;
    AttentionWorkspace attn_ws;
    int num_sms = 1;
    bool prefill_rows = false;
    int key_bucket = 1 << 30;
    bool capturing = false;
  };
  std::shared_ptr<Context> ctx_;
};

}  // namespace lckv::cuda
