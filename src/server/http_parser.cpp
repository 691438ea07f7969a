#include "server/http_parser.h"

#include <fmt/format.h>

#include <algorithm>

namespace kestrel::server {
namespace {

constexpr size_t kMaxChunkLine = 1024;  // chunk size plus extensions
constexpr size_t kMaxMethod = 32;

bool is_tchar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Does the comma-separated header value hold `token` (case-insensitive)?
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (lower(trim(value.substr(0, comma))) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (const HttpHeader& h : headers)
    if (h.name == lower_name) return &h.value;
  return nullptr;
}

bool HttpRequest::keep_alive() const {
  const std::string* c = header("connection");
  if (version_minor == 0) return c && has_token(*c, "keep-alive");
  return !(c && has_token(*c, "close"));
}

void HttpParser::fail(int status, std::string message) {
  state_ = State::Error;
  error_status_ = status;
  error_message_ = std::move(message);
}

void HttpParser::reset() {
  state_ = State::Incomplete;
  phase_ = Phase::Head;
  head_.clear();
  line_.clear();
  line_done_ = false;
  trailer_bytes_ = 0;
  remaining_ = 0;
  expect_continue_ = false;
  req_ = HttpRequest{};
  error_status_ = 0;
  error_message_.clear();
}

HttpRequest HttpParser::take() {
  HttpRequest r = std::move(req_);
  reset();
  return r;
}

size_t HttpParser::feed(std::string_view data) {
  size_t used = 0;
  while (state_ == State::Incomplete && used < data.size()) {
    const std::string_view rest = data.substr(used);
    switch (phase_) {
      case Phase::Head: used += feed_head(rest); break;
      case Phase::Body:
      case Phase::ChunkData: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, rest.size()));
        req_.body.append(rest.substr(0, n));
        remaining_ -= n;
        used += n;
        if (remaining_ == 0) {
          if (phase_ == Phase::Body) {
            state_ = State::Complete;
          } else {
            phase_ = Phase::ChunkDataEnd;
            line_.clear();
          }
        }
        break;
      }
      case Phase::ChunkSize:
        used += feed_line(rest, kMaxChunkLine);
        if (line_done_) on_chunk_size_line();
        break;
      case Phase::ChunkDataEnd:
        used += feed_line(rest, 0);
        if (line_done_) {
          phase_ = Phase::ChunkSize;
          line_.clear();
          line_done_ = false;
        }
        break;
      case Phase::Trailers:
        used += feed_line(rest, limits_.max_head_bytes);
        if (!line_done_) break;
        if (line_.empty()) {
          state_ = State::Complete;
        } else if ((trailer_bytes_ += line_.size() + 2) > limits_.max_head_bytes) {
          fail(431, "request trailers are too large");
        }
        line_.clear();
        line_done_ = false;
        break;
    }
  }
  return used;
}

size_t HttpParser::feed_line(std::string_view data, size_t max_line) {
  const size_t nl = data.find('\n');
  const size_t take = nl == std::string_view::npos ? data.size() : nl + 1;
  line_.append(data.substr(0, take));
  // The limit counts the line's content plus its CRLF.
  if (line_.size() > max_line + 2) {
    fail(400, "a chunked-body line is too long");
    return take;
  }
  if (nl != std::string_view::npos) {
    if (line_.size() < 2 || line_[line_.size() - 2] != '\r') {
      fail(400, "line in the body framing does not end with CRLF");
      return take;
    }
    line_.resize(line_.size() - 2);
    line_done_ = true;
  }
  return take;
}

size_t HttpParser::feed_head(std::string_view data) {
  size_t skipped = 0;
  // A client may send stray blank lines between requests (RFC 9112, 2.2): ignore them.
  if (head_.empty())
    while (skipped < data.size() && (data[skipped] == '\r' || data[skipped] == '\n')) ++skipped;
  data.remove_prefix(skipped);
  if (data.empty()) return skipped;

  const size_t old = head_.size();
  // Never hold more than the limit plus the terminator, whatever the client sends.
  const size_t room = limits_.max_head_bytes + 4 - std::min(old, limits_.max_head_bytes + 4);
  head_.append(data.substr(0, std::min(room, data.size())));
  const size_t end = head_.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
  if (end == std::string::npos) {
    if (head_.size() > limits_.max_head_bytes) fail(431, "request headers are too large");
    return skipped + (head_.size() - old);
  }
  const size_t used = end + 4 - old;
  head_.resize(end);
  if (end > limits_.max_head_bytes) {
    fail(431, "request headers are too large");
    return skipped + used;
  }
  parse_head();
  return skipped + used;
}

