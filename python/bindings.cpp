// The `kestrel` Python module (pybind11): an LLM object over the engine's continuous-batching scheduler,
// as vLLM's offline API has it — generate() submits every prompt at once and steps the scheduler until all
// are done (the GIL released meanwhile), stream() yields one request's text as it is generated, chat()
// applies the model's chat template, tokenize()/detokenize() use its tokenizer. Sampling fields left unset
// take the engine's one policy (engine/sampling_defaults.h). CPU only for now; one thread at a time may use
// an LLM (calls are serialised).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/chat_format.h"
#include "engine/kv_cache.h"
#include "engine/kv_calibration.h"
#include "engine/kv_format.h"
#include "engine/sampling_defaults.h"
#include "engine/scheduler.h"
#include "engine/structured_output.h"
#include "model/model.h"

namespace py = pybind11;

namespace kestrel::python {
namespace {

// Unset fields (None) take the model's defaults; the rest as vLLM's SamplingParams names them.
struct Sampling {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k;
  float presence_penalty = 0, frequency_penalty = 0;
  std::optional<uint64_t> seed;
  int max_tokens = 16;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // Structured output (at most one): a JSON schema (as JSON text), a regex, a list of choices, a GBNF grammar.
  std::optional<std::string> json_schema, regex, grammar;
  std::optional<std::vector<std::string>> choice;
};

struct Completion {
  std::string text;
  std::vector<int32_t> token_ids;
  std::string finish_reason;
  int prompt_tokens = 0;
};

// One request's events as they arrive (on the thread that steps the scheduler).
struct Collector {
  Completion done;
  std::string pending;  // text not yet handed to a stream
  bool finished = false;
  std::string error;
};

class LLM {
 public:
  LLM(const std::optional<std::string>& model, int threads, int n_ctx, int max_running, const std::string& kv_type,
      const std::string& kv_calib) {
    if (threads > 0) ThreadPool::set_default_threads(threads);
    model_ = load_model(model.value_or(default_model_path()));
    defaults_ = sampling_defaults(*model_).params;
    chat_ = std::make_unique<ChatFormatter>(*model_);
    constraints_ =
        std::make_unique<ConstraintCompiler>(*model_->tokenizer, static_cast<int32_t>(model_->config().vocab));
    SchedulerOptions so;
    so.n_ctx = model_->config().context_size(n_ctx);
    so.max_running = max_running;
    const ModelConfig& c = model_->config();
    KvCacheConfig kc;
    kc.n_layers = c.n_layers;
    kc.n_kv_heads = c.n_kv_heads;
    kc.head_dim = c.head_dim;
    const std::optional<KvFormat> kv = kv_format_from_name(kv_type);
    KS_CHECK(kv.has_value(), "unknown kv_type '{}'; choose one of {}", kv_type, kv_format_names());
    kc.format = with_kv_calibration(*kv, model_->config(), model_->path, kv_calib);
    kc.block_size = kv_block_size(kc.format, 16);
    kc.max_sequences = so.max_running;
    const int64_t tokens = default_kv_tokens(kc, so.n_ctx, so.max_running);
    kc.num_blocks = static_cast<int32_t>((tokens + kc.block_size - 1) / kc.block_size);
    ops::Context ctx = backends::make_context(Device::Cpu);
    cache_ = std::make_unique<KvCache>(kc, ctx);
    scheduler_ = std::make_unique<Scheduler>(*model_->decoder, *model_->tokenizer, *cache_, ctx, so);
  }

  int n_ctx() const { return scheduler_->n_ctx(); }
  std::string model_path() const { return model_->path; }

  std::vector<int32_t> tokenize(const std::string& text, bool add_special) const {
    return model_->tokenizer->encode(text, add_special, true);
  }
  std::string detokenize(const std::vector<int32_t>& ids) const { return model_->tokenizer->decode(ids); }

  std::string apply_chat_template(const py::list& messages, bool add_generation_prompt) const {
    return chat_->render(messages_json(messages), add_generation_prompt);
  }

