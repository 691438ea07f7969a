// Running a grammar (grammar.h) against generated tokens.
//
// `Automaton` is the grammar as a pushdown automaton over bytes whose configurations (the set of parse
// stacks still alive) are interned into state ids as they are reached, with a memoised transition per
// (state, byte): a DFA built lazily. Stacks are interned too (a stack is a node: its top position and
// the node below), so equal configurations get equal ids and a call in tail position reuses its
// caller's frame (right recursion such as `x*` stays flat).
//
// `TokenConstraint` pairs an automaton with a vocabulary (`Vocabulary`: the tokens' bytes in a trie) and
// gives each state its token mask. Masks are cached by context, not by state: bounded repetitions
// (a string's maxLength, an array's maxItems) put counters into the stacks, so exact states rarely
// repeat, but their top frames do. A state's stacks are cut below their top kContextFrames frames, the
// cut replaced by a marker; one walk of the trie from that truncated state (pruned where it dies) gives
// the tokens accepted within the kept frames, and records where a token's bytes pop past a cut (after a
// JSON string's closing quote, say). The exact mask is then the cached part plus those few subtrees,
// walked from the real frames below the cut (as XGrammar splits context-independent and -dependent
// tokens). A step costs a lookup and a few small walks; a whole-trie walk happens once per context.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "structured/grammar.h"

namespace kestrel::structured {

class Automaton {
 public:
  static constexpr uint32_t kDead = 0;  // no parse survives

  explicit Automaton(std::shared_ptr<const Grammar> grammar);

  uint32_t start() const { return start_; }
  uint32_t advance(uint32_t state, uint8_t byte);
  uint32_t advance(uint32_t state, std::string_view bytes);
  bool accepting(uint32_t state) const { return accepting_[state]; }  // some parse is complete
  bool open(uint32_t state) const { return open_[state]; }            // some parse expects more bytes
  size_t states() const { return states_.size(); }

  // `state` with each stack cut below its top `frames` frames: the cut becomes cut marker j, and
  // cut_below[j] is the real node there. Stacks no deeper than `frames` stay whole.
  // Kept frames' positions go through `canon` (when given): positions that act alike for every token.
  uint32_t truncate(uint32_t state, int frames, std::vector<uint32_t>& cut_below,
                    const std::vector<uint32_t>* canon = nullptr);
  // The cut markers in `state` (paths that popped past a cut, ending here).
  void cuts(uint32_t state, std::vector<uint32_t>& markers) const;
  bool has_cut(uint32_t state) const { return has_cut_[state]; }
  // The state of the stacks reachable from stack node `n` (what follows a cut).
  uint32_t state_of_node(uint32_t n);

 private:
  uint32_t node(uint32_t pos, uint32_t below);
  // The stacks reachable from `n` without consuming a byte, whose top expects a byte (or the empty stack).
  void closure(uint32_t n, std::vector<uint32_t>& out);
  uint32_t intern(std::vector<uint32_t>& stacks);

  std::shared_ptr<const Grammar> g_;
  struct Node {
    uint32_t pos, below;
  };
  std::vector<Node> nodes_;  // 0: the empty stack
  std::unordered_map<uint64_t, uint32_t> node_ids_;
  std::vector<std::vector<uint32_t>> states_;  // sorted stack nodes; 0: dead
  std::unordered_map<std::string, uint32_t> state_ids_;
  std::vector<uint8_t> accepting_, open_, has_cut_;
  std::unordered_map<uint32_t, uint32_t> node_states_;  // state_of_node() memo
  std::vector<uint32_t> next_;                          // [state * 256 + byte]; kUnknown until computed
  uint32_t start_ = 0;
  std::vector<uint32_t> work_;
  std::vector<uint8_t> seen_;  // per node, for closure()
  std::vector<uint32_t> seen_list_;
};

// A tokenizer's vocabulary as the constraint sees it.
class Vocabulary {
 public:
  enum Kind : uint8_t { Text, EndOfGeneration, Never };
  // bytes[t]: what token t decodes to; kind[t]: Text tokens are matched byte by byte, end-of-generation
  // tokens are allowed where the grammar can end, Never tokens (other special tokens) never are.
  Vocabulary(std::vector<std::string> bytes, std::vector<Kind> kind);

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  const std::string& bytes(int32_t t) const { return bytes_[t]; }
  Kind kind(int32_t t) const { return kind_[t]; }

 private:
  friend class TokenConstraint;
  std::vector<std::string> bytes_;
  std::vector<Kind> kind_;
  std::vector<int32_t> eog_;
  // The Text tokens' trie in preorder: node i's edge byte and depth, the end of its subtree, and the
  // tokens that end at it (sorted_[tok_begin_[i], tok_end_[i])). Node 0 is the root.
  std::vector<uint8_t> byte_;
  std::vector<uint16_t> depth_;
  std::vector<uint32_t> end_, tok_begin_, tok_end_;
  std::vector<int32_t> sorted_;
  size_t max_bytes_ = 0;  // the longest Text token
};

using TokenMask = std::vector<uint32_t>;  // bit (t & 31) of word t >> 5: token t is allowed

// Thread-safe: requests sharing a schema share one constraint (and its cached masks).
class TokenConstraint {
 public:
  TokenConstraint(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const Vocabulary> vocab);

  uint32_t start() const { return start_; }
  // The tokens allowed in `state`: Text tokens whose bytes keep a parse alive, and end-of-generation
  // tokens when a parse is complete.
  std::shared_ptr<const TokenMask> mask(uint32_t state);
  // The state after a Text token (Automaton::kDead when the grammar does not allow it); an
  // end-of-generation token leaves the state as it is when the grammar may end there, else kDead.
  uint32_t next(uint32_t state, int32_t token);
  bool accepting(uint32_t state);
  // Complete with nothing more allowed: generation is over.
  bool finished(uint32_t state);
  const Vocabulary& vocabulary() const { return *vocab_; }
  // What is cached: automaton states, mask contexts (each one whole-trie walk), exact masks.
  struct Stats {
    size_t states = 0, contexts = 0, masks = 0;
  };
  Stats stats();

 private:
  std::mutex mu_;
  Automaton automaton_;
  // The tokens accepted from a truncated state within its kept frames, and the trie nodes where a path
  // popped past cut `cut` (the tokens below them need the real frames).
  struct Context {
    TokenMask accepted;
    std::vector<std::pair<uint32_t, uint32_t>> escapes;  // (trie node, cut marker index)
  };
  const Context& context(uint32_t truncated);
  // Walks the trie below node `x` (0: all of it) from automaton state `state`, skipping subtrees where
  // every parse dies: marks the tokens of each node reached in `m` and calls visit(node, its state).
  template <typename Visit>
  void walk(uint32_t x, uint32_t state, TokenMask& m, Visit&& visit);

  std::shared_ptr<const Vocabulary> vocab_;
  uint32_t start_;
  // Element -> the element that acts the same for any one token: in a repetition chain opt_k with k
  // beyond what a token can use up (longest token / fewest bytes per item + 1), opt_k's positions map
  // to that opt's, so the counters of long repetitions stay out of the mask contexts.
  std::vector<uint32_t> canon_;
  std::unordered_map<uint32_t, std::shared_ptr<const TokenMask>> masks_;  // by exact state
  std::unordered_map<uint32_t, Context> contexts_;                        // by truncated state
  size_t cache_bytes_ = 0;
  std::vector<uint32_t> walk_;  // the state at each trie depth during a walk
  std::vector<uint32_t> cut_below_, markers_;
};

}  // namespace kestrel::structured
