#include "model/synth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/half.h"
#include "formats/safetensors.h"
#include "model/model_config.h"

namespace kestrel {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

SynthPreset llama_like(std::string name, std::string type, int layers, int hidden, int ffn, int heads, int kv,
                       int head_dim, int vocab, int max_pos, float theta, float eps) {
  SynthPreset p;
  p.name = std::move(name);
  p.model_type = std::move(type);
  p.n_layers = layers;
  p.hidden = hidden;
  p.ffn = ffn;
  p.n_heads = heads;
  p.n_kv_heads = kv;
  p.head_dim = head_dim;
  p.vocab = vocab;
  p.max_pos = max_pos;
  p.rope_theta = theta;
  p.rms_eps = eps;
  return p;
}

std::vector<SynthPreset> make_presets() {
  std::vector<SynthPreset> v;
  // Meta-Llama-3-8B.
  v.push_back(llama_like("llama3-8b", "llama", 32, 4096, 14336, 32, 8, 128, 128256, 8192, 500000.f, 1e-5f));
  // Llama-3.2-1B: llama3 RoPE scaling, tied embeddings, head_dim 64.
  SynthPreset l1 = llama_like("llama3.2-1b", "llama", 16, 2048, 8192, 32, 8, 64, 128256, 131072, 500000.f, 1e-5f);
  l1.llama3_rope_factor = 32.f;
  l1.tied_embeddings = true;
  v.push_back(l1);
  // Qwen2.5-7B: q/k/v biases.
  SynthPreset q2 = llama_like("qwen2.5-7b", "qwen2", 28, 3584, 18944, 28, 4, 128, 152064, 32768, 1000000.f, 1e-6f);
  q2.qkv_bias = true;
  v.push_back(q2);
  // Qwen3-8B: per-head q/k RMSNorm.
  SynthPreset q3 = llama_like("qwen3-8b", "qwen3", 36, 4096, 12288, 32, 8, 128, 151936, 40960, 1000000.f, 1e-6f);
  q3.qk_norm = true;
  v.push_back(q3);
  // Mistral-7B-v0.3.
  v.push_back(llama_like("mistral-7b", "mistral", 32, 4096, 14336, 32, 8, 128, 32768, 32768, 1000000.f, 1e-5f));
  // Test sizes (head_dim 64 so the CUDA kernels run them too).
  v.push_back(llama_like("tiny", "llama", 2, 128, 256, 2, 1, 64, 512, 1024, 10000.f, 1e-5f));
  SynthPreset small = llama_like("small", "llama", 4, 512, 1536, 8, 2, 64, 4096, 4096, 500000.f, 1e-5f);
  small.llama3_rope_factor = 8.f;
  small.llama3_original_max_pos = 1024;
  small.tied_embeddings = true;
  v.push_back(small);
  v.push_back(llama_like("tiny-qwen3", "qwen3", 2, 128, 256, 2, 1, 64, 512, 1024, 1000000.f, 1e-6f));
  v.back().qk_norm = true;
  v.push_back(llama_like("tiny-qwen2", "qwen2", 2, 128, 256, 2, 1, 64, 512, 1024, 1000000.f, 1e-6f));
  v.back().qkv_bias = true;
  // Gemma-3-270M: head_dim 256, one KV head, 262K vocabulary, sliding window 512 on 5 of every 6 layers.
  SynthPreset g = llama_like("gemma3-270m", "gemma3_text", 18, 640, 2048, 4, 1, 256, 262144, 32768, 1000000.f, 1e-6f);
  g.qk_norm = true;
  g.tied_embeddings = true;
  g.sliding_window = 512;
  v.push_back(g);
  // Its test size: a sliding and a global layer with a window shorter than the test prompts.
  SynthPreset tg = llama_like("tiny-gemma3", "gemma3_text", 2, 128, 256, 2, 1, 64, 512, 1024, 1000000.f, 1e-6f);
  tg.qk_norm = true;
  tg.tied_embeddings = true;
  tg.sliding_window = 8;
  tg.sliding_period = 2;
  v.push_back(tg);
  return v;
}

enum class Init : uint8_t { Linear, Embedding, Norm, Bias };

bool gemma(const SynthPreset& p) {
  return p.model_type == "gemma3_text";
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init;
  uint64_t index;  // stream id for synth_normal
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::vector<TensorSpec> tensor_specs(const SynthPreset& p) {
  std::vector<TensorSpec> t;
  auto add = [&](std::string name, std::vector<int64_t> shape, Init init) {
    t.push_back({std::move(name), std::move(shape), init, t.size()});
  };
  const int64_t q_dim = int64_t{p.n_heads} * p.head_dim, kv_dim = int64_t{p.n_kv_heads} * p.head_dim;
  add("model.embed_tokens.weight", {p.vocab, p.hidden}, Init::Embedding);
  for (int l = 0; l < p.n_layers; ++l) {
    const std::string b = fmt::format("model.layers.{}.", l);
    add(b + "input_layernorm.weight", {p.hidden}, Init::Norm);
    add(b + "self_attn.q_proj.weight", {q_dim, p.hidden}, Init::Linear);
    add(b + "self_attn.k_proj.weight", {kv_dim, p.hidden}, Init::Linear);
    add(b + "self_attn.v_proj.weight", {kv_dim, p.hidden}, Init::Linear);
    if (p.qkv_bias) {
      add(b + "self_attn.q_proj.bias", {q_dim}, Init::Bias);
      add(b + "self_attn.k_proj.bias", {kv_dim}, Init::Bias);
      add(b + "self_attn.v_proj.bias", {kv_dim}, Init::Bias);
    }
    if (p.qk_norm) {
      add(b + "self_attn.q_norm.weight", {p.head_dim}, Init::Norm);
      add(b + "self_attn.k_norm.weight", {p.head_dim}, Init::Norm);
    }
    add(b + "self_attn.o_proj.weight", {p.hidden, q_dim}, Init::Linear);
    add(b + "post_attention_layernorm.weight", {p.hidden}, Init::Norm);
    if (gemma(p)) {
      add(b + "pre_feedforward_layernorm.weight", {p.hidden}, Init::Norm);
      add(b + "post_feedforward_layernorm.weight", {p.hidden}, Init::Norm);
    }
    add(b + "mlp.gate_proj.weight", {p.ffn, p.hidden}, Init::Linear);
    add(b + "mlp.up_proj.weight", {p.ffn, p.hidden}, Init::Linear);
    add(b + "mlp.down_proj.weight", {p.hidden, p.ffn}, Init::Linear);
  }
  add("model.norm.weight", {p.hidden}, Init::Norm);
  if (!p.tied_embeddings) add("lm_head.weight", {p.vocab, p.hidden}, Init::Embedding);
  return t;
}

// Linear layers get N(0, 0.02) like the models' initializer_range. The embedding (and an untied output
// projection) use at least 1/sqrt(hidden), so that logits of a normalised hidden state have a standard
// deviation of about one or more whatever the width: greedy decoding is then not a coin toss between
// near-equal logits. Norm weights sit near one. Returns {mean, standard deviation}.
std::pair<float, float> distribution(const TensorSpec& t, const SynthPreset& p) {
  switch (t.init) {
    case Init::Linear: return {0.f, 0.02f};
    case Init::Embedding: return {0.f, std::max(0.02f, 1.f / std::sqrt(static_cast<float>(p.hidden)))};
    case Init::Norm: return {gemma(p) ? 0.f : 1.f, 0.02f};  // Gemma applies its norm weights as 1 + w
    case Init::Bias: return {0.f, 0.02f};
  }
  return {0.f, 0.f};
}

// Elements [begin, begin + n) of tensor t into dst, converted to the file dtype.
template <typename Store>
void generate(const TensorSpec& t, const SynthPreset& p, uint64_t seed, int64_t begin, int64_t n, Store store) {
  const auto [mean, sd] = distribution(t, p);
  for (int64_t e = 0; e < n; ++e) store(e, mean + sd * synth_normal(seed, t.index, static_cast<uint64_t>(begin + e)));
}

void generate_chunk(DType d, const TensorSpec& t, const SynthPreset& p, uint64_t seed, int64_t begin, int64_t n,
                    char* dst) {
  if (d == DType::F32) {
    float* o = reinterpret_cast<float*>(dst);
    generate(t, p, seed, begin, n, [o](int64_t e, float v) { o[e] = v; });
  } else if (d == DType::F16) {
    uint16_t* o = reinterpret_cast<uint16_t*>(dst);
    generate(t, p, seed, begin, n, [o](int64_t e, float v) { o[e] = f32_to_f16(v); });
  } else {
    uint16_t* o = reinterpret_cast<uint16_t*>(dst);
    generate(t, p, seed, begin, n, [o](int64_t e, float v) { o[e] = f32_to_bf16(v); });
  }
}

size_t element_bytes(DType d) {
  return d == DType::F32 ? 4 : 2;
}

struct Shard {
  std::string file;
  std::vector<size_t> tensors;  // indices into the spec list
  uint64_t header_bytes = 0;    // 8-byte length + padded JSON header
  uint64_t data_bytes = 0;
  std::string header;
};

// One unit of parallel work: a contiguous range of one tensor's elements.
struct Chunk {
  size_t tensor;
  int shard;
  uint64_t file_offset;
  int64_t begin, count;
};

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream o(p, std::ios::binary | std::ios::trunc);
  KS_CHECK(o.good(), "synth: cannot write '{}'", p.string());
  o << s;
  KS_CHECK(o.good(), "synth: writing '{}' failed", p.string());
}

}  // namespace

