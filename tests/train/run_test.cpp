// SPDX-License-Identifier: MIT
// A run is a value: train_one on the real stories260K + english_quotes equals the trainer driven by hand, bit for bit;
// its result's counts and memory are the model's; checkpointing is the spec's field; nothing is written without an
// output directory; sweeps give each configuration its seeds, mean ± std and a verdict against the seed spread; bad
// specs (unknown scheme, empty sweep, 0 seeds) are refused before any run.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <boost/test/unit_test.hpp>

#include "experiment/experiment.hpp"
#include "test_support.hpp"

using namespace loralab;
namespace ex = loralab::experiment;

namespace {
const std::string shared = LORALAB_SHARED_DIR;

const nn::model_file& stories() {
  static const nn::model_file f = nn::read_llama2c(shared + "/models/stories260K.bin");
  return f;
}

const data::prepared_dataset& quotes() {
  static const auto tok = nn::load_tokenizer(shared + "/models/tok512.model", 512);
  static const data::prepared_dataset d = [] {
    data::dataset_config dc;
    dc.file = shared + "/data/english_quotes.jsonl";
    dc.format = data::data_format::quotes;
    dc.seq_len = 48, dc.batch_size = 4, dc.val = data::val_size{16, 0.0};
    auto all = data::prepare_dataset(dc, *tok);
    all.train = all.train.head(32);
    return all;
  }();
  return d;
}

ex::run_spec spec(const std::string& scheme) {
  ex::run_spec s;
  s.scheme = scheme;
  s.lora.r = 4;
  s.targets = lora::parse_targets("q_proj,v_proj");
  s.train.max_steps = 6, s.train.lr = 3e-3, s.train.logging_steps = 3;
  return s;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(run_is_a_value)

BOOST_AUTO_TEST_CASE(train_one_is_the_trainer_driven_by_hand) {
  loralab::testing::temp_dir dir;
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path);  // nothing may appear here: the spec names no output
  const ex::run_result r = ex::train_one(stories(), quotes(), spec("nf4+dq"));
  std::filesystem::current_path(cwd);
  BOOST_TEST(std::filesystem::is_empty(dir.path), "a run without output writes nothing");

  auto m = lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories());
  const ex::run_spec s = spec("nf4-b64-dq");
  lora::attach_adapters(m, s.lora, s.targets, s.train.seed);
  lora::prepare_for_kbit_training(m);
  const double before = train::evaluate(m, quotes().val);
  train::trainer t(m, quotes(), s.train);
  const train::run_record rec = t.run();

  BOOST_TEST(r.scheme == "nf4-b64-dq");
  BOOST_TEST(r.train.step_losses == rec.step_losses, "bit for bit");
  BOOST_TEST(r.eval_before == before);
  BOOST_TEST(r.eval_after() == rec.final_eval_loss);
  BOOST_TEST(r.eval_after() < r.eval_before);
  BOOST_TEST(r.adapted_modules == 10);  // q and v in 5 layers
  BOOST_TEST(r.parameters.trainable == lora::count_parameters(m).trainable);
  BOOST_TEST(r.storage.linear_bytes == lora::count_storage(m).linear_bytes);
  BOOST_TEST(r.gradient_checkpointing, "automatic: on for a 4-bit base");
  BOOST_TEST(r.train.memory == rec.memory);
  BOOST_TEST(r.train.step_seconds.size() == 6u);
  BOOST_TEST(r.median_step_seconds() > 0);

  const auto j = r.to_json();
  for (const char* key : {"label", "scheme", "r", "targets", "trainable_parameters", "frozen_linears_bytes", "memory", "peak_rss_bytes",
                          "tokens_per_second", "eval_loss_before", "eval_loss_after", "step_losses"})
    BOOST_TEST(j.contains(key), key);
  BOOST_TEST(j.at("step_losses").size() == 6u);
  std::ostringstream os;
  os << r;
  BOOST_TEST(os.str().find("nf4-b64-dq r4 q_proj,v_proj adamw seed 42: 10 modules") == 0, os.str());
}

