// Causal prefill attention over the paged bf16 KV cache, FlashAttention-2 style: a block owns 128 query
// rows of one head (4 warps x 32 rows), streams 64-key tiles of K and V through double-buffered shared
// memory (cp.async, gathered through the block table), computes S = Q K^T and O += P V on tensor cores
// (mma.sync m16n8k16, bf16 in / f32 accumulate) and keeps the softmax online in registers, so neither S
// nor P ever leaves the chip. Shared-memory rows are XOR-swizzled in 16-byte chunks so ldmatrix reads
// are bank-conflict free.
//
// What keeps the tensor cores fed:
// - Blocks run head-major with the longest (last) query tiles of each head first: the blocks resident at
//   any moment then read the K/V of one or two KV heads (16 MB each at 32K), which stay in L2, and the
//   short tiles fill the tail.
// - One __syncthreads per key tile: the barrier that publishes tile j also proves every warp is done with
//   tile j - 1, whose stage then receives tile j + 1 while tile j is computed.
// - The block-table lookups run a tile ahead (the page for tile j + 2 is loaded while tile j computes),
//   each lane resolves one key row and the 16-byte copies get their row's slot by shuffle.
// - The running max moves only when a row's max grows by more than kMaxSlack (log2 units), so most tiles
//   skip rescaling the output accumulators; P then stays below 2^kMaxSlack, harmless in f32 sums and in
//   bf16 (the final O / l is exact either way). The decision is per row, and key tiles start at absolute
//   positions, so a query row's result does not depend on where its prompt chunk starts or which rows
//   share its tile (batch invariance).
#include <cmath>

#include "backends/cuda/attention_codes.cuh"
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kBM = 128;  // query rows per block
constexpr int kBN = 64;   // keys per tile
constexpr int kMT = 2;    // m16 tiles per warp: each K/V fragment read from shared memory feeds two MMAs
constexpr int kWarps = kBM / (16 * kMT);
constexpr int kThreads = kWarps * 32;
constexpr float kMaxSlack = 8.f;
constexpr unsigned kFull = 0xffffffffu;

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of D-element bf16 rows.
template <int D>
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
  return row * (D * 2) + ((chunk ^ (row & 7)) << 4);
}

// Byte offset of the chunk that k-step kk (two 16-byte chunks per step) reads, given `lo`, the offset at
// kk = 0: the swizzled chunk is (2kk) ^ c0, i.e. lo XOR (kk << 5). Chunk bit 3 is never set in `lo` (its
// chunk c0 < 8 sits in bits 4..6, and rows start at multiples of 256 bytes whenever kk reaches 4), so that
// bit of the XOR is an add, which folds into the ldmatrix immediate and leaves four distinct registers.
__device__ __forceinline__ uint32_t kstep(uint32_t lo, int kk) {
  return (lo ^ ((kk & 3) << 5)) + (kk >> 2) * 128;
}

// Pairwise reduction of N (a power of two) values: log2(N) dependent steps instead of N - 1.
template <int N, typename Op>
__device__ __forceinline__ float tree_reduce(float (&v)[N], Op op) {
#pragma unroll
  for (int w = N / 2; w >= 1; w /= 2)
#pragma unroll
    for (int i = 0; i < w; ++i) v[i] = op(v[i], v[i + w]);
  return v[0];
}

// Code pages (kCode >= 0, a quant::KvCode): thread t stages half t % 2 of key row t / 2 of a tile's K and V
// codes in shared memory (kThreads pieces per slice, so a warp's reads of one piece are contiguous) and
// decodes them into the f16 tiles the MMAs read.
template <int D, int kCode>
struct CodeTile {
  static constexpr quant::KvCode C = static_cast<quant::KvCode>(kCode < 0 ? 0 : kCode);
  static constexpr int E = D / 2;                                        // elements of a row a thread decodes
  static constexpr int CB = E * code_bits(C) / 8;                        // their code bytes (K or V)
  static constexpr int PS = CB < 16 ? CB : 16;                           // bytes per staged piece
  static constexpr int NP = CB / PS;                                     // pieces per row half
  static constexpr int kBytes = kCode < 0 ? 0 : 2 * NP * PS * kThreads;  // K and V staging
  static_assert(kThreads == 2 * kBN, "two threads per key row");
};

