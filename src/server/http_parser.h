// Incremental HTTP/1.1 request parser. Bytes arrive in arbitrary pieces; the parser consumes them, and
// either asks for more, yields one complete request, or rejects the input with the status code to answer
// (400, 413, 431, 501, 505). It never trusts a length it has not checked against HttpLimits, so random
// bytes can only ever produce an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::server {

struct HttpHeader {
  std::string name;  // lower-cased by the parser
  std::string value;
};

struct HttpRequest {
  std::string method;
  std::string target;     // as sent: path and query
  std::string path;       // target without the query string
  int version_minor = 1;  // HTTP/1.<version_minor>
  std::vector<HttpHeader> headers;
  std::string body;

  // The value of the first header with this (lower-case) name, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  // HTTP/1.1 keeps the connection unless "Connection: close"; HTTP/1.0 only with "keep-alive".
  bool keep_alive() const;
};

struct HttpLimits {
  size_t max_head_bytes = 16 << 10;  // request line and headers
  size_t max_headers = 100;
  size_t max_body_bytes = 4 << 20;
};

class HttpParser {
 public:
  enum class State { Incomplete, Complete, Error };

  explicit HttpParser(const HttpLimits& limits) : limits_(limits) {}

  // Consumes bytes of `data` up to the end of one request at most; returns how many it used. Once the
  // state is Complete or Error, feed() uses nothing more until take()/reset().
  size_t feed(std::string_view data);
  State state() const { return state_; }
  // True when some bytes of a request have arrived but it is not complete (for read timeouts).
  bool in_progress() const { return state_ == State::Incomplete && (!head_.empty() || phase_ != Phase::Head); }
  // Set once the head is parsed and it asked for "Expect: 100-continue" with a body to come.
  bool expects_continue() const { return expect_continue_; }
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }

  // The complete request; the parser is then ready for the next one.
  HttpRequest take();
  void reset();

 private:
  enum class Phase { Head, Body, ChunkSize, ChunkData, ChunkDataEnd, Trailers };

  size_t feed_head(std::string_view data);
  size_t feed_line(std::string_view data, size_t max_line);  // appends to line_ until CRLF
  void parse_head();
  void parse_request_line(std::string_view line);
  void parse_header_line(std::string_view line);
  void choose_body_framing();
  void on_chunk_size_line();
  void fail(int status, std::string message);

  HttpLimits limits_;
  State state_ = State::Incomplete;
  Phase phase_ = Phase::Head;
  std::string head_;
  std::string line_;  // the chunk-size or trailer line being collected
  bool line_done_ = false;
  size_t trailer_bytes_ = 0;
  uint64_t remaining_ = 0;  // body bytes (Content-Length) or bytes of the current chunk still to come
  bool expect_continue_ = false;
  HttpRequest req_;
  int error_status_ = 0;
  std::string error_message_;
};

// The reason phrase for a status code ("Not Found").
std::string_view status_reason(int status);

// The status line and headers of a response, ending with the blank line. content_length < 0 means a
// chunked body follows.
std::string response_head(int status, std::string_view content_type, int64_t content_length, bool keep_alive,
                          const std::vector<HttpHeader>& extra = {});
// One piece of a chunked body; an empty piece is the terminating chunk.
std::string chunk(std::string_view data);

}  // namespace kestrel::server
