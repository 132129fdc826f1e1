// SPDX-License-Identifier: MIT
/// \file model_bench.cpp
/// \brief How close do llama_model's forward and forward+backward get to OpenBLAS sgemm at the same shapes?
///
/// Per size (random weights, tests/nn/random_model.hpp), medians of --repeats runs after a warm-up: forward tokens/s
/// (B*T tokens a call); forward+loss+backward tokens/s, all parameters trainable (dx and dW) and frozen (dx only, as
/// under LoRA); greedy KV-cache generation tokens/s (128 new tokens after 16, prefill included); nf4<64> forward at
/// 30M. GEMM FLOPs: linear layers, tied head, attention (full T x T, as computed), 2*M*N*K each, backward = 2x
/// forward. The same products are replayed as cblas_sgemm calls (row-major, the model's transposes, attention per
/// (b, h) in an omp parallel for like the model): efficiency = sgemm time / model time; the target is
/// fwd+bwd >= 0.60 at 30M. First the KV-cache decoder's last logits are checked against forward() at 260K.
///
///   cmake --build build -j2 --target model_bench && ./build/bench/model_bench [--sizes 30M --threads 2 --csv out.csv]
///
/// Runtime: about 40 s on an idle 2-core machine (defaults: B=4, T=256, 3 repeats), mostly 30M. Output: config lines,
/// "All results match. Starting benchmarks.", a line saying how busy other processes kept the cores (their load
/// makes OpenMP here 2-100x slower), then a Markdown table, one row per size (--csv: the same as CSV).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cblas.h>
#include <fmt/format.h>
#include <fmt/os.h>
#include <omp.h>

#include "bench_support.hpp"
#include "experiment/cli.hpp"
#include "nn/generate.hpp"
#include "nn/llama.hpp"
#include "nn/random_model.hpp"

namespace nn = loralab::nn;