BOOST_AUTO_TEST_CASE(checkpointing_is_the_specs_field_and_output_is_optional) {
  loralab::testing::temp_dir dir;
  ex::run_spec on = spec("nf4-b64"), off = on;
  off.gradient_checkpointing = ex::checkpointing::off;
  off.output = dir.path / "run";
  const auto a = ex::train_one(stories(), quotes(), on), b = ex::train_one(stories(), quotes(), off);
  BOOST_TEST(a.gradient_checkpointing);
  BOOST_TEST(!b.gradient_checkpointing);
  BOOST_TEST(b.train.memory.activations > a.train.memory.activations, "checkpointing keeps fewer activations");
  for (std::size_t i = 0; i < a.train.step_losses.size(); ++i)  // recomputation gives the same gradients
    BOOST_TEST(std::abs(a.train.step_losses[i] - b.train.step_losses[i]) < 1e-6, "step " << i + 1);
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "run.json", "metrics.jsonl"})
    BOOST_TEST(std::filesystem::exists(dir.path / "run" / f), f);
  ex::run_spec dense = spec("float32");
  const auto fixed = ex::train_one<quant::scheme_list<quant::float32>, 4>(stories(), quotes(), dense);  // r 4 in the types
  const auto dynamic = ex::train_one(stories(), quotes(), dense);
  for (std::size_t i = 0; i < fixed.train.step_losses.size(); ++i)
    BOOST_TEST(std::abs(fixed.train.step_losses[i] - dynamic.train.step_losses[i]) < 1e-5, "fixed rank, step " << i + 1);
  BOOST_TEST(!ex::train_one(stories(), quotes(), dense).gradient_checkpointing, "automatic: off for a float base");
}

BOOST_AUTO_TEST_CASE(sweeps_give_seeds_spreads_and_verdicts) {
  ex::run_spec r2 = spec("float32"), r8 = r2;
  r2.lora.r = 2, r2.label = "r=2";
  r8.lora.r = 8, r8.label = "r=8";
  int calls = 0;
  const auto groups = ex::run_sweep(stories(), quotes(), {r2, r8}, 2, [&](const ex::run_result&) { ++calls; });
  BOOST_TEST(calls == 4);
  BOOST_TEST_REQUIRE(groups.size() == 2u);
  BOOST_TEST(groups[0].runs[0].spec.train.seed == 42u);
  BOOST_TEST(groups[0].runs[1].spec.train.seed == 43u);
  BOOST_TEST(groups[0].runs[0].train.step_losses != groups[0].runs[1].train.step_losses, "another seed, another run");
  const auto& loss = ex::metric_named("eval loss after");
  const ex::spread s = groups[1].of(loss);
  const double x = groups[1].runs[0].eval_after(), y = groups[1].runs[1].eval_after();
  BOOST_TEST(s.n == 2);
  BOOST_TEST(s.mean == (x + y) / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.std == std::abs(x - y) / std::sqrt(2.0), boost::test_tools::tolerance(1e-9));
  const std::string verdict = ex::compare(groups[1], groups[0], loss);
  BOOST_TEST((verdict.find("2 seeds): larger than the seed spread.") != std::string::npos ||
              verdict.find("2 seeds): within the seed spread.") != std::string::npos), verdict);
  BOOST_TEST(verdict.starts_with("r=8's eval loss after is "), verdict);

  const ex::table t = ex::sweep_table(groups, {{"r", [](const auto& g) { return g.name(); }}, "trainable params", "eval loss after"});
  BOOST_TEST(t.markdown().find(" ± ") != std::string::npos);
  BOOST_TEST(t.csv().starts_with("r,seeds,trainable params,trainable params std,eval loss after,eval loss after std\n"), t.csv());
}