template <int D, int kCode>
constexpr size_t prefill_smem_bytes() {
  // Q + 2 stages of K and V (bf16, or the f16 that code pages decode to) + the code staging
  return sizeof(bf16) * (kBM * D + 4 * kBN * D) + CodeTile<D, kCode>::kBytes;
}

__device__ __forceinline__ float fast_exp2(float x) {  // MUFU.EX2; exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int D, int kCode>  // kCode < 0: bf16 pages; else the quant::KvCode of the code pages
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(const AttentionLaunch a) {
  constexpr bool kCodes = kCode >= 0;
  using CT = CodeTile<D, kCode>;
  constexpr int CH = D / 8;  // 16-byte chunks per row
  constexpr int kRowBytes = D * 2;
  constexpr int kTileBytes = kBN * kRowBytes;
  constexpr int RP = kThreads / CH;  // rows one copy pass of the block covers
  constexpr int NP = kBN / RP;       // copy passes per K/V tile
  static_assert(NP <= CH, "a lane of each CH-lane segment looks up the row of each pass");
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t q_s = smem_addr(smem);
  const uint32_t k_s = q_s + kBM * kRowBytes;
  const uint32_t v_s = k_s + 2 * kTileBytes;
  const uint32_t code_s = v_s + 2 * kTileBytes;         // code pages' staging (CodeTile)
  unsigned char* const tiles = smem + kBM * kRowBytes;  // the generic view of k_s for the decoded tiles

  const int tile = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int head = blockIdx.y, seq = blockIdx.z;
  const int q_begin = a.seq_info[seq * 3], q_len = a.seq_info[seq * 3 + 1], kv_len = a.seq_info[seq * 3 + 2];
  const int m0 = tile * kBM;
  if (m0 >= q_len) return;
  const int kvh = head / (a.n_heads / a.n_kv_heads);
  const int past = kv_len - q_len;  // query row i sits at position past + i and sees keys [0, past + i]
  const int kv_end = min(kv_len, past + m0 + kBM);
  const int n_kv_tiles = (kv_end + kBN - 1) / kBN;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // Copy layout: thread tid moves chunk tid % CH of rows tid / CH + i * RP, i < NP (rows per pass are a
  // multiple of 8, so the swizzle of every row a thread copies is the same).
  const int copy_row = tid / CH, copy_ch = tid % CH;
  const uint32_t copy_dst = swizzle<D>(copy_row, copy_ch);
  {
    const bf16* q = static_cast<const bf16*>(a.q);
    const float qs = a.scale * 1.4426950408889634f;
#pragma unroll
    for (int i = 0; i < kBM / RP; ++i) {
      const int row = m0 + copy_row + i * RP;
      const bool valid = row < q_len;
      const bf16* src = q + (static_cast<size_t>(q_begin + (valid ? row : 0)) * a.n_heads + head) * D + copy_ch * 8;
      if constexpr (kCodes) {  // f16 Q carrying the softmax scale (code pages decode to f16)
        *reinterpret_cast<uint4*>(smem + copy_dst + i * RP * kRowBytes) = valid ? scaled_f16x8(src, qs) : uint4{};
      } else {
        cp_async16(q_s + copy_dst + i * RP * kRowBytes, src, valid);
      }
    }
  }

  // Lane l resolves the key row that pass l % CH of its CH-lane segment copies (segments with l % CH >= NP
  // idle), so pass i reads the slot from lane i of the segment: a shuffle with an immediate lane.
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  const bool looks_up = copy_ch < NP;
  const int lookup_row = copy_row + RP * copy_ch;
  const unsigned bs = static_cast<unsigned>(a.block_size);
  int page = -1, in_page = 0;
  auto fetch_page = [&](int j) {
    const unsigned p = static_cast<unsigned>(j * kBN + lookup_row);
    page = -1;
    if (looks_up && p < static_cast<unsigned>(kv_end)) {
      page = table[p / bs];
      in_page = static_cast<int>(p % bs);
    }
  };
  const unsigned chunk_off = (kvh * D + copy_ch * 8) * sizeof(bf16);
  const unsigned slot_bytes = static_cast<unsigned>(a.n_kv_heads) * kRowBytes;
  auto issue_kv = [&](int stage) {  // copies the tile whose page fetch_page loaded last
    const int slot = page < 0 ? -1 : page * a.block_size + in_page;
    const uint32_t kd = k_s + stage * kTileBytes + copy_dst, vd = v_s + stage * kTileBytes + copy_dst;
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const int s = __shfl_sync(kFull, slot, i, CH);
      const bool valid = s >= 0;
      const uint64_t off = static_cast<uint64_t>(valid ? static_cast<unsigned>(s) : 0u) * slot_bytes + chunk_off;
      cp_async16(kd + i * RP * kRowBytes, static_cast<const char*>(a.k_cache) + off, valid);
      cp_async16(vd + i * RP * kRowBytes, static_cast<const char*>(a.v_cache) + off, valid);
    }
    cp_async_commit();
  };

  // Code pages: this thread's key row of tile j, as a cache row (slot * n_kv_heads + kvh), or -1 past kv_end.
  const int code_row = tid / 2, code_half = tid % 2;
  auto code_slot = [&](int j) {
    const unsigned p = static_cast<unsigned>(j * kBN + code_row);
    return p < static_cast<unsigned>(kv_end) ? (table[p / bs] * a.block_size + static_cast<int>(p % bs)) : -1;
  };
  constexpr int kCodeRowBytes = quant::kv_row_bytes(CT::C, D);
  auto issue_codes = [&](int slot) {
    const bool valid = slot >= 0;
    const size_t off =
        (static_cast<size_t>(valid ? slot : 0) * a.n_kv_heads + kvh) * kCodeRowBytes + code_half * CT::CB;
#pragma unroll
    for (int i = 0; i < CT::NP; ++i) {
      cp_async_n(code_s + (i * kThreads + tid) * CT::PS, static_cast<const char*>(a.k_cache) + off + i * CT::PS, CT::PS,
                 valid);
      cp_async_n(code_s + ((CT::NP + i) * kThreads + tid) * CT::PS,
                 static_cast<const char*>(a.v_cache) + off + i * CT::PS, CT::PS, valid);
    }
    cp_async_commit();
  };
  // Decodes the staged codes of cache row `slot` into stage `stage` (zeros past kv_end: masked keys).
  auto decode_codes = [&](int stage, int slot) {
    constexpr int P = quant::kv_params(CT::C);
    const int pb = param_row_bytes(CT::C, D, a.kv_group);
    const size_t prow = (static_cast<size_t>(slot < 0 ? 0 : slot) * a.n_kv_heads + kvh) * pb;
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const unsigned char* par = static_cast<const unsigned char*>(kv ? a.v_params : a.k_params) + prow;
      unsigned char* dst = tiles + (2 * kv + stage) * kTileBytes;
#pragma unroll
      for (int c = 0; c < CT::E / 8; ++c) {
        constexpr int kChunkBytes = code_bits(CT::C);  // 8 elements
        const int byte = c * kChunkBytes;
        const unsigned char* codes =
            smem + (code_s - q_s) + ((kv * CT::NP + byte / CT::PS) * kThreads + tid) * CT::PS + byte % CT::PS;
        const int e0 = code_half * CT::E + 8 * c;
        const __half2 dm = slot < 0 ? __half2half2(__float2half(0.f)) : load_dm<CT::C>(par + e0 / a.kv_group * P * 2);
        *reinterpret_cast<uint4*>(dst + swizzle<D>(code_row, e0 / 8)) = decode8<CT::C>(load_codes8<CT::C>(codes), dm);
      }
    }
  };
  int code_pending = -1, code_next = -1;  // rows of the tile staged and of the next to stage
  if constexpr (kCodes) {
    const int first = code_slot(0);
    issue_codes(first);
    code_pending = code_slot(1);
    cp_async_wait<0>();
    decode_codes(0, first);
    if (n_kv_tiles > 1) issue_codes(code_pending);
    code_next = code_slot(2);
  } else {
    fetch_page(0);
    issue_kv(0);  // the same group carries Q
    fetch_page(1);
  }

  float o[kMT][D / 8][4];
  float m_run[kMT][2], l_run[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m_run[mt][h] = -INFINITY;
      l_run[mt][h] = 0.f;
    }
  }
  const float scale_log2 = kCodes ? 1.f : a.scale * 1.4426950408889634f;  // code pages: Q carries it
  // Last visible key of accumulator row (mt, h): row warp*32 + mt*16 + lane/4 + 8h of the tile.
  const int lim0 = past + m0 + warp * 16 * kMT + lane / 4;
  const int warp_first_lim = past + m0 + warp * 16 * kMT, warp_last_lim = warp_first_lim + 16 * kMT - 1;
  const bool warp_has_rows = m0 + warp * 16 * kMT < q_len;

  // ldmatrix offsets at k-step 0 (see kstep).
  const int ld_row = lane % 8 + ((lane / 8) % 2) * 8;  // Q (A operand) and V (trans B operand)
  const uint32_t qv_lo = swizzle<D>(ld_row, lane / 16);
  const uint32_t q_base = q_s + warp * 16 * kMT * kRowBytes;
  const uint32_t k_lo = swizzle<D>(lane % 8 + (lane / 16) * 8, (lane / 8) % 2);

  for (int j = 0; j < n_kv_tiles; ++j) {
    if constexpr (kCodes) {
      __syncthreads();           // tile j is decoded, and nobody still reads stage (j + 1) & 1
      if (j + 1 < n_kv_tiles) {  // tile j + 1's codes landed while tile j - 1 was computed
        cp_async_wait<0>();
        decode_codes((j + 1) & 1, code_pending);
        if (j + 2 < n_kv_tiles) issue_codes(code_next);
        code_pending = code_next;
        code_next = code_slot(j + 3);
      }
    } else {
      cp_async_wait<0>();
      __syncthreads();  // tile j is visible to all, and nobody still reads stage (j + 1) & 1
      if (j + 1 < n_kv_tiles) {
        issue_kv((j + 1) & 1);
        fetch_page(j + 2);
      }
    }
    const int k0 = j * kBN;
    if (!warp_has_rows || k0 > warp_last_lim) continue;  // no rows, or every key is in the warp's future
    const uint32_t ks = k_s + (j & 1) * kTileBytes, vs = v_s + (j & 1) * kTileBytes;

    float s[kMT][kBN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qf[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(qf[mt], q_base + mt * 16 * kRowBytes + kstep(qv_lo, kk));
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, ks + np * 16 * kRowBytes + kstep(k_lo, kk));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<kCodes>(s[mt][2 * np], qf[mt], b[0], b[1]);
          mma_16816<kCodes>(s[mt][2 * np + 1], qf[mt], b[2], b[3]);
        }
      }
    }
    if (k0 + kBN - 1 > warp_first_lim) {  // the tile crosses the diagonal of some row: mask
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (k0 + nt * 8 + 2 * (lane % 4) + (e & 1) > lim0 + mt * 16 + 8 * (e / 2)) s[mt][nt][e] = -INFINITY;
    }

    float mx[kMT][2];
    bool grows[kMT][2], grow = false;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // h: row lo / row hi of the m16 tile
        float v[kBN / 8];
