#pragma once
/// \file gemm.cuh
/// y (+)= x W^T for the model's linear layers: x fp32 [rows, in], W [out, in]
/// row-major (the checkpoint layout) in fp32, bf16 or fp16, y fp32 [rows, out],
/// fp32 accumulation. Decode row counts run the GEMV of gemv.cuh (one row of 16-bit
/// weights, up to 8 of fp32) and, for 16-bit weights, the tensor-core GEMM of gemm_tc.cuh at 2-32 rows;
/// both fold the preceding RMSNorm in and end in the fused epilogues of
/// linear_io.cuh. Other row counts run cuBLAS, where `accumulate` rides in the
/// epilogue (beta = 1) so the residual stream costs no extra pass, and 16-bit
/// weights take x rounded to their type first (cuBLAS takes A and B of one
/// type); projections of one input whose weights lie back to back (q / k / v,
/// gate / up) run as one GEMM there. The fp32 path never uses TF32.

#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "lckv/core/buffer.hpp"
#include "lckv/engine/fused_steps.hpp"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/gemm_tc.cuh"
#include "lckv/cuda/gemv.cuh"
#include "lckv/cuda/ops.cuh"

namespace lckv::cuda {

/// y (+)= x W^T for every row count: kernels::gemv up to gemv_rows() rows, the
/// skinny tensor-core GEMM up to kSkinnyRows / kSkinnyFusedRows (16-bit weights; both weight
/// streaming, with optional RMSNorm of x and several matrices per launch),
/// cuBLAS above. Owns a cuBLAS handle bound to one stream, with a fixed
/// workspace so that calls can be captured into a CUDA Graph.
class Gemm {
public:
  static constexpr int kGemvMaxRows = 8;  ///< most rows kernels::gemv takes (fp32 weights: the bound)
  /// Most rows of 16-bit weights the GEMV takes by default; the skinny GEMM takes 2 rows and
  /// more. Both stream the weights once, but the GEMV's CUDA-core work per weight byte grows
  /// with the rows: the decode step at 2 / 4 / 8 rows was 9% / 35% / 54% faster through the
  /// skinny GEMM on an H100, 20% / 46% / 61% on an H200 (batch 8 had been slower than batch 16;
  /// docs/benchmarks-cuda.md Update 14).
  static constexpr int kGemvRows = 1;
  /// Most rows the skinny GEMM takes here: for plain projections (o_proj, down, 16-bit or fp32 x)
  /// and for the fused launches (RMSNorm + q / k / v + RoPE, RMSNorm + gate / up + SwiGLU). Up to
  /// these bounds it beat cuBLAS inside the TinyLlama decode step; above them cuBLAS is faster
  /// or level (H100, docs/benchmarks-cuda.md Update 22: 1-5% at 64 rows, 28% at 128; 64-row
  /// blocks only drew level). Two bounds so that benchmarks can move them apart (set_skinny_rows).
  static constexpr int kSkinnyRows = 32;
  static constexpr int kSkinnyFusedRows = 32;
  static constexpr int kPackedRows = 256;  ///< packs() bound: decode batches, not prefill

  explicit Gemm(cudaStream_t stream, std::size_t workspace_bytes = 32u << 20)
      : num_sms_(device_sms()), stream_(stream), workspace_(workspace_bytes), skinny_{num_sms_, 0} {
    const cublasStatus_t created = cublasCreate(&handle_);
    if (created == CUBLAS_STATUS_ALLOC_FAILED)
      throw OutOfDeviceMemory("cublasCreate: out of device memory, " + device_memory_free());
    LCKV_CUBLAS_CHECK(created);
    try {
      LCKV_CUBLAS_CHECK(cublasSetStream(handle_, stream));
      LCKV_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
      LCKV_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
    } catch (...) {
      cublasDestroy(handle_);  // the destructor does not run for a constructor that throws
      throw;
    }
  }
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm() {
    if (handle_) cublasDestroy(handle_);
  }

  /// Makes room for the 16-bit copy of an activation of n elements (call outside graph capture).
  void reserve_activation(std::size_t n_elems) {
    if (n_elems * 2 > act_.bytes()) act_ = DeviceBuffer<unsigned char>(n_elems * 2);
  }
  /// Makes room for a packed GEMM's fp32 output of n elements (call outside graph capture).
  void reserve_packed(std::size_t n_elems) {
    if (n_elems > packed_.size()) packed_ = DeviceBuffer<float>(n_elems);
  }

