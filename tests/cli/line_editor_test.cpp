// The chat prompt's line editing (cli/line_editor.h), driven with the bytes a terminal sends.
#include "cli/line_editor.h"

#include <gtest/gtest.h>

namespace kestrel::cli {
namespace {

// Feeds `keys` and returns the line, or "<eof>" / "<interrupt>", or "<editing>" when no line ended.
std::string type(const std::string& keys, const std::vector<std::string>* history = nullptr) {
  LineBuffer b(history);
  for (unsigned char c : keys) switch (b.feed(c)) {
      case LineBuffer::Result::Done: return b.text();
      case LineBuffer::Result::Eof: return "<eof>";
      case LineBuffer::Result::Interrupt: return "<interrupt>";
      case LineBuffer::Result::Editing: break;
    }
  return "<editing>";
}

TEST(LineEditor, CursorMovesAndEdits) {
  EXPECT_EQ(type("hello\r"), "hello");
  EXPECT_EQ(type("hello\x1b[D\x1b[DX\r"), "helXlo");        // Left twice, insert
  EXPECT_EQ(type("hello\x1bOD\x1bOD\x1b[CX\n"), "hellXo");  // SS3 arrows too
  EXPECT_EQ(type("world\x01hello \r"), "hello world");      // Ctrl-A
  EXPECT_EQ(type("ab\x1b[Hx\x1b[Fy\r"), "xaby");            // Home, End
  EXPECT_EQ(type("ab\x1b[1~x\x1b[4~y\r"), "xaby");          // the ~ forms
  EXPECT_EQ(type("abc\x7f\x7f\r"), "a");                    // Backspace
  EXPECT_EQ(type("abc\x01\x1b[3~\r"), "bc");                // Delete
  EXPECT_EQ(type("abc\x01\x04\r"), "bc");                   // Ctrl-D deletes on a non-empty line
  EXPECT_EQ(type("one two\x02\x02\x0b\r"), "one t");        // Ctrl-B, Ctrl-K
  EXPECT_EQ(type("one two\x02\x02\x15\r"), "wo");           // Ctrl-U
  EXPECT_EQ(type("one two  \x17\r"), "one ");               // Ctrl-W
  EXPECT_EQ(type("a\x1bxb\r"), "ab");                       // Alt+x: dropped
  EXPECT_EQ(type("a\x1b[99;99;99;99Zb\r"), "ab");           // unknown sequences: dropped
}

TEST(LineEditor, MultiByteCharactersMoveAsOne) {
  EXPECT_EQ(type("h\xc3\xa9llo\x1b[D\x1b[D\x1b[D\x1b[DX\r"), "hX\xc3\xa9llo");
  EXPECT_EQ(type("caf\xc3\xa9\x7f\r"), "caf");
  EXPECT_EQ(type("\xe2\x82\xac\x01\x1b[3~x\r"), "x");
}

TEST(LineEditor, HistoryRecallsAndKeepsTheDraft) {
  const std::vector<std::string> history = {"first", "second"};
  EXPECT_EQ(type("\x1b[A\r", &history), "second");
  EXPECT_EQ(type("\x1b[A\x1b[A\x1b[A\r", &history), "first");  // stops at the oldest
  EXPECT_EQ(type("draft\x1b[A\x1b[B\r", &history), "draft");   // back down to the line being typed
  EXPECT_EQ(type("\x10\x10\x0e!\r", &history), "second!");     // Ctrl-P, Ctrl-N
  EXPECT_EQ(type("\x1b[A\r"), "");                             // no history: nothing
}

TEST(LineEditor, EndOfInputAndInterrupt) {
  EXPECT_EQ(type("\x04"), "<eof>");
  EXPECT_EQ(type("abc\x03"), "<interrupt>");
  EXPECT_EQ(type("abc"), "<editing>");
}

}  // namespace
}  // namespace kestrel::cli
