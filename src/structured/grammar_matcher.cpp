#include "structured/grammar_matcher.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace kestrel::structured {
namespace {

constexpr uint32_t kUnknown = 0xFFFFFFFFu;
constexpr uint32_t kCutPos = 0xFFFFFFFEu;  // a cut marker's node: (kCutPos, marker index)
constexpr uint32_t kEmptyStack = 0;
// Frames a mask's context keeps (the top one and its caller): enough to hold a string's or a number's
// whole body, few enough that the counters of enclosing repetitions stay out of the key.
constexpr int kContextFrames = 3;
// A grammar whose configurations multiply past these is too ambiguous to run (each state would be slow).
constexpr size_t kMaxStacksPerState = 20000;
constexpr size_t kMaxStates = 1u << 20;
constexpr size_t kMaskCacheBytes = size_t{256} << 20;

bool has(const ByteSet& s, uint8_t b) {
  return (s[b >> 6] >> (b & 63)) & 1;
}

}  // namespace

Automaton::Automaton(std::shared_ptr<const Grammar> grammar) : g_(std::move(grammar)) {
  nodes_.push_back({kUnknown, kUnknown});
  states_.emplace_back();  // dead
  accepting_.push_back(0);
  open_.push_back(0);
  has_cut_.push_back(0);
  next_.assign(256, kDead);
  std::vector<uint32_t> stacks;
  for (uint32_t alt : g_->rules[g_->root]) closure(node(alt, kEmptyStack), stacks);
  start_ = intern(stacks);
}

uint32_t Automaton::node(uint32_t pos, uint32_t below) {
  const uint64_t key = (uint64_t{pos} << 32) | below;
  auto [it, fresh] = node_ids_.try_emplace(key, static_cast<uint32_t>(nodes_.size()));
  if (fresh) nodes_.push_back({pos, below});
  return it->second;
}

void Automaton::closure(uint32_t start, std::vector<uint32_t>& out) {
  work_.assign(1, start);
  while (!work_.empty()) {
    const uint32_t n = work_.back();
    work_.pop_back();
    if (seen_.size() < nodes_.size()) seen_.resize(nodes_.size() * 2, 0);
    if (seen_[n]) continue;
    seen_[n] = 1;
    seen_list_.push_back(n);
    const Node nd = nodes_[n];
    if (n == kEmptyStack || nd.pos == kCutPos) {
      out.push_back(n);
      continue;
    }
    const Element& e = g_->elements[nd.pos];
    if (e.kind == Element::Bytes) {
      out.push_back(n);
    } else if (e.kind == Element::End) {
      work_.push_back(nd.below);
    } else {
      // The return frame: the element after the call, or (a tail call) the caller's own return frame.
      const uint32_t ret = g_->elements[nd.pos + 1].kind == Element::End ? nd.below : node(nd.pos + 1, nd.below);
      for (uint32_t alt : g_->rules[e.index]) work_.push_back(node(alt, ret));
    }
    if (seen_list_.size() > kMaxStacksPerState) {
      for (uint32_t m : seen_list_) seen_[m] = 0;
      seen_list_.clear();
      KS_FAIL("grammar: more than {} parses are alive at once; the grammar is too ambiguous to run",
              kMaxStacksPerState);
    }
  }
}

uint32_t Automaton::intern(std::vector<uint32_t>& stacks) {
  for (uint32_t n : seen_list_) seen_[n] = 0;
  seen_list_.clear();
  if (stacks.empty()) return kDead;
  std::sort(stacks.begin(), stacks.end());
  stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
  std::string key(reinterpret_cast<const char*>(stacks.data()), stacks.size() * sizeof(uint32_t));
  auto [it, fresh] = state_ids_.try_emplace(std::move(key), static_cast<uint32_t>(states_.size()));
  if (fresh) {
    KS_CHECK(states_.size() < kMaxStates,
             "grammar: more than {} distinct parse states; the output is too deeply nested", kMaxStates);
    bool acc = false, open = false, cut = false;
    for (uint32_t n : stacks) (n == kEmptyStack ? acc : nodes_[n].pos == kCutPos ? cut : open) = true;
    states_.push_back(stacks);
    accepting_.push_back(acc);
    open_.push_back(open);
    has_cut_.push_back(cut);
    next_.resize(states_.size() * 256, kUnknown);
  }
  return it->second;
}

uint32_t Automaton::advance(uint32_t state, uint8_t byte) {
  uint32_t& t = next_[size_t{state} * 256 + byte];
  if (t != kUnknown) return t;
  std::vector<uint32_t> stacks;
  // states_ may grow (and move) while closures run: iterate over a copy of the stack list.
  const std::vector<uint32_t> from = states_[state];
  for (uint32_t n : from) {
    const Node nd = nodes_[n];
    if (n == kEmptyStack || nd.pos == kCutPos) continue;
    if (has(g_->byte_sets[g_->elements[nd.pos].index], byte)) closure(node(nd.pos + 1, nd.below), stacks);
  }
  const uint32_t r = intern(stacks);
  next_[size_t{state} * 256 + byte] = r;  // `t` may dangle: next_ grew
  return r;
}