  /// Whether the fused launches (norm + projections, gate/up/SwiGLU) are used where they apply.
  void set_fusion(bool on) { fusion_ = on; }
  bool fusion() const { return fusion_; }

  /// Whether 2-32 rows with 16-bit weights run the skinny tensor-core GEMM (on by default;
  /// off: the GEMV up to 8 rows, cuBLAS above, with separate norm, RoPE and SwiGLU launches).
  void set_skinny(bool on) { skinny_on_ = on; }
  bool skinny() const { return skinny_on_; }
  /// Benchmarks: the most rows routed to the skinny GEMM, plain and fused (defaults kSkinnyRows,
  /// kSkinnyFusedRows; at most kSkinnyMaxRows).
  void set_skinny_rows(int plain, int fused) {
    skinny_rows_ = std::clamp(plain, kGemvMaxRows, kSkinnyMaxRows);
    skinny_fused_rows_ = std::clamp(fused, kGemvMaxRows, kSkinnyMaxRows);
  }
  /// Benchmarks: the most rows of 16-bit weights routed to the GEMV (default kGemvRows, 1 to
  /// kGemvMaxRows); more go to the skinny GEMM while it is on.
  void set_gemv_rows(int rows) { gemv_rows_ = std::clamp(rows, 1, kGemvMaxRows); }
  /// The most rows of W weights that go through the GEMV.
  template <StorageType W>
  int gemv_rows() const {
    return std::is_same_v<W, float> || !skinny_on_ ? kGemvMaxRows : gemv_rows_;
  }
  /// The bounds as one number (graph keys): 0 when the skinny GEMM is off.
  int skinny_rows() const { return skinny_on_ ? skinny_rows_ * 256 + skinny_fused_rows_ : 0; }
  /// Benchmarks: force the skinny GEMM's split-K cluster size (0: its own choice).
  void set_skinny_splits(int splits) { skinny_.splits = splits; }
  int forced_skinny_splits() const { return skinny_.splits; }
  /// Benchmarks: force the skinny GEMM's rows per block, 16 or 32 (0: its own choice); throws
  /// InvalidArgument for other values.
  void set_skinny_group_rows(int rows) {
    SkinnyOptions options = skinny_;
    options.group_rows = rows;
    (void)cuda::skinny_group_rows(1, options);  // validates (the free function, not the getter below)
    skinny_.group_rows = rows;
  }
  int skinny_group_rows() const { return skinny_.group_rows; }

  /// Whether `rows` x `in` inputs go through kernels::gemv.
  template <StorageType W>
  bool gemv_fits(int rows, int in) const {
    return rows >= 1 && rows <= gemv_rows<W>() && in % (16 / static_cast<int>(sizeof(W))) == 0;
  }
  /// Whether `rows` x `in` inputs go through the skinny tensor-core GEMM.
  template <StorageType W>
  bool skinny_fits(int rows, int in) const {
    return skinny_fused_fits<W>(rows, in) && rows <= skinny_rows_;
  }
  /// Whether `rows` x `in` inputs go through the skinny GEMM's fused launches.
  template <StorageType W>
  bool skinny_fused_fits(int rows, int in) const {
    return skinny_on_ && !std::is_same_v<W, float> && rows > gemv_rows<W>() && rows <= skinny_fused_rows_ && in % 8 == 0;
  }
  /// Whether the own kernels' 16-byte vector loads suit these operands (null counts as aligned).
  /// DeviceWeights and the activation buffers always do; a user-made weight view may not, and
  /// then takes cuBLAS (and, for the fused steps, their unfused form).
  static bool vector_loads(std::initializer_list<const void*> operands) {
    return std::all_of(operands.begin(), operands.end(), [](const void* p) { return aligned16(p); });
  }
  /// The same for x, the norm weight and every projection's weights.
  template <StorageType W>
  static bool vector_loads(const float* x, const W* norm, std::span<const steps::Projection<W>> projections) {
    return vector_loads({x, norm}) && std::all_of(projections.begin(), projections.end(),
                                                  [](const steps::Projection<W>& p) { return aligned16(p.weight); });
  }

