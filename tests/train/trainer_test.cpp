// SPDX-License-Identifier: MIT
// The trainer on the real stories260K and english_quotes: LoRA and QLoRA lower the loss; an interrupted run
// resumed from its checkpoint continues bit for bit; gradient accumulation gives the token mean of the window;
// the same seed gives the same numbers; a NaN loss stops with a clear message. Faults: a save that runs out of
// disk space (RLIMIT_FSIZE) stops the run and leaves the previous checkpoint complete; a checkpoint damaged after
// the fact is refused naming the file, and an older one is used only when named (resume_from); non-finite base
// weights, adapter weights and optimizer state are refused by name.
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "lora/lora.hpp"
#include "train/run_files.hpp"
#include "train/trainer.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::lora;
using namespace loralab::data;
using namespace loralab::train;

namespace {
const std::string shared = LORALAB_SHARED_DIR;

const nn::model_file& stories() {
  static const nn::model_file f = nn::read_llama2c(shared + "/models/stories260K.bin");
  return f;
}

prepared_dataset quotes(int batch_size, int val = 0) {
  static const auto tok = nn::load_tokenizer(shared + "/models/tok512.model", 512);
  dataset_config dc;
  dc.file = shared + "/data/english_quotes.jsonl";
  dc.format = data_format::quotes;
  dc.seq_len = 64;
  dc.batch_size = batch_size;
  dc.val = val_size{std::size_t(val), 0.0};
  return prepare_dataset(dc, *tok);
}

/// The options of a test run, and where its files go.
struct run_options : train_options {
  std::filesystem::path output_dir;
  bool resume = false;
};

run_options options(const std::filesystem::path& out, int steps) {
  run_options o;
  o.output_dir = out;
  o.max_steps = steps;
  o.lr = 2e-3;
  o.logging_steps = 5;
  return o;
}

template <class Base>
run_record train_run(lora_model<Base>& m, prepared_dataset& d, const run_options& o, double dropout = 0.05) {
  lora_config lc;
  lc.dropout = dropout;
  const auto targets = parse_targets("q_proj,v_proj");
  attach_adapters(m, lc, targets, o.seed);
  prepare_for_kbit_training(m);
  trainer<lora_model<Base>> t(m, d, o);
  run_files<lora_model<Base>> files(o.output_dir, lc, targets, "stories260K");
  t.observe(files);
  if (o.resume) BOOST_TEST(resume_latest(t, o.output_dir, nullptr) > 0);
  return t.run();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(trainer_suite)

BOOST_AUTO_TEST_CASE(lora_and_qlora_lower_train_and_eval_loss) {
  loralab::testing::temp_dir dir;
  double eval_loss[2] = {0, 0};
  for (bool q : {false, true}) {
    auto d = quotes(8, 40);
    auto o = options(dir.path / (q ? "qlora" : "lora"), 40);
    o.eval_steps = 20;
    run_record r;
    if (q) {
      auto m = make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories());
      r = train_run(m, d, o);
    } else {
      auto m = make_lora_dense_model<float>(stories());
      r = train_run(m, d, o);
    }
    const double first = (r.step_losses[0] + r.step_losses[1] + r.step_losses[2]) / 3;
    const double last = (r.step_losses[37] + r.step_losses[38] + r.step_losses[39]) / 3;
    const double eval_first = r.history[4].values.at("eval_loss").get<double>();
    BOOST_TEST_MESSAGE((q ? "QLoRA" : "LoRA") << ": train " << first << " -> " << last << ", eval " << eval_first << " -> "
                                              << r.final_eval_loss);
    BOOST_TEST(last < first - 0.1);
    BOOST_TEST(r.final_eval_loss < eval_first);
    BOOST_TEST(std::filesystem::exists(o.output_dir / "adapter_model.safetensors"));
    BOOST_TEST(std::filesystem::exists(o.output_dir / "run.json"));
    BOOST_TEST(std::filesystem::exists(o.output_dir / "metrics.jsonl"));
    if (q) BOOST_TEST(r.memory.weights < r.memory.quant_stats * 40, "4-bit weights: codes next to their statistics");
    eval_loss[q] = r.final_eval_loss;
  }
  // QLoRA's claim, tested rather than assumed: at equal steps its eval loss is within 5% of LoRA's
  const double gap = eval_loss[1] / eval_loss[0] - 1;
  BOOST_TEST_MESSAGE("QLoRA (nf4+DQ) vs LoRA eval loss gap: " << 100 * gap << "%");
  BOOST_TEST(gap < 0.05);
}

/// compute<bf16> (the frozen base's products in bf16, float accumulation) trains like float32: the 40-step LoRA and
/// QLoRA runs above, their train and eval losses within 1 % of the float path's (the bound), and the bf16
/// buffers counted in the planned memory.
BOOST_AUTO_TEST_CASE(bf16_products_train_within_one_percent_of_float) {
  loralab::testing::temp_dir dir;
  const auto run = [&]<class W, class C>(std::type_identity<W>, C, const std::string& name) {
    auto d = quotes(8, 40);
    auto o = options(dir.path / name, 40);
    o.eval_steps = 40;
    auto m = make_lora_model<nn::linear<W, C>>(stories(), [](const float* p, Eigen::Index n, Eigen::Index k) {
      return nn::make_linear<W, C>(p, n, k);
    });
    const run_record r = train_run(m, d, o);
    const std::size_t planned = r.memory.workspace, held = m.measured_memory().workspace;
    BOOST_TEST(held <= planned, name << ": workspace held " << held << " B, planned " << planned << " B");
    return std::pair{(r.step_losses[37] + r.step_losses[38] + r.step_losses[39]) / 3, r.final_eval_loss};
  };
  using dense = nn::dense_weight<float>;
  using nf4dq = nn::quant_weight<quant::double_quant<quant::nf4<64>>>;
  const auto lora = run(std::type_identity<dense>{}, nn::compute<float>{}, "lora");
  const auto lora16 = run(std::type_identity<dense>{}, nn::compute<nn::bf16>{}, "lora_bf16");
  const auto qlora = run(std::type_identity<nf4dq>{}, nn::compute<float>{}, "qlora");
  const auto qlora16 = run(std::type_identity<nf4dq>{}, nn::compute<nn::bf16>{}, "qlora_bf16");
  BOOST_TEST_MESSAGE("LoRA float/bf16: train " << lora.first << " / " << lora16.first << ", eval " << lora.second << " / " << lora16.second);
  BOOST_TEST_MESSAGE("QLoRA float/bf16: train " << qlora.first << " / " << qlora16.first << ", eval " << qlora.second << " / " << qlora16.second);
  BOOST_TEST(std::abs(lora16.first / lora.first - 1) < 0.01);
  BOOST_TEST(std::abs(lora16.second / lora.second - 1) < 0.01);
  BOOST_TEST(std::abs(qlora16.first / qlora.first - 1) < 0.01);
  BOOST_TEST(std::abs(qlora16.second / qlora.second - 1) < 0.01);
  BOOST_TEST(lora16.first != lora.first, "bf16 products are not the float path under another name");
}

BOOST_AUTO_TEST_CASE(interrupt_and_resume_continue_bit_for_bit) {
  loralab::testing::temp_dir dir;
  auto d = quotes(4);
  auto straight = make_lora_dense_model<float>(stories());
  const auto full = train_run(straight, d, options(dir.path / "straight", 12));
  auto o = options(dir.path / "resumed", 12);
  o.stop_after_steps = 5;  // as if interrupted (SIGINT takes the same path)
  auto first = make_lora_dense_model<float>(stories());
  const auto part = train_run(first, d, o);
  BOOST_TEST(part.interrupted);
  BOOST_TEST(std::filesystem::exists(o.output_dir / "checkpoint-5" / "trainer_state.json"));
  o.stop_after_steps = 0, o.resume = true;
  auto second = make_lora_dense_model<float>(stories());
  o.seed = 999;  // the adapters' initialisation differs; the checkpoint overwrites them ...
  BOOST_CHECK_EXCEPTION(train_run(second, d, o), loralab::error, [](const loralab::error& e) {  // ... but not the seed
    return std::string(e.what()).find("saved with --seed 42, resumed with --seed 999") != std::string::npos;
  });
  o.seed = 42;
  const auto rest = train_run(second, d, o);
  BOOST_TEST_REQUIRE(rest.step_losses.size() == full.step_losses.size());
  for (std::size_t i = 0; i < full.step_losses.size(); ++i)
    BOOST_TEST(rest.step_losses[i] == full.step_losses[i], "step " << i + 1);  // bit for bit
  const auto a = io::safetensors_file::open(o.output_dir / "adapter_model.safetensors");
  const auto b = io::safetensors_file::open(dir.path / "straight" / "adapter_model.safetensors");
  for (const auto& t : a.tensors()) BOOST_TEST((t.to_float() == b.at(t.name).to_float()), t.name);
}

BOOST_AUTO_TEST_CASE(same_seed_same_numbers_and_accumulation_is_a_token_mean) {
  loralab::testing::temp_dir dir;
  auto d2 = quotes(2), d1 = quotes(1);
  auto a = make_lora_dense_model<float>(stories()), b = make_lora_dense_model<float>(stories());
  const auto ra = train_run(a, d2, options(dir.path / "a", 6), 0.0);
  const auto rb = train_run(b, d2, options(dir.path / "b", 6), 0.0);
  BOOST_TEST(ra.step_losses == rb.step_losses);
  // batch 2 x 1 micro-batch vs batch 1 x 2 micro-batches: the same rows, the same token-mean loss per step
  auto c = make_lora_dense_model<float>(stories());
  auto o = options(dir.path / "c", 6);
  o.grad_accum = 2;
  const auto rc = train_run(c, d1, o, 0.0);
  for (std::size_t i = 0; i < ra.step_losses.size(); ++i)
    BOOST_TEST(rc.step_losses[i] == ra.step_losses[i], boost::test_tools::tolerance(1e-5));
}

// Replicas: each micro-batch's rows cut among clones of the model, one thread each. The same batches, dropout masks
// (each row keeps the mask it has in the whole batch: with dropout 0.1 any other mask moves the loss by ~1e-2) and
// token-mean loss, so the curve equals one model's up to the order of float additions; an uneven cut (4 rows over 3)
// and a quantized base with checkpointing too. The planned memory counts every clone.
BOOST_AUTO_TEST_CASE(replicas_split_rows_and_keep_the_batchs_masks) {
  loralab::testing::temp_dir dir;
  auto d = quotes(4);
  const auto curve = [&](auto m, int replicas, const char* name) {
    auto o = options(dir.path / name, 8);
    o.grad_accum = 2, o.replicas = replicas;
    return train_run(m, d, o, 0.1);
  };
  const auto one = curve(make_lora_dense_model<float>(stories()), 1, "one");
  for (int replicas : {2, 3}) {
    const auto many = curve(make_lora_dense_model<float>(stories()), replicas, replicas == 2 ? "two" : "three");
    BOOST_TEST_REQUIRE(many.step_losses.size() == one.step_losses.size());
    for (std::size_t i = 0; i < one.step_losses.size(); ++i)
      BOOST_TEST(many.step_losses[i] == one.step_losses[i], boost::test_tools::tolerance(1e-5));
    BOOST_TEST(many.step_losses != one.step_losses, "another order of additions: not the same bits (else the clones did nothing)");
  }
  const auto q1 = curve(make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories()), 1, "q1");
  const auto q2 = curve(make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories()), 2, "q2");
  for (std::size_t i = 0; i < q1.step_losses.size(); ++i)
    BOOST_TEST(q2.step_losses[i] == q1.step_losses[i], boost::test_tools::tolerance(1e-5));
  BOOST_TEST(q2.memory.weights == 2 * q1.memory.weights, "a clone holds its own frozen base");
  BOOST_TEST(q2.memory.adapters == 2 * q1.memory.adapters);
  BOOST_TEST(double(q2.memory.activations) < 1.2 * double(q1.memory.activations), "the rows are cut, not copied");
}

