// CUDA backend vs the CPU reference, on fresh random inputs (doctest).
// The GPU work is in harness.cu; this file holds the CPU side (Eigen).
// Without a CUDA device every test case is reported as skipped.

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "../golden/golden_support.hpp"
#include "harness.hpp"
#include "lckv/io/safetensors.hpp"
#include "lckv/lckv.hpp"

namespace {

using namespace lckv;
using cudatest::DType;
using cudatest::Layout;

bool gpu() {
  static const bool ok = [] {
    std::string why;
    const bool a = cudatest::gpu_available(&why);
    if (!a) std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    return a;
  }();
  return ok;
}

std::uint64_t fresh_seed() {
  static std::uint64_t s = 0x5eed;
  return ++s * 0x9E3779B97F4A7C15ull;
}
std::vector<float> randn(std::size_t n, Rng& rng, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}
std::vector<float> rounded(DType t, std::vector<float> v) {
  for (auto& x : v) x = cudatest::round_to(t, x);
  return v;
}

/// ||got - want|| / ||want||, with the first mismatch and NaNs reported.
double rel_error(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": size " << got.size() << " vs " << want.size());
  double num = 0, den = 0;
  long nan = 0, first_bad = -1;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nan++ == 0) first_bad = static_cast<long>(i);
      continue;
    }
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
    if (first_bad < 0 && std::abs(d) > 1e-3 * (1 + std::abs(want[i]))) first_bad = static_cast<long>(i);
  }
  const double e = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (nan || e > 1e-6)
    MESSAGE(std::string(what) << ": rel error " << e << ", non-finite " << nan
                 << (first_bad >= 0 ? ", first mismatch at " + std::to_string(first_bad) + ": got " +
                                          std::to_string(got[static_cast<std::size_t>(first_bad)]) + " want " +
                                          std::to_string(want[static_cast<std::size_t>(first_bad)])
                                    : std::string()));
  return nan ? INFINITY : e;
}

double tol(DType t) { return t == DType::F32 ? 1e-5 : 1e-2; }

/// Whether Gemm sends `rows` rows of `t` weights to the GEMV, which reads x in fp32 (the skinny
/// GEMM and cuBLAS take it rounded to the weight type): 1-8 rows of fp32 weights, one of 16-bit.
bool via_gemv(DType t, int rows) { return rows <= (t == DType::F32 ? 8 : 1); }

/// silu(x Wg^T) * (x Wu^T) on the CPU. x: [m, in]; wg, wu: [inter, in]; result [m, inter].
std::vector<float> swiglu_reference(const std::vector<float>& x, int m, int in, const std::vector<float>& wg,
                                    const std::vector<float>& wu, int inter) {
  std::vector<float> g(static_cast<std::size_t>(m) * inter), u(g.size());
  cpu::linear({x.data(), m, in}, wg.data(), {g.data(), m, inter});
  cpu::linear({x.data(), m, in}, wu.data(), {u.data(), m, inter});
  cpu::swiglu({g.data(), m, inter}, {u.data(), m, inter});
  return g;
}

/// Whether combination i of a long sweep runs: all of them, or every LCKV_TEST_STRIDE-th
/// (compute-sanitizer runs, where each launch is ~100x slower; run_device.sh sets it).
bool sampled(long i) {
  static const long stride = [] {
    const char* e = std::getenv("LCKV_TEST_STRIDE");
    return e ? std::max(1L, std::atol(e)) : 1L;
  }();
  return i % stride == 0;
}

}  // namespace

TEST_SUITE("cuda ops") {

TEST_CASE("error messages name the call and the error" * doctest::skip(!gpu())) {
  const std::string msg = cudatest::provoke_cuda_error();
  CHECK(msg.find("cudaMemcpy") != std::string::npos);
  CHECK(msg.find("failed") != std::string::npos);
  // The caught failure left nothing for a later launch check to report as its own.
  CHECK(cudatest::last_error_clear());
}

// Host code only: the byte count is checked before any CUDA call.
TEST_CASE("a device buffer whose byte count overflows is refused before allocating") {
  const std::string msg = cudatest::device_buffer_error(std::numeric_limits<std::size_t>::max() / 2);
  CHECK(msg.find("overflow a byte count") != std::string::npos);
}

TEST_CASE("embed, rmsnorm, linear vs CPU" * doctest::skip(!gpu())) {
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    const int vocab = 97, hidden = 320, rows = 7, out = 200;
    const auto table = rounded(t, randn(static_cast<std::size_t>(vocab) * hidden, rng));
    std::vector<int> tokens;
    for (int r = 0; r < rows; ++r) tokens.push_back(static_cast<int>(rng.below(vocab)));
    std::vector<float> want(static_cast<std::size_t>(rows) * hidden);
    cpu::embed(tokens.data(), table.data(), {want.data(), rows, hidden});
    CHECK(rel_error(cudatest::embed(tokens, table, hidden, t), want, "embed") <= tol(t));

    // rmsnorm widths: kept in registers (320), read one by one (322: not a multiple of 4), and
    // past the registers' 2048 (2052).
    for (int cols : {320, 322, 2052}) {
      CAPTURE(cols);
      const auto x = randn(static_cast<std::size_t>(rows) * cols, rng, 3.0f);
      const auto w = rounded(t, randn(static_cast<std::size_t>(cols), rng));
      std::vector<float> norm(x.size());
      cpu::rmsnorm({x.data(), rows, cols}, w.data(), 1e-5f, {norm.data(), rows, cols});
      CHECK(rel_error(cudatest::rmsnorm(x, rows, cols, w, 1e-5f, t), norm, "rmsnorm") <= tol(t));
    }

    const auto W = rounded(t, randn(static_cast<std::size_t>(out) * hidden, rng, 0.05f));
    for (int m : {1, 7, 40}) {  // <= 8 rows: the GEMV kernel (fp32 x); more: cuBLAS (x rounded to the weight type)
      CAPTURE(m);
      const auto xm = randn(static_cast<std::size_t>(m) * hidden, rng, 3.0f);
      const auto xr = m <= 8 ? xm : rounded(t, xm);
      std::vector<float> y(static_cast<std::size_t>(m) * out);
      cpu::linear({xr.data(), m, hidden}, W.data(), {y.data(), m, out});
      CHECK(rel_error(cudatest::linear(xm, m, hidden, W, out, t, nullptr), y, "linear") <= tol(t));
      const auto y0 = randn(y.size(), rng);
      std::vector<float> acc = y0;
      cpu::linear({xr.data(), m, hidden}, W.data(), {acc.data(), m, out}, true);
      CHECK(rel_error(cudatest::linear(xm, m, hidden, W, out, t, &y0), acc, "linear accumulate") <= tol(t));
    }
  }
}

TEST_CASE("linear: GEMV tilings (outputs per block 1 / 4 / 8, 1-8 rows) and Gemm::linear's routing vs CPU" *
          doctest::skip(!gpu())) {
  // Shapes chosen so that every tile width of kernels::gemv runs (the width follows `out` vs the SM
  // count) with `out` not a multiple of the tile and `in` not a multiple of 256 chunks; rows 1..8 cover
  // R = 1, 2, 4, 8, called directly. Through Gemm::linear the GEMV takes 1-8 rows of fp32 weights and
  // one row of 16-bit weights; the skinny GEMM and cuBLAS take the rest with x rounded to the
  // weight type (a skinny GEMM launch is not fed unrounded x).
  const int shapes[][2] = {{1000, 520}, {2006, 520}, {5003, 256}, {256, 2048}, {3, 64}, {32000 / 8 + 5, 136}};
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    for (const auto& sh : shapes) {
      const int out = sh[0], in = sh[1];
      CAPTURE(out);
      CAPTURE(in);
      const auto W = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      for (int m : {1, 2, 3, 5, 8, 13, 32}) {
        CAPTURE(m);
        const auto xm = randn(static_cast<std::size_t>(m) * in, rng, 3.0f);
        const auto xr = via_gemv(t, m) ? xm : rounded(t, xm);
        std::vector<float> y(static_cast<std::size_t>(m) * out);
        cpu::linear({xr.data(), m, in}, W.data(), {y.data(), m, out});
        CHECK(rel_error(cudatest::linear(xm, m, in, W, out, t, nullptr), y, "Gemm::linear") <= tol(t));
        if (m <= 8) {
          std::vector<float> exact(static_cast<std::size_t>(m) * out);
          cpu::linear({xm.data(), m, in}, W.data(), {exact.data(), m, out});
          CHECK(rel_error(cudatest::gemv_direct(xm, m, in, W, out, t, 0), exact, "gemv") <= tol(t));
        }
        if (m == 3 || m == 13) {
          const auto y0 = randn(y.size(), rng);
          std::vector<float> acc = y0;
          cpu::linear({xr.data(), m, in}, W.data(), {acc.data(), m, out}, true);
          CHECK(rel_error(cudatest::linear(xm, m, in, W, out, t, &y0), acc, "Gemm::linear accumulate") <= tol(t));
        }
        if (m == 3 || m == 13) {
          // Weights one element off 16-byte alignment: the GEMV and the skinny GEMM load 16 bytes
          // at a time, so Gemm::linear takes cuBLAS (x rounded to the weight type); the GEMV itself
          // refuses them with an error that names the operand.
          const auto xw = rounded(t, xm);
          std::vector<float> yw(y.size());
          cpu::linear({xw.data(), m, in}, W.data(), {yw.data(), m, out});
          CHECK(rel_error(cudatest::linear(xm, m, in, W, out, t, nullptr, 1), yw, "misaligned weights") <= tol(t));
          if (m == 3)
            CHECK_THROWS_WITH(cudatest::gemv_direct(xm, m, in, W, out, t, 1),
                              doctest::Contains("gemv: needs 16-byte aligned x, weights and norm weight (x ok, "
                                                "weights misaligned, norm weight ok)"));
        }
      }
    }
  }
}

