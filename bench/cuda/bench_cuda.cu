// CUDA backend benchmarks (Google Benchmark). Every result carries counters in
// bytes/s or FLOP/s and, where a ceiling applies, its fraction of the ceilings
// measured in the same process: device copy bandwidth (BM_CopyBandwidth) and
// a large bf16 cuBLAS GEMM (BM_GemmBf16). Inputs are random, never zeros.
//
//   bench_cuda --benchmark_out=cuda.json --benchmark_out_format=json

#include <benchmark/benchmark.h>
#include <cublasLt.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include "lckv/cache/contiguous_cache.hpp"
#include "lckv/cuda/cuda.cuh"
#include "lckv/cuda/gemm_tc.cuh"
#include "lckv/engine/transformer.hpp"
#include "lckv/plan/variants.hpp"

namespace {

using namespace lckv;
using bf16 = __nv_bfloat16;
namespace lc = lckv::cuda;

/// Bytes of K and V one decode step reads per cached token: every layer reads its target's KV (bf16).
double kv_heads_bytes(const ModelConfig& c) {
  return static_cast<double>(c.shape.num_layers) * 2.0 * c.shape.num_kv_heads * c.shape.head_dim * 2.0;
}

/// A hash of (i, seed) as a number in [-0.5, 0.5): random inputs without a generator's state.
__device__ float hashed_uniform(std::size_t i, std::uint32_t seed) {
  std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return static_cast<float>(x & 0xFFFF) / 65536.0f - 0.5f;
}

__global__ void fill_random(bf16* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16_rn(hashed_uniform(i, seed) * 2.0f);
}
void randomize(bf16* p, std::size_t n, std::uint32_t seed) {
  fill_random<<<1024, 256>>>(p, n, seed);
  LCKV_CUDA_CHECK_LAUNCH("fill_random");
  LCKV_CUDA_CHECK(cudaDeviceSynchronize());
}

/// Launches recorded once into a CUDA Graph and replayed: small kernels are timed
/// without the host's launch rate in the way (as in a decode step).
class Recorded {
public:
  template <class F>
  Recorded(cudaStream_t s, F&& launches) : stream_(s) {
    cudaGraph_t g = nullptr;
    LCKV_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    launches();
    LCKV_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    const cudaError_t e = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    LCKV_CUDA_CHECK(e);
  }
  Recorded(const Recorded&) = delete;
  Recorded& operator=(const Recorded&) = delete;
  ~Recorded() { cudaGraphExecDestroy(exec_); }
  void replay() const { LCKV_CUDA_CHECK(cudaGraphLaunch(exec_, stream_)); }

private:
  cudaStream_t stream_;
  cudaGraphExec_t exec_ = nullptr;
};

/// Times `launches` recorded as one CUDA Graph and replayed per iteration (manual time, divided
/// by `passes`: how many passes the launches make), after an eager warm-up pass, so module loads
/// and first-use set-up stay out of it.
template <class F>
void time_graph(benchmark::State& state, cudaStream_t s, F&& launches, int passes = 1) {
  launches();
  LCKV_CUDA_CHECK(cudaStreamSynchronize(s));
  const Recorded graph(s, launches);
  graph.replay();
  lc::Event e0, e1;
  for (auto _ : state) {
    e0.record(s);
    graph.replay();
    e1.record(s);
    state.SetIterationTime(e1.since(e0) / 1e3 / passes);
  }
}

/// Times one launch of `run`: 200 of them recorded as one CUDA Graph and replayed per
/// iteration, so the host's launch rate stays out of it.
template <class F>
void time_per_launch(benchmark::State& state, cudaStream_t s, F&& run) {
  constexpr int reps = 200;
  time_graph(
      state, s, [&] {
        for (int i = 0; i < reps; ++i) run();
      },
      reps);
}

// ---------------------------------------------------------------- ceilings

void BM_CopyBandwidth(benchmark::State& state) {
  const std::size_t bytes = 2ull << 30;
  lc::DeviceBuffer<unsigned char> a(bytes), b(bytes);
  randomize(reinterpret_cast<bf16*>(a.data()), bytes / 2, 1);
  LCKV_CUDA_CHECK(cudaMemcpy(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
  lc::Event e0, e1;
  for (auto _ : state) {
    e0.record(nullptr);
    LCKV_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, nullptr));
    e1.record(nullptr);
    state.SetIterationTime(e1.since(e0) / 1e3);
  }
  const double bw = 2.0 * bytes * state.iterations();
  state.counters["bytes_per_s"] = benchmark::Counter(bw, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(bw));
}

void BM_GemmBf16(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  lc::Stream s;
  lc::Gemm gemm(s.get());
  lc::DeviceBuffer<bf16> a(static_cast<std::size_t>(n) * n), b(static_cast<std::size_t>(n) * n);
  lc::DeviceBuffer<float> c(static_cast<std::size_t>(n) * n);
  const bool bf16_out = state.range(1) != 0;
  lc::DeviceBuffer<bf16> cb(bf16_out ? static_cast<std::size_t>(n) * n : 0);
  randomize(a.data(), a.size(), 2);
  randomize(b.data(), b.size(), 3);
  auto run = [&] {
    if (bf16_out) {
      const float alpha = 1.0f, beta = 0.0f;
      LCKV_CUBLAS_CHECK(cublasGemmEx(gemm.handle(), CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, b.data(), CUDA_R_16BF, n,
                                     a.data(), CUDA_R_16BF, n, &beta, cb.data(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    } else {
      gemm.gemm_rowmajor(n, n, n, a.data(), b.data(), c.data());
    }
  };
  for (int i = 0; i < 3; ++i) run();  // heuristics and module load stay out of the timing
  s.synchronize();
  lc::Event e0, e1;
  for (auto _ : state) {
    e0.record(s.get());
    run();
    e1.record(s.get());
    state.SetIterationTime(e1.since(e0) / 1e3);
  }
  state.counters["flop_per_s"] = benchmark::Counter(2.0 * n * n * n * state.iterations(), benchmark::Counter::kIsRate);
}

// ------------------------------------------------------- decode attention

/// All 22 layers' decode attention with `heads` q / `kv_heads` kv heads of head_dim D, bf16
/// KV, at batch B and context S: standard (22 slots, each layer its own) vs LCKV w=2 (3 slots;
/// 20 layers read the same one). Effective bandwidth = KV bytes the layers read / time. Arg 3:
/// 1 = L2 persistence window on the LCKV shared slot. Arg 4: a fixed split count (0:
/// plan_attention's choice). The 22 launches are replayed as one CUDA Graph, as in a decode step.
void decode_attention_layers(benchmark::State& state, int heads, int kv_heads, int D) {
  const int S = static_cast<int>(state.range(0)), B = static_cast<int>(state.range(1));
  const bool lckv = state.range(2) != 0, persist = state.range(3) != 0;
  const int L = 22;
  const LayerPlan plan = lckv ? plans::lckv(L, warmup::Sandwich{2}) : plans::standard(L);
  const CacheGeometry g{plan.num_kv_layers(), kv_heads, D, 2};
  const std::size_t need = contiguous_cache_bytes(g, B, S + 1);
  std::size_t free_b = 0, total_b = 0;
  LCKV_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (need > free_b * 0.8) {
    state.SkipWithError(("cache of " + std::to_string(need >> 20) + " MiB does not fit").c_str());
    return;
  }
  ContiguousCache<bf16, lc::DeviceMemory> cache(g, B, S + 1);
  randomize(cache.slot(0).k, cache.allocated_bytes() / 4, 4);
  randomize(cache.slot(0).v, cache.allocated_bytes() / 4, 5);
  std::vector<RowInfo> rows;
  for (int b = 0; b < B; ++b) {
    cache.open();
    rows.push_back({b, S});  // query at position S sees S keys (no-diagonal) or S + 1 (causal)
  }
  lc::DeviceBuffer<RowInfo> drows(rows.size());
  lc::copy_to_device(drows.data(), rows.data(), rows.size());
  lc::DeviceBuffer<bf16> qb(static_cast<std::size_t>(B) * heads * D);
  lc::DeviceBuffer<float> q(static_cast<std::size_t>(B) * heads * D), out(q.size());
  {
    std::vector<float> h(q.size());
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    lc::copy_to_device(q.data(), h.data(), h.size());
  }
  int bucket = 64;
  while (bucket < S + 1) bucket *= 2;
  lc::AttentionLaunch l = lc::plan_attention(B, heads, kv_heads, false, lc::device_sms(), bucket);
  if (state.range(4) > 0) l.splits = static_cast<int>(state.range(4));  // a fixed split count instead of the plan's
  lc::AttentionWorkspace ws;
  ws.reserve(lc::attention_workspace_floats(B, heads, D, l));
  lc::Stream s;
  std::vector<MaskSpec> masks;
  for (int layer = 0; layer < L; ++layer) masks.push_back(MaskSpec{plan.attends_top(layer), 0, 0});
  if (persist && lckv) {
    cudaDeviceProp prop{};
    LCKV_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    LCKV_CUDA_CHECK(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, prop.persistingL2CacheMaxSize));
    // One window per stream: the shared slot's keys (batch 1: contiguous; else the K buffer span).
    const auto shared = cache.slot(plan.kv_slot(plan.attends_to(1)));
    const std::size_t window = B == 1 ? static_cast<std::size_t>(S + 1) * kv_heads * D * 2 : cache.allocated_bytes() / 2;
    cudaStreamAttrValue attr{};
    attr.accessPolicyWindow.base_ptr = B == 1 ? static_cast<void*>(shared.k) : static_cast<void*>(cache.slot(0).k);
    attr.accessPolicyWindow.num_bytes = std::min<std::size_t>(window, prop.accessPolicyMaxWindowSize);
    attr.accessPolicyWindow.hitRatio =
        std::min(1.0f, static_cast<float>(prop.persistingL2CacheMaxSize) / static_cast<float>(attr.accessPolicyWindow.num_bytes));
    attr.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
    attr.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
    LCKV_CUDA_CHECK(cudaStreamSetAttribute(s.get(), cudaStreamAttributeAccessPolicyWindow, &attr));
  }
  auto all_layers = [&] {
    for (int layer = 0; layer < L; ++layer)
      lc::attention(MatrixView<const float>{q.data(), B, heads * D}, cache.slot(plan.kv_slot(plan.attends_to(layer))),
                      drows.data(), masks[static_cast<std::size_t>(layer)], heads,
                      MatrixView<float>{out.data(), B, heads * D}, l, ws, s.get());
  };
  time_graph(state, s.get(), all_layers);
  if (persist && lckv) {
    // Undo all of it, the device-wide set-aside too: left in place it slowed every later
    // benchmark of the process (decode steps by 7-13% on an H100, 2026-11-26 10:09 vs 10:11 runs).
    cudaStreamAttrValue attr{};
    attr.accessPolicyWindow.num_bytes = 0;
    LCKV_CUDA_CHECK(cudaStreamSetAttribute(s.get(), cudaStreamAttributeAccessPolicyWindow, &attr));
    LCKV_CUDA_CHECK(cudaCtxResetPersistingL2Cache());
    LCKV_CUDA_CHECK(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 0));
  }
  // Bytes the layers read: every layer reads its target's K and V for S (or S + 1) keys.
  double kv_read = 0;
  for (int layer = 0; layer < L; ++layer)
    kv_read += static_cast<double>(B) * (plan.attends_top(layer) ? S : S + 1) * kv_heads * D * 2 * 2;
  const double unique = static_cast<double>(B) * (S + 1) * kv_heads * D * 2 * 2 * plan.num_kv_layers();
  state.counters["splits"] = l.splits;
  state.counters["kv_read_bytes_per_s"] = benchmark::Counter(kv_read * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["unique_kv_bytes_per_s"] = benchmark::Counter(unique * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["kv_read_MB"] = kv_read / 1e6;
}

/// The TinyLlama shape's heads: 32 q / 4 kv, d 64 (G 8).
void BM_DecodeAttention(benchmark::State& state) { decode_attention_layers(state, 32, 4, 64); }

/// A wide GQA group at d 128: 64 q / 4 kv heads (G 16, as Llama-3-405B's 128 / 8), whose merge
/// buffer (33 KB) does not fit beside three copy stages twice on an SM.
void BM_WideGroupDecodeAttention(benchmark::State& state) { decode_attention_layers(state, 64, 4, 128); }

/// A chain of dependent launches that only read: each waits for the previous one (pdl::wait, as an
/// attention layer waits for its q), then streams its bytes into shared memory through the decode
/// kernel's copy ring (4 warps x 4 stages x 8 KiB tiles, one block per SM) and adds one float per
/// 16 bytes. What 22 layers' reads can reach with no attention work at all: a ceiling for
/// BM_DecodeAttention's grids, besides the copy bandwidth. `heads` 0: each block reads its own
/// contiguous bytes; else the cache's layout ([position][heads][128 bytes], K then V): each block
/// reads one head over its run of positions, a tile being 32 positions' K and V rows, as
/// decode_kernel_mma does at d 64. `cluster` consecutive blocks read runs of the same head (the
/// decode kernel's splits of a row and head) and, when launched as clusters, form one.
constexpr int kStreamWarps = 4, kStreamStages = 4, kStreamTileBytes = 8192, kStreamTileKeys = 32;

__global__ void __launch_bounds__(kStreamWarps * 32, 1) stream_layer(const unsigned char* k, const unsigned char* v,
                                                                     std::int64_t per_block, int heads, int cluster,
                                                                     float* sink) {
  extern __shared__ float4 ring[];  // [warp][stage][kStreamTileBytes / 16]
  constexpr int Chunks = kStreamTileBytes / 16 / 32;  // 16-byte chunks per lane per tile
  constexpr int RowChunks = 128 / 16, HalfChunks = kStreamTileBytes / 16 / 2;
  lc::pdl::allow_next();
  lc::pdl::wait();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int tiles = static_cast<int>(per_block / kStreamTileBytes);
  const int count = tiles > warp ? (tiles - warp + kStreamWarps - 1) / kStreamWarps : 0;  // tiles warp, warp + 4, ...
  // Layout 1: this block's head and run of positions; lane l copies 16-byte chunk l % 8 of rows
  // l / 8, + 4, + 8, ... of a tile's K, then of its V (the address arithmetic decode_kernel_mma does).
  const int b = static_cast<int>(blockIdx.x), head = heads > 0 ? b / cluster % heads : 0;
  const int run = heads > 0 ? b / (cluster * heads) * cluster + b % cluster : 0;
  const std::int64_t first_key = static_cast<std::int64_t>(run) * tiles * kStreamTileKeys;
  const std::int64_t row_step = static_cast<std::int64_t>(32 / RowChunks) * heads * 128;  // 4 positions on
  float4* stages = ring + warp * kStreamStages * (kStreamTileBytes / 16);
  auto issue = [&](int n) {
    if (n < count) {
      const int t = warp + n * kStreamWarps;
      const std::uint32_t to = lc::ptx::smem_address(stages + (n % kStreamStages) * (kStreamTileBytes / 16)) + lane * 16;
      if (heads == 0) {
        const unsigned char* from = k + per_block * blockIdx.x + static_cast<std::int64_t>(t) * kStreamTileBytes + lane * 16;
#pragma unroll
        for (int i = 0; i < Chunks; ++i) lc::ptx::cp_async_16(to + i * 512, from + i * 512, true);
      } else {
        const std::int64_t at = ((first_key + static_cast<std::int64_t>(t) * kStreamTileKeys + lane / RowChunks) * heads + head) * 128 +
                                (lane % RowChunks) * 16;
#pragma unroll
        for (int i = 0; i < Chunks / 2; ++i) {
          lc::ptx::cp_async_16(to + i * 512, k + at + i * row_step, true);
          lc::ptx::cp_async_16(to + (HalfChunks + i * 32) * 16, v + at + i * row_step, true);
        }
      }
    }
    lc::ptx::cp_async_commit();
  };
  for (int n = 0; n < kStreamStages - 1; ++n) issue(n);
  float acc = 0.0f;
  for (int n = 0; n < count; ++n) {
    issue(n + kStreamStages - 1);
    lc::ptx::cp_async_wait<kStreamStages - 1>();
    __syncwarp();
    const float4* tile = stages + (n % kStreamStages) * (kStreamTileBytes / 16);
    for (int i = 0; i < Chunks; ++i) acc += tile[i * 32 + lane].x;
    __syncwarp();  // every lane has read the stage before it is refilled
  }
  if (acc == 1234.5f) sink[0] = acc;  // never true for the inputs; keeps the reads
}

/// 22 stream_layer launches over `batch` sequences' KV at `context` (BM_DecodeAttention's standard
/// plan: each layer its own K and V of batch x (context + 1) x 4 kv heads x d 64, bf16), on `blocks`
/// blocks (0: every SM), contiguous (layout 0) or in the cache's layout (1), replayed as one CUDA
/// Graph. `cluster` > 1 (layout 1): thread-block clusters of that many blocks, as the decode
/// attention launches a row's splits, to tell what the clusters' placement costs reading alone.
void BM_StreamChain(benchmark::State& state) {
  const int S = static_cast<int>(state.range(0)), B = static_cast<int>(state.range(1)), L = 22, kv_heads = 4;
  const int heads = state.range(3) != 0 ? kv_heads : 0;
  const int cluster = heads > 0 ? static_cast<int>(state.range(4)) : 1;
  int blocks = state.range(2) > 0 ? static_cast<int>(state.range(2)) : lc::device_sms();
  if (heads > 0) blocks = blocks / (heads * cluster) * heads * cluster;  // every head the same runs of positions
  const std::int64_t layer_bytes = static_cast<std::int64_t>(B) * (S + 1) * kv_heads * 64 * 2 * 2;
  // Whole tiles, rounded up (the rate counts the bytes actually read).
  const std::int64_t per_block = (layer_bytes + std::int64_t{blocks} * kStreamTileBytes - 1) /
                                 (std::int64_t{blocks} * kStreamTileBytes) * kStreamTileBytes;
  const std::int64_t layer = per_block * blocks;  // K in the first half, V in the second
  lc::DeviceBuffer<unsigned char> kv(static_cast<std::size_t>(layer) * L);
  randomize(reinterpret_cast<bf16*>(kv.data()), kv.size() / 2, 6);
  lc::DeviceBuffer<float> sink(1);
  const int smem = kStreamWarps * kStreamStages * kStreamTileBytes;
  lc::prepare_kernel(stream_layer, smem, /*clusters16=*/true);
  lc::Stream s;
  auto all_layers = [&] {
    for (int l = 0; l < L; ++l) {
      const unsigned char* base = kv.data() + l * layer;
      lc::launch_clustered("stream_layer", stream_layer, blocks, cluster, kStreamWarps * 32, smem, s.get(), base,
                           base + layer / 2, per_block, heads, cluster, sink.data());
    }
  };
  time_graph(state, s.get(), all_layers);
  state.counters["blocks"] = blocks;
  state.counters["read_bytes_per_s"] = benchmark::Counter(static_cast<double>(layer) * L * state.iterations(),
                                                          benchmark::Counter::kIsRate);
}

// ------------------------------------------------------- per-op breakdown

/// One op of a TinyLlama-shape decode step at batch B (bf16 weights), timed
/// over 200 launches replayed as one CUDA Graph (no host launch gaps, as in a
/// decode step): where the decode step's time goes.
/// Ops: 0 q_proj 2048x2048, 1 k_proj 2048->256, 2 gate 2048->5632, 3 down 5632->2048,
/// 4 lm_head 2048->32000, 5 rmsnorm, 6 rope (q), 7 swiglu, 8 attention (context 1024),
/// 9 gate + up + swiglu (2048 -> 2 x 5632), 10 RMSNorm + q, k, v projections (2048 -> 2048 + 2 x 256),
/// 11 RoPE of q and k + K/V store.
/// `variant`: 0 = one launch per plain op, launches serialised (the backend before fusion);
/// 1 = fused steps (9-11 in one launch each), overlapped launches. Ops 0-8 differ only in overlap.
void BM_DecodeOps(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0)), B = static_cast<int>(state.range(1));
  const bool fused = state.range(2) != 0;
  static const char* names[] = {"q_proj", "k_proj", "gate_proj", "down_proj", "lm_head", "rmsnorm", "rope", "swiglu",
                                "attention", "gate_up_glu", "norm_qkv", "rope_store_kv"};
  const int shapes[5][2] = {{2048, 2048}, {2048, 256}, {2048, 5632}, {5632, 2048}, {2048, 32000}};
  lc::Stream s;
  lc::Gemm gemm(s.get());
  gemm.set_fusion(fused);
  gemm.set_skinny(fused);
  lc::set_overlapped_launches(fused);
  const std::size_t big = static_cast<std::size_t>(B) * 32000;
  lc::DeviceBuffer<float> x(big), y(big);
  {
    std::vector<float> h(big);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    lc::copy_to_device(x.data(), h.data(), h.size());
  }
  lc::DeviceBuffer<bf16> w(static_cast<std::size_t>(2048) * 32000);
  randomize(w.data(), w.size(), 9);
  gemm.reserve_activation(big);
  std::vector<RowInfo> rows;
  for (int b = 0; b < B; ++b) rows.push_back({b, 1024});
  lc::DeviceBuffer<RowInfo> drows(rows.size());
  lc::copy_to_device(drows.data(), rows.data(), rows.size());
  using Cache = ContiguousCache<bf16, lc::DeviceMemory>;
  std::unique_ptr<Cache> cache;
  lc::AttentionWorkspace ws;
  lc::AttentionLaunch l;
  if (op == 8 || op == 11) {
    cache = std::make_unique<Cache>(CacheGeometry{1, 4, 64, 2}, B, 1025);
    randomize(cache->slot(0).k, cache->allocated_bytes() / 4, 10);
    randomize(cache->slot(0).v, cache->allocated_bytes() / 4, 11);
    for (int b = 0; b < B; ++b) cache->open();
    l = lc::plan_attention(B, 32, 4, false, lc::device_sms(), 2048);
    ws.reserve(lc::attention_workspace_floats(B, 32, 64, l));
  }
  double bytes = 0;
  auto run = [&] {
    if (op <= 4) {
      const int in = shapes[op][0], out = shapes[op][1];
      gemm.linear(MatrixView<const float>{x.data(), B, in}, w.data(), MatrixView<float>{y.data(), B, out}, false);
      bytes = 2.0 * in * out + 4.0 * B * (in + out);
    } else if (op == 9) {
      const std::size_t wsz = static_cast<std::size_t>(2048) * 5632;
      gemm.gate_up_swiglu(MatrixView<const float>{x.data(), B, 2048}, static_cast<const bf16*>(nullptr), 0.0f,
                          MatrixView<float>{y.data(), B, 2048}, w.data(), w.data() + wsz,
                          MatrixView<float>{y.data(), B, 5632}, MatrixView<float>{y.data() + static_cast<std::size_t>(B) * 5632, B, 5632});
      bytes = 2.0 * 2 * wsz + 4.0 * B * (2048 + 5632);
    } else if (op == 10) {
      const std::size_t q_size = static_cast<std::size_t>(2048) * 2048, kv_size = static_cast<std::size_t>(256) * 2048;
      float* yq = y.data();
      float* yk = yq + static_cast<std::size_t>(B) * 2048;
      float* yv = yk + static_cast<std::size_t>(B) * 256;
      const lckv::steps::Projection<bf16> qkv[] = {{w.data(), {yq, B, 2048}},
                                                   {w.data() + q_size, {yk, B, 256}},
                                                   {w.data() + q_size + kv_size, {yv, B, 256}}};
      const MatrixView<const float> in{x.data(), B, 2048};
      // What CudaBackend::norm_project runs: one launch where the GEMV takes the rows, else rmsnorm + projections.
      if (gemm.fuses<bf16>(B, 2048)) {
        gemm.norm_project(in, w.data(), 1e-5f, std::span<const lckv::steps::Projection<bf16>>(qkv));
      } else {
        const MatrixView<float> xn{x.data() + static_cast<std::size_t>(B) * 2048, B, 2048};
        lc::rmsnorm(in, w.data(), 1e-5f, xn, s.get());
        gemm.project(MatrixView<const float>{xn.data, B, 2048}, std::span<const lckv::steps::Projection<bf16>>(qkv));
      }
      bytes = 2.0 * (q_size + 2 * kv_size) + 4.0 * B * (2048 + 2048 + 512);
    } else if (op == 11) {
      MatrixView<float> q{y.data(), B, 2048};
      MatrixView<float> k{x.data(), B, 256};
      MatrixView<const float> v{x.data() + static_cast<std::size_t>(B) * 256, B, 256};
      if (fused) {
        lc::rope_store_kv(q, 32, k, v, cache->slot(0), drows.data(), 10000.0f, s.get());
      } else {
        lc::rope(q, 32, 64, drows.data(), 10000.0f, s.get());
        lc::rope(k, 4, 64, drows.data(), 10000.0f, s.get());
        lc::store_kv(k, v, cache->slot(0), drows.data(), s.get());
      }
      bytes = 4.0 * B * (2 * 2048 + 3 * 256) + 2.0 * B * 512;
    } else if (op == 5) {
      lc::rmsnorm(MatrixView<const float>{x.data(), B, 2048}, w.data(), 1e-5f, MatrixView<float>{y.data(), B, 2048}, s.get());
      bytes = 8.0 * B * 2048;
    } else if (op == 6) {
      lc::rope(MatrixView<float>{y.data(), B, 2048}, 32, 64, drows.data(), 10000.0f, s.get());
      bytes = 8.0 * B * 2048;
    } else if (op == 7) {
      lc::swiglu(MatrixView<float>{y.data(), B, 5632}, MatrixView<const float>{x.data(), B, 5632}, s.get());
      bytes = 12.0 * B * 5632;
    } else {
      lc::attention(MatrixView<const float>{x.data(), B, 2048}, cache->slot(0), drows.data(), MaskSpec{}, 32,
                    MatrixView<float>{y.data(), B, 2048}, l, ws, s.get());
      bytes = 2.0 * 2 * B * 1025 * 4 * 64;
    }
  };
  time_per_launch(state, s.get(), run);
  state.SetLabel(names[op]);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

/// The decode GEMMs at batch 16-64: impl 0 = lc::Gemm::linear with the skinny GEMM off (cuBLAS
/// above 8 rows; op 9 = gate_up_swiglu, i.e. two GEMMs and swiglu there), 1 = the tensor-core
/// skinny GEMM (op 9: one fused launch) with `splits` blocks per tile (0: its own choice), 2 = 1
/// with 16-row blocks only. Ops as
/// in BM_DecodeOps: 0 q_proj, 1 k_proj, 2 gate, 3 down, 4 lm_head, 9 gate+up+SwiGLU.
/// bytes_per_s counts the weights once plus x and y in fp32.
void BM_SkinnyGemm(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0)), B = static_cast<int>(state.range(1));
  const bool skinny = state.range(2) >= 1;
  const lc::SkinnyOptions options{lc::device_sms(), static_cast<int>(state.range(3)), state.range(2) == 2 ? 16 : 0};
  const int shapes[5][2] = {{2048, 2048}, {2048, 256}, {2048, 5632}, {5632, 2048}, {2048, 32000}};
  const int in = op == 9 ? 2048 : shapes[op][0], out = op == 9 ? 5632 : shapes[op][1];
  lc::Stream s;
  lc::Gemm gemm(s.get());
  gemm.set_skinny(false);  // impl 0 is cuBLAS for every shape
  const std::size_t big = static_cast<std::size_t>(B) * 32000;
  lc::DeviceBuffer<float> x(big), y(big), up(big);
  {
    std::vector<float> h(big);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    lc::copy_to_device(x.data(), h.data(), h.size());
  }
  const std::size_t wsz = static_cast<std::size_t>(in) * out;
  lc::DeviceBuffer<bf16> w(2 * wsz);
  randomize(w.data(), w.size(), 12);
  gemm.reserve_activation(big);
  const MatrixView<const float> xv{x.data(), B, in};
  const MatrixView<float> yv{y.data(), B, out};
  auto run = [&] {
    if (op == 9) {
      if (skinny) lc::skinny_gate_up_swiglu(xv, w.data(), w.data() + wsz, yv, options, s.get());
      else
        gemm.gate_up_swiglu(xv, static_cast<const bf16*>(nullptr), 0.0f, MatrixView<float>{}, w.data(), w.data() + wsz, yv,
                            MatrixView<float>{up.data(), B, out});
    } else {
      if (skinny) lc::skinny_linear(xv, w.data(), yv, false, options, s.get());
      else gemm.linear(xv, w.data(), yv, false);
    }
  };
  const double bytes = 2.0 * wsz * (op == 9 ? 2 : 1) + 4.0 * B * (in + out);
  time_per_launch(state, s.get(), run);
  static const char* names[] = {"q_proj", "k_proj", "gate_proj", "down_proj", "lm_head", "", "", "", "", "gate_up_glu"};
  state.SetLabel(std::string(names[op]) + (!skinny ? " cublas" : options.group_rows == 16 ? " skinny16" : " skinny"));
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

/// What choosing among cublasLt's candidate kernels would give on the decode GEMMs (x bf16
/// [batch, in] times the weights, fp32 out): cublasGemmEx's own pick (what Gemm runs) against
/// each of cublasLt's heuristic candidates, every launch on another copy of the weights so
/// that L2 does not hold them. Ops: 0 q/k/v packed (2560 x 2048), 1 o_proj (2048 x 2048,
/// accumulate), 2 gate/up packed (11264 x 2048), 3 down_proj (2048 x 5632, accumulate).
/// Manual time = cublasGemmEx; counters: the best candidate's us and index.
void BM_GemmAlgos(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0)), B = static_cast<int>(state.range(1));
  const int shapes[4][2] = {{2048, 2560}, {2048, 2048}, {2048, 11264}, {5632, 2048}};
  const int in = shapes[op][0], out = shapes[op][1];
  const float alpha = 1.0f, beta = (op == 1 || op == 3) ? 1.0f : 0.0f;
  const std::size_t wsz = static_cast<std::size_t>(in) * out;
  const int copies = static_cast<int>(std::max<std::size_t>(2, (256u << 20) / (2 * wsz)));
  lc::Stream s;
  lc::Gemm gemm(s.get());
  lc::DeviceBuffer<bf16> w(wsz * copies), x(static_cast<std::size_t>(B) * in);
  lc::DeviceBuffer<float> y(static_cast<std::size_t>(B) * out);
  randomize(w.data(), w.size(), 21);
  randomize(x.data(), x.size(), 22);
  const std::size_t ws_bytes = 32u << 20;
  lc::DeviceBuffer<unsigned char> ws(ws_bytes);
  cublasLtHandle_t lt;
  LCKV_CUBLAS_CHECK(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t desc;
  LCKV_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  LCKV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
  LCKV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)));
  cublasLtMatrixLayout_t la, lb, lcd;  // column-major: W^T [out, in] via op T, x^T [in, B], y^T [out, B]
  LCKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, in, out, in));
  LCKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, in, B, in));
  LCKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lcd, CUDA_R_32F, out, B, out));
  cublasLtMatmulPreference_t pref;
  LCKV_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  LCKV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                         sizeof(ws_bytes)));
  cublasLtMatmulHeuristicResult_t cand[16];
  int found = 0;
  LCKV_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lcd, lcd, pref, 16, cand, &found));
  // Time per GEMM of `reps` launches over the weight copies, replayed from a graph.
  auto timed = [&](auto&& one) {
    const int reps = 4 * copies;
    for (int i = 0; i < copies; ++i) one(w.data() + wsz * i);
    LCKV_CUDA_CHECK(cudaStreamSynchronize(s.get()));
    const Recorded graph(s.get(), [&] {
      for (int i = 0; i < reps; ++i) one(w.data() + wsz * (i % copies));
    });
    graph.replay();
    lc::Event e0, e1;
    float best = 1e30f;
    for (int r = 0; r < 3; ++r) {
      e0.record(s.get());
      graph.replay();
      e1.record(s.get());
      best = std::min(best, e1.since(e0) * 1e3f / reps);
    }
    return best;
  };
  const float ex = timed([&](const bf16* wp) {
    LCKV_CUBLAS_CHECK(cublasGemmEx(gemm.handle(), CUBLAS_OP_T, CUBLAS_OP_N, out, B, in, &alpha, wp, CUDA_R_16BF, in,
                                   x.data(), CUDA_R_16BF, in, &beta, y.data(), CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  });
  float best = 1e30f, first = 0.0f;
  int best_i = -1;
  for (int i = 0; i < found; ++i) {
    const float us = timed([&](const bf16* wp) {
      LCKV_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, wp, la, x.data(), lb, &beta, y.data(), lcd, y.data(), lcd,
                                       &cand[i].algo, ws.data(), ws_bytes, s.get()));
    });
    if (i == 0) first = us;
    if (us < best) best = us, best_i = i;
  }
  for (auto _ : state) state.SetIterationTime(ex / 1e6);
  const double bytes = 2.0 * wsz + 2.0 * B * in + 4.0 * B * out * (beta > 0 ? 2 : 1);
  state.counters["gemmex_us"] = ex;
  state.counters["lt_first_us"] = first;
  state.counters["lt_best_us"] = best;
  state.counters["lt_best_index"] = best_i;
  state.counters["lt_candidates"] = found;
  state.counters["gemmex_of_copy_GBps"] = bytes / ex / 1e3;
  state.counters["best_GBps"] = bytes / best / 1e3;
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lcd);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
}

