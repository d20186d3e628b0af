// Compiled by scripts/cuda-build-check.sh (never by go build) against the
// real cuBLAS and NCCL headers from the CUDA 12 PyPI wheels: the enum values
// and symbol names that internal/cuda/dl.h declares by hand must be the
// libraries' own, or this file fails to compile.
#include <cublas_v2.h>
#include <nccl.h>

#include "../dl.h"

_Static_assert(ZD_CUBLAS_OP_N == CUBLAS_OP_N, "CUBLAS_OP_N");
_Static_assert(ZD_CUBLAS_OP_T == CUBLAS_OP_T, "CUBLAS_OP_T");
_Static_assert(ZD_CUDA_R_32F == CUDA_R_32F, "CUDA_R_32F");
_Static_assert(ZD_CUDA_R_16BF == CUDA_R_16BF, "CUDA_R_16BF");
_Static_assert(ZD_CUBLAS_COMPUTE_32F == CUBLAS_COMPUTE_32F, "CUBLAS_COMPUTE_32F");
_Static_assert(ZD_CUBLAS_COMPUTE_32F_FAST_TF32 == CUBLAS_COMPUTE_32F_FAST_TF32, "CUBLAS_COMPUTE_32F_FAST_TF32");
_Static_assert(ZD_CUBLAS_GEMM_DEFAULT == CUBLAS_GEMM_DEFAULT, "CUBLAS_GEMM_DEFAULT");

_Static_assert(sizeof(zd_ncclUniqueId) == sizeof(ncclUniqueId), "ncclUniqueId");
_Static_assert(ZD_NCCL_UNIQUE_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL_UNIQUE_ID_BYTES");
_Static_assert(ZD_ncclFloat16 == ncclFloat16, "ncclFloat16");
_Static_assert(ZD_ncclFloat32 == ncclFloat32, "ncclFloat32");
_Static_assert(ZD_ncclBfloat16 == ncclBfloat16, "ncclBfloat16");
_Static_assert(ZD_ncclSum == ncclSum, "ncclSum");
_Static_assert(ZD_ncclMax == ncclMax, "ncclMax");
_Static_assert(ZD_ncclAvg == ncclAvg, "ncclAvg");
_Static_assert(ZD_ncclInProgress == ncclInProgress, "ncclInProgress");

// The symbols dlsym looks up (cublas_v2.h renames cublasCreate and
// cublasDestroy to their _v2 exports).
void *zd_symbols[] = {
	(void *)&cublasCreate_v2,
	(void *)&cublasDestroy_v2,
	(void *)&cublasGetStatusString,
	(void *)&cublasGemmStridedBatchedEx,
	(void *)&ncclGetUniqueId,
	(void *)&ncclCommInitRank,
	(void *)&ncclAllReduce,
	(void *)&ncclReduceScatter,
	(void *)&ncclReduce,
	(void *)&ncclAllGather,
	(void *)&ncclBroadcast,
	(void *)&ncclCommAbort,
	(void *)&ncclCommDestroy,
	(void *)&ncclGetErrorString,
};