TEST_CASE("gate_up_swiglu (fused GEMV with SwiGLU epilogue) vs CPU" * doctest::skip(!gpu())) {
  const int shapes[][2] = {{1000, 520}, {2006, 520}, {5003, 136}, {3, 64}};
  for (DType t : {DType::F32, DType::BF16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    for (const auto& sh : shapes) {
      const int out = sh[0], in = sh[1];
      CAPTURE(out);
      CAPTURE(in);
      const auto Wg = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      const auto Wu = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      for (int m : {1, 2, 5, 8, 13, 40}) {  // 2-13: the skinny GEMM (fp32: the GEMV, cuBLAS); 40: cuBLAS
        CAPTURE(m);
        const auto xm = randn(static_cast<std::size_t>(m) * in, rng, 3.0f);
        const auto xr = via_gemv(t, m) ? xm : rounded(t, xm);
        auto g = swiglu_reference(xr, m, in, Wg, Wu, out);
        CHECK(rel_error(cudatest::gate_up_swiglu(xm, m, in, Wg, Wu, out, t, true), g, "gate_up_swiglu") <= tol(t));
        if (m == 5)
          CHECK(rel_error(cudatest::gate_up_swiglu(xm, m, in, Wg, Wu, out, t, false), g, "gate_up_swiglu unfused") <=
                tol(t));
        // With the RMSNorm folded in (the decode MLP): reference = cpu::rmsnorm, then the same.
        const auto norm = rounded(t, randn(static_cast<std::size_t>(in), rng, 0.3f));
        std::vector<float> xn(xm.size());
        cpu::rmsnorm({xm.data(), m, in}, norm.data(), 1e-5f, {xn.data(), m, in});
        if (!via_gemv(t, m)) xn = rounded(t, xn);
        g = swiglu_reference(xn, m, in, Wg, Wu, out);
        for (bool fused : {true, false})
          CHECK(rel_error(cudatest::gate_up_swiglu(xm, m, in, Wg, Wu, out, t, fused, &norm), g,
                          fused ? "norm + gate_up_swiglu" : "norm + gate_up_swiglu unfused") <= tol(t));
        // Weights and norm one element off 16-byte alignment (a user's view): the fused kernels'
        // vector loads do not apply, and the unfused path gives the same result.
        if (m == 5 || m == 13)
          CHECK(rel_error(cudatest::gate_up_swiglu(xm, m, in, Wg, Wu, out, t, true, &norm, 1e-5f, /*w_offset=*/1), g,
                          "norm + gate_up_swiglu, misaligned weights") <= tol(t));
      }
    }
  }
}

TEST_CASE("norm_project (RMSNorm + 1-3 projections in one GEMV launch) vs CPU" * doctest::skip(!gpu())) {
  // q / k / v shapes of a GQA layer, plus awkward sizes; 1-8 rows fuse (the GEMV), and so do 9-32
  // rows of 16-bit weights (the skinny GEMM); else rmsnorm + cuBLAS.
  const std::vector<std::vector<int>> outs = {{512, 128, 128}, {1000}, {24, 3000}, {256, 64, 64}};
  const int ins[] = {256, 520, 136, 2048};
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    for (std::size_t shape = 0; shape < outs.size(); ++shape) {
      const int in = ins[shape];
      CAPTURE(in);
      std::vector<std::vector<float>> W;
      for (int out : outs[shape]) W.push_back(rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f)));
      const auto norm = rounded(t, randn(static_cast<std::size_t>(in), rng, 0.3f));
      for (int m : {1, 2, 3, 5, 8, 13, 17, 32, 33}) {
        CAPTURE(m);
        const auto x = randn(static_cast<std::size_t>(m) * in, rng, 2.0f);
        std::vector<float> xn(x.size());
        cpu::rmsnorm({x.data(), m, in}, norm.data(), 1e-5f, {xn.data(), m, in});
        if (!via_gemv(t, m)) xn = rounded(t, xn);  // the skinny GEMM and cuBLAS take x in the weight type
        std::vector<float> want;
        for (std::size_t s = 0; s < W.size(); ++s) {
          const int out = outs[shape][s];
          std::vector<float> y(static_cast<std::size_t>(m) * out);
          cpu::linear({xn.data(), m, in}, W[s].data(), {y.data(), m, out});
          want.insert(want.end(), y.begin(), y.end());
        }
        for (bool fused : {true, false})
          CHECK(rel_error(cudatest::norm_project(x, m, in, norm, 1e-5f, W, outs[shape], t, fused), want,
                          fused ? "norm_project" : "norm_project unfused") <= tol(t));
        if (m == 3 || m == 13)  // misaligned weights and norm: the unfused path
          CHECK(rel_error(cudatest::norm_project(x, m, in, norm, 1e-5f, W, outs[shape], t, true, /*w_offset=*/1), want,
                          "norm_project, misaligned weights") <= tol(t));
      }
    }
  }
}

TEST_CASE("rope_store_kv (RoPE of q and k, K/V into the cache in one launch) vs CPU" * doctest::skip(!gpu())) {
  for (DType t : {DType::F32, DType::BF16})
    for (int head_dim : {64, 128, 6})  // 6: one pair per access (an odd half head)
      for (float theta : {10000.0f, 500000.0f, 0.0f}) {  // 0: StreamingLLM stores unrotated keys
        const std::string dtype_name = cudatest::name(t);
        CAPTURE(dtype_name);
        CAPTURE(head_dim);
        CAPTURE(theta);
        Rng rng(fresh_seed());
        const int heads = 8, kv_heads = 2, max_len = 700;
        std::vector<RowInfo> rows;
        for (int seq = 0; seq < 3; ++seq)
          for (int i = 0; i < 4; ++i) rows.push_back({seq, static_cast<int>(rng.below(max_len))});
        rows.push_back({1, max_len - 1});
        const int qc = heads * head_dim, kc = kv_heads * head_dim;
        // Distinct positions per sequence: a repeated one would be written twice.
        std::sort(rows.begin(), rows.end(), [](RowInfo a, RowInfo b) { return a.seq != b.seq ? a.seq < b.seq : a.pos < b.pos; });
        rows.erase(std::unique(rows.begin(), rows.end(), [](RowInfo a, RowInfo b) { return a.seq == b.seq && a.pos == b.pos; }),
                   rows.end());
        const int m = static_cast<int>(rows.size());
        const auto q = randn(static_cast<std::size_t>(m) * qc, rng), k = randn(static_cast<std::size_t>(m) * kc, rng),
                   v = randn(static_cast<std::size_t>(m) * kc, rng);
        auto q_want = q, k_want = k;
        if (theta > 0.0f) {
          cpu::rope({q_want.data(), m, qc}, heads, head_dim, rows.data(), theta);
          cpu::rope({k_want.data(), m, kc}, kv_heads, head_dim, rows.data(), theta);
        }
        const auto got = cudatest::rope_store_kv(q, heads, k, v, kv_heads, head_dim, rows, theta, t, max_len);
        CHECK(rel_error(got.q, q_want, "rope_store_kv q") <= 1e-5);
        CHECK(rel_error(got.k, rounded(t, k_want), "rope_store_kv k") <= (t == DType::F32 ? 1e-5 : 1e-2));
        CHECK(rel_error(got.v, rounded(t, v), "rope_store_kv v") == 0.0);
      }
}

TEST_CASE("attention_input (RMSNorm, q/k/v, RoPE, K/V into the cache: one GEMV, or one packed GEMM) vs CPU" *
          doctest::skip(!gpu())) {
  // The fused GEMV (outputs in rotation pairs) takes 1 row of bf16 and 1-8 of fp32, the fused skinny
  // GEMM 3-32 rows of bf16 (tiles of whole heads, two 16-row groups at 17-32; head_dim 256 does not
  // fit one and falls back); fp32 at 13-32 rows and 33 rows rmsnorm + cuBLAS + rope_store_kv, as one GEMM over the
  // stacked weights when they are packed. Fusion on and off. q-only layers (no k / v projections)
  // store nothing. bf16 at 13 and 32 rows also runs the skinny GEMM at forced split-K cluster sizes;
  // there `in` spans 18 k-tiles, so 16 splits take two rounds of remote loads in its reduction.
  for (DType t : {DType::F32, DType::BF16})
    for (int head_dim : {64, 128, 256})
      for (float theta : {10000.0f, 0.0f})
        for (bool computes_kv : {true, false})
          for (int m : {1, 3, 8, 13, 17, 32, 33}) {
            const std::string dtype_name = cudatest::name(t);
            CAPTURE(dtype_name);
            CAPTURE(head_dim);
            CAPTURE(theta);
            CAPTURE(computes_kv);
            CAPTURE(m);
            Rng rng(fresh_seed());
            const bool forced_splits = t == DType::BF16 && (m == 13 || m == 32);
            const int heads = 4, kv_heads = 2, in = forced_splits ? 1096 : 264, max_len = 500, qc = heads * head_dim,
                      kc = kv_heads * head_dim;
            std::vector<RowInfo> rows;
            for (int r = 0; r < m; ++r)  // distinct positions per sequence (r / 3 < 64)
              rows.push_back({r % 3, static_cast<int>(rng.below(max_len / 2)) / 64 * 64 + r / 3});
            const auto x = randn(static_cast<std::size_t>(m) * in, rng, 2.0f);
            const auto norm = rounded(t, randn(static_cast<std::size_t>(in), rng, 0.3f));
            const auto wq = rounded(t, randn(static_cast<std::size_t>(qc) * in, rng, 0.05f));
            const auto wk = computes_kv ? rounded(t, randn(static_cast<std::size_t>(kc) * in, rng, 0.05f)) : std::vector<float>{};
            const auto wv = computes_kv ? rounded(t, randn(static_cast<std::size_t>(kc) * in, rng, 0.05f)) : std::vector<float>{};
            std::vector<float> xn(x.size());
            cpu::rmsnorm({x.data(), m, in}, norm.data(), 1e-5f, {xn.data(), m, in});
            if (!via_gemv(t, m)) xn = rounded(t, xn);  // the skinny GEMM and cuBLAS take x in the weight type
            auto project = [&](const std::vector<float>& w, int out) {
              std::vector<float> y(static_cast<std::size_t>(m) * out);
              cpu::linear({xn.data(), m, in}, w.data(), {y.data(), m, out});
              return y;
            };
            auto q_want = project(wq, qc);
            if (theta > 0.0f) cpu::rope({q_want.data(), m, qc}, heads, head_dim, rows.data(), theta);
            auto k_want = computes_kv ? project(wk, kc) : std::vector<float>{};
            if (computes_kv && theta > 0.0f) cpu::rope({k_want.data(), m, kc}, kv_heads, head_dim, rows.data(), theta);
            const auto v_want = computes_kv ? rounded(t, project(wv, kc)) : std::vector<float>{};
            k_want = rounded(t, k_want);
            auto check = [&](const cudatest::RopeStoreResult& got) {
              CHECK(rel_error(got.q, q_want, "attention_input q") <= tol(t));
              if (computes_kv) {
                CHECK(rel_error(got.k, k_want, "attention_input k") <= tol(t));
                CHECK(rel_error(got.v, v_want, "attention_input v") <= tol(t));
              } else {
                CHECK(std::all_of(got.k.begin(), got.k.end(), [](float e) { return std::isnan(e); }));
              }
            };
            for (int variant = 0; variant < 5; ++variant) {
              const bool fused = variant % 2 == 0, packed = variant == 2 || variant == 3;
              const int w_offset = variant == 4 ? 1 : 0;  // misaligned weights and norm: the unfused path
              if (w_offset != 0 && m != 3 && m != 13) continue;
              CAPTURE(fused);
              CAPTURE(packed);
              CAPTURE(w_offset);
              check(cudatest::attention_input(x, rows, in, norm, wq, wk, wv, heads, kv_heads, head_dim, theta, t, max_len,
                                              fused, packed, w_offset));
            }
            if (forced_splits)
              for (int splits : {1, 3, 16}) {
                CAPTURE(splits);
                check(cudatest::attention_input(x, rows, in, norm, wq, wk, wv, heads, kv_heads, head_dim, theta, t,
                                                max_len, /*fused=*/true, /*packed=*/true, 0, splits));
              }
          }
}

