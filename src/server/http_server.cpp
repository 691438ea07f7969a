#include "server/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"

namespace kestrel::server {
namespace {

constexpr uint64_t kListenTag = 0, kWakeTag = 1;
constexpr size_t kReadChunk = 64 << 10;
constexpr int kMaxEvents = 256;

// The headers of an answer to a page of an allowed origin (none when origin is empty).
std::vector<HttpHeader> with_cors(const std::vector<HttpHeader>& extra, const std::string& origin) {
  if (origin.empty()) return extra;
  std::vector<HttpHeader> h = extra;
  h.push_back({"Access-Control-Allow-Origin", origin});
  if (origin != "*") h.push_back({"Vary", "Origin"});
  return h;
}
constexpr int kTickMs = 250;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The reason reported for a request the parser refused (its status says which limit or rule).
std::string_view parser_error_reason(int status) {
  switch (status) {
    case 413: return "body_too_large";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 505: return "http_version_not_supported";
    default: return "malformed_request";
  }
}

}  // namespace

// What the I/O thread and the writer's thread share about one response.
struct ResponseWriter::Exchange {
  HttpServer* server;
  uint64_t conn;
  bool keep_alive;
  std::string request_line;  // "POST /v1/completions", for the request log
  std::string cors_origin;   // the Access-Control-Allow-Origin every answer carries; empty: none
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::atomic<bool> closed{false};
  std::mutex m;  // guards the fields below
  bool finished = false;
  bool streaming = false;
  std::function<void()> on_close;
};

struct HttpServer::Conn {
  uint64_t id;
  int fd;
  HttpParser parser;
  std::string in;
  std::string out;
  size_t out_sent = 0;
  bool busy = false;      // a request is with the handler; later pipelined ones wait
  bool closing = false;   // close once `out` is flushed
  bool peer_eof = false;  // the client sent its last byte (a half-close, or a close we can't tell apart yet)
  bool continue_sent = false;
  uint32_t events = EPOLLIN | EPOLLRDHUP;  // what epoll watches for
  double last_activity = 0;
  double request_start = 0;  // first byte of the request being received (0: none)
  double write_stalled_since = 0;
  std::shared_ptr<ResponseWriter::Exchange> exchange;

  Conn(uint64_t id_, int fd_, const HttpLimits& limits) : id(id_), fd(fd_), parser(limits) {}
  size_t pending() const { return out.size() - out_sent; }
};

void ResponseWriter::respond(int status, std::string_view content_type, std::string_view body,
                             const std::vector<HttpHeader>& extra) {
  std::lock_guard lock(ex_->m);
  if (ex_->finished || ex_->streaming) return;
  ex_->finished = true;
  std::string data = response_head(status, content_type, static_cast<int64_t>(body.size()), ex_->keep_alive,
                                   with_cors(extra, ex_->cors_origin));
  data += body;
  ex_->server->post(ex_->conn, std::move(data), true);
}

void ResponseWriter::start_stream(int status, std::string_view content_type, const std::vector<HttpHeader>& extra) {
  std::lock_guard lock(ex_->m);
  if (ex_->finished || ex_->streaming) return;
  ex_->streaming = true;
  ex_->server->post(
      ex_->conn, response_head(status, content_type, -1, ex_->keep_alive, with_cors(extra, ex_->cors_origin)), false);
}

void ResponseWriter::write(std::string_view data) {
  std::lock_guard lock(ex_->m);
  if (ex_->finished || !ex_->streaming || data.empty() || ex_->closed) return;
  ex_->server->post(ex_->conn, chunk(data), false);
}

void ResponseWriter::finish() {
  std::lock_guard lock(ex_->m);
  if (ex_->finished || !ex_->streaming) return;
  ex_->finished = true;
  ex_->server->post(ex_->conn, chunk({}), true);
}

bool ResponseWriter::closed() const {
  return ex_->closed.load();
}

void ResponseWriter::on_close(std::function<void()> fn) {
  {
    std::lock_guard lock(ex_->m);
    if (!ex_->closed) {
      ex_->on_close = std::move(fn);
      return;
    }
  }
  if (fn) fn();
}

const std::string& ResponseWriter::request_line() const {
  return ex_->request_line;
}

double ResponseWriter::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->start).count();
}