  // Raw prompts, then conversations (chat template applied), all batched together.
  std::vector<Completion> generate(const std::vector<std::string>& prompts, const Sampling& s,
                                   const std::vector<py::list>& conversations) {
    std::vector<std::vector<int32_t>> inputs;
    for (const std::string& p : prompts) inputs.push_back(tokenize(p, true));
    for (const py::list& conv : conversations) inputs.push_back(chat_ids(conv));
    py::gil_scoped_release unlocked;  // the engine works without Python objects from here
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<Collector>> out;
    std::deque<std::shared_ptr<Request>> queue;
    for (std::vector<int32_t>& ids : inputs) {
      out.push_back(std::make_shared<Collector>());
      queue.push_back(make_request(std::move(ids), s, out.back()));
    }
    auto all_done = [&] { return std::all_of(out.begin(), out.end(), [](const auto& c) { return c->finished; }); };
    while (!queue.empty() || !all_done()) {
      while (!queue.empty() && scheduler_->submit(queue.front())) queue.pop_front();
      scheduler_->step();
    }
    std::vector<Completion> results;
    for (const auto& c : out) {
      KS_CHECK(c->error.empty(), "{}", c->error);
      results.push_back(std::move(c->done));
    }
    return results;
  }

  // The next piece of a streamed request's text; nullopt once it has finished and everything was handed out.
  std::optional<std::string> next(const std::shared_ptr<Collector>& c) {
    py::gil_scoped_release unlocked;
    std::lock_guard lock(mutex_);
    while (c->pending.empty() && !c->finished) scheduler_->step();
    KS_CHECK(c->error.empty(), "{}", c->error);
    if (c->pending.empty()) return std::nullopt;
    return std::exchange(c->pending, {});
  }

  std::shared_ptr<Collector> start_stream(const std::string& prompt, const Sampling& s, bool chat_prompt,
                                          const py::list& conversation) {
    std::vector<int32_t> ids = chat_prompt ? chat_ids(conversation) : tokenize(prompt, true);
    std::lock_guard lock(mutex_);
    auto c = std::make_shared<Collector>();
    auto r = make_request(std::move(ids), s, c);
    while (!scheduler_->submit(r)) scheduler_->step();
    return c;
  }

 private:
  // A conversation's prompt: the chat template's text, whose special tokens it already spells out.
  std::vector<int32_t> chat_ids(const py::list& conversation) const {
    return model_->tokenizer->encode(apply_chat_template(conversation, true), false, true);
  }

  // [{"role": str, "content": str}, ...] from Python dicts.
  static nlohmann::json messages_json(const py::list& messages) {
    nlohmann::json out = nlohmann::json::array();
    for (const py::handle& m : messages) {
      KS_CHECK(py::isinstance<py::dict>(m), "each message must be a dict with 'role' and 'content'");
      const py::dict d = py::reinterpret_borrow<py::dict>(m);
      KS_CHECK(d.contains("role") && d.contains("content"), "each message needs 'role' and 'content'");
      out.push_back({{"role", py::cast<std::string>(d["role"])}, {"content", py::cast<std::string>(d["content"])}});
    }
    KS_CHECK(!out.empty(), "a conversation needs at least one message");
    return out;
  }