TEST_CASE("mlp (RMSNorm, gate/up, SwiGLU, down + residual; packed gate/up as one GEMM) vs CPU" * doctest::skip(!gpu())) {
  // The fused gate/up GEMV, then the down GEMV on fp32 input: 1 row of bf16, 1-8 of fp32. 5-32 rows
  // of bf16: the skinny gate / up / SwiGLU writing the down projection's input rounded, then down
  // through the skinny GEMM (16-row blocks up to 16 rows, 32-row blocks at 17 and 32); fp32 at 13-32
  // through cuBLAS. 33 rows: cuBLAS on inputs rounded to the weight type, gate / up as one GEMM when
  // packed; 300 rows: above the packed bound. Fusion on and off.
  const int shapes[][2] = {{264, 1000}, {136, 520}};
  for (DType t : {DType::F32, DType::BF16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    for (const auto& sh : shapes) {
      const int in = sh[0], inter = sh[1];
      CAPTURE(in);
      CAPTURE(inter);
      const auto norm = rounded(t, randn(static_cast<std::size_t>(in), rng, 0.3f));
      const auto wg = rounded(t, randn(static_cast<std::size_t>(inter) * in, rng, 0.05f));
      const auto wu = rounded(t, randn(static_cast<std::size_t>(inter) * in, rng, 0.05f));
      const auto wd = rounded(t, randn(static_cast<std::size_t>(in) * inter, rng, 0.05f));
      for (int m : {1, 5, 8, 13, 16, 17, 32, 33, 300}) {
        CAPTURE(m);
        const auto x = randn(static_cast<std::size_t>(m) * in, rng, 1.0f);
        const bool rounds = !via_gemv(t, m);  // the skinny GEMM and cuBLAS take inputs in the weight type
        std::vector<float> xn(x.size());
        cpu::rmsnorm({x.data(), m, in}, norm.data(), 1e-5f, {xn.data(), m, in});
        if (rounds) xn = rounded(t, xn);
        auto g = swiglu_reference(xn, m, in, wg, wu, inter);
        if (rounds) g = rounded(t, g);
        std::vector<float> want(x.size());  // the MLP's part of x: compared without the residual, which would hide it
        cpu::linear({g.data(), m, inter}, wd.data(), {want.data(), m, in});
        for (int variant = 0; variant < 5; ++variant) {
          const bool fused = variant % 2 == 0, packed = variant == 2 || variant == 3;
          const int w_offset = variant == 4 ? 1 : 0;  // misaligned weights and norm: the unfused path
          if (w_offset != 0 && m != 5 && m != 13) continue;
          CAPTURE(fused);
          CAPTURE(packed);
          CAPTURE(w_offset);
          auto got = cudatest::mlp(x, m, in, norm, wg, wu, wd, inter, t, fused, packed, w_offset);
          for (std::size_t i = 0; i < got.size(); ++i) got[i] -= x[i];
          CHECK(rel_error(got, want, "mlp") <= tol(t));
        }
        // The skinny GEMMs at forced split-K cluster sizes (down: the residual staged per share of rows).
        if (t == DType::BF16 && (m == 13 || m == 32))
          for (int splits : {1, 3, 16}) {
            CAPTURE(splits);
            auto got = cudatest::mlp(x, m, in, norm, wg, wu, wd, inter, t, /*fused=*/true, /*packed=*/true, 0, splits);
            for (std::size_t i = 0; i < got.size(); ++i) got[i] -= x[i];
            CHECK(rel_error(got, want, "mlp, forced splits") <= tol(t));
          }
      }
    }
  }
}

// Host code only: runs in CI without a device.
TEST_CASE("a step whose first run throws runs eagerly again (its allocations may not have happened)") {
  CHECK(cudatest::graph_eager_runs_after_a_throw() == 2);
}

// Host code only. TinyLlama's launches at 32 rows (32-row blocks) on an H100's 132 SMs: (tiles,
// k-tiles) q / k / v (20, 32), o_proj (16, 32), gate / up (88, 32), down (16, 88), lm_head (250, 32).
TEST_CASE("skinny launch plan: split-K fills the SMs (at most 8; forced sizes clamped); 16- or 32-row blocks") {
  const int sms = 132;
  CHECK(cudatest::skinny_splits(20, 32, sms, 0) == 7);  // 140 blocks (6, i.e. 120, measured slower)
  CHECK(cudatest::skinny_splits(16, 32, sms, 0) == 8);  // 9 capped at 8
  CHECK(cudatest::skinny_splits(16, 88, sms, 0) == 8);
  CHECK(cudatest::skinny_splits(88, 32, sms, 0) == 2);
  CHECK(cudatest::skinny_splits(250, 32, sms, 0) == 1);
  CHECK(cudatest::skinny_splits(20, 3, sms, 0) == 3);   // each split keeps a k-tile
  CHECK(cudatest::skinny_splits(20, 32, sms, 17) == 16);  // forced: at most the largest cluster
  CHECK(cudatest::skinny_splits(20, 2, sms, 5) == 2);
  CHECK(cudatest::skinny_splits(0, 32, sms, 0) == 1);  // no tiles (y without columns): nothing to split
  for (int blocks = 1; blocks <= 300; ++blocks) {
    CAPTURE(blocks);
    const int s = cudatest::skinny_splits(blocks, 32, sms, 0);
    CHECK(s >= 1);
    CHECK(s <= 8);
    CHECK((s == 8 || blocks * s >= sms));         // every SM gets a block unless capped
    CHECK((s == 1 || blocks * (s - 1) < sms));    // and no split more than that takes
  }
  // Rows per block: 16 up to 16 rows, then 32; forced 16 or 32; anything else is an error.
  CHECK(cudatest::skinny_group_rows(9, 0) == 16);
  CHECK(cudatest::skinny_group_rows(16, 0) == 16);
  CHECK(cudatest::skinny_group_rows(17, 0) == 32);
  CHECK(cudatest::skinny_group_rows(64, 0) == 32);
  CHECK(cudatest::skinny_group_rows(9, 32) == 32);
  CHECK(cudatest::skinny_group_rows(64, 16) == 16);
  CHECK_THROWS_WITH(cudatest::skinny_group_rows(9, 8), doctest::Contains("group_rows must be 0"));
  CHECK_THROWS_WITH(cudatest::skinny_group_rows(9, 8), doctest::Contains("got 8"));
}

TEST_CASE("skinny tensor-core GEMM (1-64 rows, 16- and 32-row blocks, cluster split-K, GLU) vs CPU" *
          doctest::skip(!gpu())) {
  // TinyLlama's shapes ({out, in}: q, k, gate, down) and awkward ones: `out` not a multiple of the
  // 128-row tile (or below 8), `in` not a multiple of the 64-wide k-tile, few tiles (split-K across
  // a cluster) and many; rows cover every bucket of 8-row groups and their edges, with the
  // launcher's rows per block and the other one (16 up to 16 rows, else 32). Forced cluster sizes
  // give some ranks no rows to reduce (13 rows over 8 or 16 blocks) and uneven k shares.
  const int shapes[][2] = {{2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}, {1000, 520},
                           {2006, 136},  {4005, 64},  {3, 5632},    {130, 520}};
  for (DType t : {DType::BF16, DType::F16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    Rng rng(fresh_seed());
    for (const auto& sh : shapes) {
      const int out = sh[0], in = sh[1];
      CAPTURE(out);
      CAPTURE(in);
      const auto W = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      for (int m : {1, 2, 5, 9, 13, 16, 17, 32, 33, 64}) {
        CAPTURE(m);
        const auto xm = randn(static_cast<std::size_t>(m) * in, rng, 3.0f);
        const auto xr = rounded(t, xm);  // the kernel rounds x to the weight type
        std::vector<float> y(static_cast<std::size_t>(m) * out);
        cpu::linear({xr.data(), m, in}, W.data(), {y.data(), m, out});
        CHECK(rel_error(cudatest::linear_tc(xm, m, in, W, out, t, nullptr), y, "skinny") <= tol(t));
        const int other_group_rows = m <= 16 ? 32 : 16;
        CHECK(rel_error(cudatest::linear_tc(xm, m, in, W, out, t, nullptr, 0, other_group_rows), y,
                        "skinny, the other rows per block") <= tol(t));
        if (m == 13 || m == 64)
          for (int splits : {1, 3, 8, 16})
            for (int group_rows : {16, 32}) {
              CAPTURE(splits);
              CAPTURE(group_rows);
              CHECK(rel_error(cudatest::linear_tc(xm, m, in, W, out, t, nullptr, splits, group_rows), y,
                              "skinny, forced splits") <= tol(t));
            }
        if (m == 2 || m == 13 || m == 64) {
          const auto y0 = randn(y.size(), rng);
          std::vector<float> acc = y0;
          cpu::linear({xr.data(), m, in}, W.data(), {acc.data(), m, out}, true);
          CHECK(rel_error(cudatest::linear_tc(xm, m, in, W, out, t, &y0), acc, "skinny accumulate") <= tol(t));
          // The residual is staged per block share of the rows: every share size, and no split.
          for (int splits : {1, 3, 8, 16})
            for (int group_rows : {16, 32}) {
              CAPTURE(splits);
              CAPTURE(group_rows);
              CHECK(rel_error(cudatest::linear_tc(xm, m, in, W, out, t, &y0, splits, group_rows), acc,
                              "skinny accumulate, forced splits") <= tol(t));
            }
        }
      }
    }
    {  // Bad shapes get an error that names them, not a launch.
      const auto W = rounded(t, randn(static_cast<std::size_t>(64) * 64, rng, 0.05f));
      const auto x65 = randn(static_cast<std::size_t>(65) * 64, rng);
      CHECK_THROWS_WITH(cudatest::linear_tc(x65, 65, 64, W, 64, t, nullptr), doctest::Contains("rows 65"));
      const auto W12 = rounded(t, randn(static_cast<std::size_t>(64) * 12, rng, 0.05f));
      const auto x12 = randn(static_cast<std::size_t>(9) * 12, rng);
      CHECK_THROWS_WITH(cudatest::linear_tc(x12, 9, 12, W12, 64, t, nullptr), doctest::Contains("in 12"));
      // y without columns: nothing to compute, and no launch (its split plan had divided by zero).
      CHECK(cudatest::linear_tc(randn(static_cast<std::size_t>(9) * 64, rng), 9, 64, {}, 0, t, nullptr).empty());
    }
    const int glu_shapes[][2] = {{5632, 2048}, {1000, 520}, {4005, 136}, {3, 64}};
    for (const auto& sh : glu_shapes) {
      const int out = sh[0], in = sh[1];
      CAPTURE(out);
      CAPTURE(in);
      const auto Wg = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      const auto Wu = rounded(t, randn(static_cast<std::size_t>(out) * in, rng, 0.05f));
      for (int m : {2, 9, 17, 32, 64}) {
        CAPTURE(m);
        const auto xm = randn(static_cast<std::size_t>(m) * in, rng, 3.0f);
        const auto want = swiglu_reference(rounded(t, xm), m, in, Wg, Wu, out);
        for (int splits : {0, 1, 5})
          for (int group_rows : {16, 32}) {
            CAPTURE(splits);
            CAPTURE(group_rows);
            CHECK(rel_error(cudatest::gate_up_swiglu_tc(xm, m, in, Wg, Wu, out, t, splits, group_rows), want,
                            "skinny gate_up_swiglu") <= tol(t));
          }
      }
    }
  }
}

TEST_CASE("rope, swiglu, copy, convert, gather_rows vs CPU" * doctest::skip(!gpu())) {
  Rng rng(fresh_seed());
  const int rows = 9;
  std::vector<RowInfo> info;
  for (int r = 0; r < rows; ++r) info.push_back({0, static_cast<int>(rng.below(600))});
  // One block of heads; three blocks, the last one partial, with columns past the heads left alone;
  // one pair per access (an odd half head, an odd row stride).
  for (const auto [heads, head_dim, extra] :
       {std::array{4, 64, 0}, std::array{40, 64, 48}, std::array{3, 128, 0}, std::array{5, 6, 1}, std::array{3, 64, 1}}) {
    CAPTURE(heads);
    CAPTURE(head_dim);
    const int cols = heads * head_dim + extra;
    auto x = randn(static_cast<std::size_t>(rows) * cols, rng);
    auto want = x;
    cpu::rope({want.data(), rows, cols}, heads, head_dim, info.data(), 10000.0f);
    CHECK(rel_error(cudatest::rope(x, cols, heads, head_dim, info, 10000.0f), want, "rope") <= 1e-5);
  }

  for (const int n : {1000, 1002}) {  // four columns per thread, and the scalar path
    CAPTURE(n);
    const auto gate = randn(static_cast<std::size_t>(n), rng, 4.0f), up = randn(static_cast<std::size_t>(n), rng);
    auto g = gate;
    cpu::swiglu({g.data(), 1, n}, {up.data(), 1, n});
    CHECK(rel_error(cudatest::swiglu(gate, up), g, "swiglu") <= 1e-5);
    CHECK(rel_error(cudatest::copy(gate), gate, "copy") == 0.0);
  }
  // Rounding to bf16: the 4-wide path and its scalar tail (1003 elements), and unaligned pointers.
  const auto wide = randn(1003, rng, 3.0f);
  for (int offset : {0, 1}) {
    CAPTURE(offset);
    std::vector<float> rounded;
    for (std::size_t i = static_cast<std::size_t>(offset); i < wide.size(); ++i)
      rounded.push_back(bf16_to_f32(f32_to_bf16(wide[i])));  // the checkpoint writer's rounding
    CHECK(rel_error(cudatest::convert_bf16(wide, offset), rounded, "convert") == 0.0);
  }

  const int cols = 96;
  const auto x = randn(static_cast<std::size_t>(rows) * cols, rng);
  std::vector<int> index{3, 0, 8, 8, 5};
  std::vector<float> gathered(index.size() * static_cast<std::size_t>(cols));
  cpu::gather_rows({x.data(), rows, cols}, index.data(), {gathered.data(), static_cast<int>(index.size()), cols});
  CHECK(rel_error(cudatest::gather_rows(x, cols, index), gathered, "gather_rows") == 0.0);
}

TEST_CASE("store_kv and zero_kv vs CPU, contiguous and paged" * doctest::skip(!gpu())) {
  for (Layout layout : {Layout::Contiguous, Layout::Paged})
    for (DType t : {DType::F32, DType::BF16}) {
      const std::string layout_name = cudatest::name(layout);
      CAPTURE(layout_name);
      const std::string dtype_name = cudatest::name(t);
      CAPTURE(dtype_name);
      Rng rng(fresh_seed());
      cudatest::AttentionCase c;
      c.layout = layout;
      c.kv = t;
      c.kv_heads = 2;
      c.head_dim = 64;
      c.max_len = 40;
      c.page_size = 8;
      c.length = {13, 40, 1};
      const std::size_t w = static_cast<std::size_t>(c.kv_heads) * c.head_dim;
      for (int len : c.length) {
        c.k.push_back(randn(static_cast<std::size_t>(len) * w, rng));
        c.v.push_back(randn(static_cast<std::size_t>(len) * w, rng));
      }
      std::vector<RowInfo> zero{{1, 3}, {0, 12}, {1, 39}};
      const auto got = cudatest::store_then_zero(c, zero);
      std::vector<float> want;
      for (int part = 0; part < 2; ++part)
        for (std::size_t s = 0; s < c.length.size(); ++s)
          for (int p = 0; p < c.length[s]; ++p) {
            const bool z = std::any_of(zero.begin(), zero.end(), [&](RowInfo r) { return r.seq == static_cast<int>(s) && r.pos == p; });
            const auto& src = part == 0 ? c.k[s] : c.v[s];
            for (std::size_t i = 0; i < w; ++i) want.push_back(z ? 0.0f : cudatest::round_to(t, src[p * w + i]));
          }
      CHECK(rel_error(got, want, "store_kv/zero_kv") == 0.0);
    }
}

/// The CPU's attention for the case, on its K/V rounded to the case's type.
std::vector<float> cpu_attention(const cudatest::AttentionCase& c) {
  const int n = static_cast<int>(c.rows.size()), qw = c.heads * c.head_dim, w = c.kv_heads * c.head_dim;
  ContiguousCache<float> ref(CacheGeometry{1, c.kv_heads, c.head_dim, 4}, static_cast<int>(c.length.size()), c.max_len);
  for (std::size_t s = 0; s < c.length.size(); ++s) {
    ref.open();
    std::vector<RowInfo> rows;
    for (int p = 0; p < c.length[s]; ++p) rows.push_back({static_cast<int>(s), p});
    const auto k = rounded(c.kv, c.k[s]), v = rounded(c.kv, c.v[s]);
    cpu::store_kv({k.data(), c.length[s], w}, {v.data(), c.length[s], w}, ref.slot(0), rows.data());
  }
  std::vector<float> want(c.q.size());
  cpu::attention({c.q.data(), n, qw}, ref.slot(0), c.rows.data(), c.mask, c.heads, {want.data(), n, qw});
  return want;
}

// Host code only: runs in CI without a device. The expected counts are the fastest ones of the
// forced-split sweep on an H100 (docs/benchmarks-cuda.md) for the TinyLlama head layout.
TEST_CASE("attention split plan: decode fills the SMs, or half of them for long rows (at most one split per 512 keys, "
          "16 in all); prefill tiles") {
  const int sms = 132, heads = 32, kv_heads = 4;
  CHECK(cudatest::planned_splits(1, heads, kv_heads, false, sms, 2048) == 4);    // 1K keys, 1 row
  CHECK(cudatest::planned_splits(1, heads, kv_heads, false, sms, 32768) == 16);  // 16K keys, 1 row
  CHECK(cudatest::planned_splits(8, heads, kv_heads, false, sms, 2048) == 4);    // 128 blocks: one wave
  // Long rows: blocks alone on half the SMs (64 blocks), where so few (row, kv head) pairs allow it.
  CHECK(cudatest::planned_splits(2, heads, kv_heads, false, sms, 32768) == 8);
  CHECK(cudatest::planned_splits(8, heads, kv_heads, false, sms, 8192) == 2);
  CHECK(cudatest::planned_splits(8, heads, kv_heads, false, sms, 32768) == 2);
  CHECK(cudatest::planned_splits(16, heads, kv_heads, false, sms, 32768) == 1);
  CHECK(cudatest::planned_splits(8, heads, kv_heads, false, sms, 4096) == 8);    // below kDecodeLongKeys: both slots
  CHECK(cudatest::planned_splits(32, heads, kv_heads, false, sms, 32768) == 2);  // 128 pairs: 256 blocks, one wave
  CHECK(cudatest::planned_splits(256, heads, kv_heads, false, sms, 2048) == 1);
  CHECK(cudatest::planned_splits(1, heads, kv_heads, false, sms, 256) == 1);     // short rows: no split
  CHECK(cudatest::planned_splits(1024, heads, kv_heads, true, sms, 2048) == 2);  // prefill tiles: unchanged
  // Long rows at 4+ splits with 2^17 keys or more over the rows merge through memory, not as clusters.
  CHECK(cudatest::planned_merge_through_memory(4, 32768));       // 4 splits, 4 x 32K keys
  CHECK(cudatest::planned_merge_through_memory(2, 65536));       // 8 splits
  CHECK_FALSE(cudatest::planned_merge_through_memory(2, 32768)); // 2 x 32K keys: the cluster
  CHECK_FALSE(cudatest::planned_merge_through_memory(1, 65536)); // batch 1: the cluster
  CHECK_FALSE(cudatest::planned_merge_through_memory(8, 65536)); // 2 splits: the cluster
  CHECK_FALSE(cudatest::planned_merge_through_memory(4, 4096));  // short rows fill both block slots
  // No rows: the default plan (nothing is launched). Head counts that do not form GQA groups are
  // an error naming both, not a division by zero.
  CHECK(cudatest::planned_splits(0, heads, kv_heads, false, sms, 2048) == 1);
  CHECK(cudatest::planned_splits(0, heads, kv_heads, true, sms, 2048) == 1);
  CHECK_THROWS_WITH(cudatest::planned_splits(10, 4, 8, true, sms, 2048),
                    doctest::Contains("heads = 4 is not a positive multiple of kv_heads = 8"));
  CHECK_THROWS_WITH(cudatest::planned_splits(1, 4, 0, false, sms, 2048), doctest::Contains("kv_heads = 0"));
  // A workspace smaller than the plan needs is an error naming both sizes, not an overrun.
  const std::string err = cudatest::attention_without_workspace(2, 4);
  CHECK(err.find("the workspace holds 0 floats") != std::string::npos);
  CHECK(err.find("expected for 2 rows at 4 splits") != std::string::npos);
  // Keys below a row's position are settled only with one row per sequence: a prefill run
  // writes its own earlier positions in the kernels just before the attention.
  CHECK(cudatest::planned_early_copies(8, false));
  CHECK_FALSE(cudatest::planned_early_copies(8, true));
  CHECK_FALSE(cudatest::planned_early_copies(1024, true));
  for (int rows : {1, 2, 3, 7, 8, 31, 64, 300})
    for (int keys = 64; keys <= 65536; keys *= 2) {
      const int s = cudatest::planned_splits(rows, heads, kv_heads, false, sms, keys);
      CAPTURE(rows);
      CAPTURE(keys);
      CHECK(s >= 1);
      CHECK(s <= std::max(1, std::min(16, keys / 512)));
    }
  // Prefill tiles (8 rows x 8 heads per block): CUDA-core tiles split keys up to four blocks per SM,
  // tensor-core tiles only up to one (their split merge costs as much as the attention).
  CHECK(cudatest::planned_splits(1024, heads, kv_heads, true, sms, 1 << 30, false) == 2);
  CHECK(cudatest::planned_splits(1024, heads, kv_heads, true, sms, 1 << 30, true) == 1);
  CHECK(cudatest::planned_splits(64, heads, kv_heads, true, sms, 1 << 30, true) == 5);
}

TEST_CASE("attention vs CPU: masks x layouts x dtypes x tilings" * doctest::skip(!gpu())) {
  // The workspace's partials start after its 2 x 256 counts: one reserved below that holds none
  // (not a size that wraps around), and one above it holds the rest.
  CHECK(cudatest::workspace_partial_floats(10) == 0);
  CHECK(cudatest::workspace_partial_floats(512 + 7) == 7);
  // The last two: StreamingLLM, q and K unrotated, rotated on read by cache position.
  const std::vector<MaskSpec> masks{{false, 0, 0}, {true, 0, 0},     {false, 7, 0},          {true, 7, 0},
                                    {false, 9, 3}, {true, 9, 3},     {false, 9, 3, 10000.0f}, {true, 9, 3, 10000.0f}};
  long combination = 0;
  for (Layout layout : {Layout::Contiguous, Layout::Paged})
    for (DType t : {DType::F32, DType::BF16, DType::F16})
      for (const MaskSpec& mask : masks)
        // 0: decode rows; 1: prefill tiles (G 4); 2: decode with forced splits; 3: prefill tiles in
        // TinyLlama's layout (G 8, d 64) with forced splits; 4: prefill tiles without GQA (G 1, d 128
        // contiguous); 5: 3 unsplit, the 16-bit output (o_proj's input) instead of fp32 (not
        // StreamingLLM, whose rotate-on-read kernel writes fp32). 16-bit KV
        // takes the tensor-core prefill kernel in 1, 3, 4 and 5.
        for (int mode = 0; mode < 6; ++mode) {
          if (!sampled(combination++)) continue;
          const bool prefill = mode == 1 || mode >= 3;
          if (layout == Layout::Paged && t == DType::F16) continue;
          const std::string layout_name = cudatest::name(layout);
          CAPTURE(layout_name);
          const std::string dtype_name = cudatest::name(t);
          CAPTURE(dtype_name);
          CAPTURE(mask.name());
          CAPTURE(mask.rope_theta_on_read);
          CAPTURE(mode);
          Rng rng(fresh_seed());
          cudatest::AttentionCase c;
          c.layout = layout;
          c.kv = t;
          c.heads = mode == 1 ? 8 : (mode == 4 ? 2 : 16);
          c.out16 = mode == 5 && t != DType::F32 && mask.rope_theta_on_read == 0.0f;  // StreamingLLM: fp32 only
          c.kv_heads = 2;
          c.head_dim = ((mode == 2 || mode == 4) && layout == Layout::Contiguous) ? 128 : 64;
          c.max_len = 200;
          c.page_size = 16;
          c.length = {200, 1 + static_cast<int>(rng.below(150)), 70};
          c.prefill_tiles = prefill;
          c.splits = mode == 2 ? 5 : (mode == 3 ? 3 : (mode == 5 ? 1 : 0));
          c.mask = mask;
          const std::size_t w = static_cast<std::size_t>(c.kv_heads) * c.head_dim;
          for (int len : c.length) {
            c.k.push_back(randn(static_cast<std::size_t>(len) * w, rng));
            c.v.push_back(randn(static_cast<std::size_t>(len) * w, rng));
          }
          if (prefill) {  // runs of one sequence, including its first positions; tiles that mix sequences
            for (int p = 0; p < c.length[1]; ++p) c.rows.push_back({1, p});
            for (int p = 100; p < 200; ++p) c.rows.push_back({0, p});
            c.rows.push_back({2, 0});
          } else {
            for (std::size_t s = 0; s < c.length.size(); ++s) c.rows.push_back({static_cast<int>(s), c.length[s] - 1});
            c.rows.push_back({0, 0});
          }
          c.q = randn(c.rows.size() * static_cast<std::size_t>(c.heads) * c.head_dim, rng);
          CHECK(rel_error(cudatest::attention(c), cpu_attention(c), "attention") <= tol(t));
        }
}

TEST_CASE("decode on tensor cores vs CPU: long rows, head layouts, forced splits" * doctest::skip(!gpu())) {
  // Decode on tensor cores: long contexts (many splits), the Llama-7B (G 1, d 128) and
  // TinyLlama (G 8, d 64) head layouts, a group whose slices of the merge cut heads unevenly
  // (G 3), a group that fills 12 of the MMA's 16 rows (G 12) and the largest merge buffer (G 16,
  // d 128: two copy stages where three would not fit twice per SM beside it), forced splits (16:
  // the largest cluster; 17 is run as 16 on two rows: 64 blocks at one per SM, merging through
  // the workspace, as the plan's 6 splits and the forced 3 do on 5 rows), contiguous slots (whole
  // tiles take the linear-address path) and paged; cudatest::attention runs each twice, so the
  // counts a launch leaves behind must be zero.
  const std::vector<MaskSpec> long_masks{{false, 0, 0}, {true, 0, 0}, {false, 700, 0}, {true, 7, 0},
                                         {false, 1500, 5}, {true, 1500, 5}};
  const int shapes[6][2] = {{128, 1}, {128, 4}, {64, 8}, {64, 3}, {64, 12}, {128, 16}};  // head_dim, group
  long combination = 0;
  for (Layout layout : {Layout::Contiguous, Layout::Paged})
    for (DType t : {DType::BF16, DType::F16})
      for (const MaskSpec& mask : long_masks)
        for (const auto& shape : shapes)
          for (int splits : {0, 1, 3, 16, 17}) {
            if (!sampled(combination++)) continue;
            CAPTURE(cudatest::name(layout));
            CAPTURE(cudatest::name(t));
            CAPTURE(mask.name());
            CAPTURE(shape[0]);
            CAPTURE(shape[1]);
            CAPTURE(splits);
            Rng rng(fresh_seed());
            cudatest::AttentionCase c;
            c.layout = layout;
            c.kv = t;
            c.kv_heads = 2;
            c.heads = shape[1] * c.kv_heads;
            c.head_dim = shape[0];
            c.max_len = 3000;
            c.page_size = 16;
            c.length = {3000, 700, 1 + static_cast<int>(rng.below(150))};
            c.splits = splits;
            c.mask = mask;
            const std::size_t w = static_cast<std::size_t>(c.kv_heads) * c.head_dim;
            for (int len : c.length) {
              c.k.push_back(randn(static_cast<std::size_t>(len) * w, rng));
              c.v.push_back(randn(static_cast<std::size_t>(len) * w, rng));
            }
            for (std::size_t s = 0; s < c.length.size(); ++s) c.rows.push_back({static_cast<int>(s), c.length[s] - 1});
            c.rows.push_back({0, 0});
            c.rows.push_back({0, 1500});
            // 17 (run as 16) splits on the two long rows alone: 64 blocks at one block per SM,
            // merging through memory; 16 splits of all 5 rows run two blocks per SM as clusters.
            if (splits == 17) c.rows.resize(2);
            // One split and 30 more rows: a grid (70 blocks) past the deep pipeline's, which for
            // G 16 / d 128 runs two stages without a cluster.
            if (splits == 1)
              for (int i = 0; i < 30; ++i) {
                const int seq = i % 3;
                c.rows.push_back({seq, static_cast<int>(rng.below(static_cast<std::uint64_t>(c.length[seq])))});
              }
            c.q = randn(c.rows.size() * static_cast<std::size_t>(c.heads) * c.head_dim, rng);
            const auto got = cudatest::attention(c);
            CHECK(rel_error(got, cpu_attention(c), "attention") <= tol(t));
            // The 16-bit output for o_proj: the same values rounded in the kernel.
            c.out16 = true;
            CHECK(rel_error(cudatest::attention(c), rounded(t, got), "attention, 16-bit output") == 0.0);
          }
}

/// Tokens of `sample(u)` for `trials` fresh uniforms per row, plus u = 0 and u = 1 - 2^-20, against
/// sample_token on the same row with its own parameters row_params[r]. (Closer to 1 the draw lands in
/// the far tail, where the histogram path's fixed-point weights may round it onto a neighbour:
/// docs/cuda.md, limits.)
template <class Sample>
void check_sampling(const std::vector<float>& logits, int rows, int vocab, Rng& rng, int trials, Sample&& sample,
                    const std::vector<SamplingParams>& row_params) {
  REQUIRE(row_params.size() == static_cast<std::size_t>(rows));
  for (int trial = 0; trial < trials + 2; ++trial) {
    CAPTURE(trial);
    std::vector<double> u;
    for (int r = 0; r < rows; ++r) u.push_back(trial == trials ? 0.0 : trial == trials + 1 ? 1.0 - 0x1p-20 : rng.uniform());
    const auto got = sample(u);
    for (int r = 0; r < rows; ++r) {
      CAPTURE(r);
      const int want = sample_token(std::span<const float>(logits.data() + static_cast<std::size_t>(r) * vocab, vocab),
                                    row_params[static_cast<std::size_t>(r)], u[static_cast<std::size_t>(r)]);
      CHECK(got[static_cast<std::size_t>(r)] == want);
    }
  }
}

TEST_CASE("sampling: same token as sample_token for the same u" * doctest::skip(!gpu())) {
  Rng rng(fresh_seed());
  const int rows = 6, vocab = 3000;
  auto logits = randn(static_cast<std::size_t>(rows) * vocab, rng, 3.0f);
  for (int i = 0; i < 50; ++i) logits[static_cast<std::size_t>(rng.below(logits.size()))] = 7.0f;  // ties
  const std::vector<SamplingParams> params{{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.7f, 40, 1.0f},
                                           {1.3f, 0, 0.9f}, {0.8f, 100, 0.5f}, {2.0f, 1, 1.0f}};
  // Both paths: the histogram (no row of these needs the sort) and the full sort of every row.
  for (const bool sort_rows : {false, true}) {
    CAPTURE(sort_rows);
    for (const auto& p : params) {
      CAPTURE(p.temperature);
      CAPTURE(p.top_k);
      CAPTURE(p.top_p);
      int sorted = -1;
      check_sampling(
          logits, rows, vocab, rng, 5,
          [&](const std::vector<double>& u) { return cudatest::sample(logits, rows, vocab, p, u, sort_rows, &sorted); },
          std::vector<SamplingParams>(static_cast<std::size_t>(rows), p));
      CHECK(sorted == (sort_rows && !p.greedy() ? rows : 0));
    }
    // One call with row r's own parameters params[r] (greedy rows among sampled ones, as a batch
    // of mixed requests).
    check_sampling(
        logits, rows, vocab, rng, 5,
        [&](const std::vector<double>& u) { return cudatest::sample(logits, rows, vocab, params, u, sort_rows); },
        params);
  }
}

TEST_CASE("sampling: a language model's vocabulary through the histogram; crowded rows through the sort" *
          doctest::skip(!gpu())) {
  Rng rng(fresh_seed());
  SUBCASE("32000 tokens, peaked rows: no row needs the sort") {
    const int rows = 8, vocab = 32000;
    auto logits = randn(static_cast<std::size_t>(rows) * vocab, rng, 2.5f);
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < 20; ++i)  // a few clear favourites per row, as a trained model gives
        logits[static_cast<std::size_t>(r) * vocab + rng.below(vocab)] = 8.0f + 4.0f * static_cast<float>(rng.uniform());
    // Row 7: the 40th token sits in a run of 60 equal logits, so the top-k cut splits the tie by index.
    for (int i = 0; i < 60; ++i) logits[7ull * vocab + 100 + 7 * i] = 7.5f;
    const std::vector<SamplingParams> params{{1.0f, 0, 1.0f},   {1.5f, 0, 1.0f},   {0.7f, 50, 1.0f}, {0.8f, 0, 0.9f},
                                             {1.0f, 200, 0.95f}, {0.05f, 0, 1.0f}, {0.6f, 0, 0.5f},  {1.0f, 40, 1.0f}};
    int sorted = -1;
    check_sampling(
        logits, rows, vocab, rng, 20,
        [&](const std::vector<double>& u) { return cudatest::sample(logits, rows, vocab, params, u, false, &sorted); },
        params);
    CHECK(sorted == 0);
  }
  SUBCASE("rows whose deciding bucket holds more than the sorted list takes") {
    const int rows = 4, vocab = 3000;
    auto logits = randn(static_cast<std::size_t>(rows) * vocab, rng, 3.0f);
    std::fill_n(logits.begin(), vocab, 1.5f);  // row 0: flat
    for (int i = 0; i < 2500; ++i) logits[1ull * vocab + i] = 20.0f;  // row 1: 2500 tied at the top
    // Row 2: a temperature so high that every token lands in the first bucket; row 3 resolves.
    const std::vector<SamplingParams> params{{1.0f, 0, 0.9f}, {0.7f, 0, 1.0f}, {1000.0f, 0, 0.9f}, {0.9f, 30, 0.8f}};
    int sorted = -1;
    check_sampling(
        logits, rows, vocab, rng, 10,
        [&](const std::vector<double>& u) { return cudatest::sample(logits, rows, vocab, params, u, false, &sorted); },
        params);
    CHECK(sorted == 3);
  }
  SUBCASE("more logits than the sort's int offsets hold: an error naming rows and vocabulary") {
    const std::string msg = cudatest::sort_too_many_logits(16800, 128000);  // 2.15e9 logits
    CHECK(msg.find("sorting 16800 rows x vocab 128000 exceeds 2^31 - 1 logits") != std::string::npos);
  }
}

}  // TEST_SUITE

