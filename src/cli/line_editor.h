// Line input for `kestrel chat` on a terminal: editing and history as llama.cpp's and Python's prompts
// have them — Left/Right, Home/End (and Ctrl-A/E/B/F), Backspace/Delete, Ctrl-K/U/W, Up/Down (and Ctrl-P/N)
// through the lines entered before, UTF-8 aware (the cursor moves by characters). Input that is not a
// terminal is read line by line, untouched. A line longer than the terminal is wide redraws on one row
// (no wrapping), as the shells' simplest editors do.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace kestrel::cli {

// The editing state, fed one key at a time (no I/O, so tests drive it with byte strings).
class LineBuffer {
 public:
  enum class Result { Editing, Done, Eof, Interrupt };
  explicit LineBuffer(const std::vector<std::string>* history = nullptr) : history_(history) {}
  // Feeds one input byte; escape sequences (arrows, Home/End, Delete) span several calls.
  Result feed(unsigned char c);
  const std::string& text() const { return text_; }
  size_t cursor() const { return cursor_; }  // a byte offset on a character boundary

 private:
  Result key(unsigned char c);
  void escape(const std::string& seq);
  void left();
  void right();
  void recall(int step);

  const std::vector<std::string>* history_;
  std::string text_;
  size_t cursor_ = 0;
  std::string esc_;  // an escape sequence being read
  bool in_esc_ = false;
  // History browsing: the entry shown (history size = the line being typed, kept in draft_).
  size_t shown_ = static_cast<size_t>(-1);
  std::string draft_;
};

class LineEditor {
 public:
  // in_fd is read; prompts and redraws go to out_fd. Editing is on when in_fd is a terminal.
  LineEditor(int in_fd, int out_fd);
  bool editing() const { return editing_; }
  // The next line (no newline), or nullopt at the end of input: Ctrl-D on an empty line, end of file, or
  // Ctrl-C (then interrupted() is true).
  std::optional<std::string> read(const std::string& prompt);
  bool interrupted() const { return interrupted_; }

 private:
  std::optional<std::string> read_plain();
  void redraw(const std::string& prompt, const LineBuffer& b);

  int in_, out_;
  bool editing_;
  bool interrupted_ = false;
  std::vector<std::string> history_;
};

}  // namespace kestrel::cli
