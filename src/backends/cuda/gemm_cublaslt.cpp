#include "backends/cuda/gemm_cublaslt.h"

#include <cublasLt.h>

#include <map>
#include <mutex>
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

// Descriptors and the heuristic's algorithms for one problem shape, built once and reused: the
// heuristic query costs far more than a decode-sized GEMM.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  std::vector<cublasLtMatmulAlgo_t> algos;  // best first, as the heuristic ranks them
  bool exhausted = false;                   // the heuristic has no more to offer
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
    const Plan& p = plan(M, N, K, y_t, candidate + 1);
    KS_CHECK(candidate >= 0 && candidate < static_cast<int>(p.algos.size()),
             "cuBLASLt has {} algorithms for a {}x{}x{} GEMM, not {}", p.algos.size(), M, N, K, candidate + 1);
    const float alpha = 1.f, beta = 0.f;
    // Column-major view: D (N x M, ld N) = op(A) B with A = w (K x N col-major, transposed), B = x (K x M).
    CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &p.algos[candidate],
                                workspace_.data, kWorkspaceBytes, s));
  }

  int candidates(int64_t M, int64_t N, int64_t K, DType y_t) {
    std::lock_guard lock(mu_);
    return static_cast<int>(plan(M, N, K, y_t, kCandidates).algos.size());
  }

 private:
  // The plan of a shape with the heuristic's `wanted` best algorithms (or all it has, if fewer).
  const Plan& plan(int64_t M, int64_t N, int64_t K, DType y_t, int wanted) {
    const auto key = std::make_tuple(M, N, K, static_cast<int>(y_t));
    auto it = plans_.find(key);
    if (it != plans_.end() && (static_cast<int>(it->second.algos.size()) >= wanted || it->second.exhausted))
      return it->second;
    if (it == plans_.end()) it = plans_.emplace(key, describe(M, N, K, y_t)).first;
    Plan& p = it->second;
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspaceBytes,
                                                      sizeof(kWorkspaceBytes)));
    cublasLtMatmulHeuristicResult_t results[kCandidates]{};
    const int asked = std::min(std::max(wanted, 1), kCandidates);
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, asked, results, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    KS_CHECK(found > 0, "cuBLASLt has no algorithm for a {}x{}x{} bf16 GEMM", M, N, K);
    p.algos.resize(found);
    for (int i = 0; i < found; ++i) p.algos[i] = results[i].algo;
    p.exhausted = found < asked || asked == kCandidates;
    return p;
  }

  static Plan describe(int64_t M, int64_t N, int64_t K, DType y_t) {
    Plan p;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    const cudaDataType_t d_type = y_t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, d_type, N, M, N));
    return p;
  }

  std::mutex mu_;
  cublasLtHandle_t handle_ = nullptr;
  Tensor workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
};

void cublaslt_matmul(CudaLane& lane, const void* x, const void* w, DType y_t, void* y, int64_t M, int64_t N, int64_t K,
                     int candidate) {
  lane.state<Gemm>().run(x, w, y_t, y, M, N, K, candidate, lane.stream());
}

int cublaslt_candidates(CudaLane& lane, int64_t M, int64_t N, int64_t K, DType y_t) {
  return lane.state<Gemm>().candidates(M, N, K, y_t);
}

}  // namespace kestrel::backends::cuda