  /// Whether norm_project / gate_up_swiglu with a norm run as one launch for this input
  /// (vector_loads must hold for the operands as well).
  template <StorageType W>
  bool fuses(int rows, int in) const {
    return fusion_ && (gemv_fits<W>(rows, in) || skinny_fused_fits<W>(rows, in));
  }
  /// Whether norm_project with a RopeStore of `head_dim` runs as one launch (the skinny
  /// GEMM's tiles must hold whole heads).
  template <StorageType W>
  bool fuses_rope(int rows, int in, int head_dim) const {
    return fuses<W>(rows, in) && (gemv_fits<W>(rows, in) || (head_dim > 0 && kSkinnyTileM % head_dim == 0));
  }

  /// Whether projections sharing an input run as one GEMM over their stacked weights
  /// (packed_project): fusion on, cuBLAS row counts up to kPackedRows (decode batches:
  /// the packed output is scratch), and each weight right after the previous one in
  /// memory, as DeviceWeights lays out q / k / v and gate / up.
  template <StorageType W>
  bool packs(int rows, int in, std::span<const steps::Projection<W>> projections) const {
    return fusion_ && rows > gemv_rows<W>() && rows <= kPackedRows && !skinny_fused_fits<W>(rows, in) &&
           stacked(projections, in);
  }
  /// Whether there are several projections and each weight starts where the previous one ends,
  /// so that one GEMM over the stacked matrix computes them all.
  template <StorageType W>
  static bool stacked(std::span<const steps::Projection<W>> projections, int in) {
    if (projections.size() < 2) return false;
    for (std::size_t s = 1; s < projections.size(); ++s)
      if (projections[s].weight != projections[s - 1].weight + static_cast<std::int64_t>(projections[s - 1].out.cols) * in)
        return false;
    return true;
  }

  /// RMSNorm(x; norm, eps) [W_0; W_1; ...]^T as one GEMM (packs() must hold): the
  /// norm writes the GEMM's input (16-bit W: rounded, in the activation scratch;
  /// fp32: into xn). Returns the output [rows, sum of outs] in the packed scratch,
  /// valid until the next packed call. x, xn: [rows, in].
  template <StorageType W>
  MatrixView<const float> packed_project(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                                         std::span<const steps::Projection<W>> projections) {
    int total = 0;
    for (const auto& p : projections) total += p.out.cols;
    const std::int64_t n = static_cast<std::int64_t>(x.rows) * total;
    if (static_cast<std::size_t>(n) > packed_.size())
      throw CudaError("gemm: packed scratch of " + std::to_string(packed_.size()) + " floats is too small for " +
                      std::to_string(n) + "; call reserve_packed first");
    const MatrixView<float> y{packed_.data(), x.rows, total};
    cublas_linear(normed(x, norm, eps, xn), x.rows, x.cols, projections[0].weight, y, false);
    return y;
  }

  /// y += SwiGLU(gate_up) Wd^T: gate_up = [rows, 2 * inter] from packed_project
  /// (gate, then up); the SwiGLU writes the down projection's input directly (16-bit
  /// Wd: rounded, in the activation scratch; fp32: into `scratch`, [rows, inter]).
  template <StorageType W>
  void swiglu_down(MatrixView<const float> gate_up, const W* wd, MatrixView<float> scratch, MatrixView<float> y) {
    const int inter = gate_up.cols / 2;
    W* in = nullptr;
    if constexpr (std::is_same_v<W, float>) in = scratch.data;
    else in = activation<W>(static_cast<std::int64_t>(gate_up.rows) * inter);
    swiglu_packed(gate_up, in, stream_);
    cublas_linear(in, gate_up.rows, inter, wd, y, true);
  }

  /// y (+)= b W^T with b already in W's type (a producer wrote it into activation<W>()).
  /// b: [rows, in]; w: [y.cols, in]; y: [rows, y.cols].
  template <StorageType W>
  void linear_from_rounded(const W* b, int rows, int in, const W* w, MatrixView<float> y, bool accumulate) {
    if constexpr (!std::is_same_v<W, float>) {
      if (skinny_fits<W>(rows, in) && vector_loads({b, w})) {
        skinny_gemm<W, W>(b, rows, in, LinearTargets<W>::single(w, y), accumulate, nullptr, nullptr, InputNorm<W>{},
                          skinny_, stream_);
        return;
      }
    }
    cublas_linear(b, rows, in, w, y, accumulate);
  }

