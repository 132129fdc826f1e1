// SPDX-License-Identifier: MIT
/// \file model_bench.cpp
/// \brief How close does llama_model's forward and forward+backward get to OpenBLAS sgemm at the same shapes?
///
/// For each size (random weights, tests/nn/random_model.hpp) it times, as the median of --repeats runs after one
/// warm-up: forward tokens/s (B*T tokens per call), forward+loss+backward tokens/s with every parameter trainable
/// (full backward, dW and dx) and with a frozen base (dx only, what LoRA needs), greedy generation tokens/s with the
/// KV cache (128 new tokens after a 16-token prompt, prefill included), and nf4<64> forward tokens/s at 30M.
/// GEMM FLOPs count the linear layers, the tied LM head and the attention products (full T x T, as computed):
/// 2*M*N*K each, backward = dx + dW = 2x forward. The same sequence of products is replayed as plain cblas_sgemm
/// calls (row-major, the model's transposes, attention per (b, h) inside an omp parallel for like the model), and
/// efficiency = sgemm time / model time. The target: fwd+bwd efficiency >= 0.60 at 30M.
/// First the KV-cache decoder's last logits are checked against forward()'s last row on the smallest size.
///
///   cmake --build build -j2 --target model_bench && ./build/bench/model_bench [--sizes 30M --threads 2 --csv out.csv]
///
/// Runtime: about 1 minute on an idle 2-core machine with the defaults (B=4, T=256, 3 repeats), mostly the 30M size.
/// Output: a config line per size, "All results match. Starting benchmarks.", then a Markdown table, one row per
/// size: tokens/s of each pass, model and sgemm GFLOP/s, and the efficiencies (--csv: the same numbers as CSV).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <cblas.h>
#include <fmt/core.h>
#include <fmt/os.h>
#include <omp.h>

#include "nn/generate.hpp"
#include "nn/llama.hpp"
#include "nn/random_model.hpp"  // tests/nn: random weights for any config

namespace nn = loralab::nn;

namespace {

struct size_spec { std::string name; nn::llama_config c; };

std::vector<size_spec> all_sizes() {
  const auto cfg = [](int C, int F, int L, int H, int Hkv, int V) {
    nn::llama_config c;
    c.dim = C, c.hidden_dim = F, c.n_layers = L, c.n_heads = H, c.n_kv_heads = Hkv, c.vocab_size = V;
    return c;
  };
  return {{"260K", cfg(64, 172, 5, 8, 4, 512)},      // stories260K's shape
          {"5M", cfg(256, 688, 6, 8, 4, 4096)},
          {"30M", cfg(512, 1376, 8, 8, 8, 8192)}};
}

struct options {
  std::string sizes = "260K,5M,30M", csv;
  int batch = 4, seq_len = 256, repeats = 3, threads = 0, prompt = 16, new_tokens = 128;
  std::uint64_t seed = 1234;
};

/// Median wall time of `repeats` calls of f, after one untimed warm-up call.
template <class F>
double median_seconds(int repeats, F&& f) {
  f();
  std::vector<double> t(static_cast<std::size_t>(repeats));
  for (double& s : t) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::ranges::sort(t);
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

// ---- the model's products as sgemm calls ----------------------------------------------------------------------

/// C (m, n) = op(A) op(B) + beta C, row-major; batch > 1: that many independent products in an omp parallel for,
/// each single-threaded (the model's attention per (b, h)).
struct gemm { bool ta, tb; int m, n, k; float beta = 0; int batch = 1; };

double flops(const std::vector<gemm>& ops) {
  double f = 0;
  for (const gemm& g : ops) f += 2.0 * g.m * g.n * g.k * g.batch;
  return f;
}

/// The products of one forward (and, with backward, of forward + full backward) in the model's order.
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

/// Replays `ops` as cblas_sgemm on operand buffers (uniform in [-1, 1]) big enough for every product.
struct gemm_replay {
  std::vector<float> a, b, c;
  explicit gemm_replay(const std::vector<gemm>& ops, std::uint64_t seed) {
    std::size_t na = 0, nb = 0, nc = 0;
    for (const gemm& g : ops)
      na = std::max(na, std::size_t(g.m) * g.k * g.batch), nb = std::max(nb, std::size_t(g.k) * g.n * g.batch),
      nc = std::max(nc, std::size_t(g.m) * g.n * g.batch);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    a.resize(na), b.resize(nb), c.assign(nc, 0.0f);
    for (auto* v : {&a, &b}) std::ranges::generate(*v, [&] { return u(rng); });
  }
  void run(const std::vector<gemm>& ops) {
    for (const gemm& g : ops) {
      const int lda = g.ta ? g.m : g.k, ldb = g.tb ? g.k : g.n;
      const auto one = [&](int i) {
        cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.m, g.n, g.k,
                    1.0f, a.data() + std::size_t(i) * g.m * g.k, lda, b.data() + std::size_t(i) * g.k * g.n, ldb,
                    g.beta, c.data() + std::size_t(i) * g.m * g.n, g.n);
      };
      if (g.batch == 1) one(0);
      else {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < g.batch; ++i) one(i);
      }
    }
  }
};