uint32_t Automaton::advance(uint32_t state, std::string_view bytes) {
  for (char c : bytes) {
    if (state == kDead) break;
    state = advance(state, static_cast<uint8_t>(c));
  }
  return state;
}

uint32_t Automaton::truncate(uint32_t state, int frames, std::vector<uint32_t>& cut_below,
                             const std::vector<uint32_t>* canon) {
  cut_below.clear();
  std::vector<uint32_t> out, chain;
  const std::vector<uint32_t> stacks = states_[state];
  for (uint32_t n : stacks) {
    chain.clear();
    uint32_t m = n;
    while (static_cast<int>(chain.size()) < frames && m != kEmptyStack && nodes_[m].pos != kCutPos) {
      chain.push_back(m);
      m = nodes_[m].below;
    }
    if (m == kEmptyStack || nodes_[m].pos == kCutPos) {  // short enough to keep whole
      out.push_back(n);
      continue;
    }
    const auto j = static_cast<uint32_t>(std::find(cut_below.begin(), cut_below.end(), m) - cut_below.begin());
    if (j == cut_below.size()) cut_below.push_back(m);
    uint32_t b = node(kCutPos, j);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const uint32_t pos = nodes_[*it].pos;
      b = node(canon ? (*canon)[pos] : pos, b);
    }
    out.push_back(b);
  }
  return intern(out);
}

void Automaton::cuts(uint32_t state, std::vector<uint32_t>& markers) const {
  markers.clear();
  for (uint32_t n : states_[state])
    if (n != kEmptyStack && nodes_[n].pos == kCutPos) markers.push_back(nodes_[n].below);
}

uint32_t Automaton::state_of_node(uint32_t n) {
  if (auto it = node_states_.find(n); it != node_states_.end()) return it->second;
  std::vector<uint32_t> stacks;
  closure(n, stacks);
  const uint32_t s = intern(stacks);
  node_states_.emplace(n, s);
  return s;
}

bool grammar_accepts(const Grammar& g, std::string_view text) {
  Automaton a(std::shared_ptr<const Grammar>(&g, [](const Grammar*) {}));
  return a.accepting(a.advance(a.start(), text));
}

bool grammar_accepts_prefix(const Grammar& g, std::string_view text) {
  Automaton a(std::shared_ptr<const Grammar>(&g, [](const Grammar*) {}));
  return a.advance(a.start(), text) != Automaton::kDead;
}

Vocabulary::Vocabulary(std::vector<std::string> bytes, std::vector<Kind> kind)
    : bytes_(std::move(bytes)), kind_(std::move(kind)) {
  KS_CHECK(bytes_.size() == kind_.size(), "vocabulary: {} token texts but {} kinds", bytes_.size(), kind_.size());
  for (size_t t = 0; t < bytes_.size(); ++t) {
    if (kind_[t] == Text && bytes_[t].empty()) kind_[t] = Never;  // matches nothing, would loop forever
    if (kind_[t] == Text) {
      sorted_.push_back(static_cast<int32_t>(t));
      max_bytes_ = std::max(max_bytes_, bytes_[t].size());
    }
    if (kind_[t] == EndOfGeneration) eog_.push_back(static_cast<int32_t>(t));
  }
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  // Preorder trie from the sorted strings: the path to the previous string is kept open; each string
  // closes the nodes below its common prefix with that path and opens its own tail.
  auto add_node = [&](uint8_t b, size_t depth) {
    byte_.push_back(b);
    depth_.push_back(static_cast<uint16_t>(depth));
    end_.push_back(0);
    tok_begin_.push_back(0);
    tok_end_.push_back(0);
    return static_cast<uint32_t>(byte_.size() - 1);
  };
  std::vector<uint32_t> path{add_node(0, 0)};
  std::string open;
  for (size_t k = 0; k < sorted_.size(); ++k) {
    const std::string& s = bytes_[sorted_[k]];
    KS_CHECK(s.size() < 65535, "vocabulary: token {} is {} bytes long", sorted_[k], s.size());
    size_t lcp = 0;
    while (lcp < s.size() && lcp < open.size() && s[lcp] == open[lcp]) ++lcp;
    while (open.size() > lcp) {
      end_[path.back()] = static_cast<uint32_t>(byte_.size());
      path.pop_back();
      open.pop_back();
    }
    for (size_t j = lcp; j < s.size(); ++j) {
      path.push_back(add_node(static_cast<uint8_t>(s[j]), j + 1));
      open += s[j];
    }
    const uint32_t at = path.back();
    if (tok_end_[at] == 0) tok_begin_[at] = static_cast<uint32_t>(k);
    tok_end_[at] = static_cast<uint32_t>(k + 1);
  }
  for (uint32_t n : path) end_[n] = static_cast<uint32_t>(byte_.size());
}

