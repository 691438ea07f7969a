#include "cli/line_editor.h"

#include <termios.h>
#include <unistd.h>

#include <cerrno>

namespace kestrel::cli {
namespace {

bool continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

// Characters (code points) in s[from, to): what the cursor moves over on the screen.
size_t columns(const std::string& s, size_t from, size_t to) {
  size_t n = 0;
  for (size_t i = from; i < to; ++i) n += !continuation(static_cast<unsigned char>(s[i]));
  return n;
}

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the terminal is gone: nothing to show the line on
    done += static_cast<size_t>(n);
  }
}

// Raw input for one read: no line buffering, no echo, Ctrl-C as a byte; restored on every exit.
class RawMode {
 public:
  explicit RawMode(int fd) : fd_(fd), ok_(tcgetattr(fd, &saved_) == 0) {
    if (!ok_) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG | IEXTEN);
    raw.c_iflag &= ~static_cast<tcflag_t>(IXON | ICRNL);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    ok_ = tcsetattr(fd, TCSAFLUSH, &raw) == 0;
  }
  ~RawMode() {
    if (ok_) tcsetattr(fd_, TCSAFLUSH, &saved_);
  }
  RawMode(const RawMode&) = delete;
  RawMode& operator=(const RawMode&) = delete;

 private:
  int fd_;
  bool ok_;
  termios saved_{};
};

}  // namespace

void LineBuffer::left() {
  while (cursor_ > 0) {
    --cursor_;
    if (!continuation(static_cast<unsigned char>(text_[cursor_]))) break;
  }
}

void LineBuffer::right() {
  if (cursor_ < text_.size()) ++cursor_;
  while (cursor_ < text_.size() && continuation(static_cast<unsigned char>(text_[cursor_]))) ++cursor_;
}

// step -1: the older entry (Up), +1: the newer one (Down); past the newest is the line being typed.
void LineBuffer::recall(int step) {
  if (!history_ || history_->empty()) return;
  const size_t n = history_->size();
  size_t at = shown_ == static_cast<size_t>(-1) ? n : shown_;
  if (step < 0 && at == 0) return;
  if (step > 0 && at == n) return;
  if (at == n) draft_ = text_;
  at = step < 0 ? at - 1 : at + 1;
  shown_ = at == n ? static_cast<size_t>(-1) : at;
  text_ = at == n ? draft_ : (*history_)[at];
  cursor_ = text_.size();
}

void LineBuffer::escape(const std::string& seq) {
  // CSI (ESC [) and SS3 (ESC O) forms of the keys terminals send.
  if (seq == "[D" || seq == "OD") left();
  if (seq == "[C" || seq == "OC") right();
  if (seq == "[A" || seq == "OA") recall(-1);
  if (seq == "[B" || seq == "OB") recall(+1);
  if (seq == "[H" || seq == "OH" || seq == "[1~" || seq == "[7~") cursor_ = 0;
  if (seq == "[F" || seq == "OF" || seq == "[4~" || seq == "[8~") cursor_ = text_.size();
  if (seq == "[3~" && cursor_ < text_.size()) {
    const size_t at = cursor_;
    right();
    text_.erase(at, cursor_ - at);
    cursor_ = at;
  }
}

LineBuffer::Result LineBuffer::feed(unsigned char c) {
  if (!in_esc_) return key(c);
  esc_ += static_cast<char>(c);
  if (esc_.size() == 1) {
    if (c != '[' && c != 'O') in_esc_ = false;  // Alt+key or a lone Escape: dropped
    return Result::Editing;
  }
  // ESC O and one byte, or ESC [ parameters and a final byte (0x40-0x7E).
  if (esc_[0] == 'O' || (c >= 0x40 && c <= 0x7E)) {
    in_esc_ = false;
    escape(esc_);
  } else if (esc_.size() > 32) {
    in_esc_ = false;  // a runaway sequence: give the keys back to the line
  }
  return Result::Editing;
}

