#pragma once
/// \file macros.hpp
/// Portability macros shared by host and device code.

#if defined(__CUDACC__)
/// Marks functions usable from host and device code (policies, views).
#define LCKV_HD __host__ __device__ inline
#else
#define LCKV_HD inline
#endif