// ------------------------------------------------------------------ end to end

namespace {

ModelShape small_shape() {
  ModelShape s;
  s.vocab_size = 300;
  s.hidden_size = 256;
  s.intermediate_size = 384;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.num_layers = 6;
  return s;
}

struct Variant {
  std::string name;
  LayerPlan plan;
};

std::vector<Variant> variants(int L, Rng& rng) {
  std::vector<Variant> v{{"standard", plans::standard(L)},
                         {"lckv-w2", plans::lckv(L, warmup::Sandwich{2})},
                         {"pure-top", plans::pure_top(L)},
                         {"cla-g2", plans::cla(L, 2)},
                         {"yoco", plans::yoco(L)},
                         {"mix-attention", plans::mix_attention(L)}};
  for (int i = 0; i < 3; ++i) {
    LayerPlan p;
    for (int l = 0; l < L; ++l) p.push({static_cast<int>(rng.below(static_cast<std::uint64_t>(L))), rng.below(3) == 0});
    v.push_back({"random " + p.to_string(), p});
  }
  return v;
}

HostWeights rounded_weights(const ModelConfig& c, const HostWeights& w, DType t) {
  HostWeights out(c);
  for (const auto& info : w.tensors()) {
    const float* src = w.data(info.name);
    float* dst = out.data(info.name);
    for (std::int64_t i = 0; i < info.numel(); ++i) dst[i] = cudatest::round_to(t, src[i]);
  }
  return out;
}

std::vector<float> flat(const Logits& l) { return {l.data.data(), l.data.data() + l.data.size()}; }

/// One set of random weights as two models: the CPU reference (weights rounded to t, fp32 cache)
/// and the GPU model (weights and KV in t), each with room for `sequences` of `length` positions.
struct ModelPair {
  ModelPair(const ModelConfig& config, DType t, int sequences, int length, bool fusion = true)
      : weights(HostWeights::random(config, fresh_seed())),
        ref_weights(rounded_weights(config, weights, t)),
        cpu_cache(CacheGeometry::of(config), sequences, length),
        cpu(config, ref_weights.view()),
        gpu(config, weights, gpu_options(t, sequences, length, fusion)) {}