LineBuffer::Result LineBuffer::key(unsigned char c) {
  switch (c) {
    case '\r':
    case '\n': return Result::Done;
    case 0x03: return Result::Interrupt;  // Ctrl-C
    case 0x04:                            // Ctrl-D: end of input on an empty line, else Delete
      if (text_.empty()) return Result::Eof;
      escape("[3~");
      return Result::Editing;
    case 0x1B:
      in_esc_ = true;
      esc_.clear();
      return Result::Editing;
    case 0x7F:
    case 0x08:  // Backspace
      if (cursor_ > 0) {
        const size_t end = cursor_;
        left();
        text_.erase(cursor_, end - cursor_);
      }
      return Result::Editing;
    case 0x01: cursor_ = 0; return Result::Editing;             // Ctrl-A
    case 0x05: cursor_ = text_.size(); return Result::Editing;  // Ctrl-E
    case 0x02: left(); return Result::Editing;                  // Ctrl-B
    case 0x06: right(); return Result::Editing;                 // Ctrl-F
    case 0x10: recall(-1); return Result::Editing;              // Ctrl-P
    case 0x0E: recall(+1); return Result::Editing;              // Ctrl-N
    case 0x0B: text_.erase(cursor_); return Result::Editing;    // Ctrl-K: to the end
    case 0x15:                                                  // Ctrl-U: to the start
      text_.erase(0, cursor_);
      cursor_ = 0;
      return Result::Editing;
    case 0x17: {  // Ctrl-W: the word before the cursor
      size_t at = cursor_;
      while (at > 0 && text_[at - 1] == ' ') --at;
      while (at > 0 && text_[at - 1] != ' ') --at;
      text_.erase(at, cursor_ - at);
      cursor_ = at;
      return Result::Editing;
    }
    default:
      if (c < 0x20) return Result::Editing;  // other control keys do nothing
      text_.insert(cursor_, 1, static_cast<char>(c));
      ++cursor_;
      return Result::Editing;
  }
}

LineEditor::LineEditor(int in_fd, int out_fd) : in_(in_fd), out_(out_fd), editing_(isatty(in_fd) == 1) {}

std::optional<std::string> LineEditor::read_plain() {
  std::string line;
  char c;
  while (true) {
    const ssize_t n = ::read(in_, &c, 1);
    if (n < 0 && errno == EINTR) {
      interrupted_ = true;  // a signal (Ctrl-C) while waiting for the line
      return std::nullopt;
    }
    if (n <= 0) return line.empty() ? std::nullopt : std::optional<std::string>(line);
    if (c == '\n') return line;
    line += c;
  }
}

void LineEditor::redraw(const std::string& prompt, const LineBuffer& b) {
  std::string s = "\r" + prompt + b.text() + "\x1b[K";
  const size_t back = columns(b.text(), b.cursor(), b.text().size());
  if (back > 0) s += "\x1b[" + std::to_string(back) + "D";
  write_all(out_, s);
}

std::optional<std::string> LineEditor::read(const std::string& prompt) {
  interrupted_ = false;
  if (!editing_) {
    write_all(out_, prompt);
    return read_plain();
  }
  RawMode raw(in_);
  LineBuffer b(&history_);
  redraw(prompt, b);
  while (true) {
    unsigned char c;
    const ssize_t n = ::read(in_, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      write_all(out_, "\n");
      return std::nullopt;
    }
    switch (b.feed(c)) {
      case LineBuffer::Result::Editing: redraw(prompt, b); break;
      case LineBuffer::Result::Done:
        write_all(out_, "\n");
        if (!b.text().empty() && (history_.empty() || history_.back() != b.text())) history_.push_back(b.text());
        return b.text();
      case LineBuffer::Result::Eof: write_all(out_, "\n"); return std::nullopt;
      case LineBuffer::Result::Interrupt:
        write_all(out_, "^C\n");
        interrupted_ = true;
        return std::nullopt;
    }
  }
}

}  // namespace kestrel::cli
