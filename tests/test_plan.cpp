// Layer plans (parser, named constructors, iteration plans) and attention
// masks on hand-worked cases. No model runs here.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/attention/mask.hpp"
#include "lckv/model/config.hpp"
#include "lckv/plan/iteration_plan.hpp"
#include "lckv/plan/layer_plan.hpp"
#include "lckv/plan/variants.hpp"

using namespace lckv;

namespace {

/// The PlanError message of parsing `text` ("" when it parses).
std::string parse_error(const std::string& text, int expected_layers = -1) {
  try {
    (void)parse_layer_types(text, expected_layers);
  } catch (const PlanError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string join(int first, int count, const std::string& token) {
  std::string s;
  for (int i = 0; i < count; ++i) s += (i || first ? "_" : "") + token;
  return s;
}

}  // namespace

// --- parser ----------------------------------------------------------------

TEST_CASE("parser: accepts the grammar and derives the per-layer facts") {
  const LayerPlan p = parse_layer_types("1_2s_2_10s_0_5_6_7_8_9_10");
  REQUIRE(p.num_layers() == 11);
  CHECK(p.attends_to(0) == 1);
  CHECK(p.attends_to(3) == 10);
  CHECK(p.sliding(1));
  CHECK(p.sliding(3));
  CHECK_FALSE(p.sliding(2));
  CHECK(p.attends_top(0));
  CHECK(p.attends_top(3));
  CHECK_FALSE(p.attends_top(2));  // attends to itself
  CHECK_FALSE(p.attends_top(4));  // attends below
  // computes_kv: layer appears anywhere in layer_types.
  const std::vector<bool> kv{true, true, true, false, false, true, true, true, true, true, true};
  for (int l = 0; l < 11; ++l) CHECK_MESSAGE(p.computes_kv(l) == kv[static_cast<std::size_t>(l)], "layer ", l);
  CHECK(p.num_kv_layers() == 9);
  CHECK(p.kv_slot(0) == 0);
  CHECK(p.kv_slot(3) == -1);
  CHECK(p.kv_slot(5) == 3);
  CHECK(p.layer_of_slot(3) == 5);
  CHECK(parse_layer_types("0").num_layers() == 1);
  CHECK(parse_layer_types("0s").sliding(0));
  CHECK(parse_layer_types("0_1_2", 3).num_layers() == 3);
}

TEST_CASE("parser: invalid tokens are rejected with the token and its position") {
  struct Case {
    const char* text;
    const char* token;
    int position;
  };
  const Case cases[] = {
      {"0_x_2", "\"x\"", 1},   {"0_1_2ss", "\"2ss\"", 2}, {"s_1", "\"s\"", 0},     {"0__1", "\"\"", 1},
      {"0_1_", "\"\"", 2},     {"0_-1", "\"-1\"", 1},     {"0_1s2", "\"1s2\"", 1}, {" 0_1", "\" 0\"", 0},
      {"0_1_2_3S", "\"3S\"", 3}, {"0,1", "\"0,1\"", 0},
  };
  for (const auto& c : cases) {
    const std::string msg = parse_error(c.text);
    INFO("layer_types = \"", c.text, "\": ", msg);
    REQUIRE_FALSE(msg.empty());
    CHECK(contains(msg, std::string("token ") + std::to_string(c.position) + " " + c.token));
    CHECK(contains(msg, "<layer>[s]"));
  }
}

TEST_CASE("parser: wrong counts, out-of-range indices and the empty string") {
  // Wrong count against num_hidden_layers.
  std::string msg = parse_error("0_1_2", 4);
  CHECK(contains(msg, "has 3 tokens, expected 4"));
  CHECK(parse_error("0_1_2_3", 4).empty());
  CHECK(contains(parse_error("0_1_2_3_4", 4), "has 5 tokens, expected 4"));

  // Targets outside [0, L): the message names the token and its position.
  msg = parse_error("0_1_3");
  INFO(msg);
  CHECK(contains(msg, "token 2 \"3\""));
  CHECK(contains(msg, "outside [0, 3)"));
  msg = parse_error("0_7s_1_2");
  CHECK(contains(msg, "token 1 \"7s\""));
  CHECK(contains(msg, "outside [0, 4)"));
  // A number too large for any model is caught while reading it.
  msg = parse_error("0_99999999999999999999_1");
  CHECK(contains(msg, "token 1"));
  CHECK(contains(msg, "out of range"));

  // Empty string.
  msg = parse_error("");
  CHECK(contains(msg, "empty"));

  // Too many layers.
  std::string many = "0";
  for (int i = 1; i <= kMaxLayers; ++i) many += "_0";
  msg = parse_error(many);
  CHECK(contains(msg, "token " + std::to_string(kMaxLayers)));

  // A plan is also checked where it meets a model: count against num_hidden_layers.
  ModelShape shape;
  shape.num_layers = 4;
  try {
    (void)configs::make(shape, parse_layer_types("0_1_2"));
    FAIL("configs::make accepted a 3-layer plan for a 4-layer shape");
  } catch (const PlanError& e) {
    CHECK(contains(e.what(), "expected num_hidden_layers = 4"));
  }
  // An invalid plan assembled by hand is rejected by validate().
  LayerPlan bad;
  bad.push({0, false}).push({5, false});
  CHECK_THROWS_AS(bad.validate(), PlanError);
  CHECK_THROWS_WITH_AS(LayerPlan{}.validate(), doctest::Contains("at least one layer"), PlanError);
}

TEST_CASE("parser: to_string round-trips") {
  for (const char* text : {"0", "0s", "1_2s_0", "0_3_3_3_4", "0s_1s_1_1", "0_1s_1s_3s_3s_3s_0_7s"}) {
    const LayerPlan p = parse_layer_types(text);
    CHECK(p.to_string() == text);
    CHECK(parse_layer_types(p.to_string()) == p);
  }
  CHECK_FALSE(parse_layer_types("0_1") == parse_layer_types("0_1s"));
  CHECK_FALSE(parse_layer_types("0_1") == parse_layer_types("0_1_1"));
}

// --- named constructors -------------------------------------------------------

// Usable in constant expressions: these are evaluated by the compiler.
static_assert(parse_layer_types("0_2_2_3").attends_top(1));
static_assert(parse_layer_types("0_2_2_3").num_kv_layers() == 3);
static_assert(plans::lckv(22, warmup::Sandwich{2}).num_kv_layers() == 3);
static_assert(plans::lckv(22, warmup::Sandwich{2}) == parse_layer_types(
    "0_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_21"));
static_assert(plans::pure_top(4) == parse_layer_types("3_3_3_3"));
static_assert(plans::cla(6, 2) == parse_layer_types("0_0_2_2_4_4"));
static_assert(plans::yoco(6) == parse_layer_types("0s_1s_2s_2_2_2"));
static_assert(plans::standard(3) == parse_layer_types("0_1_2"));
static_assert(plans::mix_attention(8) == parse_layer_types("0_1s_1s_3s_3s_3s_0_7s"));
static_assert(cyclic_group_end(parse_layer_types("1_2s_0"), 0) == 3);
static_assert(!plans::yoco(8).any_attends_top() && plans::pure_top(8).any_attends_top());

TEST_CASE("named constructors produce the expected layer_types") {
  // Sandwich w=2 on 22 layers: DESIGN.md's example.
  CHECK(plans::lckv(22, warmup::Sandwich{2}).to_string() == "0" + join(1, 20, "20") + "_21");
  // Sandwich w=4 keeps 2 bottom and 2 top layers.
  CHECK(plans::lckv(8, warmup::Sandwich{4}).to_string() == "0_1_5_5_5_5_6_7");
  // Odd w: w/2 at the bottom, the rest at the top.
  CHECK(plans::lckv(8, warmup::Sandwich{3}).to_string() == "0_5_5_5_5_5_6_7");
  // Bottom / top warm-up with top selection.
  CHECK(plans::lckv(8, warmup::Bottom{2}).to_string() == "0_1_7_7_7_7_7_7");
  CHECK(plans::lckv(8, warmup::Top{2}).to_string() == "5_5_5_5_5_5_6_7");
  // Middle and bottom selection.
  CHECK(plans::lckv(8, warmup::Sandwich{2}, select::Middle{}).to_string() == "0_3_3_3_3_3_3_7");
  CHECK(plans::lckv(22, warmup::Sandwich{2}, select::Middle{}).to_string() == "0" + join(1, 20, "10") + "_21");
  CHECK(plans::lckv(8, warmup::Sandwich{2}, select::Bottom{}).to_string() == "0_1_1_1_1_1_1_7");
  // Pure top (w = 0), CLA, YOCO, MixAttention.
  CHECK(plans::pure_top(5).to_string() == "4_4_4_4_4");
  CHECK(plans::lckv(5, warmup::Sandwich{0}).to_string() == "4_4_4_4_4");
  CHECK(plans::cla(8, 2).to_string() == "0_0_2_2_4_4_6_6");
  CHECK(plans::cla(7, 3).to_string() == "0_0_0_3_3_3_6");
  CHECK(plans::yoco(8).to_string() == "0s_1s_2s_3s_3_3_3_3");
  CHECK(plans::mix_attention(14).to_string() == "0_1s_1s_3s_3s_3s_0_7s_7s_9s_9s_9s_12_13s");
  CHECK(plans::standard(4).to_string() == "0_1_2_3");

  // KV layers cached, as in DESIGN.md §2's table.
  CHECK(plans::standard(22).num_kv_layers() == 22);
  CHECK(plans::lckv(22, warmup::Sandwich{10}).num_kv_layers() == 11);
  CHECK(plans::pure_top(22).num_kv_layers() == 1);
  CHECK(plans::cla(22, 2).num_kv_layers() == 11);
  CHECK(plans::yoco(8).num_kv_layers() == 4);
  // YOCO: the lower windowed layers (except the shared one) only have windowed readers.
  const auto y = plans::yoco(8);
  CHECK(y.only_windowed_readers(0));
  CHECK(y.only_windowed_readers(2));
  CHECK_FALSE(y.only_windowed_readers(3));
  CHECK_FALSE(y.only_windowed_readers(4));  // no reader at all

  // Invalid requests are PlanErrors.
  CHECK_THROWS_AS((void)plans::lckv(4, warmup::Sandwich{4}), PlanError);
  CHECK_THROWS_AS((void)plans::cla(4, 0), PlanError);
  CHECK_THROWS_AS((void)plans::yoco(1), PlanError);
  CHECK_THROWS_AS((void)plans::standard(0), PlanError);
}

// --- iteration plans ------------------------------------------------------------

namespace {
struct Step {
  int begin, end;
  bool grad, update;
};
void check_steps(const std::vector<IterationStep>& got, const std::vector<Step>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("step ", i);
    CHECK(got[i].begin == want[i].begin);
    CHECK(got[i].end == want[i].end);
    CHECK(got[i].with_grad == want[i].grad);
    CHECK(got[i].updates_hidden == want[i].update);
  }
}
/// How many steps update the hidden states of layer l (must be exactly one).
int updates_of(const std::vector<IterationStep>& steps, int l) {
  int n = 0;
  for (const auto& s : steps) n += (s.updates_hidden && l >= s.begin && l < s.end) ? 1 : 0;
  return n;
}
}  // namespace

TEST_CASE("iteration plan: 1_2s_0 is one cyclic group of 9 steps") {
  const auto steps = iteration_plan(parse_layer_types("1_2s_0"), {7, 2});
  std::vector<Step> want;
  for (int i = 0; i < 7; ++i) want.push_back({0, 3, false, false});
  want.push_back({0, 3, true, false});
  want.push_back({0, 3, true, true});
  check_steps(steps, want);
  for (int l = 0; l < 3; ++l) CHECK(updates_of(steps, l) == 1);
  CHECK(cyclic_groups(parse_layer_types("1_2s_0")).size() == 1);
}

TEST_CASE("iteration plan: acyclic plans are one step") {
  check_steps(iteration_plan(parse_layer_types("0_1s_2")), {{0, 3, true, true}});
  check_steps(iteration_plan(plans::cla(8, 2)), {{0, 8, true, true}});  // CLA attends down: acyclic
  check_steps(iteration_plan(plans::yoco(8)), {{0, 8, true, true}});
  CHECK(cyclic_groups(plans::cla(8, 2)).empty());
}

TEST_CASE("iteration plan: LCKV sandwich 0_6_6_6_6_6_6_7, m=7, b=2") {
  const auto plan = parse_layer_types("0_6_6_6_6_6_6_7");
  const auto steps = iteration_plan(plan, {7, 2});
  std::vector<Step> want{{0, 1, true, true}};
  for (int i = 0; i < 7; ++i) want.push_back({1, 7, false, false});
  want.push_back({1, 7, true, false});
  want.push_back({1, 7, true, true});
  want.push_back({7, 8, true, true});
  check_steps(steps, want);
  CHECK(steps.size() == 11);
  for (int l = 0; l < 8; ++l) CHECK(updates_of(steps, l) == 1);
  for (std::size_t i = 1; i <= 9; ++i) CHECK(steps[i].cyclic);
  CHECK_FALSE(steps[0].cyclic);
  // Other pass counts.
  CHECK(iteration_plan(plan, {0, 1}).size() == 3);
  CHECK(iteration_plan(plan, {3, 3}).size() == 8);
  CHECK_THROWS_AS(iteration_plan(plan, {7, 0}), PlanError);
}

TEST_CASE("iteration plan: pure top and groups that grow") {
  // Pure top: the whole model is one group.
  auto steps = iteration_plan(plans::pure_top(4), {2, 1});
  check_steps(steps, {{0, 4, false, false}, {0, 4, false, false}, {0, 4, true, true}});
  // 1_3_2_3_4_5: layer 0 -> 1, the group grows to 3 (layer 1 attends to 3): [0, 4); layers 4, 5 after.
  steps = iteration_plan(parse_layer_types("1_3_2_3_4_5"), {1, 1});
  check_steps(steps, {{0, 4, false, false}, {0, 4, true, true}, {4, 6, true, true}});
  // Two separate groups with an acyclic run between them: 1_1_2_4_4_5.
  steps = iteration_plan(parse_layer_types("1_1_2_4_4_5"), {1, 2});
  check_steps(steps, {{0, 2, false, false}, {0, 2, true, false}, {0, 2, true, true}, {2, 3, true, true},
                      {3, 5, false, false}, {3, 5, true, false}, {3, 5, true, true}, {5, 6, true, true}});
  const auto groups = cyclic_groups(parse_layer_types("1_1_2_4_4_5"));
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].begin == 0);
  CHECK(groups[0].end == 2);
  CHECK(groups[1].begin == 3);
  CHECK(groups[1].end == 5);
}

