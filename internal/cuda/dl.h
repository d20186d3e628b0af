// The parts of cuBLAS and NCCL that zerodiff calls, declared here rather than
// taken from their headers: both libraries are opened at run time (dlopen) so
// that one binary serves CUDA 12 and 13, and the build needs no cuBLAS or
// NCCL headers. The enum values are the libraries' own; dlcheck/check.c
// compares them, and the symbol names, with the real headers in CI.
#include <dlfcn.h>
#include <stddef.h>

// cuBLAS (cublas_api.h, library_types.h).
#define ZD_CUBLAS_OP_N 0
#define ZD_CUBLAS_OP_T 1
#define ZD_CUDA_R_32F 0
#define ZD_CUDA_R_16BF 14
#define ZD_CUBLAS_COMPUTE_32F 68
#define ZD_CUBLAS_COMPUTE_32F_FAST_TF32 77
#define ZD_CUBLAS_GEMM_DEFAULT (-1)

typedef int (*zd_cublasCreate_t)(void **handle);
typedef int (*zd_cublasDestroy_t)(void *handle);
typedef const char *(*zd_cublasGetStatusString_t)(int status);
typedef int (*zd_cublasGemmStridedBatchedEx_t)(void *handle, int transa, int transb, int m, int n, int k,
                                                const void *alpha, const void *A, int Atype, int lda,
                                                long long strideA, const void *B, int Btype, int ldb,
                                                long long strideB, const void *beta, void *C, int Ctype, int ldc,
                                                long long strideC, int batchCount, int computeType, int algo);

static inline int zd_cublasCreate(void *fn, void **handle) { return ((zd_cublasCreate_t)fn)(handle); }
static inline int zd_cublasDestroy(void *fn, void *handle) { return ((zd_cublasDestroy_t)fn)(handle); }
static inline const char *zd_cublasGetStatusString(void *fn, int status) {
	return ((zd_cublasGetStatusString_t)fn)(status);
}
static inline int zd_cublasGemmStridedBatchedEx(void *fn, void *handle, int transa, int transb, int m, int n, int k,
                                         float alpha, size_t A, int Atype, int lda, long long strideA, size_t B,
                                         int Btype, int ldb, long long strideB, float beta, size_t C, int Ctype,
                                         int ldc, long long strideC, int batchCount, int computeType) {
	return ((zd_cublasGemmStridedBatchedEx_t)fn)(handle, transa, transb, m, n, k, &alpha, (const void *)A, Atype,
	                                             lda, strideA, (const void *)B, Btype, ldb, strideB, &beta,
	                                             (void *)C, Ctype, ldc, strideC, batchCount, computeType,
	                                             ZD_CUBLAS_GEMM_DEFAULT);
}

// NCCL (nccl.h).
#define ZD_NCCL_UNIQUE_ID_BYTES 128
typedef struct {
	char internal[ZD_NCCL_UNIQUE_ID_BYTES];
} zd_ncclUniqueId;
#define ZD_ncclFloat16 6
#define ZD_ncclFloat32 7
#define ZD_ncclBfloat16 9
#define ZD_ncclSum 0
#define ZD_ncclMax 2
#define ZD_ncclAvg 4
#define ZD_ncclInProgress 7

typedef int (*zd_ncclGetUniqueId_t)(zd_ncclUniqueId *id);
typedef int (*zd_ncclCommInitRank_t)(void **comm, int nranks, zd_ncclUniqueId id, int rank);
typedef int (*zd_ncclAllReduce_t)(const void *send, void *recv, size_t count, int dtype, int op, void *comm,
                                  void *stream);
typedef int (*zd_ncclReduceScatter_t)(const void *send, void *recv, size_t recvcount, int dtype, int op, void *comm,
                                      void *stream);
typedef int (*zd_ncclReduce_t)(const void *send, void *recv, size_t count, int dtype, int op, int root, void *comm,
                               void *stream);
typedef int (*zd_ncclAllGather_t)(const void *send, void *recv, size_t sendcount, int dtype, void *comm,
                                  void *stream);
typedef int (*zd_ncclBroadcast_t)(const void *send, void *recv, size_t count, int dtype, int root, void *comm,
                                  void *stream);
typedef int (*zd_ncclComm_t)(void *comm);
typedef const char *(*zd_ncclGetErrorString_t)(int result);

static inline int zd_ncclGetUniqueId(void *fn, void *id) { return ((zd_ncclGetUniqueId_t)fn)((zd_ncclUniqueId *)id); }
static inline int zd_ncclCommInitRank(void *fn, void **comm, int nranks, void *id, int rank) {
	return ((zd_ncclCommInitRank_t)fn)(comm, nranks, *(zd_ncclUniqueId *)id, rank);
}
static inline int zd_ncclAllReduce(void *fn, size_t send, size_t recv, size_t count, int dtype, int op, void *comm) {
	return ((zd_ncclAllReduce_t)fn)((const void *)send, (void *)recv, count, dtype, op, comm, NULL);
}
static inline int zd_ncclReduceScatter(void *fn, size_t send, size_t recv, size_t count, int dtype, int op, void *comm) {
	return ((zd_ncclReduceScatter_t)fn)((const void *)send, (void *)recv, count, dtype, op, comm, NULL);
}
static inline int zd_ncclReduce(void *fn, size_t send, size_t recv, size_t count, int dtype, int op, int root,
                                void *comm) {
	return ((zd_ncclReduce_t)fn)((const void *)send, (void *)recv, count, dtype, op, root, comm, NULL);
}
static inline int zd_ncclAllGather(void *fn, size_t send, size_t recv, size_t count, int dtype, void *comm) {
	return ((zd_ncclAllGather_t)fn)((const void *)send, (void *)recv, count, dtype, comm, NULL);
}
static inline int zd_ncclBroadcast(void *fn, size_t send, size_t recv, size_t count, int dtype, int root, void *comm) {
	return ((zd_ncclBroadcast_t)fn)((const void *)send, (void *)recv, count, dtype, root, comm, NULL);
}
static inline int zd_ncclComm(void *fn, void *comm) { return ((zd_ncclComm_t)fn)(comm); }
static inline const char *zd_ncclGetErrorString(void *fn, int result) { return ((zd_ncclGetErrorString_t)fn)(result); }