// ------------------------------------------------- TinyLlama decode and prefill

struct TinyModel {
  ModelConfig config;
  HostWeights host;
  lc::DeviceWeights<bf16> weights;
  static HostWeights random_fast(const ModelConfig& c) {
    HostWeights w(c);
    for (const auto& t : w.tensors()) {
      float* p = w.data(t.name);
      std::uint64_t x = 0x9E3779B97F4A7C15ull ^ t.offset;
      const bool norm = t.shape.size() == 1;
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const float u = static_cast<float>(x >> 40) / 16777216.0f - 0.5f;
        p[i] = norm ? 1.0f + 0.1f * u : 0.04f * u;
      }
    }
    return w;
  }
  explicit TinyModel(const LayerPlan& plan)
      : config(configs::make(configs::tinyllama_1b_shape(), plan)), host(random_fast(config)), weights(host) {}
};

TinyModel& tiny(bool lckv) {
  static TinyModel* models[2] = {nullptr, nullptr};
  auto& m = models[lckv ? 1 : 0];
  if (!m) m = new TinyModel(lckv ? plans::lckv(22, warmup::Sandwich{2}) : plans::standard(22));
  return *m;
}

/// Weight bytes one forward reads: every linear (lm_head too) in bf16; norms and the embedding rows are negligible.
double weight_bytes(const ModelConfig& c) {
  const auto& s = c.shape;
  double n = 0;
  for (int l = 0; l < s.num_layers; ++l) {
    n += 2.0 * s.q_dim() * s.hidden_size;  // q, o
    if (c.plan.computes_kv(l)) n += 2.0 * s.kv_dim() * s.hidden_size;
    n += 3.0 * s.intermediate_size * s.hidden_size;
  }
  n += static_cast<double>(s.vocab_size) * s.hidden_size;  // lm_head
  return n * 2;
}

