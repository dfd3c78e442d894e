// Kernel timeline of an unmodified CUDA program, graph replays included: a
// CUPTI injection library. Nsight Systems is not on the GPU machines, and
// Nsight Compute times each kernel alone, which hides what overlapped
// (programmatic dependent) launches do to each other inside a decode step.
//
//   CUDA_INJECTION64_PATH=libcuda_timeline.so LCKV_TIMELINE=trace.csv program ...
//   python3 bench/cuda/timeline.py trace.csv
//
// Writes one CSV line per kernel execution: start and end (ns, GPU clock),
// the graph launch it belongs to (correlation id), grid, block, and the
// demangled name. Concurrent-kernel tracing does not serialise kernels.
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace {

std::FILE* g_out = nullptr;

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "cuda_timeline: %s failed: %s\n", what, msg ? msg : "?");
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBytes = 8u << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
  *size = *buffer ? kBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> plain(abi::__cxa_demangle(k->name, nullptr, nullptr, &status),
                                                      &std::free);
    const char* name = status == 0 && plain ? plain.get() : k->name;
    // Commas inside template arguments would split the CSV: the name goes last, quoted.
    std::fprintf(g_out, "%llu,%llu,%u,%u,%d,%d,%d,%d,\"%s\"\n", static_cast<unsigned long long>(k->start),
                 static_cast<unsigned long long>(k->end), k->correlationId, k->graphId, k->gridX, k->gridY,
                 k->blockX, k->registersPerThread, name);
  }
  std::free(buffer);
}

void finish() {
  cuptiActivityFlushAll(1);
  if (g_out) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

/// Called by the CUDA driver when CUDA_INJECTION64_PATH names this library.
extern "C" int InitializeInjection() {
  const char* path = std::getenv("LCKV_TIMELINE");
  g_out = std::fopen(path ? path : "timeline.csv", "w");
  if (!g_out) {
    std::fprintf(stderr, "cuda_timeline: cannot write %s\n", path ? path : "timeline.csv");
    return 0;
  }
  std::fprintf(g_out, "start_ns,end_ns,correlation,graph,grid_x,grid_y,block_x,registers,name\n");
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(CONCURRENT_KERNEL)");
  std::atexit(finish);
  return 1;
}
