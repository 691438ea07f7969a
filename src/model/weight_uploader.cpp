#include "model/weight_uploader.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "core/convert.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/int_codes.h"
#include "core/log.h"
#include "core/thread_pool.h"

namespace kestrel {
namespace {

// Conversion work is handed to the pool in pieces of about this many output bytes: enough of them per
// chunk that every thread gets a share, each large enough to stream.
constexpr size_t kUnitBytes = size_t{1} << 20;

// Two staging buffers: while the pool converts into one, the lane copies the other. Conversion is the
// slower side, so one copy in flight hides all of the copying.
constexpr int kStagingBuffers = 2;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

WeightUploader::WeightUploader(const ops::Context& ctx, Options options) : ctx_(ctx), options_(options) {
  KS_CHECK(options_.chunk_bytes > 0, "WeightUploader: the staging chunk must not be empty");
}

Tensor WeightUploader::add(DType dtype, std::initializer_list<const Tensor*> parts) {
  std::vector<Linear> linears;
  for (const Tensor* p : parts) linears.emplace_back(*p);
  return add_parts(dtype, linears);
}

Tensor WeightUploader::add(DType dtype, std::initializer_list<const Linear*> parts) {
  std::vector<Linear> linears;
  for (const Linear* p : parts) {
    KS_CHECK(p->layout == WeightLayout::Rows, "placing {}: its layout is a kernel's own", p->describe());
    linears.push_back(*p);
  }
  return add_parts(dtype, linears);
}

Linear WeightUploader::add_grouped(std::initializer_list<const Linear*> parts, LinearId id) {
  const Linear& first = **parts.begin();
  KS_CHECK(first.grouped(), "placing {} as grouped: it is not", first.describe());
  // Each tensor travels in its own type, so its rows are copied (convert_rows of a type to itself). A code
  // matrix is wrapped as the bare weight of a Linear without groups here only to be copied: nothing reads
  // it as values.
  auto copied = [&](auto field) {
    std::vector<Linear> ts;
    for (const Linear* p : parts) {
      KS_CHECK(p->weight.dtype == first.weight.dtype && p->grouped() && p->layout == WeightLayout::Rows,
               "cannot stack {} with {} as grouped weights", p->describe(), first.describe());
      Linear raw;
      raw.weight = field(*p);
      ts.push_back(std::move(raw));
    }
    return add_parts(ts.front().weight.dtype, ts);
  };
  IntGroups g;
  g.group_size = first.groups.group_size;
  g.scales = copied([](const Linear& l) { return l.groups.scales; });
  if (!first.groups.zeros.empty()) g.zeros = copied([](const Linear& l) { return l.groups.zeros; });
  if (!first.groups.g_idx.empty()) g.g_idx = add(DType::I32, {&first.groups.g_idx});
  return Linear::grouped(copied([](const Linear& l) { return l.weight; }), std::move(g), id);
}

Linear WeightUploader::add_scaled(std::initializer_list<const Linear*> parts, LinearId id) {
  std::vector<Linear> codes, scales;
  for (const Linear* p : parts) {
    KS_CHECK(p->scaled() && p->weight.dtype == (*parts.begin())->weight.dtype && p->layout == WeightLayout::Rows,
             "cannot stack {} with {} as W8A8 weights", p->describe(), (*parts.begin())->describe());
    Linear c, s;  // bare tensors wrapped only to be copied in their own types
    c.weight = p->weight;
    s.weight = p->channel_scales;
    codes.push_back(std::move(c));
    scales.push_back(std::move(s));
  }
  Tensor w = add_parts(codes.front().weight.dtype, codes);
  return Linear::scaled(std::move(w), add_parts(DType::F32, scales), id);
}

Tensor WeightUploader::add_parts(DType dtype, const std::vector<Linear>& parts) {
  KS_CHECK(!parts.empty(), "WeightUploader::add: nothing to place");
  const Tensor& first = parts.front().weight;
  const bool vectors = first.ndim() == 1;
  int64_t rows = 0;
  for (const Linear& l : parts) {
    const Tensor* p = &l.weight;
    KS_CHECK(!p->empty() && p->device == Device::Cpu, "placing {}: expected a host tensor", p->describe());
    KS_CHECK(p->ndim() == first.ndim() && (vectors || p->cols() == first.cols()),
             "cannot stack {} with {}: they differ in rank or width", p->describe(), first.describe());
    KS_CHECK(l.dense() || !is_code_type(dtype), "placing {} as {}: grouped weights are decoded to a float type",
             l.describe(), dtype_name(dtype));
    rows += vectors ? p->numel() : p->rows();
  }
  std::vector<int64_t> shape = first.shape;
  if (parts.size() > 1) shape = vectors ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, first.cols()};
  Tensor dst = ctx_.lane().allocate(dtype, std::move(shape));
  size_t offset = 0;
  for (const Linear& l : parts) {
    const size_t out_row = row_bytes(dtype, l.weight.cols());
    const size_t bytes = static_cast<size_t>(l.weight.rows()) * out_row;
    if (bytes > 0) pieces_.push_back(Piece{l, dst, offset, out_row});
    offset += bytes;
  }
  total_bytes_ += static_cast<int64_t>(offset);
  return dst;
}

void WeightUploader::convert(const std::vector<Span>& spans, char* staging) const {
  // Split the spans into units of whole rows that the pool's threads take in contiguous runs.
  struct Unit {
    const Piece* piece;
    int64_t row, rows;
    char* out;
  };
  std::vector<Unit> units;
  for (const Span& s : spans) {
    const int64_t step = std::max<int64_t>(1, static_cast<int64_t>(kUnitBytes / s.piece->out_row));
    for (int64_t r = 0; r < s.rows; r += step)
      units.push_back(Unit{s.piece, s.row + r, std::min(step, s.rows - r),
                           staging + s.offset + static_cast<size_t>(r) * s.piece->out_row});
  }
  ctx_.threads().parallel_for(static_cast<int64_t>(units.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Unit& u = units[i];
      const Linear& src = u.piece->src;
      const DType to = u.piece->dst.dtype;
      if (src.dense()) {
        convert_rows(src.weight.dtype, src.weight.row(u.row), to, u.out, u.rows, src.weight.cols());
        continue;
      }
      // Grouped integer rows: decoded to f32, then to the destination type (as convert_rows does).
      thread_local std::vector<float> row;
      row.resize(static_cast<size_t>(src.in_features()));
      for (int64_t r = 0; r < u.rows; ++r) {
        dequantize_row(src, u.row + r, row.data());
        quantize_row(to, row.data(), u.out + static_cast<size_t>(r) * u.piece->out_row, src.in_features());
      }
    }
  });
}