  /// The activation scratch as n elements of W, where a kernel writes a GEMM's input
  /// already rounded (reserve_activation made room).
  template <StorageType W>
  W* activation(std::int64_t n) {
    if (static_cast<std::size_t>(n) * sizeof(W) > act_.bytes())
      throw CudaError("gemm: activation scratch of " + std::to_string(act_.bytes()) + " bytes is too small for " +
                      std::to_string(static_cast<std::size_t>(n) * sizeof(W)) + "; call reserve_activation first");
    return reinterpret_cast<W*>(act_.data());
  }

  /// y (+)= x W^T. x: [rows, in]; w: [out, in]; y: [rows, out].
  template <StorageType W>
  void linear(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate) {
    if (x.rows == 0) return;
    // Decode at small batch: a weight-streaming GEMV beats cuBLAS's small-M kernels and skips the
    // rounding pass. Both own kernels need 16-byte aligned operands; cuBLAS takes the rest.
    const bool own_kernels = vector_loads({x.data, w});
    if (gemv_fits<W>(x.rows, x.cols) && own_kernels) {
      gemv(x.data, x.rows, x.cols, LinearTargets<W>::single(w, y), accumulate, static_cast<const W*>(nullptr),
           InputNorm<W>{}, num_sms_, stream_);
      return;
    }
    if constexpr (!std::is_same_v<W, float>) {
      if (skinny_fits<W>(x.rows, x.cols) && own_kernels) {
        skinny_linear(x, w, y, accumulate, skinny_, stream_);
        return;
      }
    }
    cublas_linear(rounded<W>(x), x.rows, x.cols, w, y, accumulate);
  }

  /// out_s = x W_s^T for projections that share x (q, k, v): rounded to the
  /// weight type once for all of them on the cuBLAS path. x: [rows, in].
  template <StorageType W>
  void project(MatrixView<const float> x, std::span<const steps::Projection<W>> projections) {
    if (x.rows == 0) return;
    if (gemv_fits<W>(x.rows, x.cols) || !fusion_) {
      for (const auto& p : projections) linear(x, p.weight, p.out, false);
      return;
    }
    const void* b = rounded<W>(x);
    for (const auto& p : projections) cublas_linear(b, x.rows, x.cols, p.weight, p.out, false);
  }

  /// out_s = RMSNorm(x; norm, eps) W_s^T where the fused GEMV does not apply: with
  /// fusion on at cuBLAS row counts the norm writes cuBLAS's input directly
  /// (normed()); else rmsnorm into xn, then project(). x, xn: [rows, in].
  template <StorageType W>
  void norm_then_project(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                         std::span<const steps::Projection<W>> projections) {
    if (x.rows == 0) return;
    if (fusion_ && !gemv_fits<W>(x.rows, x.cols)) {
      const void* b = normed(x, norm, eps, xn);
      for (const auto& p : projections) cublas_linear(b, x.rows, x.cols, p.weight, p.out, false);
      return;
    }
    rmsnorm(x, norm, eps, xn, stream_);
    project(MatrixView<const float>{xn.data, xn.rows, xn.cols}, projections);
  }

  /// out_s = RMSNorm(x; norm, eps) W_s^T for up to three projections in one launch
  /// (fuses(rows, in) must hold; fuses_rope with a RopeStore), stored by `epi`
  /// (linear_io.cuh: plain, or RoPE + K/V into a cache slot). x: [rows, in]; norm: [in].
  template <StorageType W, class Epi = PlainStore>
  void norm_project(MatrixView<const float> x, const W* norm, float eps, std::span<const steps::Projection<W>> projections,
                    Epi epi = {}) {
    if (projections.empty() || projections.size() > static_cast<std::size_t>(LinearTargets<W>::kMax))
      throw InvalidArgument("gemm norm_project: " + std::to_string(projections.size()) +
                            " projections, expected 1-" + std::to_string(LinearTargets<W>::kMax));
    LinearTargets<W> t;
    for (std::size_t s = 0; s < projections.size(); ++s) {
      t.w[s] = projections[s].weight;
      t.y[s] = projections[s].out.data;
      t.out[s] = projections[s].out.cols;
    }
    t.count = static_cast<int>(projections.size());
    fused_launch(x, t, static_cast<const W*>(nullptr), InputNorm<W>{norm, eps}, epi);
  }

