#include <gtest/gtest.h>

#include "engine/generate.h"

namespace kestrel {
namespace {

TEST(StopMatcher, HoldsBackPrefixesAndCutsAtTheStop) {
  StopMatcher m({"</end>", "STOP"});
  std::string out;
  out += m.push("Hello </e");
  EXPECT_EQ(out, "Hello ");
  out += m.push("nvelope");  // not a stop after all
  EXPECT_EQ(out, "Hello </envelope");
  out += m.push(" and ST");
  out += m.push("OP here");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello </envelope and ");
  EXPECT_EQ(m.push("more"), "");
}

TEST(StopMatcher, IncludeKeepsTheStopThatEndedTheText) {
  StopMatcher m({"END", "EN"}, /*include=*/true);
  std::string out = m.push("text E");
  out += m.push("ND more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "text END");  // both start at the same place: the longer one is the stop
}

TEST(StopMatcher, FlushReleasesHeldText) {
  StopMatcher m({"abc"});
  EXPECT_EQ(m.push("xxab"), "xx");
  EXPECT_EQ(m.flush(), "ab");
  StopMatcher none({});
  EXPECT_EQ(none.push("anything"), "anything");
}

}  // namespace
}  // namespace kestrel