void HttpParser::parse_head() {
  std::string_view head = head_;
  size_t n_headers = 0;
  bool first = true;
  while (state_ == State::Incomplete) {
    const size_t eol = head.find("\r\n");
    const std::string_view line = head.substr(0, eol);
    if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
      return fail(400, "bare CR, LF or NUL in the request head");
    if (first) {
      parse_request_line(line);
      first = false;
    } else {
      if (++n_headers > limits_.max_headers) return fail(431, "too many request headers");
      parse_header_line(line);
    }
    if (eol == std::string_view::npos) break;
    head.remove_prefix(eol + 2);
  }
  if (state_ == State::Incomplete) choose_body_framing();
}

void HttpParser::parse_request_line(std::string_view line) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line");
  const std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                         version = line.substr(sp2 + 1);
  if (!is_token(method) || method.size() > kMaxMethod) return fail(400, "malformed request method");
  if (target.empty() || target[0] != '/' ||
      !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return fail(400, "malformed request target");
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
      version[5] > '9' || version[7] < '0' || version[7] > '9')
    return fail(400, "malformed HTTP version");
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
    return fail(505, fmt::format("{} is not supported; use HTTP/1.1", version));
  req_.method = method;
  req_.target = target;
  req_.path = target.substr(0, target.find('?'));
  req_.version_minor = version[7] - '0';
}

void HttpParser::parse_header_line(std::string_view line) {
  if (!line.empty() && (line[0] == ' ' || line[0] == '\t'))
    return fail(400, "obsolete header line folding is not accepted");
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return fail(400, "header line without a colon");
  const std::string_view name = line.substr(0, colon), value = trim(line.substr(colon + 1));
  if (!is_token(name)) return fail(400, "malformed header name");
  for (char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return fail(400, "control character in a header value");
  }
  req_.headers.push_back({lower(name), std::string(value)});
}

void HttpParser::choose_body_framing() {
  bool chunked = false, has_length = false;
  uint64_t length = 0;
  for (const HttpHeader& h : req_.headers) {
    if (h.name == "transfer-encoding") {
      if (lower(h.value) != "chunked") return fail(501, "only the chunked transfer-encoding is supported");
      chunked = true;
    } else if (h.name == "content-length") {
      if (h.value.empty() || h.value.size() > 18 ||
          !std::all_of(h.value.begin(), h.value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(400, "malformed Content-Length");
      const uint64_t v = std::stoull(h.value);
      if (has_length && v != length) return fail(400, "conflicting Content-Length headers");
      has_length = true;
      length = v;
    }
  }
  // Both framings at once is how request smuggling starts: refuse it.
  if (chunked && has_length) return fail(400, "both Transfer-Encoding and Content-Length");
  if (length > limits_.max_body_bytes)
    return fail(413, fmt::format("request body of {} bytes exceeds the limit of {}", length, limits_.max_body_bytes));
  const bool has_body = chunked || length > 0;
  const std::string* expect = req_.header("expect");
  expect_continue_ = has_body && expect && lower(*expect) == "100-continue";
  if (chunked) {
    phase_ = Phase::ChunkSize;
  } else if (length > 0) {
    phase_ = Phase::Body;
    remaining_ = length;
    req_.body.reserve(static_cast<size_t>(length));
  } else {
    state_ = State::Complete;
  }
}

void HttpParser::on_chunk_size_line() {
  std::string_view s = line_;
  s = s.substr(0, s.find(';'));  // chunk extensions carry nothing we use
  s = trim(s);
  if (s.empty() || s.size() > 16) return fail(400, "malformed chunk size");
  uint64_t size = 0;
  for (char c : s) {
    const int d = hex_digit(c);
    if (d < 0) return fail(400, "malformed chunk size");
    size = size * 16 + static_cast<uint64_t>(d);
  }
  if (size > limits_.max_body_bytes - std::min(limits_.max_body_bytes, req_.body.size()))
    return fail(413, fmt::format("request body exceeds the limit of {} bytes", limits_.max_body_bytes));
  line_.clear();
  line_done_ = false;
  if (size == 0) {
    phase_ = Phase::Trailers;
  } else {
    phase_ = Phase::ChunkData;
    remaining_ = size;
  }
}

std::string_view status_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string response_head(int status, std::string_view content_type, int64_t content_length, bool keep_alive,
                          const std::vector<HttpHeader>& extra) {
  std::string h = fmt::format("HTTP/1.1 {} {}\r\nServer: kestrel\r\n", status, status_reason(status));
  if (!content_type.empty()) h += fmt::format("Content-Type: {}\r\n", content_type);
  if (content_length >= 0)
    h += fmt::format("Content-Length: {}\r\n", content_length);
  else
    h += "Transfer-Encoding: chunked\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (const HttpHeader& e : extra) h += fmt::format("{}: {}\r\n", e.name, e.value);
  h += "\r\n";
  return h;
}

std::string chunk(std::string_view data) {
  if (data.empty()) return "0\r\n\r\n";
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

}  // namespace kestrel::server