// --- masks --------------------------------------------------------------------------

namespace {
std::vector<int> visible(const KeySpans& s, int upto) {
  std::vector<int> out;
  for (int j = 0; j < upto; ++j)
    if (s.contains(j)) out.push_back(j);
  return out;
}
}  // namespace

TEST_CASE("masks: causal, no-diagonal, sliding window and sink on hand-checked cases") {
  using V = std::vector<int>;
  CHECK(visible(mask::Causal{}.keys(3), 10) == V{0, 1, 2, 3});
  CHECK(visible(mask::NoDiagonal{}.keys(3), 10) == V{0, 1, 2});
  CHECK(mask::NoDiagonal{}.keys(0).count() == 0);  // the first token attends to nothing
  CHECK(mask::Causal{}.keys(0).count() == 1);

  // Window of 4 keys including the diagonal.
  const KeySpans w = mask::SlidingWindow<mask::Causal>{4}.keys(10);
  CHECK(w.sink_end == 0);
  CHECK(w.begin == 7);
  CHECK(w.end == 11);
  CHECK(visible(w, 20) == V{7, 8, 9, 10});
  CHECK(visible(mask::SlidingWindow<mask::Causal>{4}.keys(2), 20) == V{0, 1, 2});
  // No-diagonal with a window: W - 1 keys.
  const KeySpans nw = mask::SlidingWindow<mask::NoDiagonal>{4}.keys(10);
  CHECK(nw.begin == 7);
  CHECK(nw.end == 10);
  CHECK(nw.count() == 3);
  CHECK(mask::SlidingWindow<mask::NoDiagonal>{1}.keys(5).count() == 0);

  // Sink 2 + window 4.
  const KeySpans sw = mask::SinkWindow<mask::Causal>{2, 4}.keys(10);
  CHECK(sw.sink_end == 2);
  CHECK(sw.begin == 7);
  CHECK(sw.end == 11);
  CHECK(visible(sw, 20) == V{0, 1, 7, 8, 9, 10});
  CHECK(sw.count() == 6);
  // Sink positions inside the window are counted once.
  CHECK(visible(mask::SinkWindow<mask::Causal>{2, 4}.keys(4), 20) == V{0, 1, 2, 3, 4});
  CHECK(mask::SinkWindow<mask::Causal>{2, 4}.keys(4).count() == 5);
  CHECK(visible(mask::SinkWindow<mask::Causal>{2, 4}.keys(1), 20) == V{0, 1});
  CHECK(mask::SinkWindow<mask::Causal>{2, 4}.keys(1).count() == 2);
  // Sink + no-diagonal window.
  CHECK(visible(mask::SinkWindow<mask::NoDiagonal>{1, 3}.keys(9), 20) == V{0, 7, 8});
  CHECK(mask::SinkWindow<mask::NoDiagonal>{1, 3}.keys(0).count() == 0);
}