namespace {

struct size_spec { std::string name; nn::llama_config c; };

std::vector<size_spec> all_sizes() {  // 260K: stories260K's shape; max_seq_len is set per run
  return {{"260K", {.dim = 64, .hidden_dim = 172, .n_layers = 5, .n_heads = 8, .n_kv_heads = 4, .vocab_size = 512}},
          {"5M", {.dim = 256, .hidden_dim = 688, .n_layers = 6, .n_heads = 8, .n_kv_heads = 4, .vocab_size = 4096}},
          {"30M", {.dim = 512, .hidden_dim = 1376, .n_layers = 8, .n_heads = 8, .n_kv_heads = 8, .vocab_size = 8192}}};
}

constexpr int prompt_len = 16, new_tokens = 128;  // greedy generation: new tokens after a prompt

struct options {
  std::string sizes = "260K,5M,30M", csv;
  int batch = 4, seq_len = 256, repeats = 3, threads = 0;
  std::uint64_t seed = 1234;
};

using loralab::bench::median_seconds;

// ---- the model's products as sgemm calls ----------------------------------------------------------------------

/// C (m, n) = op(A) op(B) + beta C, row-major; batch > 1: that many independent products in an omp parallel for,
/// each single-threaded (the model's attention per (b, h)).
struct gemm { bool ta, tb; int m, n, k; float beta = 0; int batch = 1; };

double flops(const std::vector<gemm>& ops) {
  const auto add = [](double f, const gemm& g) { return f + 2.0 * g.m * g.n * g.k * g.batch; };
  return std::accumulate(ops.begin(), ops.end(), 0.0, add);
}

/// The products of one forward (with backward: then those of the full backward, layer by layer; the model runs
/// them in reverse layer order, the same calls).
std::vector<gemm> model_gemms(const nn::llama_config& c, int B, int T, bool backward) {
  const int M = B * T, C = c.dim, F = c.hidden_dim, KV = c.kv_dim(), V = c.vocab_size, D = c.head_dim();
  const int BH = B * c.n_heads;
  std::vector<gemm> f, b;
  const auto lin = [&](int N, int K) {  // y = x Wᵀ;  dx = dy W;  dW += dyᵀ x
    f.push_back({false, true, M, N, K});
    b.push_back({false, false, M, K, N}), b.push_back({true, false, N, K, M, 1.0f});
  };
  for (int l = 0; l < c.n_layers; ++l) {
    lin(C, C), lin(KV, C), lin(KV, C);
    f.push_back({false, true, T, T, D, 0, BH}), f.push_back({false, false, T, D, T, 0, BH});  // q kᵀ, P v
    b.push_back({true, false, T, D, T, 1, BH}), b.push_back({false, true, T, T, D, 0, BH});   // dv, dP
    b.push_back({false, false, T, D, T, 0, BH}), b.push_back({true, false, T, D, T, 1, BH});  // dq, dk
    lin(C, C), lin(F, C), lin(F, C), lin(C, F);
  }
  f.push_back({false, true, M, V, C});  // tied head: logits = xf Eᵀ;  dxf = dlogits E;  dE += dlogitsᵀ xf
  b.push_back({false, false, M, C, V}), b.push_back({true, false, V, C, M, 1.0f});
  if (backward) f.insert(f.end(), b.begin(), b.end());
  return f;
}

/// Median seconds of `ops` as cblas_sgemm calls on operand buffers (uniform in [-1, 1]) big enough for each.
double sgemm_seconds(const std::vector<gemm>& ops, int repeats, std::uint64_t seed) {
  std::size_t na = 0, nb = 0, nc = 0;
  for (const gemm& g : ops)
    na = std::max(na, std::size_t(g.m) * g.k * g.batch), nb = std::max(nb, std::size_t(g.k) * g.n * g.batch),
    nc = std::max(nc, std::size_t(g.m) * g.n * g.batch);
  std::vector<float> a(na), b(nb), c(nc, 0.0f);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto* v : {&a, &b}) std::ranges::generate(*v, [&] { return u(rng); });
  return median_seconds(repeats, [&] {
    for (const gemm& g : ops) {
      const auto one = [&](int i) {
        cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.m, g.n, g.k,
                    1.0f, a.data() + std::size_t(i) * g.m * g.k, g.ta ? g.m : g.k,
                    b.data() + std::size_t(i) * g.k * g.n, g.tb ? g.k : g.n, g.beta,
                    c.data() + std::size_t(i) * g.m * g.n, g.n);
      };
      if (g.batch == 1) {  // not inside `omp parallel if (false)`: OpenBLAS would then start a nested team per call
        one(0);
        continue;
      }
#pragma omp parallel for schedule(static)
      for (int i = 0; i < g.batch; ++i) one(i);
    }
  });
}

// ---- the benchmark --------------------------------------------------------------------------------------------

std::vector<int> random_tokens(std::size_t n, int V, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> t(n);
  return std::ranges::generate(t, [&] { return std::uniform_int_distribution<int>(0, V - 1)(rng); }), t;
}

/// The KV-cache decoder (prompt fed in two chunks, then one token at a time) against forward()'s last row.
bool verify(nn::llama_config c, std::uint64_t seed) {
  c.max_seq_len = 64;
  auto m = nn::make_dense_model<float>(nn::random_model_file(c, seed));
  const std::vector<int> toks = random_tokens(40, c.vocab_size, seed + 1);
  const nn::matrix<float> ref = m.forward(toks, 1, int(toks.size())).bottomRows(1);
  nn::kv_cache_decoder dec(m);
  dec.feed(std::span(toks).first(16)), dec.feed(std::span(toks).subspan(16, 8));
  for (std::size_t i = 24; i + 1 < toks.size(); ++i) dec.feed(std::span(toks).subspan(i, 1));
  const double err = (dec.feed(std::span(toks).last(1)) - ref).cwiseAbs().maxCoeff();
  fmt::print(err <= 1e-4 ? stdout : stderr, "{}cached decoder vs forward, last logits ({}): max |diff| = {:.3g}\n",
             err <= 1e-4 ? "" : "MISMATCH: ", c.vocab_size, err);
  return err <= 1e-4;
}

