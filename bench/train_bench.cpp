// SPDX-License-Identifier: MIT
/// \file train_bench.cpp
/// \brief Does QLoRA train as fast as LoRA? Step time and tokens/s of the trainer's own step over a float base
/// (LoRA) and over nf4, nf4+DQ, fp4 and int8 bases (QLoRA), on one model and one stream of batches.
///
/// The model is a random-weight Llama (tests/nn/random_model.hpp, N(0, 0.02)) of --size 30M (dim 512, hidden 1376,
/// 8 layers, 8 heads, vocab 8192: 29.4M parameters), 5M or 260K; or, with --model FILE.gguf|smollm2, a real one
/// (SmolLM2-135M-Instruct): float32 is its linears dequantized, nf4-b64-dq requantized from those floats, and q4_1
/// the file's own Q4_1 blocks as the frozen base (nn::make_linear_from_file, as lora_vs_qlora --scheme q4_1).
/// The batches are rows of --seq-len tokens cut from the bytes of --data (default: Debian's fortunes; every byte is a
/// token id of each vocabulary), the same rows for every base. Every base gets the same
/// adapters (r 8, alpha 16, --dropout 0.05, on --targets) and AdamW; each run is the trainer's step (forward, loss,
/// backward, clip, update) --warmup + --steps times; the warm-up steps are not timed.
/// --rounds interleave the bases (each round runs every base once), and the median over all timed steps of a
/// base is reported: on a shared VM the speed drifts by 10-20 % over a minute, which a base-after-base order would
/// read as a difference between bases. Gradient checkpointing is measured both ways: off for every base (the bases' own cost), and on for every base
/// (PEFT's k-bit preparation turns it on for QLoRA, so "QLoRA as PEFT runs it vs LoRA" is nf4 on ÷ float off).
/// The target: QLoRA/LoRA step time ≤ 1.15 at 30M (same checkpointing).
///
/// --fixed-rank asks another question on the same model and batches: what does a compile-time rank buy? For each of
/// --bases that is float32 or nf4-b64-dq, the same trainer step runs on lora_model<Base, 8> and <Base, 16> (fixed
/// rank) and on lora_model<Base> (dynamic_rank) with r 8 and 16, interleaved in rounds; it prints fixed ÷ dynamic.
///
///   cmake --build build -j2 --target train_bench && ./build/bench/train_bench [--size 30M --threads 2 --csv out.csv]
///   ./build/bench/train_bench --fixed-rank --checkpointing off
///   ./build/bench/train_bench --model smollm2 --checkpointing off --rounds 1   # float32, nf4-b64-dq, q4_1
///
/// Runtime: about 4 minutes on an idle 2-core machine at 30M (defaults: B=4, T=256, 3 rounds of 1 warm-up + 2 timed
/// steps per base and setting).
/// Output: the config, a line on how busy other processes kept the cores, then a Markdown table with one row per
/// base and checkpointing setting (--csv: the same as CSV), with the planned step memory next to the measured: the
/// run's peak RSS and that less the RSS before its model was built (what the model and the step added).
#include <filesystem>
#include <memory>
#include <fstream>
#include <iostream>
#include <algorithm>
#include <cmath>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/os.h>
#include <malloc.h>
#include <omp.h>
#include <unistd.h>

#include "bench_support.hpp"
#include "experiment/cli.hpp"
#include "lora/lora.hpp"
#include "train/trainer.hpp"
#include "nn/gguf_model.hpp"
#include "nn/model_io.hpp"
#include "nn/random_model.hpp"
#include "nn/weight_of.hpp"
#include "quant/scheme_registry.hpp"