// ---- the benchmark --------------------------------------------------------------------------------------------

struct result {
  std::string name;
  double params_m = 0, fwd_tps = 0, fb_tps = 0, frozen_tps = 0, gen_tps = 0, fwd_gf = 0, fb_gf = 0, sg_fwd_gf = 0,
         sg_fb_gf = 0, nf4_tps = 0;
};

std::vector<int> random_tokens(std::size_t n, int V, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(0, V - 1);
  std::vector<int> t(n);
  for (int& x : t) x = d(rng);
  return t;
}

/// The KV-cache decoder (prompt fed in two chunks, then one token at a time) against forward()'s last row.
bool verify(nn::llama_config c, std::uint64_t seed) {
  c.max_seq_len = 64;
  auto m = nn::make_dense_model<float>(loralab::testing::random_model_file(c, seed));
  const std::vector<int> toks = random_tokens(40, c.vocab_size, seed + 1);
  const nn::matrix<float> ref = m.forward(toks, 1, int(toks.size())).bottomRows(1);
  nn::kv_cache_decoder dec(m);
  dec.feed(std::span(toks).first(16));
  dec.feed(std::span(toks).subspan(16, 8));
  for (std::size_t i = 24; i + 1 < toks.size(); ++i) dec.feed(std::span(toks).subspan(i, 1));
  const double err = (dec.feed(std::span(toks).last(1)) - ref).cwiseAbs().maxCoeff();
  if (err > 1e-4) fmt::print(stderr, "MISMATCH: cached decoder vs forward, max |diff| = {:.3g}\n", err);
  return err <= 1e-4;
}

result bench_size(const size_spec& s, const options& o) {
  nn::llama_config c = s.c;
  const int B = o.batch, T = o.seq_len, M = B * T;
  c.max_seq_len = std::max(T, o.prompt + o.new_tokens);
  const nn::model_file file = loralab::testing::random_model_file(c, o.seed);
  auto m = nn::make_dense_model<float>(file);
  double params = 0;
  for (const auto& [name, t] : file.tensors) params += double(t.data.size());
  fmt::print("{}: dim={} hidden={} layers={} heads={} kv_heads={} vocab={}: {:.2f}M parameters, B={} T={}\n", s.name,
             c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, params / 1e6, B, T);
  std::fflush(stdout);
  const std::vector<int> toks = random_tokens(std::size_t(M) + 1, c.vocab_size, o.seed + 2);
  const std::vector<int> in(toks.begin(), toks.end() - 1), tgt(toks.begin() + 1, toks.end());
  const auto train_step = [&] { m.forward(in, B, T), m.loss(tgt), m.backward(); };

  result r{s.name, params / 1e6};
  const double t_fwd = median_seconds(o.repeats, [&] { m.forward(in, B, T); });
  m.set_all_trainable(true);
  const double t_fb = median_seconds(o.repeats, [&] { m.zero_grad(), train_step(); });
  m.set_all_trainable(false);
  const double t_frozen = median_seconds(o.repeats, train_step);
  nn::generation_options g;
  g.max_new_tokens = o.new_tokens;
  std::vector<int> n_new;
  const std::vector<int> prompt(toks.begin(), toks.begin() + o.prompt);
  const double t_gen = median_seconds(o.repeats, [&] { n_new = nn::generate(m, prompt, g); });

  const auto fwd_ops = model_gemms(c, B, T, false), fb_ops = model_gemms(c, B, T, true);
  gemm_replay replay(fb_ops, o.seed + 3);
  const double sg_fwd = median_seconds(o.repeats, [&] { replay.run(fwd_ops); });
  const double sg_fb = median_seconds(o.repeats, [&] { replay.run(fb_ops); });

  r.fwd_tps = M / t_fwd, r.fb_tps = M / t_fb, r.frozen_tps = M / t_frozen, r.gen_tps = double(n_new.size()) / t_gen;
  r.fwd_gf = flops(fwd_ops) / t_fwd / 1e9, r.fb_gf = flops(fb_ops) / t_fb / 1e9;
  r.sg_fwd_gf = flops(fwd_ops) / sg_fwd / 1e9, r.sg_fb_gf = flops(fb_ops) / sg_fb / 1e9;
  if (s.name == "30M") {
    auto q = nn::make_quantized_model<loralab::quant::nf4<64>>(file);
    r.nf4_tps = M / median_seconds(o.repeats, [&] { q.forward(in, B, T); });
  }
  return r;
}