  static cudatest::GpuModel::Options gpu_options(DType t, int sequences, int length, bool fusion) {
    cudatest::GpuModel::Options o;
    o.weights = o.kv = t;
    o.max_sequences = sequences;
    o.max_length = length;
    o.fusion = fusion;
    return o;
  }

  HostWeights weights, ref_weights;
  ContiguousCache<float> cpu_cache;
  Transformer<CpuBackend, ContiguousCache<float>> cpu;
  cudatest::GpuModel gpu;
};

}  // namespace

TEST_SUITE("cuda model") {

TEST_CASE("logits vs CPU for every named variant and random layer_types; decode steps too" * doctest::skip(!gpu())) {
  Rng rng(fresh_seed());
  const int L = 6;
  for (const auto& v : variants(L, rng))
    for (DType t : {DType::F32, DType::BF16}) {
      CAPTURE(v.name);
      const std::string dtype_name = cudatest::name(t);
      CAPTURE(dtype_name);
      ModelConfig config = configs::make(small_shape(), v.plan);
      config.attention.sliding_window = 5;
      if (v.name == "yoco") config.attention.sink = 2;  // StreamingLLM: RoPE by cache position
      ModelPair models(config, t, 3, 48);
      auto& cpu_model = models.cpu;
      auto& cpu_cache = models.cpu_cache;
      auto& gpu_model = models.gpu;

      std::vector<int> a, b;
      for (int i = 0; i < 6; ++i) a.push_back(static_cast<int>(rng.below(300)));
      for (int i = 0; i < 21; ++i) b.push_back(static_cast<int>(rng.below(300)));
      const int ca = cpu_cache.open(), cb = cpu_cache.open();
      const int ga = gpu_model.open(), gb = gpu_model.open();
      std::vector<SequenceChunk> cpu_chunks{{ca, a}, {cb, b}}, gpu_chunks{{ga, a}, {gb, b}};
      const ForwardOptions all{PrefillMode::Auto, true};
      const auto want = cpu_model.forward(cpu_chunks, cpu_cache, all);
      const auto got = gpu_model.forward(gpu_chunks, all);
      CHECK(rel_error(flat(got), flat(want), "prefill logits") <= (t == DType::F32 ? 1e-4 : 2e-2));
      for (int step = 0; step < 4; ++step) {
        const int ta = static_cast<int>(rng.below(300)), tb = static_cast<int>(rng.below(300));
        std::vector<SequenceChunk> cs{{ca, std::span<const int>(&ta, 1)}, {cb, std::span<const int>(&tb, 1)}};
        std::vector<SequenceChunk> gs{{ga, std::span<const int>(&ta, 1)}, {gb, std::span<const int>(&tb, 1)}};
        CHECK(rel_error(flat(gpu_model.forward(gs)), flat(cpu_model.forward(cs, cpu_cache)), "decode logits") <=
              (t == DType::F32 ? 1e-4 : 2e-2));
      }
      CHECK(gpu_model.graph_replays() >= 2);  // steps 3 and 4 replay the graph captured at step 2
    }
}

TEST_CASE("decode of 12 sequences at once (packed GEMMs, 16-bit attention output) vs CPU" * doctest::skip(!gpu())) {
  // Above 8 rows decode takes cuBLAS: q/k/v and gate/up as one GEMM each, the attention writing
  // o_proj's 16-bit input; the prompts (one forward of every sequence) take the packed GEMMs too.
  Rng rng(fresh_seed());
  const int L = 6, seqs = 12;
  for (const auto& v : variants(L, rng))
    for (DType t : {DType::F32, DType::BF16}) {
      CAPTURE(v.name);
      const std::string dtype_name = cudatest::name(t);
      CAPTURE(dtype_name);
      ModelConfig config = configs::make(small_shape(), v.plan);
      config.attention.sliding_window = 5;
      ModelPair models(config, t, seqs, 32);
      auto& cpu_model = models.cpu;
      auto& cpu_cache = models.cpu_cache;
      auto& gpu_model = models.gpu;
      std::vector<std::vector<int>> prompts(seqs);
      std::vector<SequenceChunk> cpu_chunks, gpu_chunks;
      for (int s = 0; s < seqs; ++s) {
        for (int i = 0, n = 2 + static_cast<int>(rng.below(6)); i < n; ++i)
          prompts[static_cast<std::size_t>(s)].push_back(static_cast<int>(rng.below(300)));
        cpu_chunks.push_back({cpu_cache.open(), prompts[static_cast<std::size_t>(s)]});
        gpu_chunks.push_back({gpu_model.open(), prompts[static_cast<std::size_t>(s)]});
      }
      const double bound = t == DType::F32 ? 1e-4 : 2e-2;
      CHECK(rel_error(flat(gpu_model.forward(gpu_chunks)), flat(cpu_model.forward(cpu_chunks, cpu_cache)),
                      "prompt logits") <= bound);
      for (int step = 0; step < 3; ++step) {
        std::vector<int> next(seqs);
        for (auto& tok : next) tok = static_cast<int>(rng.below(300));
        std::vector<SequenceChunk> cs, gs;
        for (int s = 0; s < seqs; ++s) {
          const std::span<const int> one(&next[static_cast<std::size_t>(s)], 1);
          cs.push_back({cpu_chunks[static_cast<std::size_t>(s)].seq, one});
          gs.push_back({gpu_chunks[static_cast<std::size_t>(s)].seq, one});
        }
        CHECK(rel_error(flat(gpu_model.forward(gs)), flat(cpu_model.forward(cs, cpu_cache)), "decode logits") <= bound);
      }
    }
}

TEST_CASE("prefill runs of more rows than the packed GEMMs take: 16-bit gate / up, then decode, vs CPU" *
          doctest::skip(!gpu())) {
  // Above Gemm::kPackedRows rows the MLP of 16-bit weights writes gate / up in the weights' type
  // (Gemm::prefill_mlp); fp32 weights and the unfused backend keep fp32 gate / up. The prompts:
  // one run of 2 x 150 + 40 rows (the standard plan; LCKV's iterative passes run all rows too).
  Rng rng(fresh_seed());
  const int L = 4;
  const std::vector<Variant> cases{{"standard", plans::standard(L)}, {"lckv-w1", plans::lckv(L, warmup::Sandwich{1})}};
  ModelShape shape = small_shape();
  shape.num_layers = L;
  for (const auto& v : cases)
    for (DType t : {DType::F32, DType::BF16, DType::F16})
      for (const bool fusion : {true, false}) {
        CAPTURE(v.name);
        const std::string dtype_name = cudatest::name(t);
        CAPTURE(dtype_name);
        CAPTURE(fusion);
        const ModelConfig config = configs::make(shape, v.plan);
        ModelPair models(config, t, 3, 160, fusion);
        auto& cpu_model = models.cpu;
        auto& cpu_cache = models.cpu_cache;
        auto& gpu_model = models.gpu;
        std::vector<std::vector<int>> prompts{{}, {}, {}};
        std::vector<SequenceChunk> cpu_chunks, gpu_chunks;
        for (std::size_t s = 0; s < prompts.size(); ++s) {
          for (int i = 0, n = s < 2 ? 150 : 40; i < n; ++i) prompts[s].push_back(static_cast<int>(rng.below(300)));
          cpu_chunks.push_back({cpu_cache.open(), prompts[s]});
          gpu_chunks.push_back({gpu_model.open(), prompts[s]});
        }
        const double bound = t == DType::F32 ? 1e-4 : 2e-2;
        const ForwardOptions all{PrefillMode::Iterative, true};
        CHECK(rel_error(flat(gpu_model.forward(gpu_chunks, all)), flat(cpu_model.forward(cpu_chunks, cpu_cache, all)),
                        "prompt logits") <= bound);
        std::vector<int> next{7, 8, 9};
        std::vector<SequenceChunk> cs, gs;
        for (std::size_t s = 0; s < prompts.size(); ++s) {
          cs.push_back({cpu_chunks[s].seq, std::span<const int>(&next[s], 1)});
          gs.push_back({gpu_chunks[s].seq, std::span<const int>(&next[s], 1)});
        }
        CHECK(rel_error(flat(gpu_model.forward(gs)), flat(cpu_model.forward(cs, cpu_cache)), "decode logits") <= bound);
      }
}

TEST_CASE("decode of token n equals the sequential forward at n; contiguous == paged; graphs == eager; fused == unfused" *
          doctest::skip(!gpu())) {
  Rng rng(fresh_seed());
  const int L = 6;
  for (const auto& v : variants(L, rng)) {
    for (DType t : {DType::F32, DType::BF16}) {
      CAPTURE(v.name);
      const std::string dtype_name = cudatest::name(t);
      CAPTURE(dtype_name);
      ModelConfig config = configs::make(small_shape(), v.plan);
      config.attention.sliding_window = 4;
      if (v.name == "yoco") config.attention.sink = 2;  // StreamingLLM, and a ring with sink positions below
      const HostWeights weights = HostWeights::random(config, fresh_seed());
      std::vector<int> tokens;
      for (int i = 0; i < 14; ++i) tokens.push_back(static_cast<int>(rng.below(300)));

      auto decode_all = [&](Layout layout, bool graphs, bool fusion = true) {
        cudatest::GpuModel::Options o;
        o.weights = o.kv = t;
        o.layout = layout;
        o.graphs = graphs;
        o.fusion = fusion;
        o.max_length = 32;
        o.ring_chunk = 1;  // decode only: windowed slots keep just the window
        cudatest::GpuModel m(config, weights, o);
        const int seq = m.open();
        std::vector<float> out;
        for (int tok : tokens) {
          SequenceChunk c{seq, std::span<const int>(&tok, 1)};
          const auto l = flat(m.forward({&c, 1}));
          out.insert(out.end(), l.begin(), l.end());
        }
        return out;
      };
      const auto contiguous = decode_all(Layout::Contiguous, true);
      cudatest::GpuModel::Options o;
      o.weights = o.kv = t;
      o.max_length = 32;
      cudatest::GpuModel m(config, weights, o);
      const int seq = m.open();
      SequenceChunk all{seq, tokens};
      const auto sequential = flat(m.forward({&all, 1}, {PrefillMode::Sequential, true}));
      // Same kernels, but a one-pass forward tiles queries differently: bf16 activations may round apart.
      // (and at one row the GEMV reads fp32 activations where cuBLAS reads them rounded to bf16).
      CHECK(rel_error(contiguous, sequential, "decode vs sequential forward") <= (t == DType::F32 ? 1e-5 : 2e-2));
      CHECK(rel_error(decode_all(Layout::Paged, true), contiguous, "paged vs contiguous") == 0.0);
      CHECK(rel_error(decode_all(Layout::Contiguous, false), contiguous, "eager vs graph") == 0.0);
      // Overlapped launches change when kernels start, never what they compute.
      cudatest::set_overlapped_launches(false);
      CHECK(rel_error(decode_all(Layout::Contiguous, true), contiguous, "serial vs overlapped launches") == 0.0);
      // Unfused steps (rmsnorm, linear per projection, rope, rope, store_kv, ...) round in another order.
      CHECK(rel_error(decode_all(Layout::Contiguous, true, false), contiguous, "unfused vs fused steps") <=
            (t == DType::F32 ? 1e-5 : 2e-2));
      cudatest::set_overlapped_launches(true);
      if (t == DType::F32 && v.name == "yoco")
        CHECK(rel_error(decode_all(Layout::Ring, true), contiguous, "ring vs contiguous") <= 1e-6);
    }
  }
}

TEST_CASE("tokens sampled on the device inside the forward equal sample_token on the same logits" *
          doctest::skip(!gpu())) {
  // Two identical GPU models: one returns its logits (sampled here by sample_token), one samples
  // on the device and sends back token ids only. Prefill of four chunks (sequential for this LCKV
  // plan), then decode steps (4 rows: the GEMV, graphs); per-chunk parameters in one sampler call,
  // greedy among them.
  Rng rng(fresh_seed());
  const ModelConfig config = configs::make(small_shape(), plans::lckv(6, warmup::Sandwich{2}));
  const HostWeights weights = HostWeights::random(config, fresh_seed());
  const std::vector<SamplingParams> params{{0.8f, 20, 0.9f}, {0.8f, 20, 0.9f}, {}, {1.3f, 0, 0.7f}};
  for (DType t : {DType::F32, DType::BF16}) {
    const std::string dtype_name = cudatest::name(t);
    CAPTURE(dtype_name);
    cudatest::GpuModel::Options o;
    o.weights = o.kv = t;
    cudatest::GpuModel with_logits(config, weights, o), sampled(config, weights, o);
    std::vector<std::vector<int>> next(4);
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 1 + 2 * c; ++i) next[static_cast<std::size_t>(c)].push_back(static_cast<int>(rng.below(300)));
    for (int c = 0; c < 4; ++c) {
      with_logits.open();
      sampled.open();
    }
    for (int step = 0; step < 4; ++step) {
      CAPTURE(step);
      std::vector<SequenceChunk> chunks;
      std::vector<double> u;
      for (int c = 0; c < 4; ++c) {
        chunks.push_back({c, next[static_cast<std::size_t>(c)]});
        u.push_back(rng.uniform());
      }
      const Logits logits = with_logits.forward(chunks);
      const Logits tokens = sampled.forward(chunks, {}, {params, u});
      REQUIRE(tokens.tokens.size() == 4);
      for (int c = 0; c < 4; ++c) {
        const int want = sample_token(logits.last(c), params[static_cast<std::size_t>(c)], u[static_cast<std::size_t>(c)]);
        CHECK(tokens.tokens[static_cast<std::size_t>(c)] == want);
        next[static_cast<std::size_t>(c)] = {want};
      }
    }
  }
}

