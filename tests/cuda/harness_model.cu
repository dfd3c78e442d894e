// The GPU half of the CUDA tests: the Transformer on the GPU (GpuModel). No Eigen here.

#include "harness_common.cuh"

namespace lckv::cudatest {

// ---------------------------------------------------------------- GpuModel

struct GpuModel::Impl {
  virtual ~Impl() = default;
  virtual int open() = 0;
  virtual void close(int seq) = 0;
  virtual Logits forward(std::span<const SequenceChunk> chunks, ForwardOptions options, TokenSampling sampling) = 0;
  virtual long captures() const = 0;
  virtual long replays() const = 0;
  virtual std::size_t cache_bytes() const = 0;
  virtual void another(int max_sequences, long long max_length) = 0;
  virtual void set_fusion(bool on) = 0;
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
  Logits forward(std::span<const SequenceChunk> chunks, ForwardOptions options, TokenSampling sampling) override {
    return model_.forward(chunks, cache_, options, sampling);
  }
  long captures() const override { return model_.backend().graphs().captures(); }
  long replays() const override { return model_.backend().graphs().replays(); }
  std::size_t cache_bytes() const override { return cache_.allocated_bytes(); }
  void set_fusion(bool on) override { model_.backend().set_fusion(on); }
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
  impl_->set_fusion(o.fusion);
}
GpuModel::~GpuModel() = default;
int GpuModel::open() { return impl_->open(); }
void GpuModel::close(int seq) { impl_->close(seq); }
Logits GpuModel::forward(std::span<const SequenceChunk> chunks, ForwardOptions options, TokenSampling sampling) {
  return impl_->forward(chunks, options, sampling);
}
long GpuModel::graph_captures() const { return impl_->captures(); }
long GpuModel::graph_replays() const { return impl_->replays(); }
std::size_t GpuModel::cache_bytes() const { return impl_->cache_bytes(); }
void GpuModel::allocate_another_cache(int max_sequences, long long max_length) { impl_->another(max_sequences, max_length); }

}  // namespace lckv::cudatest
