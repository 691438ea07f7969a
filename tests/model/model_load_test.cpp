// Loading models: the default GGUF, and every kind of bad input giving kestrel::Error (never a crash).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../common/skip_or_fail.h"
#include "core/error.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel {
namespace {
namespace fs = std::filesystem;

fs::path scratch_dir() {
  fs::path d = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  d /= "kestrel_model_load_test_" + std::to_string(::getpid());
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string expect_error(const std::string& path) {
  try {
    load_model(path);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "loading " << path << " did not fail";
  return {};
}

TEST(ModelLoad, BadPathsAndFilesAreClearErrors) {
  const fs::path d = scratch_dir();
  EXPECT_NE(expect_error((d / "nope.gguf").string()).find("does not exist"), std::string::npos);
  write_file(d / "not_gguf.bin", "hello, this is not a model file at all");
  EXPECT_FALSE(expect_error((d / "not_gguf.bin").string()).empty());
  write_file(d / "empty.gguf", "");
  EXPECT_FALSE(expect_error((d / "empty.gguf").string()).empty());
  fs::create_directories(d / "hf_no_config");
  EXPECT_NE(expect_error((d / "hf_no_config").string()).find("config.json"), std::string::npos);
  fs::create_directories(d / "hf_bad_arch");
  write_file(d / "hf_bad_arch" / "config.json", R"({"model_type": "gpt_neox", "hidden_size": 8})");
  EXPECT_NE(expect_error((d / "hf_bad_arch").string()).find("unsupported architecture"), std::string::npos);
  write_file(d / "hf_bad_arch" / "config.json", R"({"model_type": "llama", "hidden_size": "wide"})");
  EXPECT_FALSE(expect_error((d / "hf_bad_arch").string()).empty());
  write_file(d / "hf_bad_arch" / "config.json", "{ not json");
  EXPECT_FALSE(expect_error((d / "hf_bad_arch").string()).empty());
  // A valid GGUF that is not a language model.
  EXPECT_FALSE(expect_error(test::fixture("formats/gguf/small.gguf")).empty());
  fs::remove_all(d);
}

TEST(ModelLoad, DefaultModelLoads) {
  const std::string path = test::default_model();
  if (path.empty()) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  auto m = load_model(path);
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.hidden, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab, 49152);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope.style, ops::RopeParams::Style::Adjacent);
  EXPECT_FALSE(m->chat_template.empty());
}

TEST(FuzzModelLoad, TruncatedAndCorruptedDefaultModelAreErrors) {
  const std::string path = test::default_model();
  if (path.empty()) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const fs::path d = scratch_dir();
  for (size_t n :
       {size_t{0}, size_t{3}, size_t{24}, size_t{4096}, size_t{1} << 20, bytes.size() / 2, bytes.size() - 1}) {
    write_file(d / "cut.gguf", bytes.substr(0, n));
    EXPECT_FALSE(expect_error((d / "cut.gguf").string()).empty()) << "truncated at " << n;
  }
  // Corrupt the architecture name and a tensor count field in the header region.
  std::string bad = bytes;
  const size_t at = bad.find("general.architecture");
  ASSERT_NE(at, std::string::npos);
  bad[at + 20 + 12] ^= 0x5a;  // inside the value string "llama"
  write_file(d / "arch.gguf", bad);
  EXPECT_FALSE(expect_error((d / "arch.gguf").string()).empty());
  fs::remove_all(d);
}

}  // namespace
}  // namespace kestrel