struct result {
  std::string name;
  double params_m, fwd_tps, fb_tps, frozen_tps, gen_tps, fwd_gf, sgemm_fwd_gf, fwd_eff, fb_gf, sgemm_fb_gf, fb_eff;
  double nf4_tps = NAN, nf4_ratio = NAN;  // 30M only
};

/// The table's columns, Markdown and CSV alike: header, CSV name, field, format.
struct column { const char* header; const char* csv; double result::*field; const char* format; };
const column columns[] = {
    {"params (M)", "params_m", &result::params_m, "{:.2f}"},
    {"fwd tok/s", "fwd_tps", &result::fwd_tps, "{:.0f}"},
    {"fwd+bwd tok/s", "fwd_bwd_tps", &result::fb_tps, "{:.0f}"},
    {"frozen fwd+bwd tok/s", "frozen_fwd_bwd_tps", &result::frozen_tps, "{:.0f}"},
    {"gen tok/s", "gen_tps", &result::gen_tps, "{:.1f}"},
    {"fwd GFLOP/s", "fwd_gflops", &result::fwd_gf, "{:.1f}"},
    {"sgemm fwd GFLOP/s", "sgemm_fwd_gflops", &result::sgemm_fwd_gf, "{:.1f}"},
    {"fwd eff.", "fwd_eff", &result::fwd_eff, "{:.2f}"},
    {"fwd+bwd GFLOP/s", "fwd_bwd_gflops", &result::fb_gf, "{:.1f}"},
    {"sgemm fwd+bwd GFLOP/s", "sgemm_fwd_bwd_gflops", &result::sgemm_fb_gf, "{:.1f}"},
    {"fwd+bwd eff.", "fwd_bwd_eff", &result::fb_eff, "{:.2f}"},
    {"nf4 fwd tok/s", "nf4_fwd_tps", &result::nf4_tps, "{:.0f}"},
    {"nf4/float fwd", "nf4_vs_float", &result::nf4_ratio, "{:.2f}"}};

result bench_size(const size_spec& s, const options& o) {
  nn::llama_config c = s.c;
  const int B = o.batch, T = o.seq_len, M = B * T;
  c.max_seq_len = std::max(T, prompt_len + new_tokens);
  const nn::model_file file = nn::random_model_file(c, o.seed);
  auto m = nn::make_dense_model<float>(file);
  double params = 0;
  for (const auto& [name, t] : file.tensors) params += double(t.data.size());
  fmt::print("{}: dim={} hidden={} layers={} heads={} kv_heads={} vocab={}: {:.2f}M parameters\n", s.name, c.dim,
             c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, params / 1e6);
  std::fflush(stdout);
  const std::vector<int> toks = random_tokens(std::size_t(M) + 1, c.vocab_size, o.seed + 2);
  const std::vector<int> in(toks.begin(), toks.end() - 1), tgt(toks.begin() + 1, toks.end());
  const auto train_step = [&] { m.forward(in, B, T), m.loss(tgt), m.backward(); };

  const double t_fwd = median_seconds(o.repeats, [&] { m.forward(in, B, T); });
  m.set_all_trainable(true);
  const double t_fb = median_seconds(o.repeats, train_step);  // gradients accumulate (+=): no zero_grad timed
  m.set_all_trainable(false);
  const double t_frozen = median_seconds(o.repeats, train_step);
  nn::generation_options g;
  g.max_new_tokens = new_tokens;
  std::size_t generated = 0;
  const std::vector<int> prompt(toks.begin(), toks.begin() + prompt_len);
  const double t_gen = median_seconds(o.repeats, [&] { generated = nn::generate(m, prompt, g).size(); });

  const auto fwd_ops = model_gemms(c, B, T, false), fb_ops = model_gemms(c, B, T, true);
  const double sg_fwd = sgemm_seconds(fwd_ops, o.repeats, o.seed), sg_fb = sgemm_seconds(fb_ops, o.repeats, o.seed);
  const double gf = flops(fwd_ops) / 1e9, gfb = flops(fb_ops) / 1e9;
  result r{s.name, params / 1e6, M / t_fwd, M / t_fb, M / t_frozen, double(generated) / t_gen, gf / t_fwd, gf / sg_fwd,
           sg_fwd / t_fwd, gfb / t_fb, gfb / sg_fb, sg_fb / t_fb};
  if (s.name == "30M") {
    auto q = nn::make_quantized_model<loralab::quant::nf4<64>>(file);
    const double t_nf4 = median_seconds(o.repeats, [&] { q.forward(in, B, T); });
    r.nf4_tps = M / t_nf4, r.nf4_ratio = t_fwd / t_nf4;
  }
  return r;
}