void WeightUploader::run(const PlaceProgress& progress) {
  if (pieces_.empty()) return;
  ops::Runtime& lane = ctx_.lane();
  const auto t0 = std::chrono::steady_clock::now();
  // No larger than the whole (small models), no smaller than the widest row.
  size_t capacity = std::min(options_.chunk_bytes, static_cast<size_t>(total_bytes_));
  for (const Piece& p : pieces_) capacity = std::max(capacity, p.out_row);

  struct Stage {
    std::unique_ptr<ops::HostBuffer> buffer;
    std::unique_ptr<ops::Event> copied;  // the lane has read the buffer
  };
  // Outside the try block: the buffers must outlive the copies still reading them when an error unwinds.
  std::vector<Stage> stages(kStagingBuffers);
  double convert_s = 0, wait_s = 0;
  try {
    size_t piece = 0;
    int64_t row = 0, done = 0;
    for (int chunk = 0; piece < pieces_.size(); ++chunk) {
      Stage& stage = stages[chunk % kStagingBuffers];
      const auto t_wait = std::chrono::steady_clock::now();
      if (!stage.buffer)
        stage.buffer = lane.host_buffer(capacity);
      else
        stage.copied->wait();
      wait_s += seconds_since(t_wait);

      // Whole rows, in order, until the buffer is full.
      std::vector<Span> spans;
      size_t used = 0;
      while (piece < pieces_.size()) {
        const Piece& p = pieces_[piece];
        const int64_t rows =
            std::min<int64_t>(p.src.weight.rows() - row, static_cast<int64_t>((capacity - used) / p.out_row));
        if (rows == 0) break;
        spans.push_back(Span{&p, row, rows, used});
        used += static_cast<size_t>(rows) * p.out_row;
        row += rows;
        if (row == p.src.weight.rows()) ++piece, row = 0;
      }

      const auto t_convert = std::chrono::steady_clock::now();
      char* staging = static_cast<char*>(stage.buffer->data());
      convert(spans, staging);
      convert_s += seconds_since(t_convert);
      for (const Span& s : spans)
        lane.copy_async(
            static_cast<char*>(s.piece->dst.data) + s.piece->dst_offset + static_cast<size_t>(s.row) * s.piece->out_row,
            staging + s.offset, static_cast<size_t>(s.rows) * s.piece->out_row);
      stage.copied = lane.record();
      done += static_cast<int64_t>(used);
      if (progress) progress(done, total_bytes_);
    }
  } catch (...) {
    lane.synchronize();
    throw;
  }
  const auto t_sync = std::chrono::steady_clock::now();
  lane.synchronize();
  wait_s += seconds_since(t_sync);

  log::debug("placing {:.2f} GB took {:.2f} s: {:.2f} s converting on {} threads, {:.2f} s waiting for the lane",
             static_cast<double>(total_bytes_) / 1e9, seconds_since(t0), convert_s, ctx_.threads().size(), wait_s);
  pieces_.clear();
  total_bytes_ = 0;
}

}  // namespace kestrel
