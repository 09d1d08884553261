// The emulated SDK's NCCL (see sdk/nccl.h), in emulated builds with MPI: the communicator is a
// duplicate of MPI_COMM_WORLD (none for one rank), and each collective is submitted to its stream
// like any other work, so it runs where the stream reaches it, or at every replay of a graph that
// captured it. Device buffers are host memory here, so MPI reads and writes them directly.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "cuda_runtime_api.h"
#include "nccl.h"

struct volt_emu_nccl {
  int nranks = 1, rank = 0;
  MPI_Comm comm = MPI_COMM_NULL;
  ncclResult_t async_error = ncclSuccess;
  std::string last_error;
  bool aborted = false;
};

namespace {

size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}

MPI_Datatype mpi_type(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: return MPI_INT8_T;
    case ncclUint8: return MPI_UINT8_T;
    case ncclInt32: return MPI_INT32_T;
    case ncclUint32: return MPI_UINT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint64: return MPI_UINT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;  // 16-bit floats: MPI has no type for them
  }
}

// Checks what every collective needs; `bytes` of each device buffer named.
ncclResult_t check(ncclComm_t comm, const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  if (!comm) return ncclInvalidArgument;
  if (comm->aborted) {
    comm->last_error = "the communicator was aborted";
    return ncclInvalidUsage;
  }
  if (!volt_emu::is_device_range(a, a_bytes) || !volt_emu::is_device_range(b, b_bytes)) {
    comm->last_error = "a buffer is not device memory (or runs past its allocation)";
    return ncclInvalidArgument;
  }
  return ncclSuccess;
}

void record(ncclComm_t comm, int rc, const char* what) {
  if (rc == MPI_SUCCESS || comm->async_error != ncclSuccess) return;
  comm->async_error = ncclSystemError;
  comm->last_error = std::string(what) + " failed in MPI";
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error (emulator: an MPI call failed)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : ""; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  const long long now = std::chrono::steady_clock::now().time_since_epoch().count();
  std::snprintf(id->internal, sizeof id->internal, "volt-emu-nccl-%lld", now);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId, int rank, ncclConfig_t*) {
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  auto* c = new volt_emu_nccl;
  c->nranks = nranks;
  c->rank = rank;
  if (nranks > 1) {
    int initialized = 0, size = 0, me = 0;
    MPI_Initialized(&initialized);
    if (!initialized || MPI_Comm_size(MPI_COMM_WORLD, &size) != MPI_SUCCESS || size != nranks ||
        MPI_Comm_rank(MPI_COMM_WORLD, &me) != MPI_SUCCESS || me != rank ||
        MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) {
      delete c;
      return ncclInvalidUsage;  // the emulator's ranks are MPI_COMM_WORLD's
    }
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm) return ncclInvalidArgument;
  *async_error = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  comm->aborted = true;  // the MPI duplicate is left alone: freeing it is collective
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm ? ncclSuccess : ncclInvalidArgument; }

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm->comm != MPI_COMM_NULL && !comm->aborted && !finalized) MPI_Comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() { return ncclSuccess; }
ncclResult_t ncclGroupEnd() { return ncclSuccess; }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(datatype);
  if (ncclResult_t r = check(comm, sendbuff, bytes, recvbuff, bytes)) return r;
  const MPI_Datatype t = mpi_type(datatype);
  if (t == MPI_DATATYPE_NULL || op == ncclProd) return ncclInvalidArgument;  // not needed by Volt
  const MPI_Op mop = op == ncclMax ? MPI_MAX : op == ncclMin ? MPI_MIN : MPI_SUM;
  volt_emu::submit(stream, [=] {
    if (comm->nranks == 1) {
      std::memmove(recvbuff, sendbuff, bytes);
      return;
    }
    record(comm, MPI_Allreduce(sendbuff == recvbuff ? MPI_IN_PLACE : sendbuff, recvbuff, int(count), t, mop, comm->comm),
           "ncclAllReduce");
    if (op == ncclAvg) {  // NCCL's average: the sum divided by the rank count (integers toward zero)
      for (size_t i = 0; i < count; ++i) {
        char* p = static_cast<char*>(recvbuff) + i * type_bytes(datatype);
        switch (datatype) {
          case ncclFloat32: *reinterpret_cast<float*>(p) /= float(comm->nranks); break;
          case ncclFloat64: *reinterpret_cast<double*>(p) /= double(comm->nranks); break;
          case ncclInt32: *reinterpret_cast<int32_t*>(p) /= comm->nranks; break;
          case ncclInt64: *reinterpret_cast<int64_t*>(p) /= comm->nranks; break;
          default: break;
        }
      }
    }
  });
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(datatype);
  if (!comm || root < 0 || root >= comm->nranks) return ncclInvalidArgument;
  const bool sending = comm->rank == root;
  if (ncclResult_t r = check(comm, sending ? sendbuff : recvbuff, bytes, recvbuff, bytes)) return r;
  volt_emu::submit(stream, [=] {
    if (sending && sendbuff != recvbuff) std::memmove(recvbuff, sendbuff, bytes);
    if (comm->nranks > 1) record(comm, MPI_Bcast(recvbuff, int(bytes), MPI_BYTE, root, comm->comm), "ncclBroadcast");
  });
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = sendcount * type_bytes(datatype);
  if (!comm) return ncclInvalidArgument;
  if (ncclResult_t r = check(comm, sendbuff, bytes, recvbuff, bytes * size_t(comm->nranks))) return r;
  volt_emu::submit(stream, [=] {
    char* mine = static_cast<char*>(recvbuff) + bytes * size_t(comm->rank);
    if (comm->nranks == 1) {
      std::memmove(mine, sendbuff, bytes);
      return;
    }
    record(comm, MPI_Allgather(sendbuff == mine ? MPI_IN_PLACE : sendbuff, int(bytes), MPI_BYTE, recvbuff, int(bytes),
                               MPI_BYTE, comm->comm),
           "ncclAllGather");
  });
  return ncclSuccess;
}