namespace ll = loralab::lora;
namespace data = loralab::data;
namespace train = loralab::train;
namespace nn = loralab::nn;
namespace q = loralab::quant;
namespace dist = loralab::dist;
/// The bases train_bench compares: LoRA over float32, QLoRA over bitsandbytes' block-64 schemes, LLM.int8() and
/// ggml's Q4_1 (a GGUF's own blocks with --model; quantized from the floats otherwise, which needs K % 32 == 0).
using bench_schemes = q::scheme_list<q::float32, q::nf4<64>, q::double_quant<q::nf4<64>>, q::fp4<64>, q::int8_rowwise, q::ggml_q4_1>;
/// The bases --fixed-rank compares on (each fixed rank is another model type to compile): LoRA and QLoRA.
using fixed_rank_schemes = q::scheme_list<q::float32, q::double_quant<q::nf4<64>>>;
/// The ranks --fixed-rank compares, each as lora_linear<Base, r> and as lora_linear<Base> (dynamic_rank) with r.
constexpr int fixed_ranks[] = {8, 16};

namespace {

struct options {
  std::string bases, checkpointing = "off,on", compute = "float";  // bases: default_bases(model)
  std::string size = "30M", model, data = "/usr/share/games/fortunes/fortunes", targets = "all-linear", csv;
  int batch = 4, seq_len = 256, warmup = 1, steps = 2, rounds = 3, threads = 0, grad_accum = 1, replicas = 1;
  double dropout = 0.05;
  std::uint64_t seed = 1234;
  bool fixed_rank = false, contention = true;
};

/// --bases when not given: bitsandbytes' schemes over a random model; LoRA, QLoRA nf4+DQ and the file's Q4_1 over --model.
std::string default_bases(const std::string& model) {
  return model.empty() ? "float32,nf4-b64,nf4-b64-dq,fp4-b64,int8-row" : "float32,nf4-b64-dq,q4_1";
}

/// A memory line of /proc/self/status in MiB: "VmRSS:" (resident now), "VmHWM:" (the peak since the last reset).
double status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string_view(key).size())) / 1024;
  return NAN;
}

nn::llama_config config_of(const std::string& size) {
  if (size == "260K") return {.dim = 64, .hidden_dim = 172, .n_layers = 5, .n_heads = 8, .n_kv_heads = 4, .vocab_size = 512};
  if (size == "5M") return {.dim = 256, .hidden_dim = 688, .n_layers = 6, .n_heads = 8, .n_kv_heads = 4, .vocab_size = 4096};
  LORALAB_CHECK(size == "30M", "--size: unknown size '", size, "' (known: 260K, 5M, 30M)");
  return {.dim = 512, .hidden_dim = 1376, .n_layers = 8, .n_heads = 8, .n_kv_heads = 8, .vocab_size = 8192};
}

/// Rows of T tokens: the file's bytes as token ids (every id < 256 exists in each vocab), labels = inputs.
data::prepared_dataset byte_rows(const std::string& path, int T, int B, int rows_needed, std::uint64_t seed) {
  std::ifstream in(path, std::ios::binary);
  LORALAB_CHECK(in, path, ": cannot read the corpus (Debian's fortunes comes with scripts/setup.sh; or pass --data FILE)");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LORALAB_CHECK(bytes.size() >= std::size_t(T), path, ": ", bytes.size(), " bytes, fewer than one row of --seq-len ", T);
  std::vector<data::example> rows;
  for (std::size_t at = 0; int(rows.size()) < rows_needed; at = (at + std::size_t(T)) % (bytes.size() - std::size_t(T) + 1)) {
    data::example e;
    for (int t = 0; t < T; ++t) e.input_ids.push_back(static_cast<unsigned char>(bytes[at + std::size_t(t)]));
    e.labels = e.input_ids;
    rows.push_back(std::move(e));
  }
  data::prepared_dataset d;
  d.records = rows.size();
  d.train = data::batch_loader(std::move(rows), B, 0, seed, false);
  return d;
}

