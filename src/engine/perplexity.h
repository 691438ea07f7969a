// Perplexity of a model on a text, by default with llama.cpp's protocol so numbers compare with
// llama-perplexity: the tokenized text is cut into non-overlapping windows of n_ctx tokens, each window
// is evaluated from an empty cache with BOS in its first slot (when the model adds BOS), and only the
// second half of each window is scored. With stride > 0 it uses the sliding-window protocol of Hugging
// Face's perplexity guide instead: windows start every `stride` tokens and each scores only the tokens
// no earlier window scored.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/session.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

struct PerplexityOptions {
  int n_ctx = 512;
  int stride = 0;            // 0: llama.cpp protocol
  int max_chunks = 0;        // 0: all
  std::string save_logits;   // write the scored positions' log-probabilities here (f16)
  std::string kl_reference;  // compare with a file written by save_logits
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_stderr = 0;
  int64_t scored = 0;
  int64_t n_tokens = 0;
  int chunks = 0;
  std::vector<double> chunk_ppl;  // running estimate after each chunk
  // Against the reference (when kl_reference is set).
  std::optional<double> reference_ppl, kl_mean, kl_max, top1_agreement;
};

// log-softmax of one row of logits, in place (perplexity and the KV calibration's NLL share it).
void log_softmax(float* x, int64_t n);

PerplexityResult perplexity(Session& session, const Tokenizer& tok, const std::string& text,
                            const PerplexityOptions& opt,
                            const std::function<void(int chunk, int n_chunks, double running_ppl)>& progress = {});

}  // namespace kestrel
