// The HTTP/1.1 request parser: framing, limits, errors, and random garbage that must never crash it.
#include "server/http_parser.h"

#include <gtest/gtest.h>

#include <random>

namespace kestrel::server {
namespace {

// Feeds `text` in pieces of `step` bytes; returns the parser's final state and the bytes it used.
std::pair<HttpParser::State, size_t> feed_in_pieces(HttpParser& p, std::string_view text, size_t step) {
  size_t used = 0;
  while (used < text.size() && p.state() == HttpParser::State::Incomplete) {
    const size_t n = std::min(step, text.size() - used);
    const size_t k = p.feed(text.substr(used, n));
    used += k;
    if (k < n) break;
  }
  return {p.state(), used};
}

TEST(HttpParser, GetWithHeadersInAnyPieceSize) {
  const std::string req = "GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  spaced value \t\r\n\r\n";
  for (size_t step : {1u, 2u, 7u, 1000u}) {
    HttpParser p(HttpLimits{});
    auto [state, used] = feed_in_pieces(p, req, step);
    ASSERT_EQ(state, HttpParser::State::Complete) << step;
    EXPECT_EQ(used, req.size());
    HttpRequest r = p.take();
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(r.target, "/v1/models?x=1");
    EXPECT_EQ(r.path, "/v1/models");
    ASSERT_NE(r.header("x-thing"), nullptr);
    EXPECT_EQ(*r.header("x-thing"), "spaced value");
    EXPECT_EQ(*r.header("host"), "a");
    EXPECT_TRUE(r.keep_alive());
    EXPECT_TRUE(r.body.empty());
  }
}

TEST(HttpParser, ContentLengthBodyAndPipelinedRequests) {
  const std::string two =
      "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.0\r\nContent-Length: 2\r\nConnection: "
      "keep-alive\r\n\r\nhi";
  HttpParser p(HttpLimits{});
  size_t used = p.feed(two);
  ASSERT_EQ(p.state(), HttpParser::State::Complete);
  HttpRequest a = p.take();
  EXPECT_EQ(a.body, "hello");
  used += p.feed(std::string_view(two).substr(used));
  ASSERT_EQ(p.state(), HttpParser::State::Complete);
  HttpRequest b = p.take();
  EXPECT_EQ(used, two.size());
  EXPECT_EQ(b.path, "/b");
  EXPECT_EQ(b.body, "hi");
  EXPECT_EQ(b.version_minor, 0);
  EXPECT_TRUE(b.keep_alive());
}

TEST(HttpParser, ChunkedBodyWithExtensionsAndTrailers) {
  const std::string req =
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: "
      "1\r\n\r\n";
  for (size_t step : {1u, 3u, 4096u}) {
    HttpParser p(HttpLimits{});
    auto [state, used] = feed_in_pieces(p, req, step);
    ASSERT_EQ(state, HttpParser::State::Complete) << step;
    EXPECT_EQ(used, req.size());
    EXPECT_EQ(p.take().body, "hello0123456789");
  }
}

TEST(HttpParser, ExpectContinueIsReported) {
  HttpParser p(HttpLimits{});
  p.feed("POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(p.state(), HttpParser::State::Incomplete);
  EXPECT_TRUE(p.expects_continue());
  EXPECT_TRUE(p.in_progress());
  p.feed("abc");
  EXPECT_EQ(p.state(), HttpParser::State::Complete);
}

TEST(HttpParser, KeepAliveRules) {
  auto parse = [](const std::string& s) {
    HttpParser p(HttpLimits{});
    p.feed(s);
    EXPECT_EQ(p.state(), HttpParser::State::Complete) << s;
    return p.take();
  };
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive());
  EXPECT_FALSE(parse("GET / HTTP/1.0\r\n\r\n").keep_alive());
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\nConnection: upgrade, keep-alive\r\n\r\n").keep_alive());
}

struct BadCase {
  std::string text;
  int status;
};

TEST(HttpParser, MalformedRequestsGetTheRightStatus) {
  HttpLimits small;
  small.max_head_bytes = 256;
  small.max_headers = 4;
  small.max_body_bytes = 100;
  const std::vector<BadCase> cases = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET  / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1 extra\r\n\r\n", 400},
      {"G(T / HTTP/1.1\r\n\r\n", 400},
      {"GET nopath HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET / HTTQ/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\nc\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nA: " + std::string(300, 'x') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nA: " + std::string(300, 'x'), 431},  // no terminator yet, already too big
      {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n" + std::string(80, 'a') + "\r\n40\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\nab", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n", 400},
  };
  for (const BadCase& c : cases) {
    for (size_t step : {1u, 1u << 20}) {
      HttpParser p(small);
      feed_in_pieces(p, c.text, step);
      EXPECT_EQ(p.state(), HttpParser::State::Error) << c.text.substr(0, 80) << " step " << step;
      EXPECT_EQ(p.error_status(), c.status) << c.text.substr(0, 80) << ": " << p.error_message();
      EXPECT_FALSE(p.error_message().empty());
    }
  }
}

TEST(HttpParser, LeadingBlankLinesAreIgnored) {
  HttpParser p(HttpLimits{});
  p.feed("\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(p.state(), HttpParser::State::Complete);
}

// Random bytes, random mutations of valid requests and random piece sizes: the parser must only ever
// end up Incomplete, Complete or Error, use no more than it was given, and respect the body limit.
TEST(HttpParserFuzz, GarbageNeverCrashesOrOverruns) {
  std::mt19937 rng(1234);
  HttpLimits lim;
  lim.max_head_bytes = 512;
  lim.max_body_bytes = 256;
  const std::vector<std::string> seeds = {
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\": true}",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      "GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  };
  const std::string alphabet = "\r\n: \t0123456789abcdefABCDEF;/HTTP.-chunked\x00\x7f\xff";
  int complete = 0, errors = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string input;
    if (iter % 3 == 0) {
      const size_t n = rng() % 600;
      for (size_t i = 0; i < n; ++i) input.push_back(static_cast<char>(rng() & 0xff));
    } else {
      input = seeds[rng() % seeds.size()];
      const int mutations = 1 + static_cast<int>(rng() % 6);
      for (int m = 0; m < mutations && !input.empty(); ++m) {
        const size_t at = rng() % input.size();
        switch (rng() % 4) {
          case 0: input[at] = alphabet[rng() % alphabet.size()]; break;
          case 1: input.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
          case 2: input.erase(at, 1); break;
          case 3: input.insert(at, input.substr(rng() % input.size(), rng() % 40)); break;
        }
      }
    }
    HttpParser p(lim);
    size_t pos = 0;
    while (pos < input.size()) {
      const size_t n = std::min<size_t>(1 + rng() % 64, input.size() - pos);
      const size_t used = p.feed(std::string_view(input).substr(pos, n));
      ASSERT_LE(used, n);
      pos += used;
      if (p.state() == HttpParser::State::Complete) {
        const HttpRequest r = p.take();
        ASSERT_LE(r.body.size(), lim.max_body_bytes);
        ++complete;
      } else if (p.state() == HttpParser::State::Error) {
        ASSERT_GE(p.error_status(), 400);
        ASSERT_LT(p.error_status(), 600);
        ++errors;
        break;
      } else {
        ASSERT_EQ(used, n);  // an incomplete parser takes everything it is offered
      }
    }
  }
  EXPECT_GT(complete, 100);
  EXPECT_GT(errors, 100);
}

TEST(HttpResponse, HeadAndChunks) {
  EXPECT_EQ(response_head(200, "text/plain", 3, true),
            "HTTP/1.1 200 OK\r\nServer: kestrel\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: "
            "keep-alive\r\n\r\n");
  EXPECT_NE(response_head(404, "", -1, false, {{"X-A", "b"}})
                .find("Transfer-Encoding: chunked\r\nConnection: "
                      "close\r\nX-A: b\r\n\r\n"),
            std::string::npos);
  EXPECT_EQ(chunk("hello"), "5\r\nhello\r\n");
  EXPECT_EQ(chunk(std::string(26, 'x')).substr(0, 4), "1a\r\n");
  EXPECT_EQ(chunk(""), "0\r\n\r\n");
}

}  // namespace
}  // namespace kestrel::server