float synth_normal(uint64_t seed, uint64_t tensor_index, uint64_t i) {
  // splitmix64 of (seed, tensor, element), then Irwin-Hall over four 16-bit uniforms: mean 0, variance 1,
  // bounded at +-3.46 — a sensible initialiser shape and an order of magnitude cheaper than Box-Muller.
  uint64_t z = seed * 0x9e3779b97f4a7c15ull ^ (tensor_index + 1) * 0xc2b2ae3d27d4eb4full ^ i;
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const float s = static_cast<float>((z & 0xffff) + ((z >> 16) & 0xffff) + ((z >> 32) & 0xffff) + (z >> 48));
  // Sum of four U[0, 65535]: mean 2 * 65535, variance 4 * (65536^2 - 1) / 12.
  constexpr float kMean = 2.f * 65535.f, kInvSd = 1.f / 37837.23f;
  return (s - kMean) * kInvSd;
}

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> all = make_presets();
  return all;
}

const SynthPreset& synth_preset(std::string_view name) {
  std::string names;
  for (const SynthPreset& p : synth_presets()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  KS_FAIL("unknown synth preset '{}'; presets: {}", name, names);
}

json synth_config_json(const SynthPreset& p, DType dtype) {
  const auto [bos, eos] = synth_bos_eos(p);
  const std::string arch = p.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                           : p.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                           : p.model_type == "mistral" ? "MistralForCausalLM"
                           : gemma(p)                  ? "Gemma3ForCausalLM"
                                                       : "LlamaForCausalLM";
  json c = {{"architectures", json::array({arch})},
            {"model_type", p.model_type},
            {"_name_or_path", "kestrel-synth-" + p.name},
            {"hidden_size", p.hidden},
            {"intermediate_size", p.ffn},
            {"num_hidden_layers", p.n_layers},
            {"num_attention_heads", p.n_heads},
            {"num_key_value_heads", p.n_kv_heads},
            {"head_dim", p.head_dim},
            {"vocab_size", p.vocab},
            {"max_position_embeddings", p.max_pos},
            {"rms_norm_eps", p.rms_eps},
            {"rope_theta", p.rope_theta},
            {"rope_scaling", nullptr},
            {"tie_word_embeddings", p.tied_embeddings},
            {"hidden_act", "silu"},
            {"initializer_range", 0.02},
            {"attention_dropout", 0.0},
            {"use_cache", true},
            {"torch_dtype", dtype == DType::F32   ? "float32"
                            : dtype == DType::F16 ? "float16"
                                                  : "bfloat16"},
            {"bos_token_id", bos >= 0 ? json(bos) : json(nullptr)},
            {"eos_token_id", eos}};
  if (p.llama3_rope_factor > 0)
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", p.llama3_rope_factor},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", p.llama3_original_max_pos}};
  if (p.model_type == "llama") {
    c["attention_bias"] = false;
    c["mlp_bias"] = false;
  }
  if (p.model_type == "qwen2" || p.model_type == "qwen3" || p.model_type == "mistral") {
    c["sliding_window"] = nullptr;
    c["use_sliding_window"] = false;
  }
  if (p.model_type == "qwen3") c["attention_bias"] = false;
  if (gemma(p)) {
    c.erase("hidden_act");
    c["hidden_activation"] = "gelu_pytorch_tanh";
    c["query_pre_attn_scalar"] = p.head_dim;
    c["rope_local_base_freq"] = p.rope_local_theta;
    c["sliding_window"] = p.sliding_window;
    // Both spellings of the layer pattern: layer_types (transformers >= 4.53) and the period before it.
    c["sliding_window_pattern"] = p.sliding_period;
    json types = json::array();
    for (uint8_t sliding : ModelConfig::sliding_period(p.n_layers, p.sliding_period))
      types.push_back(sliding ? "sliding_attention" : "full_attention");
    c["layer_types"] = types;
    c["final_logit_softcapping"] = nullptr;
    c["attn_logit_softcapping"] = nullptr;
    c["attention_bias"] = false;
  }
  return c;
}