TEST_CASE("fp16 weights and KV run end to end" * doctest::skip(!gpu())) {
  ModelConfig config = configs::make(small_shape(), plans::lckv(6, warmup::Sandwich{2}));
  ModelPair models(config, DType::F16, 1, 32);
  auto& cpu_model = models.cpu;
  auto& cpu_cache = models.cpu_cache;
  auto& gpu_model = models.gpu;
  std::vector<int> tokens{5, 17, 250, 3, 99, 42, 7, 8, 9, 10, 11, 12};
  SequenceChunk c{cpu_cache.open(), tokens}, g{gpu_model.open(), tokens};
  CHECK(rel_error(flat(gpu_model.forward({&g, 1}, {PrefillMode::Auto, true})),
                  flat(cpu_model.forward({&c, 1}, cpu_cache, {PrefillMode::Auto, true})), "fp16 logits") <= 1e-2);
}

/// The CUDA tests' golden fixtures: LCKV_GOLDEN_CUDA_DIR from the environment (a binary carried
/// to another machine), else the source tree's.
std::filesystem::path golden_cuda_dir() {
  const char* e = std::getenv("LCKV_GOLDEN_CUDA_DIR");
  return e ? std::filesystem::path(e) : std::filesystem::path(LCKV_GOLDEN_CUDA_DIR);
}

