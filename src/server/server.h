// `kestrel serve`: the OpenAI-compatible HTTP server. One I/O thread (HttpServer) owns the sockets and
// answers the cheap routes; a few request workers (WorkerPool) parse, validate, template and tokenize
// requests; one engine thread (Scheduler::run) batches every generation request into forward passes,
// and, with an embedding model, one embedding thread (EmbeddingQueue) batches every /v1/embeddings input
// into encoder passes. A server holds a generation model, an embedding model, or both.
// Routes and parameters are documented in docs/server.md.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/sha256.h"
#include "engine/chat_format.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"
#include "engine/structured_output.h"
#include "model/encoder.h"
#include "model/model.h"
#include "server/embedding_queue.h"
#include "server/embeddings_api.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/worker_pool.h"

namespace kestrel::server {

struct ServerOptions {
  HttpServerOptions http;
  SchedulerOptions scheduler;
  std::string api_key;     // empty: no authentication
  std::string model_name;  // the id clients send and /v1/models lists; empty: the model file's name
  int kv_block_size = 16;
  int64_t kv_cache_tokens = 0;  // 0: default_kv_tokens (engine/kv_cache.h)
  KvFormat kv_format;
  int request_threads = 2;   // workers that parse, template and tokenize requests
  bool log_requests = true;  // one line on stderr per answered request (method, route, status, tokens, time)
  SamplingParams sampling;   // what requests get for the sampling fields they leave out
  // The embedding model's id; empty: its directory's name (an embedding-only server: model_name's).
  std::string embedding_model_name;
  // Tokens one encoder pass gathers from the waiting requests. The CPU encoder's time per token grows with
  // the pass beyond a few thousand tokens (all-MiniLM-L6-v2 on a shared 2-core machine: 256 texts at 38-56
  // embeddings/s in 1024-token passes, 22-44 in one 5120-token pass), so passes stay small.
  size_t embedding_batch_tokens = 1024;
};

// What a server serves: a generation model, an embedding model (/v1/embeddings), or both. Not owned.
struct ServedModels {
  const Model* generator = nullptr;
  const EmbeddingModel* embedder = nullptr;
  std::string embedder_path;  // its directory, for its default name
};

class Server {
 public:
  // Binds the port and sizes the KV cache; throws kestrel::Error for bad options or a busy port.
  Server(const Model& model, ops::Context ctx, ServerOptions opt);
  // ctx runs the generation model; embed_ctx the embedding model (the encoder runs on the CPU).
  Server(ServedModels models, ops::Context ctx, ops::Context embed_ctx, ServerOptions opt);
  ~Server();

  int port() const { return http_->port(); }
  // The generation model's id (an embedding-only server: the embedding model's).
  const std::string& model_name() const { return opt_.model_name; }
  // Serves until shutdown() has drained (in-flight requests finish or, after the drain timeout, are
  // cancelled and get an error); then stops the engine and returns.
  void run();
  // Async-signal-safe. A second call ends the drain at once.
  void shutdown() { http_->shutdown(); }

 private:
  struct Call;
  enum class Route : uint8_t { Completions, Chat, Tokenize, Detokenize, Embeddings };

  // The KV cache, chat formatting and scheduler of the generation model.
  void start_generation(ops::Context ctx);
  void handle(HttpRequest& req, ResponseWriter res);
  // The work of the request workers: a POST body for one of the routes above.
  void prepare(Route route, const std::string& body, ResponseWriter& res);
  // raw: the body's text (schemas are read from it again in their declared key order).
  void handle_generation(const nlohmann::json& body, std::string_view raw, ResponseWriter& res, Endpoint endpoint);
  void handle_tokenize(const nlohmann::json& body, ResponseWriter& res, bool tokenize);
  void handle_embeddings(const nlohmann::json& body, ResponseWriter& res);
  // The embedder's rows for the request's inputs; throws ApiError for ids outside the vocabulary or
  // inputs too long.
  std::vector<EncoderInput> embedding_rows(const EmbeddingSpec& spec) const;
  // A generation route on a server without a generation model, or an embedding request without an
  // embedding model: the ApiError that says what this server serves.
  [[noreturn]] void not_served(Route route) const;
  nlohmann::json model_cards() const;
  std::vector<int32_t> prompt_tokens(const GenerationSpec& g) const;
  void check_vocabulary(std::span<const int32_t> ids, const char* param) const;
  // Counts an answered request in the metrics and writes its log line (tokens < 0: none to report).
  void finished_request(const ResponseWriter& res, int status, std::string_view reason, int prompt_tokens = -1,
                        int completion_tokens = -1);
  void respond_json(ResponseWriter& res, int status, const std::string& body);
  void respond_error(ResponseWriter& res, int status, std::string_view message, std::string_view param = {},
                     std::string_view code = {});
  bool authorized(const HttpRequest& req) const;
  // The drain is over: cancel every request in the engine and refuse those still being prepared.
  void cancel_in_flight();

  const Model* model_;              // null: embeddings only
  const EmbeddingModel* embedder_;  // null: generation only
  ServerOptions opt_;
  std::unique_ptr<ChatFormatter> chat_;
  std::unique_ptr<ConstraintCompiler> constraints_;  // structured output, compiled on the request workers
  ToolTemplate tool_template_;                       // the chat template's tool-call syntax
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<HttpServer> http_;
  Metrics metrics_;
  int64_t created_;
  Sha256Digest api_key_digest_{};
  std::mutex submit_mutex_;                     // orders submissions against cancel_in_flight()
  std::atomic<bool> cancelling_{false};         // set under submit_mutex_
  std::unique_ptr<EmbeddingQueue> embeddings_;  // with an embedding model
  // Last, so it stops (and finishes its tasks) before what those tasks use goes away. ~Server stops it
  // before the embedding queue, whose answers it encodes.
  std::unique_ptr<WorkerPool> workers_;
};

}  // namespace kestrel::server