// A sweep's cells: a result travels and is kept as JSON without losing a bit; --resume reruns only the cells without a
// file; a cell file of another configuration is a named hole, which the report lists before ending with an error.
BOOST_AUTO_TEST_CASE(sweep_cells_round_trip_resume_and_holes) {
  loralab::testing::temp_dir dir;
  ex::run_spec r2 = spec("float32");
  r2.lora.r = 2, r2.label = "r=2";
  ex::sweep_options o(2);
  o.cells_dir = dir.path / "cells";
  int calls = 0;
  const auto first = ex::run_sweep(stories(), quotes(), {r2}, o, [&](const ex::run_result&) { ++calls; });
  BOOST_TEST(calls == 2);
  BOOST_TEST_REQUIRE(first[0].runs.size() == 2u);
  for (const auto& r : first[0].runs) {  // the round trip, NaN included
    const auto back = ex::cell_from_json(ex::cell_to_json(r), r.spec, "test");
    BOOST_TEST(ex::cell_to_json(back).dump() == ex::cell_to_json(r).dump());
    BOOST_TEST(back.train.step_losses == r.train.step_losses);
    BOOST_TEST(back.eval_after() == r.eval_after());
    BOOST_TEST(back.to_json().dump() == r.to_json().dump());
  }
  ex::run_result nan_eval = first[0].runs[0];
  nan_eval.eval_before = NAN;
  BOOST_TEST(std::isnan(ex::cell_from_json(ex::cell_to_json(nan_eval), nan_eval.spec, "test").eval_before));
  BOOST_TEST(std::filesystem::exists(ex::cell_file(o.cells_dir, 0)));
  BOOST_TEST(std::filesystem::exists(ex::cell_file(o.cells_dir, 1)));

  std::filesystem::remove(ex::cell_file(o.cells_dir, 1));  // lost: the only one run again
  o.resume = true, calls = 0;
  const auto again = ex::run_sweep(stories(), quotes(), {r2}, o, [&](const ex::run_result&) { ++calls; });
  BOOST_TEST(calls == 1);
  BOOST_TEST_REQUIRE(again[0].runs.size() == 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    BOOST_TEST(again[0].runs[i].train.step_losses == first[0].runs[i].train.step_losses, "seed " << i);
    BOOST_TEST(again[0].runs[i].eval_after() == first[0].runs[i].eval_after(), "seed " << i);
  }
  BOOST_TEST(again[0].runs[0].train.step_seconds == first[0].runs[0].train.step_seconds, "cell 0 was read, not run");

  ex::run_spec other = r2;  // another configuration's file in cell 0's place
  other.lora.alpha = 99;
  ex::save_cell(o.cells_dir, 0, ex::cell_from_json(ex::cell_to_json(first[0].runs[0]), other, "test"));
  ex::detail::unfinished_runs().clear();
  const auto holed = ex::run_sweep(stories(), quotes(), {r2}, o);
  BOOST_TEST(holed[0].runs.size() == 1u);
  BOOST_TEST_REQUIRE(holed[0].failed.size() == 1u);
  BOOST_TEST(holed[0].failed[0].find("seed 42: ") == 0u, holed[0].failed[0]);
  BOOST_TEST(holed[0].failed[0].find("cell-0.json: holds the run 'r=2 | float32 r2 q_proj,v_proj adamw seed 42 | alpha 99 dropout 0.05 rslora false init "
                                       "kaiming_uniform | lr 0.003 steps 6 epochs 1 ga 1 clip 1 wd 0 sched linear warmup 0 | checkpointing automatic', "
                                       "but this sweep's cell 0 is 'r=2 | float32 r2 q_proj,v_proj adamw seed 42 | alpha 16 ") != std::string::npos,
             holed[0].failed[0]);
  BOOST_TEST_REQUIRE(ex::detail::unfinished_runs().size() == 1u);
  ex::report rep(dir.path / "report", "holes", "Does a hole get a name?");
  rep.table = ex::sweep_table(holed, {{"r", [](const auto& g) { return g.name(); }}, "eval loss after"});
  try {
    rep.write();
    BOOST_ERROR("write() must end with an error when a run did not finish");
  } catch (const dist::collective_error& e) {
    BOOST_TEST(std::string(e.what()).starts_with("1 run(s) did not finish (named in "), e.what());
  }
  std::ifstream md(dir.path / "report" / "report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  BOOST_TEST(text.find("**Not finished** (1 run(s)") != std::string::npos, text);
  BOOST_TEST(text.find("- r=2, seed 42: ") != std::string::npos, text);
  ex::detail::unfinished_runs().clear();
}

BOOST_AUTO_TEST_CASE(bad_specs_are_refused_before_any_run) {
  const auto says = [](const char* text) {
    return [text](const loralab::error& e) {
      BOOST_TEST_MESSAGE(e.what());
      return std::string(e.what()).find(text) != std::string::npos;
    };
  };
  BOOST_CHECK_EXCEPTION(ex::train_one(stories(), quotes(), spec("nf5")), loralab::error,
                        says("unknown scheme 'nf5'; known: float32, bfloat16, nf4-b64, nf4-b64-dq"));
  BOOST_CHECK_EXCEPTION(ex::run_sweep(stories(), quotes(), {}, 1), loralab::error, says("the sweep is empty"));
  BOOST_CHECK_EXCEPTION(ex::run_sweep(stories(), quotes(), {spec("float32")}, 0), loralab::error, says("--seeds must be >= 1, got 0"));
  int runs = 0;  // the second spec is bad: the first must not have run
  ex::run_spec bad = spec("float32");
  bad.lora.r = 0;
  BOOST_CHECK_EXCEPTION(ex::run_sweep(stories(), quotes(), {spec("float32"), bad}, 1, [&](const auto&) { ++runs; }), loralab::error,
                        says("--r (LoRA rank) must be > 0, got 0"));
  BOOST_TEST(runs == 0);
  BOOST_CHECK_EXCEPTION((ex::train_one<quant::scheme_list<quant::float32>, 8>(stories(), quotes(), spec("float32"))), loralab::error,
                        says("LoRA rank 4 does not match the model's fixed rank 8"));
  BOOST_CHECK_EXCEPTION(ex::metric_named("loss"), loralab::error, says("unknown metric 'loss'; known: trainable params"));
}

BOOST_AUTO_TEST_SUITE_END()