#pragma unroll
        for (int nt = 0; nt < kBN / 8; ++nt) v[nt] = fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]);
        float m = tree_reduce<kBN / 8>(v, [](float x, float y) { return fmaxf(x, y); });
        m = fmaxf(m, __shfl_xor_sync(kFull, m, 1));
        m = fmaxf(m, __shfl_xor_sync(kFull, m, 2));
        mx[mt][h] = m * scale_log2;
        grows[mt][h] = mx[mt][h] > m_run[mt][h] + kMaxSlack;  // always true for a first finite max (-inf + 8)
        grow |= grows[mt][h];
      }
    if (__any_sync(kFull, grow)) {  // warp-uniform, so skipping the rescale saves the instructions
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          // Only the rows that grew move their max: a row's arithmetic must not depend on which other
          // rows share its warp (they change with the chunking of a prompt; batch invariance).
          if (!grows[mt][h]) continue;
          const float m_new = fmaxf(m_run[mt][h], mx[mt][h]);
          const float corr = fast_exp2(m_run[mt][h] - (m_new == -INFINITY ? 0.f : m_new));
          m_run[mt][h] = m_new;
          l_run[mt][h] *= corr;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            o[mt][dt][2 * h] *= corr;
            o[mt][dt][2 * h + 1] *= corr;
          }
        }
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float base = m_run[mt][h] == -INFINITY ? 0.f : m_run[mt][h];
        float v[kBN / 8];
