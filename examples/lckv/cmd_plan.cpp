// `lckv plan`: a layer plan as a table — what each layer attends to, its mask,
// whether it computes KV — its cyclic groups and iteration steps, and its KV
// bytes per token against the standard decoder.

#include <nlohmann/json.hpp>

#include "cli_common.hpp"

namespace lckv::cli {
namespace {

struct PlanCommand {
  PlanOptions plan;
  std::string shape = "tinyllama-1.1b";
  std::string dtype = "bf16";
  int forward_passes = 7;
  int backward_passes = 2;
  int sliding_window = 4096;
  bool force_nodiag = false;
  bool json = false;

  void run() const {
    ModelShape s = shape_by_name(shape);
    const LayerPlan p = make_plan(plan, s.num_layers);
    s.num_layers = p.num_layers();
    ModelConfig c;
    c.shape = s;
    c.plan = p;
    c.passes = {forward_passes, backward_passes};
    c.attention.sliding_window = sliding_window;
    c.attention.force_nodiag = force_nodiag;
    c.validate();
    const auto steps = iteration_plan(p, c.passes);
    const int bytes = dtype_bytes(dtype);
    const std::size_t per_token = kv_bytes_per_token(c, bytes);
    ModelConfig standard = c;
    standard.plan = plans::standard(p.num_layers());
    const std::size_t standard_per_token = kv_bytes_per_token(standard, bytes);

    std::vector<int> group_of(static_cast<std::size_t>(p.num_layers()), -1);
    const auto groups = cyclic_groups(p);
    for (std::size_t g = 0; g < groups.size(); ++g)
      for (int l = groups[g].begin; l < groups[g].end; ++l) group_of[static_cast<std::size_t>(l)] = static_cast<int>(g);

    if (json) {
      nlohmann::json j;
      j["layer_types"] = p.to_string();
      j["num_layers"] = p.num_layers();
      j["num_kv_layers"] = p.num_kv_layers();
      for (int l = 0; l < p.num_layers(); ++l)
        j["layers"].push_back({{"layer", l},
                               {"attends_to", p.attends_to(l)},
                               {"attends_top", p.attends_top(l)},
                               {"mask", layer_mask(p, l, c.attention).name()},
                               {"computes_kv", p.computes_kv(l)},
                               {"kv_slot", p.kv_slot(l)},
                               {"cyclic_group", group_of[static_cast<std::size_t>(l)]}});
      for (const auto& g : groups) j["cyclic_groups"].push_back({{"begin", g.begin}, {"end", g.end}});
      for (const auto& st : steps)
        j["iteration_steps"].push_back({{"begin", st.begin}, {"end", st.end}, {"with_grad", st.with_grad},
                                        {"updates_hidden", st.updates_hidden}});
      j["kv_bytes_per_token"] = per_token;
      j["standard_kv_bytes_per_token"] = standard_per_token;
      j["dtype"] = dtype;
      j["shape"] = shape;
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }

    std::printf("layer_types %s\n%d layers, %d compute KV\n\n", p.to_string().c_str(), p.num_layers(), p.num_kv_layers());
    std::vector<std::vector<std::string>> rows;
    for (int l = 0; l < p.num_layers(); ++l) {
      const int g = group_of[static_cast<std::size_t>(l)];
      rows.push_back({std::to_string(l), std::to_string(p.attends_to(l)) + (p.attends_top(l) ? " (above)" : ""),
                      layer_mask(p, l, c.attention).name(), p.computes_kv(l) ? "yes" : "-",
                      p.computes_kv(l) ? std::to_string(p.kv_slot(l)) : "-", g >= 0 ? std::to_string(g) : "-"});
    }
    print_table({"layer", "attends to", "mask", "computes KV", "cache slot", "cyclic group"}, rows);

    std::printf("\ncyclic groups:");
    if (groups.empty()) std::printf(" none (every layer is computed once, exactly)\n");
    for (const auto& g : groups) std::printf(" [%d, %d)", g.begin, g.end);
    if (!groups.empty())
      std::printf("\n  prompts of n <= %d tokens are computed token by token (exact); longer ones in %d + %d passes\n",
                  c.passes.total(), forward_passes, backward_passes);
    std::printf("\niteration steps (%zu):\n", steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const auto& st = steps[i];
      std::printf("  %2zu. layers [%d, %d)%s%s\n", i + 1, st.begin, st.end, st.with_grad ? "" : "  no gradients",
                  st.updates_hidden ? "  updates hidden states" : "  KV only");
    }
    std::printf("\nKV cache (%s, %s shape): %.2f KiB/token vs %.2f KiB/token standard: %.2fx smaller\n", dtype.c_str(),
                shape.c_str(), static_cast<double>(per_token) / 1024.0, static_cast<double>(standard_per_token) / 1024.0,
                static_cast<double>(standard_per_token) / static_cast<double>(per_token));
  }
};

}  // namespace

void add_plan_command(CLI::App& app) {
  auto cmd_state = std::make_shared<PlanCommand>();
  auto& o = *cmd_state;
  CLI::App* cmd = app.add_subcommand("plan", "show a layer plan: per-layer table, cyclic groups, KV bytes per token");
  add_plan_options(*cmd, o.plan);
  cmd->add_option("--shape", o.shape, "model shape for KV bytes")->check(CLI::IsMember(shape_names()));
  cmd->add_option("--dtype", o.dtype, "KV element type")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--forward-passes", o.forward_passes, "m: passes without gradients")->check(CLI::NonNegativeNumber);
  cmd->add_option("--backward-passes", o.backward_passes, "b: passes with gradients")->check(CLI::PositiveNumber);
  cmd->add_option("--sliding-window", o.sliding_window, "window of 's' layers")->check(CLI::PositiveNumber);
  cmd->add_flag("--force-nodiag", o.force_nodiag, "every layer uses the no-diagonal mask");
  cmd->add_flag("--json", o.json, "machine-readable output");
  cmd->callback([cmd_state] { cmd_state->run(); });
}

}  // namespace lckv::cli
