// SPDX-License-Identifier: MIT
#pragma once
// Adapters in PEFT's own layout, so peft.PeftModel.from_pretrained loads what loralab saves and back:
//   DIR/adapter_config.json         json.dumps(indent=2, sort_keys=True) of LoraConfig (PEFT v0.20.0's 40 keys)
//   DIR/adapter_model.safetensors   F32 base_model.model.<module>.lora_A.weight (r, K) / .lora_B.weight (N, r),
//                                   metadata {"format": "pt"}, tensors in name order
// Both files are written atomically.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "lora/lora_model.hpp"

namespace loralab::lora {

/// adapter_config.json for this configuration (every key PEFT v0.20.0 writes, defaults where loralab has none).
/// rank_pattern / alpha_pattern: modules whose rank or alpha differ from c's (PEFT's per-module overrides).
inline nlohmann::json adapter_config_json(const lora_config& c, const target_spec& t, const std::string& base_model,
                                          const std::map<std::string, int>& rank_pattern = {},
                                          const std::map<std::string, double>& alpha_pattern = {}) {
  nlohmann::json j;
  const auto number = [](double v) -> nlohmann::json {
    if (v == std::floor(v) && std::fabs(v) < 1e15) return static_cast<long long>(v);
    return v;
  };
  j["alora_invocation_tokens"] = nullptr, j["arrow_config"] = nullptr;
  j["alpha_pattern"] = nlohmann::json::object();
  for (const auto& [k, v] : alpha_pattern) j["alpha_pattern"][k] = number(v);
  j["auto_mapping"] = nullptr, j["base_model_name_or_path"] = base_model, j["bias"] = "none", j["corda_config"] = nullptr;
  j["ensure_weight_tying"] = false, j["eva_config"] = nullptr, j["exclude_modules"] = nullptr, j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = c.init == lora_init::gaussian ? nlohmann::json("gaussian") : nlohmann::json(true);
  j["layer_replication"] = nullptr, j["layers_pattern"] = nullptr, j["layers_to_transform"] = nullptr;
  j["loftq_config"] = nlohmann::json::object(), j["lora_alpha"] = number(c.alpha), j["lora_bias"] = false;
  j["lora_dropout"] = c.dropout, j["lora_ga_config"] = nullptr, j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core", j["modules_to_save"] = nullptr, j["monteclora_config"] = nullptr;
  j["peft_type"] = "LORA", j["peft_version"] = "0.20.0", j["qalora_group_size"] = 16, j["r"] = c.r;
  j["rank_pattern"] = rank_pattern.empty() ? nlohmann::json::object() : nlohmann::json(rank_pattern);
  j["revision"] = nullptr;
  if (t.how == target_spec::kind::regex) {
    j["target_modules"] = t.pattern;
  } else if (t.how == target_spec::kind::all_linear) {  // PEFT stores all-linear as the minimal suffix list
    std::set<std::string> names(llama_linear_names.begin(), llama_linear_names.end());
    j["target_modules"] = names;
  } else {
    j["target_modules"] = std::set<std::string>(t.names.begin(), t.names.end());
  }
  j["target_parameters"] = nullptr, j["task_type"] = "CAUSAL_LM", j["trainable_token_indices"] = nullptr;
  j["use_bdlora"] = nullptr, j["use_dora"] = false, j["use_qalora"] = false, j["use_rslora"] = c.use_rslora;
  j["velora_config"] = nullptr;
  return j;
}

/// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors. Adapters whose rank or scaling differ from
/// c's (an adapter loaded with PEFT's rank_pattern / alpha_pattern) are written with those overrides, by full
/// module name, so the file describes every adapter exactly.
template <class Base, int Rank>
void save_adapter(lora_model<Base, Rank>& m, const std::filesystem::path& dir, const lora_config& c, const target_spec& t,
                  const std::string& base_model) {
  std::filesystem::create_directories(dir);
  std::map<std::string, nn::matrix<float>> tensors;  // sorted by name, float32 whatever S is
  std::map<std::string, int> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  for_each_adapter(m, [&](const std::string& key, const auto& a, const auto&) {
    tensors[key + ".lora_A.weight"] = a.A.template cast<float>();
    tensors[key + ".lora_B.weight"] = a.B.template cast<float>();
    const std::string module = key.substr(std::string_view("base_model.model.").size());
    lora_config own = c;
    own.r = a.rank();
    if (own.r != c.r) rank_pattern[module] = own.r;
    const double per_alpha = c.use_rslora ? std::sqrt(double(own.r)) : double(own.r);  // scaling = alpha / this
    if (std::fabs(double(a.scaling) - own.scaling()) > 1e-6 * std::fabs(own.scaling()))
      alpha_pattern[module] = std::round(double(a.scaling) * per_alpha * 1e6) / 1e6;
  });
  LORALAB_CHECK(!tensors.empty(), dir.string(), ": the model has no adapter to save");
  io::safetensors_writer w;
  w.set_metadata("format", "pt");
  for (const auto& [name, t] : tensors)
    w.add<float>(name, {t.rows(), t.cols()}, std::span<const float>(t.data(), std::size_t(t.size())));
  w.write(dir / "adapter_model.safetensors");
  atomic_file f(dir / "adapter_config.json");
  f.write(adapter_config_json(c, t, base_model, rank_pattern, alpha_pattern).dump(2));
  f.commit();
}

/// The LoRA settings an adapter_config.json holds; unsupported features are refused by name.
struct loaded_adapter_config {
  lora_config config;
  target_spec targets;
  std::map<std::string, int> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  std::string base_model;
};

inline loaded_adapter_config read_adapter_config(const std::filesystem::path& dir) {
  const auto path = dir / "adapter_config.json";
  std::ifstream in(path, std::ios::binary);
  LORALAB_CHECK(in, path.string(), ": cannot open");
  const auto j = io::parse_json(std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()}, path.string());
  LORALAB_CHECK(j.is_object(), path.string(), ": not a JSON object");
  const auto where = path.string();
  const auto peft_type = j.contains("peft_type") ? j.at("peft_type").dump() : std::string("missing");
  if (peft_type != "\"LORA\"") fail(where, ": key 'peft_type' is ", peft_type, "; only \"LORA\" adapters are supported");
  loaded_adapter_config out;
  try {
    out.config.r = io::json_integer<int>(j.at("r"), where, "r");
    out.config.alpha = j.at("lora_alpha").get<double>();
    out.config.dropout = j.value("lora_dropout", 0.0);
    out.config.use_rslora = j.value("use_rslora", false);
    const auto& init = j.contains("init_lora_weights") ? j.at("init_lora_weights") : nlohmann::json(true);
    out.config.init = init.is_string() && init.get<std::string>() == "gaussian" ? lora_init::gaussian : lora_init::kaiming_uniform;
    out.base_model = j.value("base_model_name_or_path", nlohmann::json()).is_string() ? j.at("base_model_name_or_path").get<std::string>() : "";
    const auto& tm = j.at("target_modules");
    if (tm.is_string()) out.targets = parse_targets(tm.get<std::string>());
    else {
      out.targets.how = target_spec::kind::names;
      out.targets.names = tm.get<std::vector<std::string>>();
    }
    if (j.contains("rank_pattern") && j.at("rank_pattern").is_object())
      for (const auto& [module, r] : j.at("rank_pattern").items())
        out.rank_pattern[module] = io::json_integer<int>(r, where, "rank_pattern." + module);
    if (j.contains("alpha_pattern") && j.at("alpha_pattern").is_object()) out.alpha_pattern = j.at("alpha_pattern").get<std::map<std::string, double>>();
    // the refused features, read here too: a mistyped one ("use_dora": 3) is a mistyped field
    LORALAB_CHECK(!j.value("use_dora", false), where, ": use_dora=true (DoRA) is not supported");
    LORALAB_CHECK(j.value("bias", std::string("none")) == "none", where, ": bias other than \"none\" is not supported");
    LORALAB_CHECK(!j.value("fan_in_fan_out", false), where, ": fan_in_fan_out=true does not apply to Llama's linear layers");
    LORALAB_CHECK(!j.contains("modules_to_save") || j.at("modules_to_save").is_null(), where, ": modules_to_save is not supported");
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": missing or mistyped field: ", e.what());
  }
  try {
    out.config.validate();
  } catch (const loralab::error& e) {
    fail(where, ": ", e.what());
  }
  for (const auto& [module, r] : out.rank_pattern)
    LORALAB_CHECK(r > 0, where, ": key 'rank_pattern.", module, "' is ", r, ", not a rank > 0");
  for (const auto& [module, alpha] : out.alpha_pattern)
    LORALAB_CHECK(alpha > 0 && alpha <= lora_config::max_alpha, where, ": key 'alpha_pattern.", module, "' is ", alpha,
                  ", not in (0, ", lora_config::max_alpha, "]");
  return out;
}