HttpServer::HttpServer(const HttpServerOptions& opt, Handler handler) : opt_(opt), handler_(std::move(handler)) {
  KS_CHECK(opt.port >= 0 && opt.port <= 65535, "port {} is out of range", opt.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(opt.port);
  const int gai = getaddrinfo(opt.host.c_str(), port_str.c_str(), &hints, &res);
  KS_CHECK(gai == 0, "cannot resolve --host '{}': {}", opt.host, gai_strerror(gai));
  std::string why = "no address";
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(res);
  KS_CHECK(listen_fd_ >= 0, "cannot listen on {}:{}: {}", opt.host, opt.port, why);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  KS_CHECK(epoll_fd_ >= 0 && wake_fd_ >= 0, "cannot create epoll/eventfd: {}", std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.u64 = kWakeTag;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
}

HttpServer::~HttpServer() {
  for (auto& [id, c] : conns_) close(c->fd);
  if (listen_fd_ >= 0) close(listen_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void HttpServer::shutdown() {
  if (stop_requested_.exchange(true)) hurry_.store(true);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
}

void HttpServer::post(uint64_t conn, std::string data, bool final) {
  bool was_empty;
  {
    std::lock_guard lock(outbox_mutex_);
    was_empty = outbox_.empty();
    outbox_.push_back({conn, std::move(data), final});
  }
  if (was_empty) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
  }
}

void HttpServer::run() {
  epoll_event events[kMaxEvents];
  double next_tick = 0;
  while (true) {
    const int n = epoll_wait(epoll_fd_, events, kMaxEvents, kTickMs);
    KS_CHECK(n >= 0 || errno == EINTR, "epoll_wait failed: {}", std::strerror(errno));
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        accept_all();
      } else if (tag == kWakeTag) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
      } else {
        auto it = conns_.find(tag);
        if (it == conns_.end()) continue;
        Conn& c = *it->second;
        const uint32_t e = events[i].events;
        if (e & EPOLLOUT) {
          flush(c);
          if (!conns_.count(tag)) continue;
        }
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) on_readable(c);
      }
    }
    drain_outbox();
    const double now = now_s();
    if (stop_requested_ && !draining_) begin_drain(now);
    if (now >= next_tick) {
      check_timeouts(now);
      next_tick = now + 1.0;
    }
    if (draining_) {
      if (conns_.empty()) break;
      if (!drain_expired_ && (now >= drain_deadline_ || hurry_)) expire_drain(now);
      if (drain_expired_ && now >= close_deadline_) {
        log::warn("shutdown: closing {} connection(s) whose answers did not finish", conns_.size());
        while (!conns_.empty()) close_conn(conns_.begin()->first);
        break;
      }
    }
  }
}

void HttpServer::accept_all() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) log::warn("accept failed: {}", std::strerror(errno));
      return;
    }
    if (static_cast<int>(conns_.size()) >= opt_.max_connections) {
      // Best effort: the socket is fresh, so a short write goes straight to its buffer.
      const std::string body = error_body(503, "too many open connections; retry later", "", "too_many_connections");
      rejected(503, "too_many_connections");
      const std::string msg = response_head(503, "application/json", static_cast<int64_t>(body.size()), false) + body;
      [[maybe_unused]] ssize_t r = send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
      close(fd);
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // SSE chunks are small and latency matters
    const uint64_t id = next_id_++;
    auto conn = std::make_unique<Conn>(id, fd, opt_.limits);
    conn->last_activity = now_s();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = id;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    conns_.emplace(id, std::move(conn));
    n_connections_.store(static_cast<int>(conns_.size()));
  }
}

void HttpServer::update_events(Conn& c) {
  // While a request is with the handler, unread input is capped; EPOLLRDHUP still reports a hang-up.
  // After the end of the client's input nothing is read: a client that is gone shows as EPOLLHUP or
  // EPOLLERR (always reported) once a write has failed.
  const bool want_read = !c.peer_eof && (!c.busy || c.in.size() < opt_.limits.max_head_bytes);
  const uint32_t events =
      (c.peer_eof ? 0u : EPOLLRDHUP) | (want_read ? EPOLLIN : 0u) | (c.pending() > 0 ? EPOLLOUT : 0u);
  if (events == c.events) return;
  c.events = events;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void HttpServer::on_readable(Conn& c) {
  const uint64_t id = c.id;
  if (c.peer_eof) {  // only a hang-up or an error is reported after the end of input
    close_conn(id);  // the client is gone: an unfinished response is cancelled through on_close
    return;
  }
  char buf[kReadChunk];
  const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    close_conn(id);
    return;
  }
  if (n == 0) {
    on_peer_eof(c);
    return;
  }
  if (n < 0) return;
  c.last_activity = now_s();
  if (c.closing) return;  // answered and about to close: the rest of the input is ignored
  c.in.append(buf, static_cast<size_t>(n));
  if (!c.busy) process_input(c);
  if (conns_.count(id)) update_events(c);
}

