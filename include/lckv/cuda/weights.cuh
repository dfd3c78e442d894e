#pragma once
/// \file weights.cuh
/// Model weights on the device in fp32, bf16 or fp16: one allocation holding
/// every tensor of a HostWeights in its order (q / k / v and gate / up back to
/// back, which Gemm::packs looks for), converted on upload, handed out as the
/// same WeightsView<T> the model takes.
///
/// \code
///   auto host = lckv::HostWeights::random(config, 1);
///   lckv::cuda::DeviceWeights<__nv_bfloat16> dev(host);
///   lckv::Transformer<lckv::cuda::CudaBackend<__nv_bfloat16>, Cache> model(config, dev.view());
/// \endcode

#include <vector>

#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/model/weights.hpp"

namespace lckv::cuda {

template <StorageType T>
class DeviceWeights {
public:
  explicit DeviceWeights(const HostWeights& host) : host_view_(host.view()) {
    base_ = host_view_.embed_tokens;  // the first tensor: offset 0 of the store
    const std::size_t n = host.num_parameters();
    std::vector<T> staged(n);
    for (std::size_t i = 0; i < n; ++i) staged[i] = from_float<T>(base_[i]);
    data_ = DeviceBuffer<T>(n);
    copy_to_device(data_.data(), staged.data(), n);
  }

  /// Device pointers laid out as HostWeights::view(); valid while this object lives.
  WeightsView<T> view() const {
    WeightsView<T> v;
    v.embed_tokens = map(host_view_.embed_tokens);
    v.norm = map(host_view_.norm);
    v.lm_head = map(host_view_.lm_head);
    for (const auto& l : host_view_.layers) {
      LayerWeightsView<T> d;
      d.q_proj = map(l.q_proj);
      d.k_proj = map(l.k_proj);
      d.v_proj = map(l.v_proj);
      d.o_proj = map(l.o_proj);
      d.gate_proj = map(l.gate_proj);
      d.up_proj = map(l.up_proj);
      d.down_proj = map(l.down_proj);
      d.input_layernorm = map(l.input_layernorm);
      d.post_attention_layernorm = map(l.post_attention_layernorm);
      v.layers.push_back(d);
    }
    return v;
  }
  std::size_t bytes() const { return data_.bytes(); }

private:
  const T* map(const float* p) const { return p ? data_.data() + (p - base_) : nullptr; }
  WeightsView<float> host_view_;
  const float* base_ = nullptr;
  DeviceBuffer<T> data_;
};

}  // namespace lckv::cuda
