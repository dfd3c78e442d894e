// lckv: inspect layer plans, compare KV-sharing variants, generate, convert
// checkpoints and measure perplexity. Bad arguments: one line on stderr, exit 2.

#include <cstdio>

#include "cli_common.hpp"
#ifdef LCKV_WITH_CUDA
#include "cuda_runner.hpp"
#endif

namespace lckv::cli {
void require_device(const std::string& device) {
  if (device != "cuda") return;
#ifdef LCKV_WITH_CUDA
  std::string why;
  if (!cuda_available(&why)) throw InvalidArgument("--device cuda: " + why);
#else
  throw InvalidArgument("--device cuda: this lckv was built without the CUDA backend (configure with -DLCKV_CUDA=ON)");
#endif
}
}  // namespace lckv::cli

int main(int argc, char** argv) {
  CLI::App app{"lckv: transformer decoders with cross-layer KV sharing (LCKV, CLA, YOCO, ...)", "lckv"};
  app.require_subcommand(1);
  lckv::cli::add_plan_command(app);
  lckv::cli::add_compare_command(app);
  lckv::cli::add_generate_command(app);
  lckv::cli::add_convert_command(app);
  lckv::cli::add_perplexity_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lckv: error: %s\n", e.what());
    return 2;
  } catch (const lckv::Error& e) {
    std::fprintf(stderr, "lckv: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lckv: failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