  std::shared_ptr<Request> make_request(std::vector<int32_t> prompt, const Sampling& s,
                                        std::shared_ptr<Collector> c) const {
    KS_CHECK(!prompt.empty(), "the prompt is empty");
    KS_CHECK(s.max_tokens >= 1, "max_tokens must be at least 1");
    KS_CHECK(static_cast<int>(prompt.size()) + s.max_tokens <= scheduler_->n_ctx(),
             "the prompt ({} tokens) and max_tokens ({}) exceed the context ({} tokens)", prompt.size(), s.max_tokens,
             scheduler_->n_ctx());
    auto r = std::make_shared<Request>();
    r->prompt = std::move(prompt);
    SamplingParams& p = r->sampling;
    p = defaults_;
    if (s.temperature) p.temperature = *s.temperature;
    if (s.top_p) p.top_p = *s.top_p;
    if (s.top_k) p.top_k = std::max(0, *s.top_k);
    if (s.min_p) p.min_p = *s.min_p;
    if (s.repetition_penalty) p.repetition_penalty = *s.repetition_penalty;
    p.presence_penalty = s.presence_penalty;
    p.frequency_penalty = s.frequency_penalty;
    p.seed = s.seed.value_or(std::random_device{}());
    p.validate();
    r->max_tokens = s.max_tokens;
    r->stop = s.stop;
    r->ignore_eos = s.ignore_eos;
    std::optional<ConstraintSpec> spec;
    auto want = [&](ConstraintKind kind, std::string text, std::vector<std::string> choices = {}) {
      KS_CHECK(!spec, "give at most one of json_schema, regex, choice and grammar");
      spec = ConstraintSpec{kind, std::move(text), std::move(choices)};
    };
    if (s.json_schema) want(ConstraintKind::JsonSchema, *s.json_schema);
    if (s.regex) want(ConstraintKind::Regex, *s.regex);
    if (s.grammar) want(ConstraintKind::Grammar, *s.grammar);
    if (s.choice) want(ConstraintKind::Choice, "", *s.choice);
    if (spec) r->constraint = constraints_->compile(*spec);
    c->done.prompt_tokens = static_cast<int>(r->prompt.size());
    r->on_output = [c](RequestOutput&& o) {
      c->done.text += o.text;
      c->pending += o.text;
      c->done.token_ids.insert(c->done.token_ids.end(), o.tokens.begin(), o.tokens.end());
      if (o.finish == FinishReason::None) return;
      c->finished = true;
      c->done.finish_reason = finish_reason_name(o.finish);
      if (o.finish == FinishReason::Error) c->error = "the model failed on this request (see the log)";
    };
    return r;
  }

  std::unique_ptr<Model> model_;
  SamplingParams defaults_;
  std::unique_ptr<ChatFormatter> chat_;
  std::unique_ptr<ConstraintCompiler> constraints_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Scheduler> scheduler_;
  std::mutex mutex_;
};

struct Stream {
  LLM* llm;
  py::object owner;  // keeps the LLM alive while the stream is
  std::shared_ptr<Collector> c;
};

}  // namespace
}  // namespace kestrel::python