  /// gate = silu(xn Wg^T) * (xn Wu^T), xn = x or RMSNorm(x) when `norm`: one
  /// launch when fuses(rows, in), else (norm into `xn`), linear, linear,
  /// swiglu with `up` as scratch. x, xn: [rows, in]; gate, up: [rows, out].
  template <StorageType W>
  void gate_up_swiglu(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn, const W* wg,
                      const W* wu, MatrixView<float> gate, MatrixView<float> up) {
    if (x.rows == 0) return;
    if (fuses<W>(x.rows, x.cols) && vector_loads({x.data, norm, wg, wu})) {
      fused_launch(x, LinearTargets<W>::single(wg, gate), wu, InputNorm<W>{norm, eps});
      return;
    }
    const steps::Projection<W> both[] = {{wg, gate}, {wu, up}};
    if (norm) norm_then_project(x, norm, eps, xn, std::span<const steps::Projection<W>>(both));
    else project(x, std::span<const steps::Projection<W>>(both));
    swiglu(gate, MatrixView<const float>{up.data, up.rows, up.cols}, stream_);
  }

  /// Whether prefill_mlp applies to the gate / up projections: fusion on, 16-bit W, more rows
  /// than the packed GEMMs take (prefill), and the two weights stacked as DeviceWeights lays them out.
  template <StorageType W>
  bool prefill_mlp_fits(int rows, int in, std::span<const steps::Projection<W>> gate_up) const {
    return !std::is_same_v<W, float> && fusion_ && rows > kPackedRows && gate_up.size() == 2 && stacked(gate_up, in);
  }

  /// x += SwiGLU(RMSNorm(x; norm, eps) [Wg; Wu]^T) Wd^T at prefill row counts (prefill_mlp_fits):
  /// the norm writes the GEMM input rounded to W, one cuBLAS GEMM over [Wg; Wu] writes gate | up
  /// in W's type into `gate_up` (as a 16-bit model in PyTorch holds them), SwiGLU writes the down
  /// projection's input rounded, the down GEMM adds into x. Against fp32 gate and up, then an fp32
  /// SwiGLU and a rounding pass, that is a third of the bytes and two launches fewer. Needs
  /// reserve_activation(rows * max(in, inter)). x: [rows, in]; wg (then Wu): [inter, in];
  /// wd: [in, inter]; gate_up: [rows, 2 * inter].
  template <StorageType W>
  void prefill_mlp(MatrixView<float> x, const W* norm, float eps, const W* wg, const W* wd, int inter, W* gate_up) {
    static_assert(!std::is_same_v<W, float>, "prefill_mlp: 16-bit weights only");
    const void* xn = normed(x, norm, eps, MatrixView<float>{});  // 16-bit W: into the activation scratch
    cublas_gemm(xn, x.rows, x.cols, wg, gate_up, DTypeTraits<W>::cuda_type, 2 * inter, false);
    W* h = activation<W>(static_cast<std::int64_t>(x.rows) * inter);  // xn is consumed: the same scratch
    swiglu_packed(MatrixView<const W>{gate_up, x.rows, 2 * inter}, h, stream_);
    linear_from_rounded(h, x.rows, inter, wd, x, /*accumulate=*/true);
  }

  /// x += SwiGLU(RMSNorm(x; norm, eps)) Wd^T: one skinny launch (skinny_fused_fits(rows, in)
  /// must hold) writes gate / up / SwiGLU rounded to W into the activation scratch
  /// (reserve_activation(rows * inter)), then the down projection adds into x (skinny or
  /// cuBLAS, linear_from_rounded). x: [rows, in]; wg, wu: [inter, in]; wd: [in, inter].
  template <StorageType W>
  void skinny_mlp(MatrixView<float> x, const W* norm, float eps, const W* wg, const W* wu, const W* wd, int inter) {
    static_assert(!std::is_same_v<W, float>, "skinny GEMM: 16-bit weights only");
    W* h = activation<W>(static_cast<std::int64_t>(x.rows) * inter);
    skinny_gemm<W, float>(x.data, x.rows, x.cols, LinearTargets<W>::single(wg, MatrixView<float>{nullptr, x.rows, inter}),
                          false, wu, h, InputNorm<W>{norm, eps}, skinny_, stream_);
    linear_from_rounded(h, x.rows, inter, wd, x, /*accumulate=*/true);
  }

