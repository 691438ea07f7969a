#include "backends/cuda/gemm_cublaslt.h"

#include <cublasLt.h>

#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/runtime.h"
#include "core/error.h"

namespace kestrel::backends::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
// Algorithms a benchmark may ask the heuristic for per shape (cublaslt_candidates); a plan asks for one
// unless asked for more, since the query is host time a new shape costs inside a step.
constexpr int kCandidates = 8;

// The GEMMs: bf16 in (y bf16/f32), fp8 in with per-row and per-channel f32 scales applied by cuBLASLt (outer
// vector scaling; y bf16/f32), fp8 in unscaled (f32 out) and int8 in (i32 out) for an epilogue to scale.
enum class Kind : uint8_t { Bf16, Fp8Scaled, Fp8, Int8 };

// Descriptors and the heuristic's algorithms for one problem shape, built once and reused: the
// heuristic query costs far more than a decode-sized GEMM.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  std::vector<cublasLtMatmulAlgo_t> algos;  // best first, as the heuristic ranks them
  bool exhausted = false;                   // the heuristic has no more to offer
  Kind kind = Kind::Bf16;
};

}  // namespace

// One per lane (ops::Runtime::state): two lanes must not share a workspace.
class Gemm {
 public:
  explicit Gemm(ops::Runtime& lane) {
    CUBLAS_CHECK(cublasLtCreate(&handle_));
    workspace_ = lane.allocate(DType::I8, {static_cast<int64_t>(kWorkspaceBytes)});
  }
  ~Gemm() {
    for (auto& [key, p] : plans_) {
      cublasLtMatmulDescDestroy(p.op);
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.d);
    }
    cublasLtDestroy(handle_);
  }

  void run(const void* x, const void* w, DType y_t, void* y, int64_t M, int64_t N, int64_t K, int candidate,
           cudaStream_t s) {
    std::lock_guard lock(mu_);
    const Plan& p = plan(M, N, K, y_t, Kind::Bf16, candidate + 1);
    KS_CHECK(candidate >= 0 && candidate < static_cast<int>(p.algos.size()),
             "cuBLASLt has {} algorithms for a {}x{}x{} GEMM, not {}", p.algos.size(), M, N, K, candidate + 1);
    launch(p, x, w, y, candidate, s);
  }

  // The 8-bit GEMMs (cublaslt_matmul_w8). Scaled fp8: false when cuBLASLt offers no algorithm.
  bool run_w8(Kind kind, const void* xq, const void* wq, const float* x_scales, const float* w_scales, DType y_t,
              void* y, int64_t M, int64_t N, int64_t K, cudaStream_t s) {
    std::lock_guard lock(mu_);
    const Plan* p = try_plan(M, N, K, y_t, kind);
    if (!p) return false;
    if (kind == Kind::Fp8Scaled) {
      // A is w (its vector runs over D's rows, the channels), B is x (over D's columns, the tokens).
      CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales, sizeof(w_scales)));
      CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales, sizeof(x_scales)));
    }
    launch(*p, xq, wq, y, 0, s);
    return true;
  }

  int candidates(int64_t M, int64_t N, int64_t K, DType y_t) {
    std::lock_guard lock(mu_);
    return static_cast<int>(plan(M, N, K, y_t, Kind::Bf16, kCandidates).algos.size());
  }

 private:
  // Column-major view: D (N x M, ld N) = op(A) B with A = w (K x N col-major, transposed), B = x (K x M).
  void launch(const Plan& p, const void* x, const void* w, void* y, int candidate, cudaStream_t s) {
    const float alpha = 1.f, beta = 0.f;
    const int32_t alpha_i = 1, beta_i = 0;  // int8's scale type is i32
    const bool int8 = p.kind == Kind::Int8;
    CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, int8 ? static_cast<const void*>(&alpha_i) : &alpha, w, p.a, x, p.b,
                                int8 ? static_cast<const void*>(&beta_i) : &beta, y, p.d, y, p.d, &p.algos[candidate],
                                workspace_.data, kWorkspaceBytes, s));
  }

  // The plan of a shape with the heuristic's best algorithm, or null when it has none.
  const Plan* try_plan(int64_t M, int64_t N, int64_t K, DType y_t, Kind kind) {
    const auto key = std::make_tuple(M, N, K, static_cast<int>(y_t), static_cast<int>(kind));
    if (refused_.count(key)) return nullptr;
    try {
      return &plan(M, N, K, y_t, kind, 1);
    } catch (const Error&) {
      refused_.insert(key);
      return nullptr;
    }
  }

  // The plan of a shape with the heuristic's `wanted` best algorithms (or all it has, if fewer).
  const Plan& plan(int64_t M, int64_t N, int64_t K, DType y_t, Kind kind, int wanted) {
    const auto key = std::make_tuple(M, N, K, static_cast<int>(y_t), static_cast<int>(kind));
    auto it = plans_.find(key);
    if (it != plans_.end() && (static_cast<int>(it->second.algos.size()) >= wanted || it->second.exhausted))
      return it->second;
    if (it == plans_.end()) it = plans_.emplace(key, describe(M, N, K, y_t, kind)).first;
    Plan& p = it->second;
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspaceBytes,
                                                      sizeof(kWorkspaceBytes)));
    cublasLtMatmulHeuristicResult_t results[kCandidates]{};
    const int asked = std::min(std::max(wanted, 1), kCandidates);
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, asked, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KS_CHECK((st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED) && found > 0,
             "cuBLASLt has no algorithm for a {}x{}x{} {} GEMM (status {})", M, N, K, kind_name(kind),
             static_cast<int>(st));
    p.algos.resize(found);
    for (int i = 0; i < found; ++i) p.algos[i] = results[i].algo;
    p.exhausted = found < asked || asked == kCandidates;
    return p;
  }

  static const char* kind_name(Kind k) {
    return k == Kind::Bf16 ? "bf16" : k == Kind::Int8 ? "int8" : k == Kind::Fp8 ? "fp8" : "row/channel-scaled fp8";
  }

  static Plan describe(int64_t M, int64_t N, int64_t K, DType y_t, Kind kind) {
    Plan p;
    p.kind = kind;
    const bool int8 = kind == Kind::Int8, fp8 = kind == Kind::Fp8 || kind == Kind::Fp8Scaled;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                          int8 ? CUDA_R_32I : CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    if (kind == Kind::Fp8Scaled) {
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
    }
    const cudaDataType_t in_type = int8 ? CUDA_R_8I : fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    const cudaDataType_t d_type = int8                                      ? CUDA_R_32I
                                  : kind == Kind::Fp8 || y_t != DType::BF16 ? CUDA_R_32F
                                                                            : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_type, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_type, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, d_type, N, M, N));
    return p;
  }

  using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;
  std::mutex mu_;
  cublasLtHandle_t handle_ = nullptr;
  Tensor workspace_;
  std::map<Key, Plan> plans_;
  std::set<Key> refused_;  // 8-bit shapes cuBLASLt has no algorithm for
};

void cublaslt_matmul(CudaLane& lane, const void* x, const void* w, DType y_t, void* y, int64_t M, int64_t N, int64_t K,
                     int candidate) {
  lane.state<Gemm>().run(x, w, y_t, y, M, N, K, candidate, lane.stream());
}

bool cublaslt_matmul_w8(CudaLane& lane, DType in_t, const void* xq, const void* wq, const float* x_scales,
                        const float* w_scales, DType y_t, void* y, int64_t M, int64_t N, int64_t K) {
  const Kind kind = in_t == DType::I8 ? Kind::Int8 : x_scales ? Kind::Fp8Scaled : Kind::Fp8;
  return lane.state<Gemm>().run_w8(kind, xq, wq, x_scales, w_scales, y_t, y, M, N, K, lane.stream());
}

int cublaslt_candidates(CudaLane& lane, int64_t M, int64_t N, int64_t K, DType y_t) {
  return lane.state<Gemm>().candidates(M, N, K, y_t);
}

}  // namespace kestrel::backends::cuda