PYBIND11_MODULE(_kestrel, m) {
  using namespace kestrel::python;
  m.doc() = "Kestrel: a C++ LLM inference engine (CPU bindings)";
  py::register_exception<kestrel::Error>(m, "KestrelError", PyExc_ValueError);

  py::class_<Sampling>(m, "SamplingParams", "How to draw tokens; None fields take the model's defaults")
      .def(py::init([](std::optional<float> temperature, std::optional<float> top_p, std::optional<int> top_k,
                       std::optional<float> min_p, std::optional<float> repetition_penalty, float presence_penalty,
                       float frequency_penalty, std::optional<uint64_t> seed, int max_tokens,
                       std::vector<std::string> stop, bool ignore_eos, const py::object& json_schema,
                       std::optional<std::string> regex, std::optional<std::vector<std::string>> choice,
                       std::optional<std::string> grammar) {
             Sampling s{temperature,       top_p, min_p,      repetition_penalty, top_k,     presence_penalty,
                        frequency_penalty, seed,  max_tokens, std::move(stop),    ignore_eos};
             if (!json_schema.is_none())  // a dict, or its JSON text
               s.json_schema = py::isinstance<py::str>(json_schema)
                                   ? py::cast<std::string>(json_schema)
                                   : py::cast<std::string>(py::module_::import("json").attr("dumps")(json_schema));
             s.regex = std::move(regex);
             s.choice = std::move(choice);
             s.grammar = std::move(grammar);
             return s;
           }),
           py::arg("temperature") = py::none(), py::arg("top_p") = py::none(), py::arg("top_k") = py::none(),
           py::arg("min_p") = py::none(), py::arg("repetition_penalty") = py::none(), py::arg("presence_penalty") = 0.f,
           py::arg("frequency_penalty") = 0.f, py::arg("seed") = py::none(), py::arg("max_tokens") = 16,
           py::arg("stop") = std::vector<std::string>{}, py::arg("ignore_eos") = false,
           py::arg("json_schema") = py::none(), py::arg("regex") = py::none(), py::arg("choice") = py::none(),
           py::arg("grammar") = py::none())
      .def_readwrite("temperature", &Sampling::temperature)
      .def_readwrite("top_p", &Sampling::top_p)
      .def_readwrite("top_k", &Sampling::top_k)
      .def_readwrite("min_p", &Sampling::min_p)
      .def_readwrite("repetition_penalty", &Sampling::repetition_penalty)
      .def_readwrite("presence_penalty", &Sampling::presence_penalty)
      .def_readwrite("frequency_penalty", &Sampling::frequency_penalty)
      .def_readwrite("seed", &Sampling::seed)
      .def_readwrite("max_tokens", &Sampling::max_tokens)
      .def_readwrite("stop", &Sampling::stop)
      .def_readwrite("ignore_eos", &Sampling::ignore_eos)
      .def_readwrite("regex", &Sampling::regex)
      .def_readwrite("choice", &Sampling::choice)
      .def_readwrite("grammar", &Sampling::grammar);

  py::class_<Completion>(m, "Completion", "One prompt's result")
      .def_readonly("text", &Completion::text)
      .def_readonly("token_ids", &Completion::token_ids)
      .def_readonly("finish_reason", &Completion::finish_reason)
      .def_readonly("prompt_tokens", &Completion::prompt_tokens)
      .def("__repr__", [](const Completion& c) {
        return "Completion(text=" + py::repr(py::str(c.text)).cast<std::string>() +
               ", finish_reason=" + c.finish_reason + ")";
      });

  py::class_<Stream>(m, "Stream", "Text pieces of one request as they are generated")
      .def("__iter__", [](Stream& s) -> Stream& { return s; })
      .def("__next__",
           [](Stream& s) {
             std::optional<std::string> piece = s.llm->next(s.c);
             if (!piece) throw py::stop_iteration();
             return *piece;
           })
      .def_property_readonly("finish_reason", [](const Stream& s) { return s.c->done.finish_reason; });

  py::class_<LLM>(m, "LLM", "A model loaded for generation (CPU); the default model when `model` is None")
      .def(py::init<const std::optional<std::string>&, int, int, int, const std::string&, const std::string&>(),
           py::arg("model") = py::none(), py::arg("threads") = 0, py::arg("n_ctx") = 0, py::arg("max_running") = 64,
           py::arg("kv_type") = "f32", py::arg("kv_calib") = "")
      .def_property_readonly("n_ctx", &LLM::n_ctx)
      .def_property_readonly("model_path", &LLM::model_path)
      .def("tokenize", &LLM::tokenize, py::arg("text"), py::arg("add_special") = true)
      .def("detokenize", &LLM::detokenize, py::arg("ids"))
      .def("apply_chat_template", &LLM::apply_chat_template, py::arg("messages"),
           py::arg("add_generation_prompt") = true)
      .def(
          "generate",
          [](LLM& llm, const py::object& prompts, const Sampling& s) {
            std::vector<std::string> list;
            if (py::isinstance<py::str>(prompts))
              list.push_back(prompts.cast<std::string>());
            else
              list = prompts.cast<std::vector<std::string>>();
            return llm.generate(list, s, {});
          },
          py::arg("prompts"), py::arg("sampling") = Sampling{},
          "Completions of one prompt or a list of them, batched together; a list of Completion")
      .def(
          "chat",
          [](LLM& llm, const py::list& conversation, const Sampling& s) {
            return llm.generate({}, s, {conversation}).front();
          },
          py::arg("messages"), py::arg("sampling") = Sampling{},
          "The assistant's reply to [{'role': ..., 'content': ...}, ...] with the model's chat template")
      .def(
          "stream",
          [](py::object self, const std::string& prompt, const Sampling& s) {
            LLM& llm = self.cast<LLM&>();
            return Stream{&llm, self, llm.start_stream(prompt, s, false, py::list())};
          },
          py::arg("prompt"), py::arg("sampling") = Sampling{}, "An iterator over the text as it is generated")
      .def(
          "stream_chat",
          [](py::object self, const py::list& messages, const Sampling& s) {
            LLM& llm = self.cast<LLM&>();
            return Stream{&llm, self, llm.start_stream("", s, true, messages)};
          },
          py::arg("messages"), py::arg("sampling") = Sampling{}, "stream() for a conversation");
}
