// The GPU half of the CUDA tests: attention and the cache writes. No Eigen here.

#include "harness_common.cuh"

namespace lckv::cudatest {

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

int planned_splits(int rows, int heads, int kv_heads, bool prefill_rows, int num_sms, int max_keys, bool prefill_mma) {
  return cuda::plan_attention(rows, heads, kv_heads, prefill_rows, num_sms, max_keys, prefill_mma).splits;
}

bool planned_merge_through_memory(int rows, int max_keys) {
  return cuda::plan_attention(rows, 32, 4, false, 132, max_keys).splits_through_memory;
}

std::string attention_without_workspace(int rows, int splits) {
  const ContiguousSlot<__nv_bfloat16> slot{nullptr, nullptr, 0, 1, 0, 4, 64};  // never read: the call throws first
  cuda::AttentionLaunch l;
  l.splits = splits;
  cuda::AttentionWorkspace empty;
  try {
    cuda::attention(MatrixView<const float>{nullptr, rows, 32 * 64}, slot, nullptr, MaskSpec{}, 32,
                    MatrixView<float>{nullptr, rows, 32 * 64}, l, empty, nullptr);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return {};
}

std::size_t workspace_partial_floats(std::size_t reserved) {
  cuda::AttentionWorkspace ws;
  ws.reserve(reserved);
  return ws.partials() ? ws.partial_floats() : 0;
}

bool planned_early_copies(int rows, bool prefill_rows) {
  return cuda::plan_attention(rows, 32, 4, prefill_rows, 132).older_keys_settled;
}

std::vector<float> attention(const AttentionCase& c) {
  return with_case_cache(c, [&](auto& cache, auto tag) {
    using T = decltype(tag);
    const int n = static_cast<int>(c.rows.size());
    auto dq = to_device(c.q);
    auto dr = to_device(c.rows);
    auto out = poisoned(c.q.size());
    DeviceBuffer<T> out16(c.out16 ? c.q.size() : 0);
    cuda::AttentionLaunch l = cuda::plan_attention(n, c.heads, c.kv_heads, c.prefill_tiles, cuda::device_sms(), 1 << 30,
                                                   cuda::prefill_on_tensor_cores(cache.slot(0), c.heads));
    if (c.splits > 0) l.splits = c.splits;
    cuda::AttentionWorkspace ws;
    ws.reserve(cuda::attention_workspace_floats(n, c.heads, c.head_dim, l));
    if (ws.partial_floats())  // partials and merge buffers poisoned (the counts stay zero)
      LCKV_CUDA_CHECK(cudaMemset(ws.partials(), 0xFF, ws.partial_floats() * sizeof(float)));
    const int w = c.heads * c.head_dim;
    auto run = [&] {
      out16.fill_bytes(0xFF);
      const bool wrote16 = cuda::attention(cmat(dq, n, w), cache.slot(0), dr.data(), c.mask, c.heads, mat(out, n, w), l, ws,
                                           nullptr, c.out16 ? out16.data() : nullptr);
      if (wrote16 != c.out16) throw std::runtime_error("attention: the 16-bit output was not written as asked");
      if (!c.out16) return to_host(out);
      std::vector<T> h(out16.size());
      cuda::copy_to_host(h.data(), out16.data(), h.size());
      std::vector<float> f(h.size());
      for (std::size_t i = 0; i < h.size(); ++i) f[i] = cuda::to_float(h[i]);
      return f;
    };
    // Twice, out re-poisoned: a call leaves nothing behind that changes the next (deterministic merge).
    const std::vector<float> first = run();
    out.fill_bytes(0xFF);
    std::vector<float> second = run();
    if (std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) != 0)
      throw std::runtime_error("attention: a second identical call gave a different result");
    return second;
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

}  // namespace lckv::cudatest