  /// Plain C[m, n] = A[m, k] B[n, k]^T on 16-bit or fp32 operands (benchmarks: the ceiling).
  template <StorageType T>
  void gemm_rowmajor(int m, int n, int k, const T* a, const T* bt, float* c) {
    const float alpha = 1.0f, beta = 0.0f;
    LCKV_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, bt, DTypeTraits<T>::cuda_type, k,
                                   a, DTypeTraits<T>::cuda_type, k, &beta, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  }

  cublasHandle_t handle() const { return handle_; }
  const void* activation_data() const { return act_.data(); }
  const void* packed_data() const { return packed_.data(); }

private:
  /// x as cuBLAS takes it next to W: rounded to W's type in the activation scratch (16-bit W), else x itself.
  template <StorageType W>
  const void* rounded(MatrixView<const float> x) {
    if constexpr (std::is_same_v<W, float>) {
      return x.data;
    } else {
      W* xc = activation<W>(x.size());
      convert(x.data, xc, x.size(), stream_);
      return xc;
    }
  }
  /// RMSNorm(x; norm, eps) as cuBLAS takes it next to W: written rounded into the
  /// activation scratch (16-bit W; no fp32 copy, no rounding pass), else into xn.
  template <StorageType W>
  const void* normed(MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn) {
    if constexpr (std::is_same_v<W, float>) {
      rmsnorm(x, norm, eps, xn, stream_);
      return xn.data;
    } else {
      W* a = activation<W>(x.size());
      rmsnorm_into(x, norm, eps, a, stream_);
      return a;
    }
  }
  /// y (+)= b W^T through cuBLAS; b: [rows, in] in W's type (see rounded(), normed()).
  template <StorageType W>
  void cublas_linear(const void* b, int rows, int in, const W* w, MatrixView<float> y, bool accumulate) {
    cublas_gemm(b, rows, in, w, y.data, CUDA_R_32F, y.cols, accumulate);
  }
  /// y (+)= b W^T through cuBLAS with fp32 accumulation, y [rows, out] of y_type (fp32, or W's
  /// 16-bit type); b: [rows, in] in W's type.
  template <StorageType W>
  void cublas_gemm(const void* b, int rows, int in, const W* w, void* y, cudaDataType y_type, int out, bool accumulate) {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    // Column-major view: y^T[out, rows] = W[in, out]^T * b^T[in, rows].
    LCKV_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, DTypeTraits<W>::cuda_type,
                                   in, b, DTypeTraits<W>::cuda_type, in, &beta, y, y_type, out, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  }
  /// One launch of the fused kernels (fuses(rows, in) holds): the GEMV up to gemv_rows() rows,
  /// else the skinny GEMM. x: [rows, in]; `up`: the GLU's Wu, or none.
  template <StorageType W, class Epi = PlainStore>
  void fused_launch(MatrixView<const float> x, LinearTargets<W> targets, const W* up, InputNorm<W> norm, Epi epi = {}) {
    if constexpr (!std::is_same_v<W, float>) {
      if (x.rows > gemv_rows<W>()) {
        skinny_gemm<W, float>(x.data, x.rows, x.cols, targets, false, up, nullptr, norm, skinny_, stream_, epi);
        return;
      }
    }
    gemv(x.data, x.rows, x.cols, targets, false, up, norm, num_sms_, stream_, epi);
  }

  cublasHandle_t handle_ = nullptr;
  int num_sms_ = 1;
  bool fusion_ = true;
  bool skinny_on_ = true;
  int gemv_rows_ = kGemvRows;
  int skinny_rows_ = kSkinnyRows;
  int skinny_fused_rows_ = kSkinnyFusedRows;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  DeviceBuffer<unsigned char> act_;
  DeviceBuffer<float> packed_;
  SkinnyOptions skinny_;
};

}  // namespace lckv::cuda