/// "a,b" → {"a", "b"}, each one of `known` (else an error naming the flag).
std::vector<std::string> split_list(const std::string& text, const char* flag, std::initializer_list<const char*> known) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    LORALAB_CHECK(std::ranges::any_of(known, [&](const char* k) { return item == k; }), flag, ": unknown value '", item,
                  "' (known: ", fmt::format("{}", fmt::join(known, ", ")), ")");
    out.push_back(item);
  }
  LORALAB_CHECK(!out.empty(), flag, " is empty");
  return out;
}

/// GEMM FLOPs of one trainer step: the frozen linears forward and dx backward (no dW), the tied LM head the same,
/// causal attention (the T(T+1)/2 query-key pairs a causal kernel needs: q kᵀ and P v forward, four products
/// backward), the adapters (x Aᵀ, h Bᵀ forward; dy B, dyᵀ h, x Aᵀ again, dhᵀ x, dh A backward); checkpointing
/// adds the blocks' forward once more, up to down_proj's input (the recompute needs no block output). Element-wise work (norms, softmax, SwiGLU, dropout, loss) is not counted.
double step_gemm_flops(const nn::llama_config& c, int B, int T, const ll::target_spec& targets, int r, bool ckpt) {
  const double N = double(B) * T, C = c.dim, KV = c.kv_dim(), F = c.hidden_dim, V = c.vocab_size;
  const struct { const char* key; double in, out; } linears[] = {
      {"self_attn.q_proj", C, C}, {"self_attn.k_proj", C, KV}, {"self_attn.v_proj", C, KV}, {"self_attn.o_proj", C, C},
      {"mlp.gate_proj", C, F},    {"mlp.up_proj", C, F},       {"mlp.down_proj", F, C}};
  const double attention_fwd = 2.0 * B * c.n_heads * c.head_dim() * T * (T + 1.0);  // two products, causal half each
  double total = 2 * (2 * N * V * C);                                                 // LM head: forward and dx
  for (int l = 0; l < c.n_layers; ++l) {
    double fwd = attention_fwd, bwd = 2 * attention_fwd, down_fwd = 0;
    for (const auto& lin : linears) {
      double f = 2 * N * lin.in * lin.out;
      bwd += 2 * N * lin.in * lin.out;
      if (targets.matches(fmt::format("model.layers.{}.{}", l, lin.key)))
        f += 2 * N * r * (lin.in + lin.out), bwd += 2 * N * r * (2 * lin.out + 3 * lin.in);
      fwd += f;
      if (std::string_view(lin.key) == "mlp.down_proj") down_fwd = f;
    }
    total += fwd + bwd + (ckpt ? fwd - down_fwd : 0);
  }
  return total;
}

struct result {
  std::string base;
  bool checkpointing = false;
  std::vector<double> steps;  ///< timed step seconds, all rounds
  double step_s = 0, tokens_per_s = 0, linear_bits = 0, planned_mib = 0, loss = 0, gemm_flops = 0;
  double rss_before_mib = NAN, peak_rss_mib = NAN;  ///< RSS before the model was built; the run's peak (trainer's VmHWM)
  std::size_t adapter_floats = 0;  ///< trainable floats: what a data-parallel step sums between ranks
};

/// The RSS a run starts from: freed memory handed back first (malloc_trim), so one base's pages do not count for the next.
double rss_before_model() {
  malloc_trim(0);
  return status_mib("VmRSS:");
}

