// Causal prefill attention over the paged bf16 KV cache, FlashAttention-2 style: a block owns 128 query
// rows of one head (4 warps x 32 rows), streams 64-key tiles of K and V through double-buffered shared
// memory (cp.async, gathered through the block table), computes S = Q K^T and O += P V on tensor cores
// (mma.sync m16n8k16, bf16 in / f32 accumulate) and keeps the softmax online in registers, so neither S
// nor P ever leaves the chip. Shared-memory rows are XOR-swizzled in 16-byte chunks so ldmatrix reads
// are bank-conflict free.
#include <cmath>

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

template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

template <int D>
constexpr size_t prefill_smem_bytes() {
  return sizeof(bf16) * (kBM * D + 4 * kBN * D);  // Q + 2 stages of K and V
}

__device__ __forceinline__ float fast_exp2(float x) {  // MUFU.EX2; exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(const AttentionLaunch a, int n_tiles) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + kBM * D;
  bf16* v_s = k_s + 2 * kBN * D;

  const int head = blockIdx.x;
  const int tile = n_tiles - 1 - static_cast<int>(blockIdx.y);  // the longest (last) tiles start first
  const int seq = blockIdx.z;
  const int q_begin = a.seq_info[seq * 3], q_len = a.seq_info[seq * 3 + 1], kv_len = a.seq_info[seq * 3 + 2];
  const int m0 = tile * kBM;
  if (m0 >= q_len) return;
  const int kvh = head / (a.n_heads / a.n_kv_heads);
  const int past = kv_len - q_len;  // query row i sits at position past + i and sees keys [0, past + i]
  const int kv_end = min(kv_len, past + m0 + kBM);
  const int n_kv_tiles = (kv_end + kBN - 1) / kBN;
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  const bf16* kc = static_cast<const bf16*>(a.k_cache);
  const bf16* vc = static_cast<const bf16*>(a.v_cache);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  {
    const bf16* q = static_cast<const bf16*>(a.q);
    for (int c = tid; c < kBM * CH; c += kThreads) {
      const int r = c / CH, ch = c % CH, row = m0 + r;
      const bool valid = row < q_len;
      const bf16* src = q + (static_cast<size_t>(q_begin + (valid ? row : 0)) * a.n_heads + head) * D + ch * 8;
      cp_async16(smem_addr(q_s + swizzle<D>(r, ch)), src, valid);
    }
  }
  auto load_kv = [&](int stage, int j) {
    bf16* ks = k_s + stage * kBN * D;
    bf16* vs = v_s + stage * kBN * D;
    for (int c = tid; c < kBN * CH; c += kThreads) {
      const int r = c / CH, ch = c % CH, p = j * kBN + r;
      const bool valid = p < kv_end;
      size_t off = 0;
      if (valid) {
        const size_t slot = static_cast<size_t>(table[p / a.block_size]) * a.block_size + p % a.block_size;
        off = (slot * a.n_kv_heads + kvh) * D + ch * 8;
      }
      cp_async16(smem_addr(ks + swizzle<D>(r, ch)), kc + off, valid);
      cp_async16(smem_addr(vs + swizzle<D>(r, ch)), vc + off, valid);
    }
  };

  load_kv(0, 0);
  cp_async_commit();

  float o[kMT][D / 8][4];
  float m_run[kMT][2], l_run[kMT][2];
  // Last visible key of accumulator row (mt, h): row warp*32 + mt*16 + lane/4 + 8h of the tile.
  const int lim0 = past + m0 + warp * 16 * kMT + lane / 4;
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
  const float scale_log2 = a.scale * 1.4426950408889634f;
  const int warp_first_lim = past + m0 + warp * 16 * kMT, warp_last_lim = warp_first_lim + 16 * kMT - 1;

  for (int j = 0; j < n_kv_tiles; ++j) {
    if (j + 1 < n_kv_tiles) {
      load_kv((j + 1) & 1, j + 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int k0 = j * kBN;
    if (k0 <= warp_last_lim) {  // otherwise every key of this tile is in this warp's causal future
      const bf16* ks = k_s + (j & 1) * kBN * D;
      const bf16* vs = v_s + (j & 1) * kBN * D;
      float s[kMT][kBN / 8][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < kBN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qf[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          const int r = warp * 16 * kMT + mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          ldmatrix_x4(qf[mt], smem_addr(q_s + swizzle<D>(r, kk * 2 + lane / 16)));
        }
#pragma unroll
        for (int np = 0; np < kBN / 16; ++np) {
          uint32_t b[4];
          const int r = np * 16 + (lane % 8) + (lane / 16) * 8;
          ldmatrix_x4(b, smem_addr(ks + swizzle<D>(r, kk * 2 + (lane / 8) % 2)));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16_16816(s[mt][2 * np], qf[mt], b[0], b[1]);
            mma_bf16_16816(s[mt][2 * np + 1], qf[mt], b[2], b[3]);
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
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // h: row lo / row hi of the m16 tile
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < kBN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m_run[mt][h], mx * scale_log2);
          const float base = m_new == -INFINITY ? 0.f : m_new;
          const float corr = fast_exp2(m_run[mt][h] - base);
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < kBN / 8; ++nt) {
            s[mt][nt][2 * h] = fast_exp2(fmaf(s[mt][nt][2 * h], scale_log2, -base));
            s[mt][nt][2 * h + 1] = fast_exp2(fmaf(s[mt][nt][2 * h + 1], scale_log2, -base));
            sum += s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
          }
          l_run[mt][h] = l_run[mt][h] * corr + sum;
          m_run[mt][h] = m_new;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            o[mt][dt][2 * h] *= corr;
            o[mt][dt][2 * h + 1] *= corr;
          }
        }
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t p[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          p[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          p[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          p[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          p[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b[4];
          const int r = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          ldmatrix_x4_trans(b, smem_addr(vs + swizzle<D>(r, dp * 2 + lane / 16)));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16_16816(o[mt][2 * dp], p[mt], b[0], b[1]);
            mma_bf16_16816(o[mt][2 * dp + 1], p[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // the next iteration's loads overwrite the stage just read
  }

  bf16* out = static_cast<bf16*>(a.out);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = l_run[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int row = lim0 + mt * 16 + 8 * h - past;
      if (row >= q_len) continue;
      bf16* dst = out + (static_cast<size_t>(q_begin + row) * a.n_heads + head) * D + 2 * (lane % 4);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack_bf16(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
    }
}

template <int D>
void launch_typed(const AttentionLaunch& a, int max_q_len, cudaStream_t s) {
  constexpr size_t smem = prefill_smem_bytes<D>();
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  const int n_tiles = (max_q_len + kBM - 1) / kBM;
  const dim3 grid(a.n_heads, n_tiles, a.n_seqs);
  prefill_kernel<D><<<grid, kThreads, smem, s>>>(a, n_tiles);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_attention_prefill(const AttentionLaunch& a, int max_q_len, cudaStream_t s) {
  if (a.n_seqs == 0 || max_q_len == 0) return;
  if (a.head_dim == 128)
    launch_typed<128>(a, max_q_len, s);
  else
    launch_typed<64>(a, max_q_len, s);
}

}  // namespace kestrel::backends::cuda
