// GGUF v3 writer: metadata in the order given, tensors laid out at `general.alignment` (default 32), data
// streamed tensor by tensor from a callback, so a quantizer never holds the whole model. The output is
// written to PATH.tmp and renamed into place only once complete: a failed write leaves nothing behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/gguf.h"

namespace kestrel {

class GgufWriter {
 public:
  // Fills `out` (exactly the tensor's bytes in its type) for the tensor added at that index.
  using Producer = std::function<void(std::vector<uint8_t>& out)>;

  // Replaces a key's value when it is already set (keeping its place), else appends it.
  void set(const std::string& key, GgufValue value);
  void add_tensor(std::string name, DType dtype, std::vector<int64_t> shape, Producer produce);

  // Writes the file; `progress(i, n)` hears after each of the n tensors. Throws kestrel::Error naming the
  // path when it can't write (the partial file is removed).
  void write(const std::string& path, const std::function<void(size_t, size_t)>& progress = {}) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    Producer produce;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Pending> tensors_;
};

}  // namespace kestrel