/// Loads a PEFT adapter directory into m: adapters are attached where its target_modules match (with
/// rank_pattern / alpha_pattern overrides), their weights read from adapter_model.safetensors. Missing or
/// unexpected keys and wrong shapes are errors naming the file and key; so is a rank other than a fixed Rank
/// (checked for every targeted module before the model is touched).
template <class Base, int Rank>
loaded_adapter_config load_adapter(lora_model<Base, Rank>& m, const std::filesystem::path& dir) {
  using S = typename Base::scalar;
  loaded_adapter_config cfg = read_adapter_config(dir);
  const auto config_path = (dir / "adapter_config.json").string();
  const auto file = io::safetensors_file::open(dir / "adapter_model.safetensors");
  const auto where = file.path().string();
  try {
    cfg.targets.check_against(linear_module_names(m));
  } catch (const loralab::error& e) {
    fail(config_path, ": key 'target_modules' does not fit the model: ", e.what());
  }
  const auto pattern_for = [](const auto& patterns, const std::string& key) -> const std::string* {
    for (const auto& [p, v] : patterns)  // PEFT get_pattern_key: (.*\.)?{key}$ against the module name
      if (std::regex_match(key, std::regex("(.*\\.)?" + p))) return &p;
    return nullptr;
  };
  if constexpr (Rank != dynamic_rank)  // a fixed-rank model: every targeted module's rank, before anything changes
    for (const std::string& name : linear_module_names(m)) {
      if (!cfg.targets.matches(name)) continue;
      const auto* p = pattern_for(cfg.rank_pattern, name);
      const std::string key = p ? "key 'rank_pattern' entry '" + *p + "' (module " + name + ")" : std::string("key 'r'");
      check_rank<Rank>(p ? cfg.rank_pattern.at(*p) : cfg.config.r, lora_linear<Base, Rank>::type_name(), config_path + ": " + key);
    }
  std::set<std::string> used;
  std::mt19937_64 rng(0);
  m.set_all_trainable(false);
  m.for_each_linear([&](const std::string& name, lora_linear<Base, Rank>& lin) {
    lin.adapter.reset();
    lin.merged = false;
    if (!cfg.targets.matches(name)) return;
    lora_config c = cfg.config;
    if (const auto* p = pattern_for(cfg.rank_pattern, name)) c.r = cfg.rank_pattern.at(*p);
    if (const auto* p = pattern_for(cfg.alpha_pattern, name)) c.alpha = cfg.alpha_pattern.at(*p);
    // the file's shapes checked before anything is allocated: a config's r of 10^9 is refused, not attempted
    const auto key_of = [&](const char* which) { return "base_model.model." + name + "." + which + ".weight"; };
    const auto expect_shape = [&](const char* which, std::int64_t rows, std::int64_t cols) {
      const std::string key = key_of(which);
      LORALAB_CHECK(file.contains(key), where, ": missing adapter key '", key, "'");
      const auto& t = file.at(key);
      LORALAB_CHECK(t.shape == (std::vector<std::int64_t>{rows, cols}), where, ": '", key, "' has shape [",
                    t.shape.size() > 0 ? t.shape[0] : -1, ", ", t.shape.size() > 1 ? t.shape[1] : -1, "], expected [", rows,
                    ", ", cols, "] (r = ", c.r, " from ", config_path, ")");
    };
    expect_shape("lora_A", c.r, lin.in_features());
    expect_shape("lora_B", lin.out_features(), c.r);
    auto a = make_adapter<S, Rank>(c, lin.out_features(), lin.in_features(), rng);
    const auto read = [&](const char* which, auto& dst) {  // A (r, K) and B (N, r): two types when the rank is fixed
      const std::string key = key_of(which);
      const std::vector<float> v = file.at(key).to_float();
      dst = Eigen::Map<const nn::matrix<float>>(v.data(), dst.rows(), dst.cols()).template cast<S>();
      used.insert(key);
    };
    read("lora_A", a.A);
    read("lora_B", a.B);
    lin.adapter = std::move(a);
  });
  for (const auto& t : file.tensors())
    LORALAB_CHECK(used.count(t.name), where, ": unexpected tensor '", t.name, "' (no targeted module of this model has it)");
  return cfg;
}

}  // namespace loralab::lora