#pragma unroll
        for (int nt = 0; nt < kBN / 8; ++nt) {
          s[mt][nt][2 * h] = fast_exp2(fmaf(s[mt][nt][2 * h], scale_log2, -base));
          s[mt][nt][2 * h + 1] = fast_exp2(fmaf(s[mt][nt][2 * h + 1], scale_log2, -base));
          v[nt] = s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
        }
        l_run[mt][h] += tree_reduce<kBN / 8>(v, [](float x, float y) { return x + y; });
      }

#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t p[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        p[mt][0] = pack2<kCodes>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        p[mt][1] = pack2<kCodes>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        p[mt][2] = pack2<kCodes>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        p[mt][3] = pack2<kCodes>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vs + kk * 16 * kRowBytes + kstep(qv_lo, dp));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<kCodes>(o[mt][2 * dp], p[mt], b[0], b[1]);
          mma_16816<kCodes>(o[mt][2 * dp + 1], p[mt], b[2], b[3]);
        }
      }
    }
  }

  bf16* out = static_cast<bf16*>(a.out);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = l_run[mt][h];
      l += __shfl_xor_sync(kFull, l, 1);
      l += __shfl_xor_sync(kFull, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int row = lim0 + mt * 16 + 8 * h - past;
      if (row >= q_len) continue;
      bf16* dst = out + (static_cast<size_t>(q_begin + row) * a.n_heads + head) * D + 2 * (lane % 4);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack_bf16(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
    }
}

