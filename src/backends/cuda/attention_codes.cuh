// Decoding code pages (core/kv_codec.h) into f16 tiles for the tensor-core attention kernels
// (attention_decode_codes.cu, attention_prefill.cu): eight elements at a time from their code bits and
// their group's params, with the magic-number conversion — an integer code c becomes the half 1024 + c by
// one byte permute or mask, for every code width — and one half2 FMA per pair. f16 rather than bf16: the
// conversion is exact for codes up to 1023, and f16's 11-bit mantissa holds c * d + m more finely.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "core/kv_codec.h"

namespace kestrel::backends::cuda {

constexpr int code_bits(quant::KvCode c) {
  return 8 / quant::kv_codes_per_byte(c);
}

// Bytes of the f16 params of one head row of head_dim elements in groups of `group`.
__host__ __device__ constexpr int param_row_bytes(quant::KvCode c, int head_dim, int group) {
  return head_dim / group * quant::kv_params(c) * 2;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ __half2 bits_h2(uint32_t u) {
  return *reinterpret_cast<__half2*>(&u);
}

// 8 bf16 values (16 bytes at src) times `scale` as f16, clamped to its finite range: the Q operand of the
// f16 MMAs, carrying the softmax scale.
__device__ __forceinline__ uint4 scaled_f16x8(const __nv_bfloat16* src, float scale) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&raw);
  uint4 v;
  uint32_t* w = &v.x;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(b[i]);
    const __half2 h =
        __floats2half2_rn(fminf(fmaxf(f.x * scale, -65504.f), 65504.f), fminf(fmaxf(f.y * scale, -65504.f), 65504.f));
    w[i] = h2_bits(h);
  }
  return v;
}

// (a & mask) | bits in one LOP3 (the compiler emits two when both constants are immediates).
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t bits) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(mask), "r"(bits));
  return d;
}

constexpr uint32_t kMagicHalves = 0x64006400u;  // (1024, 1024): 0x6400 | c is 1024 + c for c < 1024

// The code bits of 8 consecutive elements (8 bytes for fp8 and u8, 4 for u4, 2 for u2) from `codes`,
// aligned to their size.
template <quant::KvCode C>
__device__ __forceinline__ uint2 load_codes8(const unsigned char* codes) {
  if constexpr (code_bits(C) == 8)
    return *reinterpret_cast<const uint2*>(codes);
  else if constexpr (code_bits(C) == 4)
    return make_uint2(*reinterpret_cast<const uint32_t*>(codes), 0);
  else
    return make_uint2(*reinterpret_cast<const uint16_t*>(codes), 0);
}

// A group's params as a half pair: (scale, min) for the integer codes, (scale, scale) for fp8.
template <quant::KvCode C>
__device__ __forceinline__ __half2 load_dm(const unsigned char* params) {
  if constexpr (C == quant::KvCode::Fp8)
    return __half2half2(*reinterpret_cast<const __half*>(params));
  else
    return *reinterpret_cast<const __half2*>(params);
}

// c * d + m of two integer codes given as the halves 1024 + c: exact until the final rounding.
__device__ __forceinline__ uint32_t affine2(uint32_t magic_codes, __half2 d, __half2 m) {
  return h2_bits(__hfma2(__hsub2(bits_h2(magic_codes), bits_h2(kMagicHalves)), d, m));
}

// ---- decoding straight into MMA fragments (the decode kernel: no f16 tile, no ldmatrix) ----
//
// A 32-bit word of codes holds kWordElems<C> elements. As the B operand of S = Q K^T its elements may go
// into the half pairs in any order, since the same order is applied to Q's dims (the dot product does not
// care): word_pair_elem says which two elements pair p holds, picked so the unpack is a shift and one
// LOP3 per pair. As the B operand of O += P V a pair must hold one dim of two keys: decode_key_pair below.
template <quant::KvCode C>
constexpr int kWordElems = 32 / code_bits(C);

// Element index (within its word) of the low (half 0) or high (half 1) member of pair p.
template <quant::KvCode C>
__host__ __device__ constexpr int word_pair_elem(int p, int half) {
  if constexpr (code_bits(C) == 8)
    return 2 * p + half;  // (0, 1), (2, 3)
  else
    return p + half * kWordElems<C> / 2;  // u4: (i, i + 4); u2: (i, i + 8)
}

// The kWordElems<C> / 2 pairs of one word of codes of one group (params dm, load_dm), in word_pair_elem order.
template <quant::KvCode C>
__device__ __forceinline__ void decode_word(uint32_t w, __half2 dm, uint32_t* out) {
  if constexpr (C == quant::KvCode::Fp8) {
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> (16 * p)), __NV_E4M3);
      out[p] = h2_bits(__hmul2(__half2(r), dm));
    }
  } else {
    const __half2 d = __low2half2(dm), m = __high2half2(dm);
    constexpr int kPairs = kWordElems<C> / 2, kBits = code_bits(C);
    constexpr uint32_t kMask = ((1u << kBits) - 1) * 0x00010001u;
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      uint32_t c;
      if constexpr (kBits == 8)
        c = __byte_perm(w, 0x64646464u, p == 0 ? 0x4140 : 0x4342);
      else
        c = and_or(w >> (kBits * p), kMask, kMagicHalves);
      out[p] = affine2(c, d, m);
    }
  }
}