BOOST_AUTO_TEST_CASE(nan_loss_stops_with_a_clear_message) {
  loralab::testing::temp_dir dir;
  auto d = quotes(4);
  auto m = make_lora_dense_model<float>(stories());
  lora_config lc;
  attach_adapters(m, lc, parse_targets("q_proj"), 1);
  m.layers[2].q_proj.adapter->A(0, 0) = NAN;
  m.layers[2].q_proj.adapter->B(0, 0) = 1.0f;
  auto o = options(dir.path / "nan", 5);
  trainer t(m, d, o);
  run_files<decltype(m)> files(o.output_dir, lc, parse_targets("q_proj"), "stories260K");
  t.observe(files);
  BOOST_CHECK_EXCEPTION(t.run(), loralab::error, [](const loralab::error& e) {
    const std::string s = e.what();
    BOOST_TEST_MESSAGE(s);
    return s.find("step 1: loss is NaN") != std::string::npos &&
           s.find("first non-finite tensor: weight 'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight' is NaN at element 0") !=
               std::string::npos &&
           s.find("last good checkpoint is kept (none saved yet)") != std::string::npos;
  });
  BOOST_TEST(!std::filesystem::exists(o.output_dir / "adapter_model.safetensors"));
}

namespace {
/// Runs f() and returns the loralab::error's message it threw ("" when it threw none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const loralab::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    return e.what();
  }
  return "";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A 6-step run saving every 3 steps (checkpoint-3, checkpoint-6) into `out`.