int run(const options& o) {
  omp_set_num_threads(o.threads > 0 ? o.threads : omp_get_num_procs());
  openblas_set_num_threads(omp_get_max_threads());
  fmt::print("model_bench: threads={}, B={}, T={}, repeats={} (median), seed={}, {} + {} generated tokens\n",
             omp_get_max_threads(), o.batch, o.seq_len, o.repeats, o.seed, o.prompt, o.new_tokens);
  std::vector<size_spec> chosen;
  std::stringstream names(o.sizes);
  for (std::string n; std::getline(names, n, ',');) {
    const auto all = all_sizes();
    const auto it = std::ranges::find(all, n, &size_spec::name);
    LORALAB_CHECK(it != all.end(), "--sizes: unknown size '", n, "' (known: 260K, 5M, 30M)");
    chosen.push_back(*it);
  }
  if (!verify(all_sizes().front().c, o.seed)) return 1;
  fmt::print("All results match. Starting benchmarks.\n\n");
  std::vector<result> rs;
  for (const auto& s : chosen) rs.push_back(bench_size(s, o));

  fmt::print("\n| size | params | fwd tok/s | fwd+bwd tok/s | frozen fwd+bwd tok/s | gen tok/s | fwd GFLOP/s (sgemm) "
             "| fwd+bwd GFLOP/s (sgemm) | fwd eff. | fwd+bwd eff. | nf4 fwd tok/s (nf4/float) |\n");
  fmt::print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  std::optional<fmt::ostream> csv;
  if (!o.csv.empty()) {
    csv.emplace(fmt::output_file(o.csv));
    csv->print("size,params_m,batch,seq_len,threads,fwd_tps,fwd_bwd_tps,frozen_fwd_bwd_tps,gen_tps,fwd_gflops,"
               "sgemm_fwd_gflops,fwd_bwd_gflops,sgemm_fwd_bwd_gflops,fwd_eff,fwd_bwd_eff,nf4_fwd_tps\n");
  }
  for (const result& r : rs) {
    const std::string nf4 = r.nf4_tps > 0 ? fmt::format("{:.0f} ({:.2f})", r.nf4_tps, r.nf4_tps / r.fwd_tps) : "-";
    fmt::print("| {} | {:.2f}M | {:.0f} | {:.0f} | {:.0f} | {:.1f} | {:.1f} ({:.1f}) | {:.1f} ({:.1f}) | {:.2f} | {:.2f} "
               "| {} |\n", r.name, r.params_m, r.fwd_tps, r.fb_tps, r.frozen_tps, r.gen_tps, r.fwd_gf, r.sg_fwd_gf,
               r.fb_gf, r.sg_fb_gf, r.fwd_gf / r.sg_fwd_gf, r.fb_gf / r.sg_fb_gf, nf4);
    if (csv)
      csv->print("{},{:.4f},{},{},{},{:.2f},{:.2f},{:.2f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.4f},{:.4f},{:.2f}\n",
                 r.name, r.params_m, o.batch, o.seq_len, omp_get_max_threads(), r.fwd_tps, r.fb_tps, r.frozen_tps,
                 r.gen_tps, r.fwd_gf, r.sg_fwd_gf, r.fb_gf, r.sg_fb_gf, r.fwd_gf / r.sg_fwd_gf, r.fb_gf / r.sg_fb_gf,
                 r.nf4_tps);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  namespace po = boost::program_options;
  options o;
  po::options_description opts("model_bench: llama_model tokens/s and GEMM efficiency vs OpenBLAS sgemm");
  opts.add_options()("help", "list the flags and their defaults")
      ("sizes", po::value(&o.sizes)->default_value(o.sizes), "comma list of sizes: 260K, 5M, 30M")
      ("batch", po::value(&o.batch)->default_value(o.batch), "B: sequences per forward")
      ("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "T: tokens per sequence")
      ("repeats", po::value(&o.repeats)->default_value(o.repeats), "timed runs per number; the median is reported")
      ("threads", po::value(&o.threads)->default_value(o.threads), "OpenMP (and OpenBLAS) threads (0: all cores)")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed of the weights and tokens (std::mt19937_64)")
      ("csv", po::value(&o.csv)->default_value(""), "also write the table to this CSV file (empty: no file)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) return std::cout << opts, 0;
  po::notify(vm);
  LORALAB_CHECK(o.batch > 0 && o.seq_len > 0 && o.repeats > 0 && o.threads >= 0, "--batch=", o.batch, " --seq-len=",
                o.seq_len, " --repeats=", o.repeats, " --threads=", o.threads, ": need positive sizes, threads >= 0");
  return run(o);
} catch (const std::exception& e) {
  return fmt::print(stderr, "model_bench: {}\n", e.what()), 1;
}