// 8 elements (in order, as 4 half pairs) from their code bits (load_codes8) and params (load_dm): the
// prefill kernel's f16 tiles. The 8- and 4-bit codes reuse decode_word (u4 then restores the order).
template <quant::KvCode C>
__device__ __forceinline__ uint4 decode8(uint2 w, __half2 dm) {
  uint4 v;
  uint32_t* out = &v.x;
  if constexpr (code_bits(C) == 8) {
    decode_word<C>(w.x, dm, out);
    decode_word<C>(w.y, dm, out + 2);
  } else if constexpr (C == quant::KvCode::U4) {  // (e_i, e_i+4) for i = 0..3, then in order
    uint32_t a[4];
    decode_word<C>(w.x, dm, a);
    v = make_uint4(__byte_perm(a[0], a[1], 0x5410), __byte_perm(a[2], a[3], 0x5410), __byte_perm(a[0], a[1], 0x7632),
                   __byte_perm(a[2], a[3], 0x7632));
  } else {  // U2: element 4j + i in bits 2i of byte j; y's bits 16 + 4i hold element 2i + 1
    const __half2 d = __low2half2(dm), m = __high2half2(dm);
    const uint32_t y = w.x | (w.x << 14);
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = affine2(and_or(y >> (4 * i), 0x00030003u, kMagicHalves), d, m);
  }
  return v;
}

// One dim of two keys per pair: the kWordElems<C> elements of word wa (key a) and wb (key b), as pairs
// (a_x, b_x) in element order x, each key with its own group params (dma, dmb).
template <quant::KvCode C>
__device__ __forceinline__ void decode_key_pair(uint32_t wa, uint32_t wb, __half2 dma, __half2 dmb, uint32_t* out) {
  constexpr int kBits = code_bits(C), kE = kWordElems<C>;
  uint32_t c[kE];  // f16 bits: 1024 + code for the integer codes, the value for fp8
  if constexpr (kBits == 8) {
    const uint32_t u[2] = {__byte_perm(wa, wb, 0x5140), __byte_perm(wa, wb, 0x7362)};  // a0 b0 a1 b1 | a2 b2 a3 b3
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = u[i / 2];
      if constexpr (C == quant::KvCode::Fp8)
        c[i] = h2_bits(
            __half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v >> (16 * (i % 2))), __NV_E4M3)));
      else
        c[i] = __byte_perm(v, 0x64646464u, i % 2 ? 0x4342 : 0x4140);
    }
  } else {
    // Halves 0 and 1 of u hold the first (then last) 16 code bits of a and of b: element x of both sits at
    // the same shift.
    const uint32_t u[2] = {__byte_perm(wa, wb, 0x5410), __byte_perm(wa, wb, 0x7632)};
    constexpr uint32_t kMask = ((1u << kBits) - 1) * 0x00010001u;
#pragma unroll
    for (int x = 0; x < kE; ++x) c[x] = and_or(u[x / (kE / 2)] >> (kBits * (x % (kE / 2))), kMask, kMagicHalves);
  }
  if constexpr (C == quant::KvCode::Fp8) {
    const __half2 s = __lows2half2(dma, dmb);
#pragma unroll
    for (int x = 0; x < kE; ++x) out[x] = h2_bits(__hmul2(bits_h2(c[x]), s));
  } else {
    const __half2 d = __lows2half2(dma, dmb), m = __highs2half2(dma, dmb);
#pragma unroll
    for (int x = 0; x < kE; ++x) out[x] = affine2(c[x], d, m);
  }
}

// N bytes (2, 4, 8, 16 or 32; aligned to min(N, 16)) of shared memory as 32-bit words; 2 bytes fill the
// low half of one word.
template <int N>
__device__ __forceinline__ void load_words(const unsigned char* p, uint32_t (&w)[N < 4 ? 1 : N / 4]) {
  if constexpr (N == 2) {
    w[0] = *reinterpret_cast<const uint16_t*>(p);
  } else if constexpr (N == 4) {
    w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (N == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 16; ++i) {
      const uint4 v = reinterpret_cast<const uint4*>(p)[i];
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
}

// 4-, 8- or 16-byte global -> shared copy (cp.async.ca takes the sizes below 16); invalid: zero-filled.
__device__ __forceinline__ void cp_async_n(uint32_t dst, const void* src, int bytes, bool valid) {
  const int n = valid ? bytes : 0;
  if (bytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
  else if (bytes == 8)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(n));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

}  // namespace kestrel::backends::cuda