run_record six_steps(const std::filesystem::path& out, bool resume = false) {
  auto d = quotes(4);
  auto m = make_lora_dense_model<float>(stories());
  auto o = options(out, 6);
  o.save_steps = 3, o.resume = resume;
  return train_run(m, d, o);
}

/// Sets RLIMIT_FSIZE's soft limit to `bytes` when step `at` is done (SIGXFSZ ignored: write() fails with EFBIG,
/// as on a full disk); puts the old limit and handler back when destroyed.
struct file_size_limit final : train_observer<lora_model<nn::linear<nn::dense_weight<float>>>> {
  int at;
  rlim_t bytes;
  rlimit old{};
  void (*old_handler)(int) = nullptr;
  file_size_limit(int at_step, rlim_t b) : at(at_step), bytes(b) {
    getrlimit(RLIMIT_FSIZE, &old);
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
  }
  ~file_size_limit() override {
    setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
  void on_step(trainer<lora_model<nn::linear<nn::dense_weight<float>>>>&, int step, double) override {
    if (step == at) {
      rlimit l = old;
      l.rlim_cur = bytes;
      setrlimit(RLIMIT_FSIZE, &l);
    }
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(disk_full_while_saving_stops_and_keeps_the_previous_checkpoint) {
  loralab::testing::temp_dir dir;
  const auto out = dir.path / "full";
  {  // the limit holds in this block only
    auto d = quotes(4);
    auto m = make_lora_dense_model<float>(stories());
    static_assert(std::same_as<decltype(m), lora_model<nn::linear<nn::dense_weight<float>>>>);
    auto o = options(out, 6);
    o.save_steps = 3;
    lora_config lc;
    const auto targets = parse_targets("q_proj,v_proj");
    attach_adapters(m, lc, targets, o.seed);
    trainer t(m, d, o);
    file_size_limit full(4, 20000);  // after checkpoint-3: the 38 KB adapter file of checkpoint-6 does not fit
    run_files<decltype(m)> files(out, lc, targets, "stories260K");
    t.observe(full).observe(files);
    const std::string e = error_of([&] { t.run(); });
    BOOST_TEST(has(e, "step 6: checkpoint-6 could not be saved: "));
    BOOST_TEST(has(e, "adapter_model.safetensors: write failed: File too large"));
    BOOST_TEST(has(e, "The newest complete checkpoint is " + (out / "checkpoint-3").string() + " (--resume continues from it)"));
    BOOST_TEST(!std::filesystem::exists(out / "checkpoint-6"));
    for (const auto& f : std::filesystem::directory_iterator(out))
      BOOST_TEST(!has(f.path().filename().string(), "partial"), f.path() << ": a leftover of the failed save");
    BOOST_TEST(verify_checkpoint(out / "checkpoint-3").empty());
    BOOST_TEST(!std::filesystem::exists(out / "adapter_model.safetensors"));
  }
  // the run goes on from checkpoint-3 once there is space, bit for bit
  const auto resumed = six_steps(out, true);
  const auto straight = six_steps(dir.path / "straight");
  BOOST_TEST(resumed.step_losses == straight.step_losses);
}

BOOST_AUTO_TEST_CASE(a_damaged_checkpoint_is_named_and_an_older_one_used_only_when_named) {
  loralab::testing::temp_dir dir;
  const auto out = dir.path / "run";
  six_steps(out);
  const auto c6 = out / "checkpoint-6", c3 = out / "checkpoint-3";
  const auto resume = [&](const std::function<int(trainer<lora_model<nn::linear<nn::dense_weight<float>>>>&)>& how) {
    auto d = quotes(4);
    auto m = make_lora_dense_model<float>(stories());
    attach_adapters(m, lora_config{}, parse_targets("q_proj,v_proj"), 42);
    auto o = options(out, 6);
    trainer t(m, d, o);
    return error_of([&] { how(t); });
  };
  const auto latest = [&](auto& t) { return resume_latest(t, out, nullptr); };
  const auto save = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string adapter6 = save(c6 / "adapter_model.safetensors"), state6 = save(c6 / "trainer_state.json");
  const auto put = [](const std::filesystem::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; };

  BOOST_TEST(resume(latest) == "", "an intact checkpoint resumes");
  put(c6 / "adapter_model.safetensors", adapter6.substr(0, adapter6.size() - 100));  // truncated tensor file
  std::string e = resume(latest);
  BOOST_TEST(has(e, (c6 / "adapter_model.safetensors").string() + ": " + std::to_string(adapter6.size() - 100) + " bytes, but "));
  BOOST_TEST(has(e, "not resuming from a damaged checkpoint. The newest intact checkpoint is " + c3.string() +
                        ": pass --resume-from " + c3.string()));
  put(c6 / "adapter_model.safetensors", adapter6);
  std::string edited = state6;
  edited[edited.find("\"global_step\": 6") + 15] = '5';  // an edited JSON of the same size
  put(c6 / "trainer_state.json", edited);
  e = resume(latest);
  BOOST_TEST(has(e, (c6 / "trainer_state.json").string() + ": CRC-32 "));
  BOOST_TEST(has(e, "(changed after it was saved)"));
  put(c6 / "manifest.json", "{\"format\": \"loralab-checkpoint\", \"files\": 3}");
  BOOST_TEST(has(resume(latest), (c6 / "manifest.json").string() + ": key 'files' is missing or not a list"));
  std::filesystem::remove(c6 / "manifest.json");
  BOOST_TEST(has(resume(latest), (c6 / "manifest.json").string() + ": missing"));
  BOOST_TEST(resume([&](auto& t) { return resume_from(t, c3, nullptr); }) == "", "the older checkpoint, when named");
  put(c3 / "optimizer.safetensors", "");
  BOOST_TEST(has(resume(latest), "No older checkpoint in " + out.string() + " is intact either"));
}

BOOST_AUTO_TEST_CASE(non_finite_weights_and_optimizer_state_are_refused_by_name) {
  loralab::testing::temp_dir dir;
  nn::model_file f = stories();
  f.tensors.at("model.layers.1.mlp.up_proj.weight").data[7] = INFINITY;
  BOOST_TEST(has(error_of([&] { check_finite_weights(f, "stories.bin"); }),
                 "stories.bin: base weight 'model.layers.1.mlp.up_proj.weight' holds +Inf at element 7"));
  BOOST_TEST(error_of([&] { check_finite_weights(stories(), "stories.bin"); }) == "");

  const auto out = dir.path / "run";
  six_steps(out);
  const auto c6 = out / "checkpoint-6";
  const auto resume = [&] {
    auto d = quotes(4);
    auto m = make_lora_dense_model<float>(stories());
    attach_adapters(m, lora_config{}, parse_targets("q_proj,v_proj"), 42);
    trainer t(m, d, options(out, 6));
    return error_of([&] { resume_latest(t, out, nullptr); });
  };
  // a NaN saved with a valid integrity record (as if the state had diverged before the save): refused on load
  const auto rewrite = [&](const std::string& file, const std::string& key, std::size_t byte_offset, float value) {
    const auto sf = io::safetensors_file::open(c6 / file);
    std::vector<std::vector<std::uint8_t>> bytes;  // the writer keeps views until write()
    for (const auto& t : sf.tensors()) {
      const auto* b = reinterpret_cast<const std::uint8_t*>(t.bytes.data());
      bytes.emplace_back(b, b + t.bytes.size());
      if (t.name == key) std::memcpy(bytes.back().data() + byte_offset, &value, sizeof value);
    }
    io::safetensors_writer w;
    std::size_t i = 0;
    for (const auto& t : sf.tensors()) w.add(t.name, t.type, t.shape, std::as_bytes(std::span(bytes[i++])));
    w.write(c6 / file);
    write_manifest(c6);
  };
  const std::string a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  rewrite("optimizer.safetensors", a + ".exp_avg_sq", 12, NAN);
  std::string e = resume();
  BOOST_TEST(has(e, (c6 / "optimizer.safetensors").string() + ": adamw: state entry '" + a + ".exp_avg_sq' holds NaN at element 3"));
  six_steps(out);  // a fresh checkpoint-6
  rewrite("adapter_model.safetensors", a, 8, -INFINITY);
  e = resume();
  BOOST_TEST(has(e, (c6 / "adapter_model.safetensors").string() + ": tensor '" + a + "' holds -Inf at element 2"));
}

BOOST_AUTO_TEST_SUITE_END()