SynthSummary write_synth_model(const SynthPreset& p, const std::string& out_dir, const SynthOptions& opt) {
  KS_CHECK(opt.dtype == DType::BF16 || opt.dtype == DType::F16 || opt.dtype == DType::F32,
           "synth: weights can be bf16, f16 or f32, not {}", dtype_name(opt.dtype));
  KS_CHECK(opt.max_shard_bytes > 0, "synth: the shard size must be positive");
  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  KS_CHECK(!ec && fs::is_directory(dir), "synth: cannot create the directory '{}': {}", out_dir, ec.message());

  const std::vector<TensorSpec> specs = tensor_specs(p);
  const size_t eb = element_bytes(opt.dtype);
  SynthSummary summary;

  // Shards in tensor order, each at most max_shard_bytes (a larger single tensor gets a shard alone).
  std::vector<Shard> shards(1);
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(specs[i].numel()) * eb;
    if (!shards.back().tensors.empty() && shards.back().data_bytes + bytes > opt.max_shard_bytes) shards.emplace_back();
    shards.back().tensors.push_back(i);
    shards.back().data_bytes += bytes;
    summary.tensor_bytes += bytes;
    summary.parameters += specs[i].numel();
  }
  const bool sharded = shards.size() > 1;
  json weight_map = json::object();
  std::vector<Chunk> chunks;
  constexpr int64_t kChunkBytes = 8 << 20;
  const int64_t chunk_elems = kChunkBytes / static_cast<int64_t>(eb);
  for (size_t s = 0; s < shards.size(); ++s) {
    Shard& sh = shards[s];
    sh.file = sharded ? fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size()) : "model.safetensors";
    json header = {{"__metadata__", {{"format", "pt"}}}};
    uint64_t off = 0;
    for (size_t i : sh.tensors) {
      const uint64_t bytes = static_cast<uint64_t>(specs[i].numel()) * eb;
      header[specs[i].name] = {{"dtype", safetensors_dtype_name(opt.dtype)},
                               {"shape", specs[i].shape},
                               {"data_offsets", {off, off + bytes}}};
      weight_map[specs[i].name] = sh.file;
      off += bytes;
    }
    sh.header = header.dump();
    sh.header.append((8 - sh.header.size() % 8) % 8, ' ');
    sh.header_bytes = 8 + sh.header.size();
    off = 0;
    for (size_t i : sh.tensors) {
      const int64_t n = specs[i].numel();
      for (int64_t b = 0; b < n; b += chunk_elems)
        chunks.push_back({i, static_cast<int>(s), sh.header_bytes + off + static_cast<uint64_t>(b) * eb, b,
                          std::min(chunk_elems, n - b)});
      off += static_cast<uint64_t>(n) * eb;
    }
  }

  // Open every shard, write its header and size it; workers then fill the data with pwrite.
  std::vector<int> fds;
  auto close_all = [&] {
    for (int fd : fds) ::close(fd);
  };
  for (const Shard& sh : shards) {
    const std::string path = (dir / sh.file).string();
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      close_all();
      KS_FAIL("synth: cannot create '{}': {}", path, std::strerror(errno));
    }
    fds.push_back(fd);
    uint64_t len = sh.header.size();
    char len_le[8];
    for (int b = 0; b < 8; ++b) len_le[b] = static_cast<char>((len >> (8 * b)) & 0xff);
    const bool ok = ::pwrite(fd, len_le, 8, 0) == 8 &&
                    ::pwrite(fd, sh.header.data(), sh.header.size(), 8) == static_cast<ssize_t>(sh.header.size()) &&
                    ::ftruncate(fd, static_cast<off_t>(sh.header_bytes + sh.data_bytes)) == 0;
    if (!ok) {
      close_all();
      KS_FAIL("synth: writing '{}' failed: {}", path, std::strerror(errno));
    }
  }

  const int n_threads = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string err;
  auto worker = [&] {
    std::vector<char> buf(kChunkBytes);
    for (size_t c; !failed && (c = next.fetch_add(1)) < chunks.size();) {
      const Chunk& ch = chunks[c];
      const TensorSpec& t = specs[ch.tensor];
      generate_chunk(opt.dtype, t, p, opt.seed, ch.begin, ch.count, buf.data());
      const size_t bytes = static_cast<size_t>(ch.count) * eb;
      size_t written = 0;
      while (written < bytes) {
        const ssize_t w = ::pwrite(fds[ch.shard], buf.data() + written, bytes - written,
                                   static_cast<off_t>(ch.file_offset + written));
        if (w <= 0) {
          std::lock_guard lock(err_mu);
          err = fmt::format("writing '{}' failed: {}", shards[ch.shard].file, std::strerror(errno));
          failed = true;
          return;
        }
        written += static_cast<size_t>(w);
      }
      done += bytes;
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < n_threads; ++i) threads.emplace_back(worker);
  while (done < summary.tensor_bytes && !failed) {
    if (opt.progress) opt.progress(done, summary.tensor_bytes);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : threads) t.join();
  close_all();
  KS_CHECK(!failed, "synth: {}", err);
  if (opt.progress) opt.progress(done, summary.tensor_bytes);
  summary.shards = static_cast<int>(shards.size());

  if (sharded)
    write_text(dir / "model.safetensors.index.json",
               json({{"metadata", {{"total_size", summary.tensor_bytes}}}, {"weight_map", weight_map}}).dump(2));
  else
    fs::remove(dir / "model.safetensors.index.json", ec);  // a stale index would shadow the new file
  write_text(dir / "config.json", synth_config_json(p, opt.dtype).dump(2));
  write_text(dir / "tokenizer.json", synth_tokenizer_json(p).dump());
  write_text(dir / "tokenizer_config.json", synth_tokenizer_config_json(p).dump(2));
  const auto [bos, eos] = synth_bos_eos(p);
  json gen = {{"eos_token_id", eos}, {"do_sample", false}};
  if (bos >= 0) gen["bos_token_id"] = bos;
  write_text(dir / "generation_config.json", gen.dump(2));
  return summary;
}

}  // namespace kestrel