void HttpServer::on_peer_eof(Conn& c) {
  // A client may shut down its sending side after its request and still wait for the answer (a
  // half-close), which we can't tell from a client that has closed entirely until a write fails. So a
  // request in flight is still answered, and the connection closes once it has been.
  c.peer_eof = true;
  if (!c.busy && c.pending() == 0) {
    close_conn(c.id);
    return;
  }
  if (!c.busy) c.closing = true;
  update_events(c);
}

void HttpServer::process_input(Conn& c) {
  while (!c.busy && !c.closing && !c.in.empty()) {
    const size_t used = c.parser.feed(c.in);
    c.in.erase(0, used);
    if (c.parser.in_progress() && c.request_start == 0) c.request_start = now_s();
    if (c.parser.expects_continue() && !c.continue_sent) {
      c.out += "HTTP/1.1 100 Continue\r\n\r\n";
      c.continue_sent = true;
      flush(c);
      if (!conns_.count(c.id)) return;
    }
    if (c.parser.state() == HttpParser::State::Error) {
      reject(c, c.parser.error_status(), c.parser.error_message(), parser_error_reason(c.parser.error_status()));
      return;
    }
    if (c.parser.state() != HttpParser::State::Complete) break;
    c.request_start = 0;
    c.continue_sent = false;
    dispatch(c, c.parser.take());
  }
}

void HttpServer::rejected(int status, std::string_view reason) {
  if (on_rejection_) on_rejection_(status, reason);
}

void HttpServer::reject(Conn& c, int status, std::string_view message, std::string_view reason) {
  // After a framing error the rest of the input can't be trusted: answer and close.
  rejected(status, reason);
  const std::string body = error_body(status, message, "", reason);
  c.out += response_head(status, "application/json", static_cast<int64_t>(body.size()), false) + body;
  c.closing = true;
  c.in.clear();
  flush(c);
}