/// The trainer's steps over one base with adapters of rank r: median step time of the timed steps.
template <class Base, int Rank>
result bench_base(const std::string& label, double rss_before, ll::lora_model<Base, Rank> m, bool checkpointing,
                  data::prepared_dataset& data, const options& o, int rank = 8) {
  const auto targets = ll::parse_targets(o.targets);
  ll::lora_config lc{};
  lc.r = rank;
  lc.dropout = o.dropout;
  ll::attach_adapters(m, lc, targets, o.seed);
  m.gradient_checkpointing = checkpointing;
  train::train_options t;
  t.max_steps = o.warmup + o.steps;
  t.scheduler = train::schedule_kind::constant;
  t.seed = o.seed;
  t.logging_steps = t.max_steps;
  t.grad_accum = o.grad_accum;
  t.replicas = o.replicas;
  // under mpirun the ranks share each step's micro-batches (data parallel; bench/mpi_scaling.sh)
  train::trainer<ll::lora_model<Base, Rank>> tr(m, data, t, dist::group::world());  // no observer: nothing is printed or written
  const double summed_before = dist::group::world().reduced().seconds;
  const train::run_record rec = tr.run();
  const double sum_ms = 1e3 * (dist::group::world().reduced().seconds - summed_before) / double(rec.step_seconds.size());
  result r;
  r.base = label, r.checkpointing = checkpointing;
  r.rss_before_mib = rss_before, r.peak_rss_mib = double(rec.peak_rss_bytes) / (1 << 20);
  r.steps.assign(rec.step_seconds.begin() + o.warmup, rec.step_seconds.end());
  r.step_s = loralab::bench::median(r.steps);
  r.linear_bits = ll::count_storage(m).linear_bits_per_weight();
  r.planned_mib = double(rec.memory.total()) / (1 << 20);
  r.loss = rec.step_losses.back();
  r.gemm_flops = step_gemm_flops(m.config, o.batch, o.seq_len, targets, rank, checkpointing);
  ll::for_each_adapter(m, [&](const std::string&, auto& a, auto&) { r.adapter_floats += std::size_t(a.A.size() + a.B.size()); });
  fmt::print("  {:<7} checkpointing {:<3}  {:7.1f} ms/step  (loss {:.4f}; planned {:.1f} MiB, measured {:.1f} MiB{})\n", label,
             checkpointing ? "on" : "off", 1e3 * r.step_s, r.loss, r.planned_mib, r.peak_rss_mib - r.rss_before_mib,
             dist::group::world().size() > 1 ? fmt::format("; {:.2f} ms/step summing {:.1f} KiB of gradients over {} ranks", sum_ms,
                                                           4.0 * double(r.adapter_floats) / 1024, dist::group::world().size()) : "");
  std::fflush(stdout);
  return r;
}

/// The model every run trains: lora_model over linear<W, C> (float or bf16 products), rank R (dynamic by default); a
/// ggml scheme over a GGUF that stored its linears so takes the file's blocks (nn::make_linear_from_file).
template <class W, class C = nn::compute<float>, int R = ll::dynamic_rank>
ll::lora_model<nn::linear<W, C>, R> model_of(const nn::model_file& file) {
  return ll::make_lora_model<nn::linear<W, C>, R>(file, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_linear_from_file<W, C>(file, name, d, n, k);
  });
}

/// --fixed-rank: one base at rank R, as lora_model<Base> (dynamic_rank, r = R) and as lora_model<Base, R>, one after
/// the other (the order alternates by round, so neither always runs on a warmer cache).
template <class S, int R, class Add>
void bench_ranks(const std::string& base, const nn::model_file& file, bool ckpt, data::prepared_dataset& data,
                 const options& o, Add& add) {
  using W = nn::weight_of_t<S>;
  const auto dynamic = [&] {
    const double rss = rss_before_model();
    add(bench_base(fmt::format("{} r {} dynamic", base, R), rss, model_of<W>(file), ckpt, data, o, R));
  };
  const auto fixed = [&] {
    const double rss = rss_before_model();
    add(bench_base(fmt::format("{} r {} fixed", base, R), rss, model_of<W, nn::compute<float>, R>(file), ckpt, data, o, R));
  };
  static int order = 0;
  if (order++ % 2 == 0) dynamic(), fixed();
  else fixed(), dynamic();
}