void BM_TinyLlamaDecodeStep(benchmark::State& state) {
  const int B = static_cast<int>(state.range(0)), S = static_cast<int>(state.range(1));
  const bool lckv = state.range(2) != 0;
  TinyModel& m = tiny(lckv);
  using Cache = ContiguousCache<bf16, lc::DeviceMemory>;
  const CacheGeometry g = CacheGeometry::of(m.config, 2);
  const int steps = 64;
  std::size_t free_b = 0, total_b = 0;
  LCKV_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (contiguous_cache_bytes(g, B, S + steps) > free_b * 0.7) {
    state.SkipWithError("cache does not fit");
    return;
  }
  Cache cache(g, B, S + steps);
  randomize(cache.slot(0).k, cache.allocated_bytes() / 4, 6);
  randomize(cache.slot(0).v, cache.allocated_bytes() / 4, 7);
  Transformer<lc::CudaBackend<bf16>, Cache> model(m.config, m.weights.view());
  // variant: 0 = a launch per plain op, serialised launches, cuBLAS above 8 rows; 1 = fused steps,
  // serialised; 2 = fused steps, overlapped launches, the skinny tensor-core GEMM at 2-32 rows (the
  // default); 3 = 2 with cuBLAS instead of the skinny GEMM (norm, RoPE, SwiGLU as launches of their own);
  // 4 = 2 with the skinny GEMM up to 64 rows; 5 = 4 with 16-row blocks only (its blocking before
  // 32-row blocks); 6 = 2 with the GEMV up to 8 rows (the routing before Update 14).
  // `splits` forces the skinny GEMM's cluster size (0: its own choice).
  const int variant = static_cast<int>(state.range(3));
  model.backend().set_fusion(variant >= 1);
  model.backend().set_skinny(variant != 0 && variant != 3);
  if (variant == 4 || variant == 5) model.backend().set_skinny_rows(64, 64);
  if (variant == 5) model.backend().set_skinny_group_rows(16);
  if (variant == 6) model.backend().set_gemv_rows(8);
  model.backend().set_skinny_splits(static_cast<int>(state.range(4)));  // 0: the launcher's choice
  lc::set_overlapped_launches(variant >= 2);
  std::vector<int> seqs;
  for (int b = 0; b < B; ++b) {
    seqs.push_back(cache.open());
    cache.reserve(b, S + steps);
    cache.commit(b, S);  // S random positions already cached
  }
  std::vector<int> tokens(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) tokens[static_cast<std::size_t>(b)] = (b * 7919 + 13) % 32000;
  std::vector<SequenceChunk> chunks;
  for (int b = 0; b < B; ++b) chunks.push_back({b, std::span<const int>(&tokens[static_cast<std::size_t>(b)], 1)});
  for (int i = 0; i < 3; ++i) model.forward(chunks, cache);  // eager, capture, first replay: out of the timing
  for (int b = 0; b < B; ++b) cache.commit(b, S);
  double device_ms = 0, wall_s = 0;
  long n = 0;
  for (auto _ : state) {
    if (cache.length(0) >= S + steps - 1) {
      state.PauseTiming();
      for (int b = 0; b < B; ++b) cache.commit(b, S);
      state.ResumeTiming();
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto logits = model.forward(chunks, cache);
    wall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    device_ms += model.backend().last_step_ms();
    ++n;
    benchmark::DoNotOptimize(logits.data.data());
  }
  // The same step with each next token sampled on the device (TokenSampling): only the token ids
  // come back instead of [B, vocab] fp32 logits. Host ms per step.
  const std::vector<double> u(static_cast<std::size_t>(B), 0.5);
  auto sampled_ms = [&](const SamplingParams& p) {
    const std::vector<SamplingParams> params(static_cast<std::size_t>(B), p);
    const int sampled_steps = 20;
    double sampled_s = 0;
    for (int i = -1; i < sampled_steps; ++i) {  // i = -1: the sampler's first call (allocations), untimed
      if (cache.length(0) >= S + steps - 1)
        for (int b = 0; b < B; ++b) cache.commit(b, S);
      const auto t0 = std::chrono::steady_clock::now();
      const auto next = model.forward(chunks, cache, {}, {params, u});
      if (i >= 0) sampled_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      benchmark::DoNotOptimize(next.tokens.data());
    }
    return sampled_s * 1e3 / sampled_steps;
  };
  state.counters["wall_sampled_ms"] = sampled_ms({});  // greedy
  // Temperature 0.8, top-p 0.9: through the histogram, and every row through the full sort.
  const SamplingParams top_p{0.8f, 0, 0.9f};
  state.counters["wall_top_p_ms"] = sampled_ms(top_p);
  model.backend().set_sort_sampling(true);
  state.counters["wall_top_p_sorted_ms"] = sampled_ms(top_p);
  model.backend().set_sort_sampling(false);
  const double kv = static_cast<double>(B) * S * kv_heads_bytes(m.config);
  const double bytes = weight_bytes(m.config) + kv;
  state.counters["device_ms"] = device_ms / n;
  state.counters["wall_ms"] = wall_s * 1e3 / n;
  state.counters["bytes_MB"] = bytes / 1e6;
  state.counters["tokens_per_s"] = B / (wall_s / n);
  state.counters["graph_replays"] = static_cast<double>(model.backend().graphs().replays());
}

void BM_TinyLlamaPrefill(benchmark::State& state) {
  const int B = static_cast<int>(state.range(0)), S = static_cast<int>(state.range(1));
  const bool lckv = state.range(2) != 0;
  TinyModel& m = tiny(lckv);
  using Cache = ContiguousCache<bf16, lc::DeviceMemory>;
  Cache cache(CacheGeometry::of(m.config, 2), B, S);
  Transformer<lc::CudaBackend<bf16>, Cache> model(m.config, m.weights.view());
  std::vector<std::vector<int>> prompts(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < S; ++t) prompts[static_cast<std::size_t>(b)].push_back((b * 131 + t * 7919) % 32000);
  {
    std::vector<SequenceChunk> warm;
    for (int b = 0; b < B; ++b) warm.push_back({cache.open(), prompts[static_cast<std::size_t>(b)]});
    model.forward(warm, cache, {PrefillMode::Iterative, false});
    for (const auto& c : warm) cache.close(c.seq);
  }
  double wall = 0;
  long n = 0;
  for (auto _ : state) {
    std::vector<SequenceChunk> chunks;
    for (int b = 0; b < B; ++b) chunks.push_back({cache.open(), prompts[static_cast<std::size_t>(b)]});
    const auto t0 = std::chrono::steady_clock::now();
    auto logits = model.forward(chunks, cache, {PrefillMode::Iterative, false});
    wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++n;
    for (const auto& c : chunks) cache.close(c.seq);
    benchmark::DoNotOptimize(logits.data.data());
  }
  // GEMM FLOPs of the work done: layers in a cyclic group run m + b passes.
  const auto& s = m.config.shape;
  const int passes = m.config.passes.total();
  int in_group = 0;
  for (const auto& g : cyclic_groups(m.config.plan)) in_group += g.end - g.begin;
  double per_layer = 2.0 * (2.0 * s.q_dim() * s.hidden_size + 3.0 * s.intermediate_size * s.hidden_size);
  double flops = 0;
  for (int l = 0; l < s.num_layers; ++l) {
    double f = per_layer + (m.config.plan.computes_kv(l) ? 2.0 * 2.0 * s.kv_dim() * s.hidden_size : 0.0);
    bool grouped = false;
    for (const auto& g : cyclic_groups(m.config.plan)) grouped = grouped || (l >= g.begin && l < g.end);
    flops += f * (grouped ? passes : 1);
  }
  flops *= static_cast<double>(B) * S;
  state.counters["tokens_per_s"] = static_cast<double>(B) * S / (wall / n);
  state.counters["gemm_flop_per_s"] = flops / (wall / n);
  state.counters["layers_in_cyclic_group"] = in_group;
}

// ---------------------------------------------------------------- sampling

__global__ void fill_logits(float* p, std::size_t n, int vocab, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    // Spread like an LM's logits: most in a band a few units wide, a handful of clear favourites per row.
    const float v = hashed_uniform(i, seed) * 6.0f;
    p[i] = (i % static_cast<std::size_t>(vocab)) % 4099 == 7 ? v + 9.0f : v;
  }
}

