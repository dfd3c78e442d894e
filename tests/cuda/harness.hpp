#pragma once
/// \file harness.hpp
/// The GPU side of the CUDA tests behind a plain C++ interface: test_cuda.cpp
/// (doctest, the Eigen CPU reference) calls these; harness.cu (nvcc, no Eigen)
/// implements them with lckv/cuda. Every op's device output is poisoned (NaN
/// bytes) before the op runs, so an element it fails to write fails the test.

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/engine/forward_options.hpp"
#include "lckv/engine/sampling.hpp"
#include "lckv/model/config.hpp"
#include "lckv/model/weights.hpp"

namespace lckv::cudatest {

enum class DType { F32, BF16, F16 };
enum class Layout { Contiguous, Paged, Ring };
const char* name(DType t);
const char* name(Layout l);

/// True when a CUDA device can run kernels; `why` otherwise.
bool gpu_available(std::string* why);
std::string device_name();
/// Programmatic dependent launch on / off for every later launch (cuda::set_overlapped_launches).
void set_overlapped_launches(bool on);

/// x rounded to `t` and back (what the GPU stores for fp32 input x).
float round_to(DType t, float x);

std::vector<float> embed(const std::vector<int>& tokens, const std::vector<float>& table, int hidden, DType w);
std::vector<float> rmsnorm(const std::vector<float>& x, int rows, int cols, const std::vector<float>& w, float eps, DType wt);
/// y = x W^T, or y0 + x W^T when y0 is given, through Gemm::linear. x: [rows, in]; w: [out, in],
/// placed `w_offset` elements into its device buffer (1: not 16-byte aligned).
std::vector<float> linear(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out, DType wt,
                          const std::vector<float>* y0, int w_offset = 0);
/// y = x W^T through cuda::gemv called directly (rows <= 8), w placed as in linear.
std::vector<float> gemv_direct(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out,
                               DType wt, int w_offset);
/// silu(xn Wg^T) * (xn Wu^T) through Gemm::gate_up_swiglu (one launch when `fused`, else linear, linear,
/// swiglu), xn = x, or RMSNorm(x; *norm, eps) when norm is given. Weights and norm placed `w_offset`
/// elements into their buffers as in linear (here and in norm_project, attention_input and mlp).
std::vector<float> gate_up_swiglu(const std::vector<float>& x, int rows, int in, const std::vector<float>& wg,
                                  const std::vector<float>& wu, int out, DType wt, bool fused,
                                  const std::vector<float>* norm = nullptr, float eps = 1e-5f, int w_offset = 0);
/// linear and gate_up_swiglu through the tensor-core skinny GEMM (cuda::skinny_linear,
/// cuda::skinny_gate_up_swiglu) called directly: 16-bit weights, rows <= kSkinnyMaxRows;
/// `splits` forces the split-K cluster size and `group_rows` the rows per block, 16 or 32 (0: the
/// launcher's choice).
std::vector<float> linear_tc(const std::vector<float>& x, int rows, int in, const std::vector<float>& w, int out, DType wt,
                             const std::vector<float>* y0, int splits = 0, int group_rows = 0);
std::vector<float> gate_up_swiglu_tc(const std::vector<float>& x, int rows, int in, const std::vector<float>& wg,
                                     const std::vector<float>& wu, int out, DType wt, int splits = 0,
                                     int group_rows = 0);
/// cuda::StepGraphs: how often one key's step ran eagerly over two runs, the first of which threw
/// (host code: an eager run makes no CUDA call; a capture would).
int graph_eager_runs_after_a_throw();
/// The skinny GEMM's split-K cluster size (cuda::skinny_splits; host code: runs without a device).
int skinny_splits(int blocks, int ktiles, int num_sms, int forced);
/// The skinny GEMM's rows per block for `rows` rows, `forced` as SkinnyOptions::group_rows.
int skinny_group_rows(int rows, int forced);
/// RMSNorm(x; norm, eps) W_s^T for each matrix w[s] ([out[s], in]) through CudaBackend::norm_project
/// (one launch when `fused`: the GEMV at 1-8 rows of fp32 weights or 1 row of 16-bit ones, the
/// skinny GEMM at 2-64 rows of 16-bit weights; else rmsnorm + linear each); outputs concatenated.
std::vector<float> norm_project(const std::vector<float>& x, int rows, int in, const std::vector<float>& norm, float eps,
                                const std::vector<std::vector<float>>& w, const std::vector<int>& out, DType wt,
                                bool fused, int w_offset = 0);
/// cuda::rope_store_kv into a fresh NaN-poisoned contiguous cache of `kv` type (max_len positions
/// per sequence): q afterwards, and the K and V then stored at each row ([rows, kv_heads * head_dim]).
struct RopeStoreResult {
  std::vector<float> q, k, v;
};
RopeStoreResult rope_store_kv(const std::vector<float>& q, int heads, const std::vector<float>& k,
                              const std::vector<float>& v, int kv_heads, int head_dim, const std::vector<RowInfo>& rows,
                              float theta, DType kv, int max_len);
/// steps::attention_input through CudaBackend (one launch when `fused` and rows <= 64: the GEMV,
/// or the skinny GEMM at 2-64 rows of 16-bit weights; with `packed` q / k / v lie back to back in
/// one allocation, so the other rows up to 256 take one cuBLAS GEMM):
/// x [rows, in] normalised by `norm` (eps 1e-5), projected by wq ([heads * head_dim, in]) and,
/// unless wk is empty, wk and wv ([kv_heads * head_dim, in]); RoPE at each row's pos (theta > 0);
/// K and V into a fresh NaN-poisoned contiguous cache of the weight type (max_len positions per
/// sequence). Returns q and the K and V stored at each row (NaN where nothing was stored).
/// `skinny_splits` (here and in mlp) forces the skinny GEMM's split-K cluster size (0: its choice).
RopeStoreResult attention_input(const std::vector<float>& x, const std::vector<RowInfo>& rows, int in,
                                const std::vector<float>& norm, const std::vector<float>& wq,
                                const std::vector<float>& wk, const std::vector<float>& wv, int heads, int kv_heads,
                                int head_dim, float theta, DType wt, int max_len, bool fused, bool packed,
                                int w_offset = 0, int skinny_splits = 0);
/// x + steps::mlp through CudaBackend: x [rows, in] normalised by `norm` (eps 1e-5), gate / up
/// ([inter, in], back to back in one allocation when `packed`), SwiGLU, down ([in, inter]).
std::vector<float> mlp(const std::vector<float>& x, int rows, int in, const std::vector<float>& norm,
                       const std::vector<float>& wg, const std::vector<float>& wu, const std::vector<float>& wd, int inter,
                       DType wt, bool fused, bool packed, int w_offset = 0, int skinny_splits = 0);
std::vector<float> rope(const std::vector<float>& x, int cols, int heads, int head_dim, const std::vector<RowInfo>& rows,
                        float theta);
std::vector<float> swiglu(const std::vector<float>& gate, const std::vector<float>& up);
std::vector<float> copy(const std::vector<float>& x);
/// cuda::convert of x[offset..] to bf16, back as floats (offset 1: neither pointer 16-byte aligned).
std::vector<float> convert_bf16(const std::vector<float>& x, int offset);
std::vector<float> gather_rows(const std::vector<float>& src, int cols, const std::vector<int>& index);

/// An attention problem: every sequence's K/V for positions [0, length[s]) are
/// stored through store_kv into a fresh cache of `layout`, then `rows` query.
struct AttentionCase {
  Layout layout = Layout::Contiguous;
  DType kv = DType::F32;
  int heads = 8, kv_heads = 2, head_dim = 64, max_len = 64, page_size = 16;
  std::vector<int> length;              ///< per sequence
  std::vector<std::vector<float>> k, v;  ///< per sequence [length, kv_heads * head_dim]
  std::vector<RowInfo> rows;
  std::vector<float> q;  ///< [rows, heads * head_dim]
  MaskSpec mask;
  bool prefill_tiles = false;  ///< tile query rows (prefill) instead of one row per block (decode)
  int splits = 0;              ///< 0: the backend's choice
  bool out16 = false;          ///< decode on tensor cores writes the output in the KV type (o_proj's input)
};
std::vector<float> attention(const AttentionCase& c);
/// Key splits cuda::plan_attention picks (host code: runs without a device).
int planned_splits(int rows, int heads, int kv_heads, bool prefill_rows, int num_sms, int max_keys,
                   bool prefill_mma = false);
/// Whether decode rows (32 heads, 4 kv heads, 132 SMs) merge their splits through the workspace.
bool planned_merge_through_memory(int rows, int max_keys);
/// The error of cuda::attention over `rows` decode rows at `splits` splits with an empty
/// workspace (host code: it throws before any launch); empty if it did not throw.
std::string attention_without_workspace(int rows, int splits);
/// AttentionWorkspace::partial_floats() after reserve(reserved), or 0 where partials() is null.
std::size_t workspace_partial_floats(std::size_t reserved);
/// Whether that plan lets decode blocks copy keys before the previous kernel ends.
bool planned_early_copies(int rows, bool prefill_rows);
/// The cache contents (K then V, [seq][pos][kv_head][dim]) after store_kv of every
/// position and zero_kv of `zero_rows`.
std::vector<float> store_then_zero(const AttentionCase& c, const std::vector<RowInfo>& zero_rows);

/// cuda::Sampler on device copies of logits [rows, vocab]: every row with `p`, or row r with each[r].
/// `sort_rows`: every row through the full sort (Sampler::set_sort_rows); `sorted_rows` (optional)
/// receives how many rows took that path.
std::vector<int> sample(const std::vector<float>& logits, int rows, int vocab, const SamplingParams& p,
                        const std::vector<double>& u, bool sort_rows = false, int* sorted_rows = nullptr);
std::vector<int> sample(const std::vector<float>& logits, int rows, int vocab, const std::vector<SamplingParams>& each,
                        const std::vector<double>& u, bool sort_rows = false, int* sorted_rows = nullptr);

/// Throws the CudaError of a bad cudaMemcpy and returns its message; the last error is left as
/// the check leaves it.
std::string provoke_cuda_error();
/// Whether the runtime's last error is clear (cudaPeekAtLastError).
bool last_error_clear();
/// The error of a DeviceBuffer of `n` floats (host code when the byte count overflows), or "no error".
std::string device_buffer_error(std::size_t n);
/// The error of Sampler::sample with every one of `rows` x `vocab` rows sent to the full sort, the
/// logits a view of a small buffer (the refusal comes before any kernel reads them), or "no error".
std::string sort_too_many_logits(int rows, int vocab);

/// A Transformer on the GPU over a cache of `layout` with poisoned (NaN) initial
/// scratch and cache memory.
class GpuModel {
public:
  struct Options {
    DType weights = DType::F32;
    DType kv = DType::F32;
    Layout layout = Layout::Contiguous;
    int max_sequences = 4;
    int max_length = 64;
    int page_size = 8;
    int ring_chunk = 64;
    bool graphs = true;
    bool fusion = true;  ///< CudaBackend::set_fusion
  };
  GpuModel(const ModelConfig& config, const HostWeights& weights, const Options& options);
  ~GpuModel();
  int open();
  void close(int seq);
  /// Transformer::forward (with `sampling`: the tokens sampled on the device, Logits::tokens).
  Logits forward(std::span<const SequenceChunk> chunks, ForwardOptions options = {}, TokenSampling sampling = {});
  long graph_captures() const;
  long graph_replays() const;
  std::size_t cache_bytes() const;
  /// Tries to allocate a second cache of `max_length` positions per sequence; rethrows its error.
  void allocate_another_cache(int max_sequences, long long max_length);

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lckv::cudatest