int run(const options& o) {
  std::vector<size_spec> chosen;
  std::stringstream names(o.sizes);
  for (std::string n; std::getline(names, n, ',');) {
    const auto all = all_sizes();
    const auto it = std::ranges::find(all, n, &size_spec::name);
    LORALAB_CHECK(it != all.end(), "--sizes: unknown size '", n, "' (known: 260K, 5M, 30M)");
    chosen.push_back(*it);
  }
  omp_set_num_threads(o.threads > 0 ? o.threads : omp_get_num_procs());
  openblas_set_num_threads(omp_get_max_threads());
  fmt::print("model_bench: threads={}, B={}, T={}, repeats={} (median), seed={}, generation {} + {} tokens\n",
             omp_get_max_threads(), o.batch, o.seq_len, o.repeats, o.seed, prompt_len, new_tokens);
  if (!verify(all_sizes().front().c, o.seed)) return 1;
  fmt::print("All results match. Starting benchmarks.\n\n");
  std::vector<result> rs;
  const loralab::bench::load_monitor load;
  for (const auto& s : chosen) rs.push_back(bench_size(s, o));
  load.report(omp_get_num_procs());

  std::string head = "| size |", rule = "|---|", csv = "size,batch,seq_len,threads";
  for (const column& c : columns)
    head += fmt::format(" {} |", c.header), rule += "--:|", csv += fmt::format(",{}", c.csv);
  fmt::print("\n{}\n{}\n", head, rule);
  for (const result& r : rs) {
    std::string row = "| " + r.name + " |";
    csv += fmt::format("\n{},{},{},{}", r.name, o.batch, o.seq_len, omp_get_max_threads());
    for (const column& c : columns) {
      const std::string v = std::isnan(r.*c.field) ? "" : fmt::format(fmt::runtime(c.format), r.*c.field);
      row += " " + (v.empty() ? "-" : v) + " |", csv += "," + v;
    }
    fmt::print("{}\n", row);
  }
  if (!o.csv.empty()) fmt::output_file(o.csv).print("{}\n", csv);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loralab::experiment::guarded_main("model_bench", [&] {
    options o;
    loralab::experiment::command_line cli("model_bench: llama_model tokens/s and GEMM efficiency vs OpenBLAS sgemm", o.seed);
    cli.flag("sizes", o.sizes, "comma list of sizes: 260K, 5M, 30M")
        .flag("batch", o.batch, "B: sequences per forward")
        .flag("seq-len", o.seq_len, "T: tokens per sequence")
        .flag("repeats", o.repeats, "timed runs per number; the median is reported")
        .flag("csv", o.csv, "also write the table to this CSV file (empty: no file)");
    cli.header = stdout;  // the "blas:" line heads the bench output
    if (auto code = cli.parse(argc, argv)) return *code;
    o.threads = cli.threads, o.seed = cli.seed;
    LORALAB_CHECK(o.batch > 0 && o.seq_len > 0 && o.repeats > 0, "--batch=", o.batch, " --seq-len=", o.seq_len, " --repeats=",
                  o.repeats, ": need positive sizes");
    return run(o);
  });
}