/// One Sampler::sample call over [rows, 32000] device logits, host wall time (it ends with the
/// tokens on the host, as generate() needs them). mode: 0 greedy, 1 temperature 0.8 over the whole
/// vocabulary, 2 top-k 50, 3 top-p 0.9, 4 top-k 50 and top-p 0.9. sort: 1 = every row through the
/// full sort (the path before the histogram, and its fallback).
void BM_Sampling(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), mode = static_cast<int>(state.range(1)), vocab = 32000;
  lc::Stream s;
  lc::Sampler sampler;
  sampler.set_sort_rows(state.range(2) != 0);
  lc::DeviceBuffer<float> logits(static_cast<std::size_t>(rows) * vocab);
  fill_logits<<<1024, 256>>>(logits.data(), logits.size(), vocab, 11);
  LCKV_CUDA_CHECK_LAUNCH("fill_logits");
  LCKV_CUDA_CHECK(cudaDeviceSynchronize());
  SamplingParams p;
  p.temperature = mode == 0 ? 0.0f : 0.8f;
  p.top_k = mode == 2 || mode == 4 ? 50 : 0;
  p.top_p = mode == 3 || mode == 4 ? 0.9f : 1.0f;
  std::vector<double> u(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) u[static_cast<std::size_t>(r)] = (r * 0.618034) - static_cast<int>(r * 0.618034);
  const MatrixView<const float> view{logits.data(), rows, vocab};
  for (int i = 0; i < 3; ++i) benchmark::DoNotOptimize(sampler.sample(view, p, u, s.get()));
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto tokens = sampler.sample(view, p, u, s.get());
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    benchmark::DoNotOptimize(tokens.data());
  }
  state.counters["sorted_rows"] = sampler.sorted_rows();
}

}  // namespace

