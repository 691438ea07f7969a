// Moves host tensors (views of a mapped model file, mostly) to a lane's device, converting their element
// type on the way. The host work runs on the thread pool one chunk at a time into page-locked staging
// buffers, while the lane copies the previous chunk, so placing a model runs at the slower of conversion
// and the host-to-device link instead of their sum; stacked tensors (fused q/k/v) are written in place,
// part by part, with no host copy of the whole.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "ops/context.h"

namespace kestrel {

// Called with the bytes placed so far and in all, from the thread that places them.
using PlaceProgress = std::function<void(int64_t done_bytes, int64_t total_bytes)>;

class WeightUploader {
 public:
  struct Options {
    size_t chunk_bytes = size_t{64} << 20;  // per staging buffer (two of them)
  };

  explicit WeightUploader(const ops::Context& ctx) : WeightUploader(ctx, Options{}) {}
  WeightUploader(const ops::Context& ctx, Options options);

  // A tensor on the lane's device holding `parts` converted to `dtype` and stacked by rows (1-D parts are
  // concatenated); its contents arrive with run(). The parts must be host tensors of one rank and, above
  // rank 1, one width.
  Tensor add(DType dtype, std::initializer_list<const Tensor*> parts);
  // The same for linear weights: their matrices, decoded from a grouped integer format where they are in one
  // (a float or block `dtype` then; core/linear.h).
  Tensor add(DType dtype, std::initializer_list<const Linear*> parts);
  // Grouped integer linears kept in their format: the code rows, scales and zero points of `parts` stacked by
  // rows as they are, and the first part's g_idx. The parts must agree in code type and groups (one group
  // size, symmetry and g_idx: the caller checks, DecoderWeights::to_device).
  Linear add_grouped(std::initializer_list<const Linear*> parts, LinearId id);
  // W8A8 linears kept in their format: codes and channel scales of `parts` stacked by rows (one code type).
  Linear add_scaled(std::initializer_list<const Linear*> parts, LinearId id);

  // Converts and copies everything added so far, and waits until it is on the device.
  void run(const PlaceProgress& progress = {});

 private:
  Tensor add_parts(DType dtype, const std::vector<Linear>& parts);

  // One source matrix (a tensor is a dense linear) and where its converted rows go.
  struct Piece {
    Linear src;
    Tensor dst;         // the whole destination, kept alive until it is written
    size_t dst_offset;  // bytes into dst
    size_t out_row;     // bytes of one converted row
  };
  // Rows [row, row + rows) of one piece at `offset` in a staging buffer.
  struct Span {
    const Piece* piece;
    int64_t row, rows;
    size_t offset;
  };
  void convert(const std::vector<Span>& spans, char* staging) const;

  ops::Context ctx_;
  Options options_;
  std::vector<Piece> pieces_;
  int64_t total_bytes_ = 0;
};

}  // namespace kestrel
