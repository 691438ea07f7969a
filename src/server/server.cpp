#include "server/server.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "core/version.h"
#include "server/api_error.h"
#include "server/openai_api.h"
#include "tokenizer/chat_template/chat_template.h"

namespace kestrel::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kClientGone = 499;              // nginx's "client closed request", for the metrics only
constexpr int kDefaultCompletionTokens = 16;  // OpenAI's default for /v1/completions

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t random_u64() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// The token of "Authorization: Bearer <token>"; the scheme is case-insensitive (RFC 9110, 11.1).
std::optional<std::string_view> bearer_token(const std::string* header) {
  if (!header) return std::nullopt;
  std::string_view v = *header;
  const size_t space = v.find(' ');
  if (space == std::string_view::npos || !iequals(v.substr(0, space), "bearer")) return std::nullopt;
  v.remove_prefix(space);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.size() > 5 && name.ends_with(".gguf")) name.resize(name.size() - 5);
  return name.empty() ? "kestrel" : name;
}

}  // namespace

// One generation request in flight: turns engine events into the response (one JSON body, or SSE
// chunks) and records its metrics. Engine events may arrive before the I/O thread has started the
// response; they wait in `early` until start().
struct Server::Call {
  Server* server;
  ResponseWriter res;
  Endpoint endpoint;
  bool stream, include_usage;
  bool logprobs;
  std::string id;
  int64_t created;
  Clock::time_point arrival = Clock::now();

  std::mutex m;
  bool started = false, done = false;
  std::vector<RequestOutput> early;
  // Totals so far.
  std::string text;
  std::vector<TokenLogprob> lps;
  size_t text_offset = 0;
  // With tools (and tool_choice other than none): calls are parsed out of the answer.
  std::optional<ToolSpec> tools;
  ToolFormat tool_format = ToolFormat::Hermes;
  std::optional<ToolCallStream> tool_stream;
  int prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  Clock::time_point first_token{}, last_token{};