TokenConstraint::TokenConstraint(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const Vocabulary> vocab)
    : automaton_(grammar), vocab_(std::move(vocab)), start_(automaton_.start()) {
  const Grammar& g = *grammar;
  canon_.resize(g.elements.size());
  std::iota(canon_.begin(), canon_.end(), 0u);
  for (const Grammar::Repetition& rep : g.repetitions) {
    if (rep.item_min_bytes == 0) continue;  // an empty item: the count never matters
    const size_t keep = vocab_->max_bytes_ / rep.item_min_bytes + 2;
    for (size_t k = keep + 1; k <= rep.chain.size(); ++k) {
      const auto& from = g.rules[rep.chain[k - 1]];
      const auto& to = g.rules[rep.chain[keep - 1]];
      for (size_t a = 0; a < from.size() && a < to.size(); ++a)
        for (uint32_t off = 0;; ++off) {
          canon_[from[a] + off] = to[a] + off;
          if (g.elements[from[a] + off].kind == Element::End) break;
        }
    }
  }
}

template <typename Visit>
void TokenConstraint::walk(uint32_t x, uint32_t state, TokenMask& m, Visit&& visit) {
  const Vocabulary& v = *vocab_;
  const uint16_t d0 = v.depth_[x];
  walk_.assign(1, state);
  for (uint32_t i = x + 1; i < v.end_[x];) {  // preorder: a subtree is a range of nodes
    const uint16_t d = v.depth_[i] - d0;
    const uint32_t s = automaton_.advance(walk_[d - 1], v.byte_[i]);
    if (s == Automaton::kDead) {
      i = v.end_[i];
      continue;
    }
    for (uint32_t k = v.tok_begin_[i]; k < v.tok_end_[i]; ++k) {
      const int32_t t = v.sorted_[k];
      m[t >> 5] |= 1u << (t & 31);
    }
    visit(i, s);
    if (!automaton_.open(s)) {
      i = v.end_[i];
      continue;
    }
    if (walk_.size() <= d) walk_.resize(d + 1);
    walk_[d] = s;
    ++i;
  }
}

const TokenConstraint::Context& TokenConstraint::context(uint32_t truncated) {
  if (auto it = contexts_.find(truncated); it != contexts_.end()) return it->second;
  const Vocabulary& v = *vocab_;
  Context c;
  c.accepted.assign((static_cast<size_t>(v.size()) + 31) / 32, 0u);
  walk(0, truncated, c.accepted, [&](uint32_t i, uint32_t s) {
    if (automaton_.has_cut(s) && v.end_[i] > i + 1) {  // longer tokens continue in the cut-off frames
      automaton_.cuts(s, markers_);
      for (uint32_t j : markers_) c.escapes.emplace_back(i, j);
    }
  });
  cache_bytes_ += c.accepted.size() * 4 + c.escapes.size() * 8;
  return contexts_.emplace(truncated, std::move(c)).first->second;
}

std::shared_ptr<const TokenMask> TokenConstraint::mask(uint32_t state) {
  std::lock_guard lock(mu_);
  if (auto it = masks_.find(state); it != masks_.end()) return it->second;
  const Vocabulary& v = *vocab_;
  auto m = std::make_shared<TokenMask>((static_cast<size_t>(v.size()) + 31) / 32, 0u);
  if (state != Automaton::kDead) {
    if (cache_bytes_ > kMaskCacheBytes) {
      masks_.clear();
      contexts_.clear();
      cache_bytes_ = 0;
    }
    const uint32_t truncated = automaton_.truncate(state, kContextFrames, cut_below_, &canon_);
    const Context& c = context(truncated);
    *m = c.accepted;
    const std::vector<uint32_t> below = cut_below_;
    for (auto [x, j] : c.escapes) walk(x, automaton_.state_of_node(below[j]), *m, [](uint32_t, uint32_t) {});
    if (automaton_.accepting(state))
      for (int32_t t : v.eog_) (*m)[t >> 5] |= 1u << (t & 31);
  }
  cache_bytes_ += m->size() * 4;
  masks_.emplace(state, m);
  return m;
}

uint32_t TokenConstraint::next(uint32_t state, int32_t token) {
  std::lock_guard lock(mu_);
  KS_CHECK(token >= 0 && token < vocab_->size(), "constraint: token {} outside the vocabulary", token);
  switch (vocab_->kind(token)) {
    case Vocabulary::Text: return automaton_.advance(state, vocab_->bytes(token));
    case Vocabulary::EndOfGeneration: return automaton_.accepting(state) ? state : Automaton::kDead;
    default: return Automaton::kDead;
  }
}

TokenConstraint::Stats TokenConstraint::stats() {
  std::lock_guard lock(mu_);
  return {automaton_.states(), contexts_.size(), masks_.size()};
}

bool TokenConstraint::accepting(uint32_t state) {
  std::lock_guard lock(mu_);
  return automaton_.accepting(state);
}

bool TokenConstraint::finished(uint32_t state) {
  std::lock_guard lock(mu_);
  return automaton_.accepting(state) && !automaton_.open(state);
}

}  // namespace kestrel::structured
