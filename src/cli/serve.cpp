// `kestrel serve`: the OpenAI-compatible HTTP server (see docs/server.md). SIGTERM or SIGINT starts a
// graceful shutdown: no new connections, in-flight requests finish (or are cancelled after
// --drain-timeout, or at a second signal), exit status 0.
#include <csignal>
#include <optional>

#include "backends/backends.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "model/encoder.h"
#include "server/server.h"

namespace kestrel::cli {
namespace {

struct ServeFlags {
  ModelFlags model;
  // A prefill chunk of 256 tokens beside decoding rows keeps the inter-token latency within twice the
  // decode step on an H100 at 16 req/s (BENCHMARKS.md); a backlog of waiting requests lifts it to the
  // whole --batch-size (2048 by default here), which saturation throughput needs on the GPU.
  server::ServerOptions server = [] {
    server::ServerOptions o;
    o.scheduler.prefill_chunk = 256;
    return o;
  }();
  // Milliseconds the oldest queued request waits before the chunk is lifted; unset: 100 on the GPU, never
  // on the CPU (whose steps are compute-bound at any size, so a lifted chunk would only stall decoding).
  std::optional<double> chunk_max_wait_ms;
  bool no_prefix_cache = false;
  bool no_log_requests = false;
  SamplingOptions sampling_set;  // flags that set the server's sampling defaults (opt.sampling)
  std::string embedding_model;   // --embedding-model: an encoder served beside the generation model
};

server::Server* g_server = nullptr;

extern "C" void on_signal(int) {
  if (g_server) g_server->shutdown();
}

void serve(ServeFlags& f) {
  if (f.model.verbose) log::set_level(log::Level::Debug);
  if (f.model.threads > 0) ThreadPool::set_default_threads(f.model.threads);
  // -m names a generation model or an encoder directory (config.json of a BertModel): the latter makes
  // an embedding-only server. --embedding-model adds an encoder beside a generation model.
  const std::string path = model_path(f.model);
  const bool embedding_only = is_encoder_dir(path);
  KS_CHECK(!embedding_only || f.embedding_model.empty(),
           "{} is an embedding model; --embedding-model adds one beside a generation model, which -m names", path);
  server::ServerOptions opt = f.server;
  opt.log_requests = !f.no_log_requests;
  server::ServedModels served;
  std::unique_ptr<EmbeddingModel> embedder;
  ops::Context embed_ctx;
  if (embedding_only || !f.embedding_model.empty()) {
    served.embedder_path = embedding_only ? path : f.embedding_model;
    log::info("loading embedding model {}", served.embedder_path);
    embedder = load_embedding_model(served.embedder_path);
    served.embedder = embedder.get();
    // On --device cuda the encoder runs on a lane of its own (its stream and allocator: the embedding
    // queue's thread steps it beside the scheduler's), its weights in bf16 (Encoder::place_on).
    embed_ctx = make_context(f.model);
    if (embed_ctx.device == Device::Cuda) embed_ctx.runtime = backends::make_runtime(Device::Cuda);
    embedder->encoder->place_on(embed_ctx);
  }
  std::unique_ptr<Model> model;
  ops::Context ctx;
  if (!embedding_only) {
    model = load(f.model);
    opt.scheduler.n_ctx = f.model.ctx_size;
    opt.scheduler.max_batch_tokens = f.model.batch_size;
    opt.scheduler.prefill_chunk_max_wait_ms = f.chunk_max_wait_ms.value_or(f.model.device == "cuda" ? 100 : -1);
    opt.scheduler.prefix_cache = !f.no_prefix_cache;
    opt.kv_format = session_options(f.model, *model).kv_format;
    fill_sampling_defaults(opt.sampling, f.sampling_set, *model);
    ctx = make_context(f.model);
    model->decoder->place_on(ctx);  // weights to the GPU once for --device cuda; a no-op on the CPU
    served.generator = model.get();
  }
  server::Server srv(served, ctx, embed_ctx, opt);
  g_server = &srv;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  srv.run();
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  g_server = nullptr;
}

}  // namespace

void register_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  server::ServerOptions& o = f->server;
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "serve the model over an OpenAI-compatible HTTP API. A generation model serves /v1/chat/completions and "
      "/v1/completions; an encoder directory (a BertModel checkpoint such as all-MiniLM-L6-v2, as for `kestrel "
      "embed`) given as the model serves /v1/embeddings alone; --embedding-model DIR serves both at once");
  cmd->add_option("model_path", f->model.model,
                  "the model, as with -m (vLLM's `serve MODEL`): a generation model or an encoder directory");
  cmd->add_option("--embedding-model", f->embedding_model,
                  "an encoder directory served on /v1/embeddings beside the generation model (its id: the "
                  "directory's name, or --served-embedding-model-name)");
  cmd->add_option("--served-embedding-model-name", o.embedding_model_name,
                  "id of the --embedding-model for clients (default: its directory's name)");
  cmd->add_option("--embedding-batch-tokens", o.embedding_batch_tokens,
                  "tokens one encoder pass gathers from the waiting /v1/embeddings requests (a larger request "
                  "runs over several passes)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  cmd->add_option("--host", o.http.host, "address to bind (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", o.http.port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o.api_key, "require 'Authorization: Bearer <key>' on /v1 routes")
      ->envname("KESTREL_API_KEY");
  cmd->add_option("--served-model-name", o.model_name, "model id for clients (default: the model file's name)");
  cmd->add_option("--max-running,--parallel", o.scheduler.max_running, "sequences batched at once (llama.cpp: -np)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-queue", o.scheduler.max_waiting,
                  "queued requests before answering 429 (generation and embedding requests each)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--kv-cache-tokens", o.kv_cache_tokens,
                  "KV cache size in tokens, shared by all sequences (default: 1024 per --max-running within "
                  "1 GiB, at least one context)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 32));
  cmd->add_option("--block-size", o.kv_block_size,
                  "KV cache block size in tokens (kivi formats round it up to their 32-token key groups)")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--no-prefix-cache", f->no_prefix_cache, "don't share KV blocks of identical prompt prefixes");
  cmd->add_option("--cors-origin,--allowed-origins", o.http.cors_origins,
                  "let browser pages from this origin call the server (repeatable; '*': any). Off by default: "
                  "a page on another site can't reach a local server")
      ->allow_extra_args(false);
  cmd->add_flag("--no-log-requests,--disable-log-requests", f->no_log_requests,
                "don't write a line per request to stderr (method, route, status, seconds, tokens)");
  cmd->add_option("--prefill-chunk", o.scheduler.prefill_chunk,
                  "prompt tokens per step while other sequences decode (0: the whole --batch-size); smaller "
                  "steadies inter-token latency under load")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-chunk-max-wait", f->chunk_max_wait_ms,
                  "milliseconds the oldest queued request may wait before --prefill-chunk is lifted to the whole "
                  "--batch-size until the queue is served (default: 100 on cuda, never on the cpu; -1: never)")
      ->check(CLI::Range(-1.0, 1e9));
  cmd->add_option("--max-body-bytes", o.http.limits.max_body_bytes, "largest request body accepted (413 above)")
      ->check(CLI::Range(size_t{1} << 10, size_t{1} << 30));
  cmd->add_option("--max-connections", o.http.max_connections, "open connections at most (503 above)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--header-timeout", o.http.header_timeout_s, "seconds for a started request to arrive (408)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--idle-timeout", o.http.idle_timeout_s, "seconds an idle keep-alive connection stays open")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--drain-timeout", o.http.drain_timeout_s,
                  "on SIGTERM, seconds in-flight requests get to finish before they are cancelled (a second "
                  "signal cancels them at once)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--request-threads", o.request_threads,
                  "threads that parse, template and tokenize requests, off the I/O thread")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  f->model.batch_size = 2048;  // vLLM's serving budget; prompts of other steps are bounded by --prefill-chunk
  add_model_flags(*cmd, f->model);
  // What a request gets for the sampling fields it leaves out (as llama-server's and vLLM's defaults).
  f->sampling_set = add_sampling_flags(*cmd, o.sampling, /*with_seed=*/false);
  cmd->callback([f] { serve(*f); });
}

}  // namespace kestrel::cli
