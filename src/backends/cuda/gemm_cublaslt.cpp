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
// Algorithms asked of the heuristic per shape: the first runs; the others are there to be timed against it.
constexpr int kCandidates = 8;

// Descriptors and the heuristic's algorithms for one problem shape, built once and reused: the
// heuristic query costs far more than a decode-sized GEMM.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  std::vector<cublasLtMatmulAlgo_t> algos;  // best first, as the heuristic ranks them
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
    const Plan& p = plan(M, N, K, y_t);
    KS_CHECK(candidate >= 0 && candidate < static_cast<int>(p.algos.size()),
             "cuBLASLt has {} algorithms for a {}x{}x{} GEMM, not {}", p.algos.size(), M, N, K, candidate + 1);
    const float alpha = 1.f, beta = 0.f;
    // Column-major view: D (N x M, ld N) = op(A) B with A = w (K x N col-major, transposed), B = x (K x M).
    CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &p.algos[candidate],
                                workspace_.data, kWorkspaceBytes, s));
  }

  int candidates(int64_t M, int64_t N, int64_t K, DType y_t) {
    std::lock_guard lock(mu_);
    return static_cast<int>(plan(M, N, K, y_t).algos.size());
  }

 private:
  const Plan& plan(int64_t M, int64_t N, int64_t K, DType y_t) {
    const auto key = std::make_tuple(M, N, K, static_cast<int>(y_t));
    if (auto it = plans_.find(key); it != plans_.end()) return it->second;
    Plan p;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    const cudaDataType_t d_type = y_t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, d_type, N, M, N));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspaceBytes,
                                                      sizeof(kWorkspaceBytes)));
    cublasLtMatmulHeuristicResult_t results[kCandidates]{};
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, kCandidates, results, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    KS_CHECK(found > 0, "cuBLASLt has no algorithm for a {}x{}x{} bf16 GEMM", M, N, K);
    for (int i = 0; i < found; ++i) p.algos.push_back(results[i].algo);
    return plans_.emplace(key, p).first->second;
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