/// The --fixed-rank lines: "float32 r 8 (checkpointing off): fixed 41.2 ms/step vs dynamic 42.0 ms/step = 0.98x".
int report_fixed_rank(const std::vector<result>& rs, const options& o) {
  const auto find = [&](const std::string& label, bool ckpt) -> const result* {
    for (const result& r : rs)
      if (r.base == label && r.checkpointing == ckpt) return &r;
    return nullptr;
  };
  fmt::print("\nfixed vs dynamic rank, the same trainer step (median ms/step over {} rounds x {} steps):\n", o.rounds, o.steps);
  std::string csv = "size,batch,seq_len,threads,base,r,checkpointing,fixed_ms,dynamic_ms,ratio,fixed_loss,dynamic_loss";
  for (const result& f : rs) {
    const auto at = f.base.rfind(" fixed");
    if (at == std::string::npos) continue;
    const std::string stem = f.base.substr(0, at);  // "float32 r 8"
    const result* d = find(stem + " dynamic", f.checkpointing);
    if (!d) continue;
    const std::string base = stem.substr(0, stem.find(" r ")), r = stem.substr(stem.find(" r ") + 3);
    fmt::print("{} r {} (checkpointing {}): fixed {:.1f} ms/step vs dynamic {:.1f} ms/step = {:.2f}x  (last loss {:.6f} vs {:.6f})\n",
               base, r, f.checkpointing ? "on" : "off", 1e3 * f.step_s, 1e3 * d->step_s, f.step_s / d->step_s, f.loss, d->loss);
    csv += fmt::format("\n{},{},{},{},{},{},{},{:.3f},{:.3f},{:.4f},{:.6f},{:.6f}", o.size, o.batch, o.seq_len, omp_get_max_threads(),
                       base, r, f.checkpointing ? 1 : 0, 1e3 * f.step_s, 1e3 * d->step_s, f.step_s / d->step_s, f.loss, d->loss);
  }
  if (!o.csv.empty()) fmt::output_file(o.csv).print("{}\n", csv);
  return 0;
}

/// The contention line: the first base's step on an idle machine and next to a co-runner busy on one core, in
/// alternating runs; the bound is ≤ ~2.5x (spinning OpenMP threads made it 5-100x).
void contention_line(const std::string& base, bool ckpt, const nn::model_file& file, data::prepared_dataset& data, const options& o) {
  std::vector<double> idle, busy;
  fmt::print("contention: {} checkpointing {}, {} alternating runs idle / with a co-runner busy on one core\n", base,
             ckpt ? "on" : "off", 2 * o.rounds);
  for (int round = 0; round < o.rounds; ++round)
    for (const bool with_job : {false, true}) {
      const std::unique_ptr<loralab::bench::co_runner> job = with_job ? std::make_unique<loralab::bench::co_runner>() : nullptr;
      q::dispatch_scheme<bench_schemes>(base, [&]<class S>(std::type_identity<S>) {
        const double rss = rss_before_model();
        const result r = bench_base(base + (with_job ? " +job" : " idle"), rss, model_of<nn::weight_of_t<S>>(file), ckpt, data, o);
        (with_job ? busy : idle).insert((with_job ? busy : idle).end(), r.steps.begin(), r.steps.end());
      });
    }
  const double a = loralab::bench::median(idle), b = loralab::bench::median(busy);
  fmt::print("contention: {:.1f} ms/step idle, {:.1f} ms/step next to a busy core = {:.2f}x ({}; the bound: <= 2.5x)\n", 1e3 * a,
             1e3 * b, b / a, loralab::core::wait_policy_description());
}

