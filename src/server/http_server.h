// A small HTTP/1.1 server: one I/O thread runs an epoll loop over every connection (keep-alive,
// pipelined requests answered in order, chunked responses for streaming), so hundreds of idle or
// streaming clients cost a buffer each, not a thread. The handler runs on the I/O thread and must not
// block: it answers at once or hands the ResponseWriter to another thread, which may then write from
// there (writes travel to the I/O thread through a queue and an eventfd).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "server/http_parser.h"

namespace kestrel::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see HttpServer::port())
  HttpLimits limits;
  int max_connections = 1024;
  double header_timeout_s = 30;          // a request that has begun must arrive completely within this
  double idle_timeout_s = 120;           // a keep-alive connection with no request is closed after this
  double write_timeout_s = 60;           // a client that takes nothing of a pending response for this long is dropped
  size_t max_pending_output = 16 << 20;  // bytes queued for one slow client before it is dropped
  double drain_timeout_s = 30;           // graceful shutdown: in-flight requests get this long to finish
  double cancel_grace_s = 5;             // then, after on_drain_expired, this long for their final answers
  // CORS, opt-in: origins whose browser pages may call the server ("*": any). Empty: no CORS headers and no
  // preflight answers, so browsers keep other origins out.
  std::vector<std::string> cors_origins;
};

class HttpServer;

// The answer to one request. Any thread may use it; every call after the response is finished (or the
// connection closed) does nothing.
class ResponseWriter {
 public:
  // A whole response with a Content-Length.
  void respond(int status, std::string_view content_type, std::string_view body,
               const std::vector<HttpHeader>& extra = {});
  // A chunked response: start_stream(), any number of write(), then finish().
  void start_stream(int status, std::string_view content_type, const std::vector<HttpHeader>& extra = {});
  void write(std::string_view data);
  void finish();
  // True once the client is gone: stop producing.
  bool closed() const;
  // `fn` runs once if the connection closes before the response is finished (at once if it already
  // has); it runs on the I/O thread and must not block.
  void on_close(std::function<void()> fn);
  // The request's method and path ("POST /v1/completions") and the seconds since it was dispatched.
  const std::string& request_line() const;
  double seconds() const;

  struct Exchange;
  explicit ResponseWriter(std::shared_ptr<Exchange> ex) : ex_(std::move(ex)) {}

 private:
  std::shared_ptr<Exchange> ex_;
};

class HttpServer {
 public:
  using Handler = std::function<void(HttpRequest& request, ResponseWriter response)>;
  // Told of every answer the server gives on its own (status and a short reason: malformed_request,
  // request_timeout, body_too_large, headers_too_large, not_implemented, http_version_not_supported,
  // too_many_connections, shutting_down, internal_error). Runs on the I/O thread.
  using RejectionObserver = std::function<void(int status, std::string_view reason)>;

  // Binds and listens at once (throws kestrel::Error naming host and port when it can't).
  HttpServer(const HttpServerOptions& opt, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Set before run().
  void on_rejection(RejectionObserver fn) { on_rejection_ = std::move(fn); }
  // Runs once on the I/O thread when the drain time is up with requests still in flight: it should make
  // them finish at once (with an error), since the server then gives their answers cancel_grace_s to
  // go out before it closes every connection. Set before run().
  void on_drain_expired(std::function<void()> fn) { on_drain_expired_ = std::move(fn); }
  // Runs the event loop on the calling thread until a shutdown has drained.
  void run();
  // Starts a graceful shutdown: stop accepting, let in-flight requests finish (up to drain_timeout_s),
  // then return from run(). A second call ends the drain time at once. Async-signal-safe, so a SIGTERM
  // handler may call it.
  void shutdown();
  bool shutting_down() const { return stop_requested_.load(); }
  // Open connections (any thread; for metrics and tests).
  int connections() const { return n_connections_.load(); }

 private:
  friend class ResponseWriter;
  struct Conn;
  struct Outgoing {
    uint64_t conn;
    std::string data;
    bool final;
  };

  void post(uint64_t conn, std::string data, bool final);
  void accept_all();
  void on_readable(Conn& c);
  void process_input(Conn& c);
  void dispatch(Conn& c, HttpRequest req);
  void reject(Conn& c, int status, std::string_view message, std::string_view reason);
  void rejected(int status, std::string_view reason);
  void on_peer_eof(Conn& c);
  void drain_outbox();
  void flush(Conn& c);
  void close_conn(uint64_t id);
  void update_events(Conn& c);
  void check_timeouts(double now);
  void begin_drain(double now);
  void expire_drain(double now);

  HttpServerOptions opt_;
  Handler handler_;
  RejectionObserver on_rejection_;
  std::function<void()> on_drain_expired_;
  int listen_fd_ = -1, epoll_fd_ = -1, wake_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> hurry_{false};  // a second shutdown(): end the drain time now
  std::atomic<int> n_connections_{0};
  bool draining_ = false;
  bool drain_expired_ = false;
  double drain_deadline_ = 0;
  double close_deadline_ = 0;  // after the drain expired: when every connection is closed
  uint64_t next_id_ = 2;       // 0 and 1 tag the listener and the wake-up eventfd in epoll
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::mutex outbox_mutex_;
  std::vector<Outgoing> outbox_;
};

}  // namespace kestrel::server
