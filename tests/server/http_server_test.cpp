// The epoll HTTP server over loopback: keep-alive and pipelining, streaming from another thread,
// disconnects, garbage, limits, timeouts and graceful shutdown.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"

namespace kestrel::server {
namespace {

using namespace std::chrono_literals;

int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

void send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<size_t>(n));
  }
}

struct Response {
  int status = 0;  // 0: the connection closed first
  std::string head, body;
};

// Reads one response; `buf` keeps bytes that belong to the next one.
Response read_response(int fd, std::string& buf) {
  auto fill = [&] {
    char tmp[4096];
    const ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
    return true;
  };
  Response r;
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return r;
  r.head = buf.substr(0, end + 4);
  buf.erase(0, end + 4);
  r.status = std::stoi(r.head.substr(9, 3));
  if (r.status < 200) return r;  // interim responses have no body
  if (const size_t cl = r.head.find("Content-Length: "); cl != std::string::npos) {
    const size_t len = std::stoul(r.head.substr(cl + 16));
    while (buf.size() < len)
      if (!fill()) return r;
    r.body = buf.substr(0, len);
    buf.erase(0, len);
  } else {  // chunked
    while (true) {
      size_t eol;
      while ((eol = buf.find("\r\n")) == std::string::npos)
        if (!fill()) return r;
      const size_t len = std::stoul(buf.substr(0, eol), nullptr, 16);
      while (buf.size() < eol + 2 + len + 2)
        if (!fill()) return r;
      r.body += buf.substr(eol + 2, len);
      buf.erase(0, eol + 2 + len + 2);
      if (len == 0) break;
    }
  }
  return r;
}

Response request(int port, const std::string& raw) {
  const int fd = connect_to(port);
  send_all(fd, raw);
  std::string buf;
  Response r = read_response(fd, buf);
  close(fd);
  return r;
}

// Runs a server on a free port in a background thread.
struct Running {
  HttpServer server;
  std::thread thread;
  Running(HttpServerOptions opt, HttpServer::Handler h) : server((opt.port = 0, opt), std::move(h)) {
    thread = std::thread([this] { server.run(); });
  }
  ~Running() {
    server.shutdown();
    thread.join();
  }
  int port() const { return server.port(); }
};

void echo(HttpRequest& req, ResponseWriter res) {
  res.respond(200, "text/plain", req.method + " " + req.path + " " + req.body);
}

TEST(HttpServer, KeepAliveAndPipelinedRequestsAnsweredInOrder) {
  Running s({}, echo);
  const int fd = connect_to(s.port());
  send_all(fd, "GET /one HTTP/1.1\r\n\r\nPOST /two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  std::string buf;
  Response a = read_response(fd, buf), b = read_response(fd, buf);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "GET /one ");
  EXPECT_EQ(b.body, "POST /two abc");
  EXPECT_NE(b.head.find("Connection: keep-alive"), std::string::npos);
  send_all(fd, "GET /three HTTP/1.1\r\nConnection: close\r\n\r\n");
  Response c = read_response(fd, buf);
  EXPECT_EQ(c.body, "GET /three ");
  EXPECT_EQ(read_response(fd, buf).status, 0);  // closed as asked
  close(fd);
}