/// --size's random model, or the --model file (its parameter count in millions becomes o.size: "135M").
nn::model_file model_file_of(options& o) {
  if (o.model.empty()) {
    nn::llama_config c = config_of(o.size);
    c.max_seq_len = o.seq_len;
    return nn::random_model_file(c, o.seed, 0.02f);
  }
  nn::model_file file = nn::load_model_file(o.model);
  LORALAB_CHECK(o.seq_len <= file.config.max_seq_len, o.model, ": --seq-len ", o.seq_len, " is more than the model's context ",
                file.config.max_seq_len);
  LORALAB_CHECK(file.config.vocab_size >= 256, o.model, ": vocab_size ", file.config.vocab_size, " < 256 (the rows are bytes)");
  double params = 0;
  for (const auto& [name, t] : file.tensors) params += double(t.data.size());
  o.size = fmt::format("{:.0f}M", params / 1e6);
  return file;
}

int run(options o) {
  omp_set_num_threads(o.threads > 0 ? o.threads : omp_get_num_procs());
  // OpenBLAS's OpenMP build follows omp_set_num_threads: one thread count for both
  const nn::model_file file = model_file_of(o);
  const nn::llama_config& c = file.config;
  double params = 0, file_mib = 0;
  for (const auto& [name, t] : file.tensors) params += double(t.data.size()), file_mib += double(t.data.size()) * sizeof(float);
  for (const auto& [name, t] : file.stored) file_mib += double(t.bytes.size());
  data::prepared_dataset data = byte_rows(o.data, o.seq_len, o.batch, o.batch * o.grad_accum * (o.warmup + o.steps), o.seed);
  if (o.compute.find("bf16") != std::string::npos) fmt::print("bf16 products: {}\n", nn::bf16_gemm_backend());
  if (!o.model.empty())
    fmt::print("model: {} ({} linears stored as {}; the file in memory: {:.1f} MiB of floats and blocks, in every row's RSS)\n",
               o.model, file.stored.size(), file.quantization.empty() ? "floats" : file.quantization, file_mib / (1 << 20));
  fmt::print("train_bench: {} ({:.2f}M parameters: dim={} hidden={} layers={} heads={} vocab={}), B={}, T={}, "
             "targets={}, r={}, dropout={}, AdamW, {} rounds of {} warm-up + {} timed steps (median), threads={}, seed={}, data={}\n",
             o.size, params / 1e6, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.vocab_size, o.batch, o.seq_len,
             o.targets, o.fixed_rank ? "8,16 fixed and dynamic" : "8", o.dropout, o.rounds, o.warmup, o.steps, omp_get_max_threads(),
             o.seed, o.data);
  if (o.grad_accum > 1 || dist::group::world().size() > 1)
    fmt::print("grad-accum {}: {} rows per step; {} rank(s) share the micro-batches\n", o.grad_accum, o.batch * o.grad_accum,
               dist::group::world().size());
  std::vector<result> rs;  // one per (checkpointing, base), the timed steps of every round merged
  const auto add = [&](result r) {
    for (result& x : rs)
      if (x.base == r.base && x.checkpointing == r.checkpointing) return x.steps.insert(x.steps.end(), r.steps.begin(), r.steps.end()), void();
    rs.push_back(std::move(r));
  };
  const loralab::bench::load_monitor load;
  std::vector<std::string> bases;  // canonical scheme names (quant/scheme_registry.hpp); aliases such as nf4+dq accepted
  std::stringstream list(o.bases.empty() ? default_bases(o.model) : o.bases);
  for (std::string item; std::getline(list, item, ',');) {
    bases.push_back(q::canonical_scheme_name(item));
    LORALAB_CHECK(bench_schemes::contains(bases.back()), "--bases: unknown value '", item, "' (known: ", bench_schemes::names(), ")");
  }
  LORALAB_CHECK(!bases.empty(), "--bases is empty");
  const auto ckpts = split_list(o.checkpointing, "--checkpointing", {"off", "on"});
  const auto computes = split_list(o.compute, "--compute", {"float", "bf16"});
  if (o.fixed_rank) {
    std::erase_if(bases, [](const std::string& b) { return !fixed_rank_schemes::contains(b); });
    LORALAB_CHECK(!bases.empty(), "--fixed-rank compares on ", fixed_rank_schemes::names(), "; --bases has neither");
  }
  for (int round = 1; round <= o.rounds; ++round) {  // rounds interleave the bases: a drifting machine slows them alike
    fmt::print("round {}/{}\n", round, o.rounds);
    for (const std::string& ck : ckpts) {
      const bool ckpt = ck == "on";
      for (const std::string& base : bases) {
        if (o.fixed_rank) {
          q::dispatch_scheme<fixed_rank_schemes>(base, [&]<class S>(std::type_identity<S>) {
            [&]<int... R>(std::integer_sequence<int, R...>) { (bench_ranks<S, fixed_ranks[R]>(base, file, ckpt, data, o, add), ...); }(
                std::make_integer_sequence<int, int(std::size(fixed_ranks))>{});
          });
          continue;
        }
        for (const std::string& c : computes)
          q::dispatch_scheme<bench_schemes>(base, [&]<class S>(std::type_identity<S>) {
            using W = nn::weight_of_t<S>;  // the base's products in float or bf16
            const double rss = rss_before_model();
            if (c == "bf16") add(bench_base(base + " bf16", rss, model_of<W, nn::compute<nn::bf16>>(file), ckpt, data, o));
            else add(bench_base(base, rss, model_of<W>(file), ckpt, data, o));
          });
      }
    }
  }
  load.report(omp_get_num_procs());
  if (o.contention && !o.fixed_rank && dist::group::world().size() == 1) contention_line(bases.front(), ckpts.front() == "on", file, data, o);
  // the floor: each step's GEMM FLOPs at the sgemm rate measured now, in this run (the better of two probes)
  const double gflops = std::max(loralab::core::sgemm_gflops(), loralab::core::sgemm_gflops());
  fmt::print("GEMM floor: sgemm 1024^3 at {:.1f} GFLOP/s in this run, {} threads; a step's GEMM FLOPs at that rate is its floor\n",
             gflops, omp_get_max_threads());
  for (result& r : rs) r.step_s = loralab::bench::median(r.steps), r.tokens_per_s = double(o.batch) * o.seq_len * o.grad_accum / r.step_s;
  if (o.fixed_rank) return report_fixed_rank(rs, o);

  // ratios against LoRA with the same checkpointing, and against LoRA as PEFT runs it (checkpointing off)
  const auto lora_step = [&](bool ckpt) {
    for (const result& r : rs)
      if (r.base == "float32" && r.checkpointing == ckpt) return r.step_s;
    return double(NAN);  // no LoRA row with this setting: the ratio column stays empty
  };
  fmt::print("\n| base | checkpointing | ms/step | tokens/s | ÷ LoRA, same checkpointing | ÷ LoRA without checkpointing | "
             "GEMM GFLOP/step | floor ms | ÷ floor | frozen linears bits/weight | planned memory MiB | measured MiB (peak − before "
             "the model) | ÷ planned | peak RSS MiB | last loss |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  std::string csv = "size,batch,seq_len,threads,base,checkpointing,step_ms,tokens_per_s,ratio_same_ckpt,ratio_vs_lora_no_ckpt,"
                    "gemm_gflop,sgemm_gflops,floor_ms,ratio_to_floor,linear_bits_per_weight,planned_mib,last_loss,measured_mib,peak_rss_mib";
  for (const result& r : rs) {
    const double same = r.step_s / lora_step(r.checkpointing), peft = r.step_s / lora_step(false);
    const double floor_s = r.gemm_flops / (gflops * 1e9);
    const double measured = r.peak_rss_mib - r.rss_before_mib;  // the last round's run of this row
    fmt::print("| {} | {} | {:.1f} | {:.0f} | {:.3f} | {:.3f} | {:.1f} | {:.1f} | {:.2f} | {:.3f} | {:.1f} | {:.1f} | {:.3f} | {:.1f} | {:.4f} |\n",
               r.base, r.checkpointing ? "on" : "off", 1e3 * r.step_s, r.tokens_per_s, same, peft, r.gemm_flops / 1e9, 1e3 * floor_s,
               r.step_s / floor_s, r.linear_bits, r.planned_mib, measured, measured / r.planned_mib, r.peak_rss_mib, r.loss);
    csv += fmt::format("\n{},{},{},{},{},{},{:.3f},{:.1f},{:.4f},{:.4f},{:.3f},{:.2f},{:.3f},{:.4f},{:.4f},{:.3f},{:.6f},{:.3f},{:.3f}",
                       o.size, o.batch, o.seq_len, omp_get_max_threads(), r.base, r.checkpointing ? 1 : 0, 1e3 * r.step_s,
                       r.tokens_per_s, same, peft, r.gemm_flops / 1e9, gflops, 1e3 * floor_s, r.step_s / floor_s, r.linear_bits,
                       r.planned_mib, r.loss, measured, r.peak_rss_mib);
  }
  if (!o.csv.empty()) fmt::output_file(o.csv).print("{}\n", csv);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loralab::experiment::guarded_main("train_bench", [&] {
    options o;
    loralab::experiment::command_line cli("train_bench: LoRA vs QLoRA training step time on one model and one batch stream", o.seed);
    cli.flag("bases", o.bases, "comma list of scheme names: float32 (LoRA), nf4-b64, nf4-b64-dq, fp4-b64, int8-row, q4_1 (QLoRA); aliases "
                               "such as nf4+dq (default: all but q4_1; with --model: float32,nf4-b64-dq,q4_1)")
        .flag("checkpointing", o.checkpointing, "comma list: off, on")
        .flag("compute", o.compute, "comma list: float (float32 products), bf16 (the frozen base's products in bf16, float accumulation: compute<bf16>)")
        .flag("size", o.size, "random model of this size: 260K, 5M or 30M")
        .flag("model", o.model, "instead of --size: a model file (GGUF: its Q4_1 linears are q4_1's base), or smollm2 (the cached GGUF)")
        .flag("data", o.data, "text file whose bytes are the token stream")
        .flag("targets", o.targets, "adapter targets: q_proj,v_proj | all-linear | REGEX")
        .flag("dropout", o.dropout, "LoRA dropout on the adapter input")
        .flag("batch", o.batch, "B: rows per step")
        .flag("seq-len", o.seq_len, "T: tokens per row")
        .flag("grad-accum", o.grad_accum, "micro-batches of B rows per step (under mpirun: shared by the ranks)")
        .flag("replicas", o.replicas, "model clones sharing each micro-batch's rows, one thread each (train_options::replicas)")
        .flag("warmup", o.warmup, "untimed steps first")
        .flag("steps", o.steps, "timed steps per run")
        .flag("rounds", o.rounds, "runs per base, interleaved; the median over all timed steps is reported")
        .flag("csv", o.csv, "also write the table to this CSV file (empty: no file)")
        .flag("contention", o.contention, "also time the first base next to a co-runner busy on one core (true/false)")
        .option_switch("fixed-rank", o.fixed_rank, "instead: compile-time vs run-time rank (r 8 and 16) on float32 and nf4-b64-dq of --bases");
    cli.header = stdout;  // the "blas:" line heads the bench output
    if (auto code = cli.parse(argc, argv)) return *code;
    o.threads = cli.threads, o.seed = cli.seed;
    LORALAB_CHECK(o.grad_accum >= 1, "--grad-accum must be >= 1, got ", o.grad_accum);
  LORALAB_CHECK(o.batch > 0 && o.seq_len > 1 && o.warmup >= 0 && o.steps > 0 && o.rounds > 0, "--batch=", o.batch, " --seq-len=",
                  o.seq_len, " --warmup=", o.warmup, " --steps=", o.steps, ": need batch > 0, seq-len > 1, warmup >= 0, steps > 0");
    return run(o);
  });
}