TEST_CASE("masks: each layer's mask follows the plan and the options") {
  const auto plan = parse_layer_types("1_1s_0_3s");
  AttentionOptions opt;
  opt.sliding_window = 8;
  CHECK(layer_mask(plan, 0, opt) == MaskSpec{true, 0, 0});   // attends top
  CHECK(layer_mask(plan, 1, opt) == MaskSpec{false, 8, 0});  // self, windowed
  CHECK(layer_mask(plan, 2, opt) == MaskSpec{false, 0, 0});  // attends below
  CHECK(layer_mask(plan, 1, opt).name() == "causal+window8");
  opt.sink = 4;
  CHECK(layer_mask(plan, 3, opt) == MaskSpec{false, 8, 4});
  CHECK(layer_mask(plan, 3, opt).name() == "causal+sink4+window8");
  opt.force_nodiag = true;
  CHECK(layer_mask(plan, 2, opt).no_diagonal);
  opt.sliding_window = 0;
  CHECK_THROWS_WITH_AS(layer_mask(plan, 1, opt), doctest::Contains("sliding_window = 0"), InvalidArgument);

  // dispatch_mask picks the policy type that matches the spec.
  auto keys_at = [](const MaskSpec& m, int i) { return dispatch_mask(m, [&](auto p) { return p.keys(i).count(); }); };
  CHECK(keys_at({false, 0, 0}, 9) == 10);
  CHECK(keys_at({true, 0, 0}, 9) == 9);
  CHECK(keys_at({false, 3, 0}, 9) == 3);
  CHECK(keys_at({true, 3, 0}, 9) == 2);
  CHECK(keys_at({false, 3, 2}, 9) == 5);
}
