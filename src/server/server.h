// `kestrel serve`: the OpenAI-compatible HTTP server. One I/O thread (HttpServer) parses requests,
// validates and tokenizes them and writes responses; one engine thread (Scheduler::run) batches every
// request into forward passes. Routes and parameters are documented in docs/server.md.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "engine/chat_format.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"
#include "model/model.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_api.h"

namespace kestrel::server {

struct ServerOptions {
  HttpServerOptions http;
  SchedulerOptions scheduler;
  std::string api_key;     // empty: no authentication
  std::string model_name;  // the id clients send and /v1/models lists; empty: the model file's name
  int kv_block_size = 16;
  int64_t kv_cache_tokens = 0;  // 0: 1024 per running sequence within 1 GiB, at least one context
  DType kv_dtype = DType::F32;
};

class Server {
 public:
  // Binds the port and sizes the KV cache; throws kestrel::Error for bad options or a busy port.
  Server(const Model& model, ops::Context ctx, ServerOptions opt);
  ~Server();

  int port() const { return http_->port(); }
  const std::string& model_name() const { return opt_.model_name; }
  // Serves until shutdown() has drained (in-flight requests finish or, after the drain timeout, are
  // cancelled); then stops the engine and returns.
  void run();
  // Async-signal-safe.
  void shutdown() { http_->shutdown(); }

 private:
  struct Call;
  void handle(HttpRequest& req, ResponseWriter res);
  void handle_generation(HttpRequest& req, ResponseWriter& res, Endpoint endpoint);
  void handle_tokenize(HttpRequest& req, ResponseWriter& res, bool tokenize);
  std::vector<int32_t> prompt_tokens(const GenerationSpec& g) const;
  void respond_json(ResponseWriter& res, int status, const std::string& body);
  bool authorized(const HttpRequest& req) const;

  const Model* model_;
  ServerOptions opt_;
  std::unique_ptr<ChatFormatter> chat_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<HttpServer> http_;
  Metrics metrics_;
  int64_t created_;
};

}  // namespace kestrel::server