TEST(HttpServer, ExpectContinueGetsInterimResponse) {
  Running s({}, echo);
  const int fd = connect_to(s.port());
  send_all(fd, "POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  std::string buf;
  EXPECT_EQ(read_response(fd, buf).status, 100);
  send_all(fd, "ok");
  EXPECT_EQ(read_response(fd, buf).body, "POST /x ok");
  close(fd);
}

TEST(HttpServer, StreamsFromAnotherThreadAndReportsDisconnect) {
  std::atomic<bool> closed{false};
  std::vector<std::thread> producers;
  Running s({}, [&](HttpRequest&, ResponseWriter res) {
    res.on_close([&] { closed = true; });
    res.start_stream(200, "text/event-stream");
    producers.emplace_back([res]() mutable {
      for (int i = 0; i < 1000 && !res.closed(); ++i) {
        res.write("data: " + std::to_string(i) + "\n\n");
        std::this_thread::sleep_for(5ms);
      }
      res.finish();
    });
  });
  const int fd = connect_to(s.port());
  send_all(fd, "GET /stream HTTP/1.1\r\n\r\n");
  char tmp[256];
  ASSERT_GT(recv(fd, tmp, sizeof tmp, 0), 0);  // head and first chunks arrive
  close(fd);
  for (int i = 0; i < 200 && !closed; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(closed);
  for (auto& t : producers) t.join();
}

TEST(HttpServer, CompleteStreamIsChunked) {
  Running s({}, [](HttpRequest&, ResponseWriter res) {
    res.start_stream(200, "text/plain");
    res.write("ab");
    res.write("");
    res.write("cd");
    res.finish();
    res.write("ignored");
  });
  Response r = request(s.port(), "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.head.find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_EQ(r.body, "abcd");
}

TEST(HttpServer, GarbageIsRejectedAndServingContinues) {
  HttpServerOptions opt;
  opt.limits.max_body_bytes = 64;
  Running s(opt, echo);
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    std::string junk(1 + rng() % 300, '\0');
    for (char& c : junk) c = static_cast<char>(rng() & 0xff);
    junk += "\r\n\r\n";
    Response r = request(s.port(), junk);
    if (r.status != 0) {
      EXPECT_GE(r.status, 400);
      EXPECT_NE(r.body.find("\"error\""), std::string::npos);
    }
  }
  Response big = request(s.port(), "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n");
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(big.body.find("invalid_request_error"), std::string::npos);
  EXPECT_EQ(request(s.port(), "GET /ok HTTP/1.1\r\n\r\n").body, "GET /ok ");
}

TEST(HttpServer, HandlerExceptionBecomes500) {
  Running s({}, [](HttpRequest&, ResponseWriter) { throw std::runtime_error("boom"); });
  Response r = request(s.port(), "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("server_error"), std::string::npos);
}

TEST(HttpServer, SlowRequestTimesOutWith408) {
  HttpServerOptions opt;
  opt.header_timeout_s = 0.3;
  Running s(opt, echo);
  const int fd = connect_to(s.port());
  send_all(fd, "GET / HTTP/1.1\r\nHost: slow");
  std::string buf;
  EXPECT_EQ(read_response(fd, buf).status, 408);
  close(fd);
}

TEST(HttpServer, TooManyConnectionsGet503) {
  HttpServerOptions opt;
  opt.max_connections = 2;
  Running s(opt, echo);
  const int a = connect_to(s.port()), b = connect_to(s.port());
  std::string buf;
  send_all(a, "GET /a HTTP/1.1\r\n\r\n");
  EXPECT_EQ(read_response(a, buf).status, 200);  // both accepted by now
  send_all(b, "GET /b HTTP/1.1\r\n\r\n");
  EXPECT_EQ(read_response(b, buf).status, 200);
  EXPECT_EQ(request(s.port(), "GET /c HTTP/1.1\r\n\r\n").status, 503);
  close(a);
  close(b);
}

TEST(HttpServer, GracefulShutdownFinishesInFlightRequests) {
  std::vector<std::thread> workers;
  HttpServerOptions opt;
  opt.port = 0;
  HttpServer server(opt, [&](HttpRequest& req, ResponseWriter res) {
    workers.emplace_back([res]() mutable {
      std::this_thread::sleep_for(300ms);
      res.respond(200, "text/plain", "late but complete");
    });
  });
  std::thread loop([&] { server.run(); });
  const int fd = connect_to(server.port());
  send_all(fd, "GET / HTTP/1.1\r\n\r\n");
  std::this_thread::sleep_for(50ms);
  server.shutdown();
  std::string buf;
  Response r = read_response(fd, buf);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "late but complete");
  EXPECT_EQ(read_response(fd, buf).status, 0);  // closed after the response
  close(fd);
  loop.join();  // run() returned
  for (auto& t : workers) t.join();
}

// A client may send its request and then shut down its sending side: it still gets its answers, and
// the connection closes after them.
TEST(HttpServer, HalfClosedClientStillGetsItsAnswers) {
  std::vector<std::thread> workers;
  Running s({}, [&](HttpRequest& req, ResponseWriter res) {
    workers.emplace_back([res, body = req.method + " " + req.path]() mutable {
      std::this_thread::sleep_for(100ms);  // the client's FIN arrives first
      res.respond(200, "text/plain", body);
    });
  });
  const int fd = connect_to(s.port());
  send_all(fd, "GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n");
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  std::string buf;
  EXPECT_EQ(read_response(fd, buf).body, "GET /one");
  EXPECT_EQ(read_response(fd, buf).body, "GET /two");
  EXPECT_EQ(read_response(fd, buf).status, 0);  // then closed
  close(fd);
  // A half-close in the middle of a request is the end of it.
  const int partial = connect_to(s.port());
  send_all(partial, "GET /three HTTP/1.1\r\nHost:");
  ASSERT_EQ(shutdown(partial, SHUT_WR), 0);
  EXPECT_EQ(read_response(partial, buf).status, 0);
  close(partial);
  EXPECT_EQ(s.server.connections(), 0);
  for (auto& t : workers) t.join();
}

TEST(HttpServer, EveryRejectionIsReportedWithItsReason) {
  HttpServerOptions opt;
  opt.port = 0;
  opt.max_connections = 3;
  opt.header_timeout_s = 0.3;
  opt.limits.max_body_bytes = 64;
  opt.limits.max_headers = 4;
  std::mutex m;
  std::vector<std::pair<int, std::string>> seen;
  HttpServer server(opt, [](HttpRequest& req, ResponseWriter res) {
    if (req.path == "/throw") throw std::runtime_error("boom");
    res.respond(200, "text/plain", "ok");
  });
  server.on_rejection([&](int status, std::string_view reason) {
    std::lock_guard lock(m);
    seen.emplace_back(status, std::string(reason));
  });
  std::thread loop([&] { server.run(); });
  const int port = server.port();
  EXPECT_EQ(request(port, "\x01GARBAGE\r\n\r\n").status, 400);
  EXPECT_EQ(request(port, "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n").status, 413);
  EXPECT_EQ(request(port, "GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n").status, 431);
  EXPECT_EQ(request(port, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").status, 501);
  EXPECT_EQ(request(port, "GET / HTTP/2.0\r\n\r\n").status, 505);
  EXPECT_EQ(request(port, "GET /throw HTTP/1.1\r\n\r\n").status, 500);
  EXPECT_EQ(request(port, "GET / HTTP/1.1\r\nHost: slow").status, 408);
  const int a = connect_to(port), b = connect_to(port), c = connect_to(port);
  std::string buf;
  for (int fd : {a, b, c}) {  // all three are accepted once each has an answer
    send_all(fd, "GET / HTTP/1.1\r\n\r\n");
    EXPECT_EQ(read_response(fd, buf).status, 200);
  }
  EXPECT_EQ(request(port, "GET / HTTP/1.1\r\n\r\n").status, 503);
  for (int fd : {a, b, c}) close(fd);
  server.shutdown();
  loop.join();
  const std::vector<std::pair<int, std::string>> expected = {{400, "malformed_request"},
                                                             {413, "body_too_large"},
                                                             {431, "headers_too_large"},
                                                             {501, "not_implemented"},
                                                             {505, "http_version_not_supported"},
                                                             {500, "internal_error"},
                                                             {408, "request_timeout"},
                                                             {503, "too_many_connections"}};
  EXPECT_EQ(seen, expected);
}

// A server whose handler keeps every response unanswered (streams get one event first) until
// on_drain_expired answers them all from another thread, as the engine would: a little later, with an
// error.
struct HoldingServer {
  std::mutex m;
  std::vector<ResponseWriter> held;
  std::atomic<int> expired{0};
  std::thread canceller, loop;
  HttpServer server;

  explicit HoldingServer(double drain_timeout_s)
      : server((HttpServerOptions{.port = 0, .drain_timeout_s = drain_timeout_s}),
               [this](HttpRequest& req, ResponseWriter res) {
                 if (req.path == "/stream") {
                   res.start_stream(200, "text/event-stream");
                   res.write("data: 1\n\n");
                 }
                 std::lock_guard lock(m);
                 held.push_back(res);
               }) {
    server.on_drain_expired([this] {
      ++expired;
      canceller = std::thread([this] {
        std::this_thread::sleep_for(50ms);
        std::lock_guard lock(m);
        for (ResponseWriter& w : held) {
          w.respond(503, "application/json", "{\"error\": \"cancelled\"}");
          w.write("data: {\"error\": \"cancelled\"}\n\ndata: [DONE]\n\n");
          w.finish();
        }
      });
    });
    loop = std::thread([this] { server.run(); });
  }
  ~HoldingServer() {
    server.shutdown();
    if (loop.joinable()) loop.join();
    if (canceller.joinable()) canceller.join();
  }

  // Starts a plain and a streaming request, shuts down (twice if `twice`) and checks that both get
  // their error answers, in time.
  void check_cancelled_on_shutdown(bool twice) {
    const int plain = connect_to(server.port()), stream = connect_to(server.port());
    send_all(plain, "GET /plain HTTP/1.1\r\n\r\n");
    send_all(stream, "GET /stream HTTP/1.1\r\n\r\n");
    std::this_thread::sleep_for(100ms);
    const auto t0 = std::chrono::steady_clock::now();
    server.shutdown();
    if (twice) {
      std::this_thread::sleep_for(200ms);
      EXPECT_EQ(expired, 0);  // still draining
      server.shutdown();
    }
    std::string buf;
    Response a = read_response(plain, buf);
    EXPECT_EQ(a.status, 503);
    EXPECT_EQ(a.body, "{\"error\": \"cancelled\"}");
    buf.clear();
    Response b = read_response(stream, buf);
    EXPECT_EQ(b.status, 200);
    EXPECT_EQ(b.body, "data: 1\n\ndata: {\"error\": \"cancelled\"}\n\ndata: [DONE]\n\n");
    loop.join();
    EXPECT_EQ(expired, 1);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3);
    close(plain);
    close(stream);
  }
};

// Requests that outlive the drain time are told to finish (on_drain_expired), and their answers still
// reach the clients before the server closes.
TEST(HttpServer, ExpiredDrainLetsCancelledRequestsAnswer) {
  HoldingServer s(0.3);
  s.check_cancelled_on_shutdown(false);
}

TEST(HttpServer, SecondShutdownEndsTheDrainAtOnce) {
  HoldingServer s(60);
  s.check_cancelled_on_shutdown(true);
}

TEST(HttpServer, BindErrorsAreClear) {
  HttpServerOptions opt;
  opt.host = "not a host name";
  EXPECT_THROW(HttpServer(opt, echo), Error);
}

}  // namespace
}  // namespace kestrel::server