TEST_CASE("golden on the GPU: HF transformers' and the LCKV reference's logits and greedy tokens (head_dim 64 / 128)" *
          doctest::skip(!gpu())) {
  // Fixtures: tests/golden/make_golden.py --set cuda (float64 logits of the stored 16-bit weights).
  // Two runs of each check:
  // - fp32 weights and KV hold the stored weights exactly, so they must match as the CPU engine does:
  //   1e-4 of the largest logit and every greedy token;
  // - weights and KV in the checkpoint's own 16-bit type, as it would be served: K / V and
  //   activations are rounded, so within 2e-2 relative (in norm, as the other end-to-end tests here;
  //   the largest single difference reaches ~2.6e-2 of the largest logit), and no token check
  //   (near-ties may flip).
  using namespace lckv::golden;
  const std::filesystem::path root = golden_cuda_dir();
  double worst[2] = {0, 0};
  const auto [cases, checks] = for_each_check(root, [&](const LoadedModel& m, const json& check,
                                                        const SafetensorsFile& golden) {
    const ModelConfig config = config_for(m, check);
    const PrefillMode mode = mode_of(check);
    const std::vector<float> want = golden.to_f32(golden.at(check.at("logits").get<std::string>()));
    const int vocab = config.shape.vocab_size;
    for (DType t : {DType::F32, m.meta.dtype == "float16" ? DType::F16 : DType::BF16}) {
      const std::string dtype_name = cudatest::name(t);
      CAPTURE(dtype_name);
      const bool exact = t == DType::F32;
      cudatest::GpuModel::Options o;
      o.weights = o.kv = t;
      o.max_sequences = 1;
      o.max_length = 64;
      std::vector<float> got;
      if (check.at("kind") == "logits") {
        const std::vector<int> tokens = check.at("tokens").get<std::vector<int>>();
        cudatest::GpuModel model(config, m.weights, o);
        const SequenceChunk chunk{model.open(), tokens};
        const Logits out = model.forward({&chunk, 1}, {mode, true});
        if (mode_is_checked(config, check)) CHECK(out.mode_used[0] == mode);
        got = flat(out);
      } else {
        // The logits of the prompt's last token, then of every decoded token, following the reference's tokens.
        const std::vector<int> prompt = check.at("prompt").get<std::vector<int>>();
        const std::vector<int> expect = check.at("new_tokens").get<std::vector<int>>();
        cudatest::GpuModel model(config, m.weights, o);
        const int seq = model.open();
        SequenceChunk chunk{seq, prompt};
        Logits out = model.forward({&chunk, 1}, {mode, false});
        if (mode_is_checked(config, check)) CHECK(out.mode_used[0] == mode);
        for (std::size_t k = 0; k < expect.size(); ++k) {
          got.insert(got.end(), out.last(0).begin(), out.last(0).end());
          if (k + 1 == expect.size()) break;
          chunk = {seq, std::span<const int>(&expect[k], 1)};
          out = model.forward({&chunk, 1});
        }
        if (exact) {
          // Greedy tokens sampled on the device and fed back, as generate() runs: the reference's exactly.
          cudatest::GpuModel sampler(config, m.weights, o);
          const int s = sampler.open();
          const SamplingParams greedy;
          const double u = 0.5;
          std::vector<int> tokens;
          SequenceChunk next{s, prompt};
          for (std::size_t k = 0; k < expect.size(); ++k) {
            const Logits sampled = sampler.forward({&next, 1}, {mode, false}, {{&greedy, 1}, {&u, 1}});
            REQUIRE(sampled.tokens.size() == 1);
            tokens.push_back(sampled.tokens[0]);
            next = {s, std::span<const int>(&tokens.back(), 1)};
          }
          CHECK(tokens == expect);
        }
      }
      const Diff d = compare(got, want, vocab);
      INFO("max |got - want| / max |want| = " << d.rel << " at row " << d.worst_row << ", token id " << d.worst_col);
      if (exact) {
        CHECK(d.rel <= 1e-4);
        CHECK(argmax_mismatches(got, want, vocab) == 0);
      } else {
        CHECK(rel_error(got, want, "16-bit logits vs golden") <= 2e-2);
      }
      worst[exact ? 0 : 1] = std::max(worst[exact ? 0 : 1], d.rel);
    }
  });
  MESSAGE(checks << " golden checks over " << cases << " fixtures in " << root
                 << "; largest error (max |got - want| / max |want|): fp32 " << worst[0] << ", 16-bit " << worst[1]);
  CHECK(checks >= 10);
}

TEST_CASE("running out of device memory names the bytes and leaves existing caches intact" * doctest::skip(!gpu())) {
  ModelConfig config = configs::make(small_shape(), plans::standard(6));
  const HostWeights weights = HostWeights::random(config, fresh_seed());
  cudatest::GpuModel m(config, weights, {});
  std::vector<int> tokens{1, 2, 3, 4, 5};
  const int seq = m.open();
  SequenceChunk c{seq, tokens};
  const auto before = flat(m.forward({&c, 1}));
  std::string msg;
  try {
    m.allocate_another_cache(4096, 1LL << 30);  // ~ petabytes
  } catch (const OutOfCapacity& e) {
    msg = e.what();
  }
  MESSAGE("OOM message: " << msg);
  CHECK(msg.find("asked for") != std::string::npos);
  CHECK(msg.find("bytes free") != std::string::npos);
  m.close(seq);
  const int again = m.open();
  SequenceChunk c2{again, tokens};
  CHECK(rel_error(flat(m.forward({&c2, 1})), before, "after OOM") == 0.0);
}

}  // TEST_SUITE
