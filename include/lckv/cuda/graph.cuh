#pragma once
/// \file graph.cuh
/// Replays a recorded sequence of launches. A step is named by a key that
/// holds everything its launches depend on (shapes, buffer addresses); the
/// first time a key is seen the step runs eagerly (allocations happen then),
/// the second time it is captured into a CUDA Graph and launched, and from
/// then on only the graph is launched. A first run that throws does not count:
/// its allocations may not have happened, so the next run is eager again. Data
/// that changes between steps (tokens, positions) must live in device buffers
/// the graph reads, at fixed addresses.

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <vector>

#include "lckv/cuda/error.cuh"

namespace lckv::cuda {

class StepGraphs {
public:
  using Key = std::vector<std::int64_t>;

  StepGraphs() = default;
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;
  ~StepGraphs() { clear(); }

  /// Runs `f(capturing)` (which enqueues work on `stream`) eagerly, or through its graph.
  template <class F>
  void run(const Key& key, cudaStream_t stream, F&& f) {
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      f(false);
      entries_.emplace(key, Entry{});
      return;
    }
    Entry& e = it->second;
    if (!e.exec) {
      cudaGraph_t graph = nullptr;
      LCKV_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        f(true);
      } catch (...) {
        // Ends the (possibly invalidated) capture; its own error is not the one being reported.
        if (cudaStreamEndCapture(stream, &graph) != cudaSuccess) (void)cudaGetLastError();
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      LCKV_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      const cudaError_t inst = cudaGraphInstantiate(&e.exec, graph, 0);
      cudaGraphDestroy(graph);
      LCKV_CUDA_CHECK(inst);
      ++captures_;
    }
    LCKV_CUDA_CHECK(cudaGraphLaunch(e.exec, stream));
    ++replays_;
  }

  void clear() {
    for (auto& [k, e] : entries_)
      if (e.exec) cudaGraphExecDestroy(e.exec);
    entries_.clear();
  }
  long captures() const { return captures_; }
  long replays() const { return replays_; }

private:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
  };
  std::map<Key, Entry> entries_;
  long captures_ = 0, replays_ = 0;
};

}  // namespace lckv::cuda