  Call(Server* s, ResponseWriter r, const GenerationSpec& g)
      : server(s),
        res(std::move(r)),
        endpoint(g.endpoint),
        stream(g.stream),
        include_usage(g.include_usage),
        logprobs(g.logprobs >= 0),
        id(fmt::format("{}-{:016x}", g.endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl", random_u64())),
        created(unix_time()) {
    if (g.tools && g.tools->choice != ToolSpec::Choice::None) {
      tools = g.tools;
      tool_format = s->tool_template_.format;
      if (stream) tool_stream.emplace(tool_format);
    }
  }

  json tool_calls_json(const std::vector<ToolCall>& calls, bool indexed) const {
    json out = json::array();
    for (size_t i = 0; i < calls.size(); ++i) {
      json c = {{"id", fmt::format("call_{:016x}", random_u64())},
                {"type", "function"},
                {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
      if (indexed) c["index"] = i;
      out.push_back(std::move(c));
    }
    return out;
  }

  const Tokenizer& tok() const { return *server->model_->tokenizer; }

  void start() {
    std::lock_guard lock(m);
    if (stream) {
      res.start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
      if (endpoint == Endpoint::Chat) send_chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr);
    }
    started = true;
    for (RequestOutput& o : early) process(o);
    early.clear();
  }

  void on_output(RequestOutput&& o) {
    std::lock_guard lock(m);
    if (!started) {
      early.push_back(std::move(o));
      return;
    }
    process(o);
  }

  json envelope() const {
    return {{"id", id},
            {"object",
             endpoint == Endpoint::Chat ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
            {"created", created},
            {"model", server->opt_.model_name}};
  }

  json logprobs_json(std::span<const TokenLogprob> l) {
    if (!logprobs) return nullptr;
    return endpoint == Endpoint::Chat ? chat_logprobs_json(tok(), l) : completion_logprobs_json(tok(), l, text_offset);
  }

  // One SSE event with one choice. For chat `content` is the delta object, for completions the text.
  void send_chunk(json content, json lp, json finish_reason) {
    json c = envelope();
    json choice = {{"index", 0}, {"logprobs", std::move(lp)}, {"finish_reason", std::move(finish_reason)}};
    choice[endpoint == Endpoint::Chat ? "delta" : "text"] = std::move(content);
    c["choices"] = json::array({std::move(choice)});
    if (include_usage) c["usage"] = nullptr;
    res.write("data: " + dump(c) + "\n\n");
  }

  void process(RequestOutput& o) {
    if (done) return;
    const auto now = Clock::now();
    if (!o.tokens.empty()) {
      if (completion_tokens == 0) {
        first_token = now;
        server->metrics_.time_to_first_token(seconds(now - arrival));
      }
      last_token = now;
    }
    prompt_tokens = o.prompt_tokens;
    completion_tokens = o.completion_tokens;
    cached_tokens = o.cached_prompt_tokens;
    if (stream)
      stream_event(o);
    else
      collect(o);
    if (o.finish != FinishReason::None) finished(o.finish);
  }

  void stream_event(RequestOutput& o) {
    const std::string piece = tool_stream ? tool_stream->push(o.text) : o.text;
    if (!piece.empty() || (logprobs && !o.logprobs.empty())) {
      json content = endpoint == Endpoint::Chat ? json{{"content", piece}} : json(piece);
      send_chunk(std::move(content), logprobs_json(o.logprobs), nullptr);
    }
    if (o.finish == FinishReason::None) return;
    if (o.finish == FinishReason::Stop || o.finish == FinishReason::Length) {
      json reason = finish_reason_name(o.finish);
      if (tool_stream && !tool_stream->held().empty()) {
        // The held-back text is the calls (one delta each, the whole arguments at once), or content after all.
        if (auto parsed = parse_tool_calls(tool_stream->held(), tool_format, *tools)) {
          const json calls = tool_calls_json(parsed->calls, true);
          for (const json& c : calls) send_chunk(json{{"tool_calls", json::array({c})}}, nullptr, nullptr);
          reason = "tool_calls";
        } else {
          send_chunk(json{{"content", tool_stream->held()}}, nullptr, nullptr);
        }
      }
      send_chunk(endpoint == Endpoint::Chat ? json::object() : json(""), nullptr, std::move(reason));
      if (include_usage) {
        json u = envelope();
        u["choices"] = json::array();
        u["usage"] = usage_json(prompt_tokens, completion_tokens, cached_tokens);
        res.write("data: " + dump(u) + "\n\n");
      }
    } else {
      const int status = o.finish == FinishReason::Error ? 500 : 503;
      res.write("data: " + error_body(status, failure_message(o.finish)) + "\n\n");
    }
    res.write("data: [DONE]\n\n");
    res.finish();
  }

  void collect(RequestOutput& o) {
    text += o.text;
    if (logprobs) lps.insert(lps.end(), o.logprobs.begin(), o.logprobs.end());
    if (o.finish == FinishReason::None) return;
    if (o.finish != FinishReason::Stop && o.finish != FinishReason::Length) {
      const int status = o.finish == FinishReason::Error ? 500 : 503;
      res.respond(status, "application/json", error_body(status, failure_message(o.finish)));
      return;
    }
    json choice = {{"index", 0}, {"logprobs", logprobs_json(lps)}, {"finish_reason", finish_reason_name(o.finish)}};
    if (endpoint == Endpoint::Chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
      if (tools)
        if (auto parsed = parse_tool_calls(text, tool_format, *tools)) {
          choice["message"]["content"] = parsed->content.empty() ? json(nullptr) : json(parsed->content);
          choice["message"]["tool_calls"] = tool_calls_json(parsed->calls, false);
          choice["finish_reason"] = "tool_calls";
        }
    } else {
      choice["text"] = text;
    }
    json body = envelope();
    body["choices"] = json::array({std::move(choice)});
    body["usage"] = usage_json(prompt_tokens, completion_tokens, cached_tokens);
    res.respond(200, "application/json", dump(body));
  }

  static std::string failure_message(FinishReason f) {
    return f == FinishReason::Error ? "the engine failed while generating; see the server log"
                                    : "the request was cancelled because the server is shutting down";
  }

  void finished(FinishReason f) {
    done = true;
    Metrics& mx = server->metrics_;
    const int status = f == FinishReason::Stop || f == FinishReason::Length ? 200
                       : res.closed()                                       ? kClientGone
                       : f == FinishReason::Error                           ? 500
                                                                            : 503;
    server->finished_request(res, status,
                             status == kClientGone ? "client_gone"
                             : status == 500       ? "engine_error"
                             : status == 503       ? "shutting_down"
                                                   : "",
                             prompt_tokens, completion_tokens);
    mx.tokens(prompt_tokens, completion_tokens);
    if (completion_tokens > 1) mx.time_per_output_token(seconds(last_token - first_token) / (completion_tokens - 1));
    if (status == 200) mx.request_latency(seconds(Clock::now() - arrival));
  }
};

Server::Server(const Model& model, ops::Context ctx, ServerOptions opt)
    : Server(ServedModels{&model, nullptr, {}}, std::move(ctx), ops::Context{}, std::move(opt)) {}

Server::Server(ServedModels models, ops::Context ctx, ops::Context embed_ctx, ServerOptions opt)
    : model_(models.generator), embedder_(models.embedder), opt_(std::move(opt)), created_(unix_time()) {
  KS_CHECK(model_ || embedder_, "a server needs a generation model, an embedding model, or both");
  if (embedder_) {
    // An embedding-only server answers to --served-model-name; beside a generation model the embedding
    // model has its own id.
    std::string& name = opt_.embedding_model_name;
    if (name.empty()) name = !model_ ? opt_.model_name : "";
    if (name.empty()) name = default_model_name(models.embedder_path);
    if (!model_) opt_.model_name = name;
    embeddings_ = std::make_unique<EmbeddingQueue>(
        [this, embed_ctx](std::span<const EncoderInput> rows) { return embedder_->embed(embed_ctx, rows); },
        opt_.embedding_batch_tokens, static_cast<size_t>(opt_.scheduler.max_waiting),
        [this](size_t inputs, size_t tokens, double s) { metrics_.embedding_batch(inputs, tokens, s); });
  }
  if (model_) start_generation(std::move(ctx));
  KS_CHECK(!model_ || !embedder_ || opt_.model_name != opt_.embedding_model_name,
           "the generation and the embedding model are both called '{}'; give one another id with "
           "--served-model-name or --served-embedding-model-name",
           opt_.model_name);
  http_ = std::make_unique<HttpServer>(opt_.http, [this](HttpRequest& req, ResponseWriter res) { handle(req, res); });
  http_->on_rejection([this](int status, std::string_view reason) { metrics_.request_finished(status, reason); });
  http_->on_drain_expired([this] { cancel_in_flight(); });
  // Keys are compared by digest, so the comparison takes the same time whatever their lengths.
  api_key_digest_ = sha256(opt_.api_key);
  workers_ = std::make_unique<WorkerPool>(opt_.request_threads);
}

void Server::start_generation(ops::Context ctx) {
  const Model& model = *model_;
  if (opt_.model_name.empty()) opt_.model_name = default_model_name(model.path);
  SchedulerOptions& so = opt_.scheduler;
  so.n_ctx = model.config().context_size(so.n_ctx);
  KS_CHECK(opt_.kv_block_size >= 1 && opt_.kv_block_size <= 1024, "KV block size {} is out of range",
           opt_.kv_block_size);
  const ModelConfig& c = model.config();
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.block_size = kv_block_size(opt_.kv_format, opt_.kv_block_size);
  kc.format = opt_.kv_format;
  kc.max_sequences = so.max_running;
  const int64_t kv_tokens =
      opt_.kv_cache_tokens > 0 ? opt_.kv_cache_tokens : default_kv_tokens(kc, so.n_ctx, so.max_running);
  KS_CHECK(kv_tokens >= so.n_ctx, "--kv-cache-tokens {} is smaller than the context ({}): one sequence must fit",
           kv_tokens, so.n_ctx);
  kc.num_blocks = static_cast<int32_t>((kv_tokens + kc.block_size - 1) / kc.block_size);
  cache_ = std::make_unique<KvCache>(kc, ctx);
  log::info("KV cache: {} blocks of {} tokens, {} ({} bytes a token, {:.0f} MiB)", kc.num_blocks, kc.block_size,
            kc.format.name, cache_->bytes_per_token(),
            static_cast<double>(cache_->bytes_per_token()) * kc.num_blocks * kc.block_size / (1 << 20));
  chat_ = std::make_unique<ChatFormatter>(model);
  constraints_ = std::make_unique<ConstraintCompiler>(*model.tokenizer, static_cast<int32_t>(c.vocab));
  tool_template_ = detect_tool_template(model.chat_template);
  scheduler_ = std::make_unique<Scheduler>(*model.decoder, *model.tokenizer, *cache_, std::move(ctx), so);
}

Server::~Server() {
  workers_->stop();  // its tasks may still queue embeddings
  if (embeddings_) embeddings_->stop();
}

void Server::run() {
  std::thread engine;
  if (scheduler_) engine = std::thread([this] { scheduler_->run(); });
  // Always printed (not a log line): scripts and users need the address, --port 0 picks any free port.
  std::fprintf(stderr, "kestrel: serving %s on http://%s:%d\n", opt_.model_name.c_str(), opt_.http.host.c_str(),
               port());
  auto stop = [&] {
    // Whatever is still queued or being prepared lost its connection when the drain ended.
    cancel_in_flight();
    workers_->stop();
    if (embeddings_) embeddings_->stop();
    if (scheduler_) scheduler_->stop();
    if (engine.joinable()) engine.join();
  };
  try {
    http_->run();
  } catch (...) {
    stop();
    throw;
  }
  stop();
  log::info("server stopped");
}

void Server::cancel_in_flight() {
  std::lock_guard lock(submit_mutex_);
  cancelling_ = true;
  if (scheduler_) scheduler_->cancel_all();
  if (embeddings_) embeddings_->cancel_waiting();
}

bool Server::authorized(const HttpRequest& req) const {
  if (opt_.api_key.empty()) return true;
  const auto token = bearer_token(req.header("authorization"));
  return token && digests_equal(sha256(*token), api_key_digest_);
}

void Server::finished_request(const ResponseWriter& res, int status, std::string_view reason, int prompt_tokens,
                              int completion_tokens) {
  metrics_.request_finished(status, reason);
  if (!opt_.log_requests) return;
  std::string detail;
  if (prompt_tokens >= 0) detail = fmt::format(", {} prompt + {} generated tokens", prompt_tokens, completion_tokens);
  if (!reason.empty()) detail += fmt::format(", {}", reason);
  // Not a log level: like the serving address, what a user of the server reads (vLLM's access log).
  std::fprintf(stderr, "kestrel: %s %d %.3f s%s\n", res.request_line().c_str(), status, res.seconds(), detail.c_str());
}

void Server::respond_json(ResponseWriter& res, int status, const std::string& body) {
  finished_request(res, status, "");
  res.respond(status, "application/json", body);
}

void Server::respond_error(ResponseWriter& res, int status, std::string_view message, std::string_view param,
                           std::string_view code) {
  const std::string_view reason = !code.empty()   ? code
                                  : status == 404 ? "not_found"
                                  : status == 405 ? "method_not_allowed"
                                  : status >= 500 ? "internal_error"
                                                  : "invalid_request";
  finished_request(res, status, reason);
  std::vector<HttpHeader> extra;
  if (status == 401) extra.push_back({"WWW-Authenticate", "Bearer"});  // RFC 6750, 3
  res.respond(status, "application/json", error_body(status, message, param, code), extra);
}

void Server::handle(HttpRequest& req, ResponseWriter res) {
  const std::string& path = req.path;
  auto only = [&](const char* method) {
    if (req.method == method) return true;
    respond_error(res, 405, fmt::format("{} {} is not allowed; use {}", req.method, path, method));
    return false;
  };
  if (path == "/health") {
    if (only("GET")) respond_json(res, 200, R"({"status":"ok"})");
    return;
  }
  if (path == "/version") {
    if (only("GET")) respond_json(res, 200, dump(json{{"version", kVersion}}));
    return;
  }
  if (path == "/metrics") {
    if (only("GET"))
      res.respond(200, "text/plain; version=0.0.4",
                  metrics_.render(scheduler_ ? scheduler_->stats() : SchedulerStats{}, http_->connections()));
    return;
  }
  if ((path.starts_with("/v1/") || path == "/tokenize" || path == "/detokenize") && !authorized(req)) {
    respond_error(res, 401, "missing or wrong API key (send 'Authorization: Bearer <key>')", "", "invalid_api_key");
    return;
  }
  if (path == "/v1/models") {
    if (only("GET")) respond_json(res, 200, dump(json{{"object", "list"}, {"data", model_cards()}}));
    return;
  }
  if (path.starts_with("/v1/models/")) {
    if (!only("GET")) return;
    for (const json& card : model_cards())
      if (card["id"] == path.substr(11)) {
        respond_json(res, 200, dump(card));
        return;
      }
    respond_error(res, 404, fmt::format("model '{}' does not exist", path.substr(11)), "model", "model_not_found");
    return;
  }
  std::optional<Route> route;
  if (path == "/v1/completions") route = Route::Completions;
  if (path == "/v1/chat/completions") route = Route::Chat;
  if (path == "/tokenize") route = Route::Tokenize;
  if (path == "/detokenize") route = Route::Detokenize;
  if (path == "/v1/embeddings") route = Route::Embeddings;
  if (!route) {
    respond_error(res, 404, fmt::format("no route for {} {}", req.method, path));
    return;
  }
  if (!only("POST")) return;
  // Parsing, templating and tokenizing take time in proportion to the body (up to --max-body-bytes):
  // off the I/O thread, so other connections keep flowing meanwhile.
  workers_->post([this, r = *route, body = std::move(req.body), res]() mutable { prepare(r, body, res); });
}

void Server::prepare(Route route, const std::string& body, ResponseWriter& res) {
  try {
    if (res.closed()) {  // the client left while the request waited for a worker
      finished_request(res, kClientGone, "client_gone");
      return;
    }
    if (cancelling_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
    const json parsed = parse_json_body(body);
    if (route == Route::Embeddings ? !embedder_ : !model_) not_served(route);
    switch (route) {
      case Route::Completions: handle_generation(parsed, body, res, Endpoint::Completions); break;
      case Route::Chat: handle_generation(parsed, body, res, Endpoint::Chat); break;
      case Route::Tokenize: handle_tokenize(parsed, res, true); break;
      case Route::Detokenize: handle_tokenize(parsed, res, false); break;
      case Route::Embeddings: handle_embeddings(parsed, res); break;
    }
  } catch (const ApiError& e) {
    respond_error(res, e.status(), e.what(), e.param(), e.code());
  } catch (const TemplateBudgetError& e) {
    // The load-time probe passed, so the conversation drove the template over: the model's template is
    // at fault, not the request's shape (docs/server.md, Errors).
    log::warn("chat template over its render budget: {}", e.what());
    respond_error(res, 500, e.what(), "messages", "template_budget_exceeded");
  } catch (const Error& e) {
    // Validation inside the library (token ids, template errors, sampling ranges): the client's fault.
    respond_error(res, 400, e.what(), "", "invalid_value");
  } catch (const std::exception& e) {
    log::error("request failed: {}", e.what());
    respond_error(res, 500, "internal error while handling the request", "", "internal_error");
  }
}

std::vector<int32_t> Server::prompt_tokens(const GenerationSpec& g) const {
  const Tokenizer& tok = *model_->tokenizer;
  if (g.endpoint == Endpoint::Chat) {
    if (!g.tools)
      return tok.encode(chat_->render(g.messages, /*add_generation_prompt=*/true, g.template_kwargs), false, true);
    json kwargs = g.template_kwargs;
    if (tool_template_.native) kwargs["tools"] = g.tools->tools;
    return tok.encode(chat_->render(tool_messages(g.messages, *g.tools, tool_template_), true, kwargs), false, true);
  }
  if (g.prompt_is_tokens) {
    check_vocabulary(g.prompt_tokens, "prompt");
    return g.prompt_tokens;
  }
  return tok.encode(g.prompt_text, true, true);
}

void Server::check_vocabulary(std::span<const int32_t> ids, const char* param) const {
  const int64_t vocab = model_->config().vocab;
  for (int32_t id : ids)
    if (id >= vocab)
      throw ApiError(400, fmt::format("token id {} is outside the vocabulary (ids run from 0 to {})", id, vocab - 1),
                     param, "invalid_value");
}

void Server::handle_tokenize(const json& body, ResponseWriter& res, bool tokenize) {
  if (tokenize) {
    // The same prompt handling as generation: "prompt" as for /v1/completions, or chat "messages".
    const Endpoint ep = body.contains("messages") ? Endpoint::Chat : Endpoint::Completions;
    const std::vector<int32_t> ids = prompt_tokens(parse_generation_request(body, ep, opt_.sampling));
    respond_json(res, 200, dump({{"tokens", ids}, {"count", ids.size()}, {"max_model_len", scheduler_->n_ctx()}}));
    return;
  }
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
  const std::vector<int32_t> ids = parse_token_ids(*it, "tokens");
  check_vocabulary(ids, "tokens");
  respond_json(res, 200, dump({{"prompt", model_->tokenizer->decode(ids)}}));
}

void Server::handle_generation(const json& body, std::string_view raw, ResponseWriter& res, Endpoint endpoint) {
  GenerationSpec g = parse_generation_request(body, endpoint, opt_.sampling, raw);
  if (embedder_ && !g.model.empty() && g.model == opt_.embedding_model_name) not_served(Route::Chat);
  if (!g.model.empty() && g.model != opt_.model_name)
    throw ApiError(404, fmt::format("model '{}' does not exist; this server serves '{}'", g.model, opt_.model_name),
                   "model", "model_not_found");
  std::vector<int32_t> prompt = prompt_tokens(g);
  const int n_ctx = scheduler_->n_ctx();
  const int n_prompt = static_cast<int>(prompt.size());
  if (n_prompt == 0) throw ApiError(400, "the prompt is empty", "prompt", "invalid_value");
  if (n_prompt >= n_ctx)
    throw ApiError(
        400,
        fmt::format("this model's maximum context length is {} tokens, but the prompt has {} tokens", n_ctx, n_prompt),
        endpoint == Endpoint::Chat ? "messages" : "prompt", "context_length_exceeded");
  if (g.max_tokens && *g.max_tokens > n_ctx - n_prompt)
    throw ApiError(400,
                   fmt::format("this model's maximum context length is {} tokens; the prompt has {} tokens and "
                               "max_tokens asks for {} more",
                               n_ctx, n_prompt, *g.max_tokens),
                   "max_tokens", "context_length_exceeded");

  auto r = std::make_shared<Request>();
  r->prompt = std::move(prompt);
  r->sampling = g.sampling;
  if (!g.has_seed) r->sampling.seed = random_u64();
  r->max_tokens = g.max_tokens.value_or(
      endpoint == Endpoint::Chat ? n_ctx - n_prompt : std::min(kDefaultCompletionTokens, n_ctx - n_prompt));
  r->stop = g.stop;
  r->stop_token_ids = g.stop_token_ids;
  r->ignore_eos = g.ignore_eos;
  r->include_stop_str = g.include_stop_str;
  check_vocabulary(g.stop_token_ids, "stop_token_ids");
  for (const auto& [id, bias] : r->sampling.logit_bias) check_vocabulary(std::span(&id, 1), "logit_bias");
  if (r->sampling.min_tokens > 0) {  // what could end the answer sooner: vLLM's min_tokens
    std::vector<int32_t>& ban = r->sampling.min_tokens_ban;
    ban = g.stop_token_ids;
    if (!g.ignore_eos) ban.insert(ban.end(), model_->tokenizer->eog_ids().begin(), model_->tokenizer->eog_ids().end());
    std::sort(ban.begin(), ban.end());
    ban.erase(std::unique(ban.begin(), ban.end()), ban.end());
  }
  r->logprobs = g.logprobs;
  if (g.tools && (g.tools->choice == ToolSpec::Choice::Required || g.tools->choice == ToolSpec::Choice::Named)) {
    if (g.constraint)
      throw ApiError(400,
                     fmt::format("'{}' and tool_choice {} both constrain the output; give one", g.constraint_field,
                                 g.tools->choice == ToolSpec::Choice::Required ? "required" : "naming a function"),
                     "tool_choice", "invalid_value");
    try {  // the answer is the calls themselves, in the template's syntax
      g.constraint = ConstraintSpec{ConstraintKind::Grammar, tool_call_grammar(*g.tools, tool_template_.format), {}};
      g.constraint_field = "tools";
    } catch (const Error& e) {
      throw ApiError(400, fmt::format("a tool's parameters: {}", e.what()), "tools", "invalid_value");
    }
  }
  if (g.constraint) {
    try {
      r->constraint = constraints_->compile(*g.constraint);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), g.constraint_field, "invalid_value");
    }
  }
  auto call = std::make_shared<Call>(this, res, g);
  r->on_output = [call](RequestOutput&& o) { call->on_output(std::move(o)); };
  std::weak_ptr<Request> weak = r;
  res.on_close([weak, this] {
    if (auto p = weak.lock()) {
      p->cancelled = true;
      scheduler_->wake();
    }
  });
  {
    std::lock_guard lock(submit_mutex_);
    if (cancelling_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
    if (!scheduler_->submit(r))
      throw ApiError(
          429, fmt::format("the server is busy ({} requests queued); retry later", scheduler_->options().max_waiting),
          "", "rate_limit_exceeded");
  }
  call->start();
}

json Server::model_cards() const {
  json cards = json::array();
  auto card = [&](const std::string& id, int64_t max_len) {
    cards.push_back(
        {{"id", id}, {"object", "model"}, {"created", created_}, {"owned_by", "kestrel"}, {"max_model_len", max_len}});
  };
  if (model_) card(opt_.model_name, scheduler_->n_ctx());
  if (embedder_) card(opt_.embedding_model_name, static_cast<int64_t>(embedder_->max_input_tokens()));
  return cards;
}

void Server::not_served(Route route) const {
  if (route == Route::Embeddings)
    throw ApiError(400,
                   fmt::format("model '{}' does not support embeddings: this server has no embedding model (serve "
                               "an encoder directory with -m, or add one with --embedding-model DIR)",
                               opt_.model_name),
                   "model", "model_not_supported");
  throw ApiError(400,
                 fmt::format("model '{}' is an embedding model and does not generate text: use /v1/embeddings{}",
                             opt_.embedding_model_name,
                             model_ ? fmt::format(", or model '{}' for text", opt_.model_name)
                                    : " (to serve a generation model too: -m MODEL --embedding-model DIR)"),
                 "model", "model_not_supported");
}

std::vector<EncoderInput> Server::embedding_rows(const EmbeddingSpec& spec) const {
  const EncoderConfig& c = embedder_->encoder->config();
  std::vector<EncoderInput> rows(spec.inputs.size());
  auto param = [&](size_t i) { return spec.inputs.size() > 1 ? fmt::format("input[{}]", i) : std::string("input"); };
  // The texts are tokenized together, as `kestrel embed` does (truncated to the model's max_seq_length).
  std::vector<std::string_view> texts;
  std::vector<size_t> text_at;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const EmbeddingInput& in = spec.inputs[i];
    if (!in.is_tokens) {
      texts.push_back(in.text);
      text_at.push_back(i);
      continue;
    }
    // Token ids are the model's input as given (special tokens included), so they are not cut: a
    // shortened list would lose the [SEP] the client put at its end.
    for (int32_t id : in.ids)
      if (id >= c.vocab)
        throw ApiError(400,
                       fmt::format("token id {} is outside the embedding model's vocabulary (ids run from 0 to {})", id,
                                   c.vocab - 1),
                       param(i), "invalid_value");
    if (in.ids.size() > embedder_->max_input_tokens())
      throw ApiError(400,
                     fmt::format("{} has {} tokens; this model takes at most {} (texts are truncated to that, token "
                                 "ids are not)",
                                 param(i), in.ids.size(), embedder_->max_input_tokens()),
                     param(i), "context_length_exceeded");
    rows[i].ids = in.ids;
    rows[i].type_ids.assign(in.ids.size(), 0);
    rows[i].attention_mask.assign(in.ids.size(), 1);
  }
  std::vector<EncoderInput> encoded = embedder_->encode(texts);
  for (size_t j = 0; j < encoded.size(); ++j) {
    const size_t i = text_at[j];
    // Without max_seq_length, only tokenizer.json's truncation (if any) bounds a text.
    if (encoded[j].ids.size() > static_cast<size_t>(c.max_positions))
      throw ApiError(400,
                     fmt::format("{} has {} tokens; this model takes at most {}", param(i), encoded[j].ids.size(),
                                 c.max_positions),
                     param(i), "context_length_exceeded");
    rows[i] = std::move(encoded[j]);
  }
  return rows;
}

void Server::handle_embeddings(const json& body, ResponseWriter& res) {
  const EmbeddingSpec spec = parse_embedding_request(body);
  const std::string& name = opt_.embedding_model_name;
  if (!spec.model.empty() && spec.model != name) {
    if (model_ && spec.model == opt_.model_name)
      throw ApiError(
          400, fmt::format("model '{}' does not support embeddings; this server embeds with '{}'", spec.model, name),
          "model", "model_not_supported");
    throw ApiError(404, fmt::format("model '{}' does not exist; this server embeds with '{}'", spec.model, name),
                   "model", "model_not_found");
  }
  const int hidden = embedder_->encoder->config().hidden;
  if (spec.dimensions && *spec.dimensions > hidden)
    throw ApiError(
        400,
        fmt::format("'dimensions' must be between 1 and {} (the model's dimensions), got {}", hidden, *spec.dimensions),
        "dimensions", "invalid_value");
  auto job = std::make_shared<EmbeddingJob>();
  job->inputs = embedding_rows(spec);
  size_t tokens = 0;
  for (const EncoderInput& row : job->inputs) tokens += row.ids.size();
  // Runs on the embedding thread: the response is encoded on a request worker, so the next batch starts.
  job->done = [this, res, dims = spec.dimensions, base64 = spec.base64, tokens,
               inputs = job->inputs.size()](EmbeddingOutcome&& o) mutable {
    workers_->post([this, res, o = std::move(o), dims, base64, tokens, inputs]() mutable {
      if (o.status == kClientGone) {
        finished_request(res, kClientGone, "client_gone");
        return;
      }
      if (o.status != 200) {
        respond_error(res, o.status, o.error, "", o.status == 503 ? "shutting_down" : "engine_error");
        return;
      }
      if (dims)
        for (std::vector<float>& v : o.vectors)
          shorten_embedding(v, static_cast<size_t>(*dims), embedder_->pooling.normalize);
      const std::string out =
          embeddings_response(o.vectors, base64, opt_.embedding_model_name, static_cast<int64_t>(tokens));
      metrics_.embedding_request(inputs, tokens);
      finished_request(res, 200, "", static_cast<int>(tokens), 0);
      res.respond(200, "application/json", out);
    });
  };
  std::weak_ptr<EmbeddingJob> weak = job;
  res.on_close([weak, this] {
    if (auto j = weak.lock()) {
      j->cancelled = true;
      embeddings_->wake();
    }
  });
  std::lock_guard lock(submit_mutex_);
  if (cancelling_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  if (!embeddings_->submit(job))
    throw ApiError(
        429, fmt::format("the server is busy ({} embedding requests queued); retry later", opt_.scheduler.max_waiting),
        "", "rate_limit_exceeded");
}

}  // namespace kestrel::server
