// doctest main of the CUDA tests: says once whether a device is present.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "harness.hpp"

int main(int argc, char** argv) {
  std::string why;
  if (lckv::cudatest::gpu_available(&why)) std::printf("lckv CUDA tests on %s\n", lckv::cudatest::device_name().c_str());
  else std::printf("lckv CUDA tests: skipped: no CUDA device (%s)\n", why.c_str());
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