BENCHMARK(BM_CopyBandwidth)->UseManualTime()->Iterations(20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemmBf16)->ArgNames({"n", "bf16_out"})->Args({8192, 0})->Args({8192, 1})->UseManualTime()->Iterations(20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeAttention)
    ->ArgNames({"context", "batch", "lckv", "persist", "splits"})
    ->ArgsProduct({{1024, 4096, 16384, 32768}, {1, 8, 32, 128, 256}, {0, 1}, {0}, {0}})
    ->ArgsProduct({{4096, 16384, 32768}, {2, 4}, {0}, {0}, {0}})
    ->Args({32768, 1, 1, 1, 0})
    ->Args({16384, 2, 1, 1, 0})
    ->Args({4096, 8, 1, 1, 0})
    ->ArgsProduct({{1024, 16384}, {1, 8}, {0}, {0}, {1, 2, 4, 8, 16}})
    ->ArgsProduct({{1024}, {32, 128}, {0}, {0}, {1, 2, 4, 8}})
    ->ArgsProduct({{16384, 32768}, {32}, {0}, {0}, {1, 4, 8}})
    ->ArgsProduct({{4096, 16384, 32768}, {2, 4, 8, 16, 32}, {0}, {0}, {1, 2, 4, 8, 16}})
    ->UseManualTime()
    ->MinTime(0.05)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_WideGroupDecodeAttention)
    ->ArgNames({"context", "batch", "lckv", "persist", "splits"})
    ->ArgsProduct({{1024, 16384}, {1, 8, 32}, {0}, {0}, {0}})
    ->UseManualTime()
    ->MinTime(0.05)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StreamChain)
    ->ArgNames({"context", "batch", "blocks", "layout", "cluster"})
    ->ArgsProduct({{1024, 4096, 16384, 32768}, {1, 2, 4, 8}, {64, 0}, {0, 1}, {1}})
    ->ArgsProduct({{16384, 32768}, {1, 2, 4}, {64}, {1}, {4, 8, 16}})
    ->UseManualTime()
    ->MinTime(0.05)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeOps)
    ->ArgNames({"op", "batch", "variant"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 9, 10}, {1, 8, 32}, {0, 1}})
    ->ArgsProduct({{5, 6, 7, 8, 11}, {1, 32}, {0, 1}})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SkinnyGemm)
    ->ArgNames({"op", "batch", "impl", "splits"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 9}, {16, 32, 64}, {0}, {0}})
    ->ArgsProduct({{0, 1, 2, 3, 4, 9}, {16, 32, 64}, {1}, {0, 1, 2, 4, 8, 16}})
    ->ArgsProduct({{0, 1, 2, 3, 4, 9}, {32, 64}, {2}, {0}})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GemmAlgos)
    ->ArgNames({"op", "batch"})
    ->ArgsProduct({{0, 1, 2, 3}, {16, 32, 64, 128, 256}})
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TinyLlamaDecodeStep)
    ->ArgNames({"batch", "context", "lckv", "variant", "splits"})
    ->ArgsProduct({{1}, {1024, 8192}, {0, 1}, {0, 1, 2}, {0}})
    ->ArgsProduct({{16, 32, 64, 128}, {1024, 8192}, {0, 1}, {0, 2, 3}, {0}})
    ->ArgsProduct({{2, 4, 8}, {1024, 8192}, {0, 1}, {2, 6}, {0}})
    ->ArgsProduct({{16}, {1024}, {0}, {2}, {1, 2, 4, 8}})
    ->ArgsProduct({{32, 64}, {1024, 8192}, {0, 1}, {4, 5}, {0}})
    ->Iterations(40)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sampling)
    ->ArgNames({"rows", "mode", "sort"})
    ->ArgsProduct({{1, 32, 128}, {0, 1, 2, 3, 4}, {0, 1}})
    ->UseManualTime()
    ->MinTime(0.05)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TinyLlamaPrefill)
    ->ArgNames({"batch", "prompt", "lckv"})
    ->ArgsProduct({{1, 8}, {1024}, {0, 1}})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  std::string why;
  if (!lc::device_available(&why)) {
    std::printf("bench_cuda: skipped: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  cudaDeviceProp p{};
  LCKV_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  benchmark::AddCustomContext("device", p.name);
  benchmark::AddCustomContext("sms", std::to_string(p.multiProcessorCount));
  benchmark::AddCustomContext("l2_bytes", std::to_string(p.l2CacheSize));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
