#pragma once
/// \file cuda.cuh
/// Umbrella header of the CUDA backend (include from .cu files only; no Eigen here).

#include "lckv/cuda/attention.cuh"
#include "lckv/cuda/backend.cuh"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/gemm.cuh"
#include "lckv/cuda/gemm_tc.cuh"
#include "lckv/cuda/gemv.cuh"
#include "lckv/cuda/graph.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/mma.cuh"
#include "lckv/cuda/ops.cuh"
#include "lckv/cuda/sampling.cuh"
#include "lckv/cuda/stream.cuh"
#include "lckv/cuda/weights.cuh"