template <int D, int kCode>
void launch_typed(const AttentionLaunch& a, int max_q_len, cudaStream_t s) {
  constexpr size_t smem = prefill_smem_bytes<D, kCode>();
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<D, kCode>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  // x fastest: the hardware starts blocks in linear order, so all query tiles of a head (longest first)
  // run before the next head's.
  const dim3 grid((max_q_len + kBM - 1) / kBM, a.n_heads, a.n_seqs);
  prefill_kernel<D, kCode><<<grid, kThreads, smem, s>>>(a);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void launch_for(const AttentionLaunch& a, int max_q_len, cudaStream_t s) {
  constexpr int kFp8 = static_cast<int>(quant::KvCode::Fp8), kU8 = static_cast<int>(quant::KvCode::U8),
                kU4 = static_cast<int>(quant::KvCode::U4), kU2 = static_cast<int>(quant::KvCode::U2);
  switch (a.kv_t) {
    case DType::F8E4M3: return launch_typed<D, kFp8>(a, max_q_len, s);
    case DType::U8: return launch_typed<D, kU8>(a, max_q_len, s);
    case DType::U4: return launch_typed<D, kU4>(a, max_q_len, s);
    case DType::U2: return launch_typed<D, kU2>(a, max_q_len, s);
    default: return launch_typed<D, -1>(a, max_q_len, s);
  }
}

}  // namespace

const char* prefill_codes_decline(DType kv_t, int group) {
  quant::KvCode code;
  if (!quant::kv_code_of(kv_t, &code)) return "code pages of fp8, u8, u4 or u2";
  return group > 0 && group % 8 == 0 ? nullptr : "scale groups must be multiples of 8";
}

void launch_attention_prefill(const AttentionLaunch& a, int max_q_len, cudaStream_t s) {
  if (a.n_seqs == 0 || max_q_len == 0) return;
  if (a.head_dim == 128)
    launch_for<128>(a, max_q_len, s);
  else
    launch_for<64>(a, max_q_len, s);
}

}  // namespace kestrel::backends::cuda