void HttpServer::dispatch(Conn& c, HttpRequest req) {
  if (draining_) {
    reject(c, 503, "the server is shutting down", "shutting_down");
    return;
  }
  auto ex = std::make_shared<ResponseWriter::Exchange>();
  ex->server = this;
  ex->conn = c.id;
  ex->keep_alive = req.keep_alive();
  ex->request_line = req.method + " " + req.path;
  if (const std::string* origin = req.header("origin"); origin && !opt_.cors_origins.empty()) {
    for (const std::string& allowed : opt_.cors_origins)
      if (allowed == "*" || allowed == *origin) ex->cors_origin = allowed == "*" ? "*" : *origin;
  }
  c.exchange = ex;
  c.busy = true;
  ResponseWriter writer(ex);
  // A CORS preflight from an allowed origin: what the page may send, answered here for every route.
  if (req.method == "OPTIONS" && !ex->cors_origin.empty() && req.header("access-control-request-method")) {
    writer.respond(200, "text/plain", "",
                   {{"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                    {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                    {"Access-Control-Max-Age", "600"}});
    return;
  }
  try {
    handler_(req, writer);
  } catch (const std::exception& e) {
    log::error("request handler failed: {}", e.what());
    rejected(500, "internal_error");
    writer.respond(500, "application/json",
                   error_body(500, "internal error while handling the request", "", "internal_error"));
  }
}

void HttpServer::drain_outbox() {
  // Answers may let pipelined requests run, whose handlers may answer at once: repeat until quiet.
  for (int round = 0; round < 8; ++round) {
    std::vector<Outgoing> batch;
    {
      std::lock_guard lock(outbox_mutex_);
      batch.swap(outbox_);
    }
    if (batch.empty()) return;
    std::vector<uint64_t> touched;
    for (Outgoing& o : batch) {
      auto it = conns_.find(o.conn);
      if (it == conns_.end()) continue;
      Conn& c = *it->second;
      c.out += o.data;
      if (o.final) {
        c.busy = false;
        if (!c.exchange->keep_alive || draining_) c.closing = true;
        c.exchange.reset();
        c.last_activity = now_s();
      }
      if (touched.empty() || touched.back() != o.conn) touched.push_back(o.conn);
    }
    for (uint64_t id : touched) {
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn& c = *it->second;
      if (c.pending() > opt_.max_pending_output) {
        log::warn("dropping a client that is not reading its response ({} bytes queued)", c.pending());
        close_conn(id);
        continue;
      }
      flush(c);
      if (!conns_.count(id)) continue;
      if (!c.busy && !c.closing) process_input(c);
      if (!conns_.count(id)) continue;
      if (c.peer_eof && !c.busy) {  // answered all it sent: close once the answers are out
        c.closing = true;
        flush(c);
        if (!conns_.count(id)) continue;
      }
      update_events(c);
    }
  }
}

void HttpServer::flush(Conn& c) {
  while (c.pending() > 0) {
    const ssize_t n = send(c.fd, c.out.data() + c.out_sent, c.pending(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_conn(c.id);
      return;
    }
    c.out_sent += static_cast<size_t>(n);
    c.write_stalled_since = 0;
  }
  if (c.pending() == 0) {
    c.out.clear();
    c.out_sent = 0;
    if (c.closing) {
      close_conn(c.id);
      return;
    }
  } else {
    if (c.write_stalled_since == 0) c.write_stalled_since = now_s();
    if (c.out_sent > (1 << 20)) {  // compact now and then so a long stream doesn't grow the buffer
      c.out.erase(0, c.out_sent);
      c.out_sent = 0;
    }
  }
  update_events(c);
}

void HttpServer::close_conn(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  std::unique_ptr<Conn> c = std::move(it->second);
  conns_.erase(it);
  n_connections_.store(static_cast<int>(conns_.size()));
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  close(c->fd);
  if (c->exchange) {
    std::function<void()> fn;
    {
      std::lock_guard lock(c->exchange->m);
      c->exchange->closed = true;
      if (!c->exchange->finished) fn = std::move(c->exchange->on_close);
    }
    if (fn) fn();
  }
}

void HttpServer::check_timeouts(double now) {
  std::vector<std::pair<uint64_t, int>> expired;  // id, 408 or 0 (close silently)
  for (auto& [id, cp] : conns_) {
    const Conn& c = *cp;
    if (c.pending() > 0 && c.write_stalled_since > 0 && now - c.write_stalled_since > opt_.write_timeout_s)
      expired.push_back({id, 0});
    else if (!c.busy && c.request_start > 0 && now - c.request_start > opt_.header_timeout_s)
      expired.push_back({id, 408});
    else if (!c.busy && c.pending() == 0 && !c.parser.in_progress() && now - c.last_activity > opt_.idle_timeout_s)
      expired.push_back({id, 0});
  }
  for (auto [id, status] : expired) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    if (status)
      reject(*it->second, status, "the request did not arrive in time", "request_timeout");
    else
      close_conn(id);
  }
}

void HttpServer::begin_drain(double now) {
  draining_ = true;
  drain_deadline_ = now + opt_.drain_timeout_s;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
  close(listen_fd_);
  listen_fd_ = -1;
  // Idle connections go now; busy ones close once their response is out.
  std::vector<uint64_t> idle;
  for (auto& [id, c] : conns_)
    if (!c->busy && c->pending() == 0) idle.push_back(id);
  for (uint64_t id : idle) close_conn(id);
  log::info("shutting down: {} request(s) in flight", conns_.size());
}

void HttpServer::expire_drain(double now) {
  drain_expired_ = true;
  if (hurry_)
    log::warn("shutdown: second signal; cancelling the {} request(s) still in flight", conns_.size());
  else
    log::warn("shutdown: {} request(s) still in flight after {} s; cancelling them", conns_.size(),
              opt_.drain_timeout_s);
  close_deadline_ = now;
  if (on_drain_expired_) {
    close_deadline_ += opt_.cancel_grace_s;
    on_drain_expired_();
  }
}

}  // namespace kestrel::server
