// The MPI communicator on host buffers (compiled only when CMake found MPI). Every collective is
// non-blocking (MPI_I*) and waited on by polling MPI_Test, so none can hang: past the timeout it is
// reported with its operation, size and the ranks that did not arrive (asked over a second,
// duplicated communicator that every rank waiting in a collective answers), then the job is
// aborted. MPI errors are returned (MPI_ERRORS_RETURN) and become volt::Error via MPI_CHECK.
// The MPI C API only (no deprecated C++ bindings).
#include "dist/mpi_check.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "engine/error.h"

namespace volt {

namespace detail {

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(rc);
  return std::string(buf, size_t(len));
}

namespace {
// MPI for the whole process (see ensure_mpi_runtime in mpi_check.h).
class MpiRuntime {
 public:
  MpiRuntime() {
    int initialized = 0, finalized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    MPI_CHECK(MPI_Finalized(&finalized));
    VOLT_CHECK(!finalized, "MPI was already finalised in this process: no MPI communicator can be made");
    if (!initialized) {
      int provided = 0;
      MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
      initialized_here_ = true;
      // Volt's own MPI: errors come back as codes (volt::Error). A program that started MPI itself
      // keeps its own error handler on MPI_COMM_WORLD (its unchecked calls may rely on errors being
      // fatal); Volt's communicators are duplicates with their own handler.
      MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    }
  }
  ~MpiRuntime() {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (initialized_here_ && !finalized) MPI_Finalize();
  }

 private:
  bool initialized_here_ = false;
};
}  // namespace

void ensure_mpi_runtime() { static MpiRuntime runtime; }

bool mpi_is_running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void poll_backoff(double waited_s) {
  const double sleep_s = std::min(1e-3, waited_s / 50);
  if (sleep_s > 2e-5) std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s));
}

bool mpi_abort_allowed_here() {
  int provided = MPI_THREAD_SINGLE, is_main = 0;
  if (!mpi_is_running()) return false;
  MPI_Query_thread(&provided);
  MPI_Is_thread_main(&is_main);
  return is_main || provided == MPI_THREAD_MULTIPLE;
}

}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;
using detail::mpi_error_string;

enum OpCode : int64_t { kIdle = 0, kAllReduce = 1, kBroadcast = 2, kAllGather = 3, kBarrier = 4 };
const char* op_code_name(int64_t c) {
  switch (c) {
    case kAllReduce: return "all_reduce";
    case kBroadcast: return "broadcast";
    case kAllGather: return "all_gather";
    case kBarrier: return "barrier";
    default: return "nothing";
  }
}
constexpr int kQueryTag = 7101, kReplyTag = 7102;
constexpr size_t kMaxChunkBytes = size_t(1) << 30;  // counts passed to MPI are ints

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& opts) : opts_(opts) {
    detail::ensure_mpi_runtime();
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &ctrl_));
    MPI_CHECK(MPI_Comm_set_errhandler(ctrl_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }

  ~MpiCommunicator() override {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (Pending& p : pending_)
      if (p.request != MPI_REQUEST_NULL) MPI_Request_free(&p.request);
    MPI_Comm_free(&ctrl_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  using Communicator::all_gather;
  using Communicator::all_reduce;
  using Communicator::broadcast;

  void all_reduce(float* data, size_t count, ReduceOp op) override {
    reduce(data, count, op, MPI_FLOAT);
    if (op == ReduceOp::Avg) {
      const float inv = float(1.0 / size_);
      for (size_t i = 0; i < count; ++i) data[i] *= inv;
    }
  }
  void all_reduce(double* data, size_t count, ReduceOp op) override {
    reduce(data, count, op, MPI_DOUBLE);
    if (op == ReduceOp::Avg) {
      const double inv = 1.0 / size_;
      for (size_t i = 0; i < count; ++i) data[i] *= inv;
    }
  }
  void all_reduce(int64_t* data, size_t count, ReduceOp op) override {
    reduce(data, count, op, MPI_INT64_T);
    if (op == ReduceOp::Avg)
      for (size_t i = 0; i < count; ++i) data[i] /= size_;
  }

  void broadcast(void* data, size_t bytes, int root) override {
    VOLT_CHECK(root >= 0 && root < size_, "Communicator::broadcast: root ", root, " is not a rank (world size ", size_, ")");
    auto* p = static_cast<char*>(data);
    for (size_t done = 0; done < bytes;) {  // nothing to do for 0 bytes (the same on every rank)
      const int n = int(std::min(bytes - done, kMaxChunkBytes));
      begin(kBroadcast, size_t(n));
      MPI_Request req;
      MPI_CHECK(MPI_Ibcast(p + done, n, MPI_BYTE, root, comm_, &req));
      wait(req);
      done += size_t(n);
    }
  }

  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override {
    VOLT_CHECK(bytes_per_rank <= size_t(INT_MAX), "Communicator::all_gather: ", bytes_per_rank,
               " bytes per rank is more than MPI's int count allows");
    auto* out = static_cast<char*>(recv);
    std::vector<char> copy;
    const char* in = static_cast<const char*>(send);
    if (in < out + bytes_per_rank * size_t(size_) && out < in + bytes_per_rank) {  // overlapping buffers
      copy.assign(in, in + bytes_per_rank);
      in = copy.data();
    }
    begin(kAllGather, bytes_per_rank * size_t(size_));
    MPI_Request req;
    MPI_CHECK(MPI_Iallgather(in, int(bytes_per_rank), MPI_BYTE, out, int(bytes_per_rank), MPI_BYTE, comm_, &req));
    wait(req);
  }

  void barrier() override {
    begin(kBarrier, 0);
    MPI_Request req;
    MPI_CHECK(MPI_Ibarrier(comm_, &req));
    wait(req);
  }

  void io_barrier() override { detail::barrier_with_io_limit(*this, limit_, opts_); }

  [[noreturn]] void abort(int exit_code, const std::string& why) override {
    std::fprintf(stderr, "volt: rank %d of %d: %s\nvolt: rank %d: aborting the job (MPI_Abort)\n", rank_, size_,
                 why.c_str(), rank_);
    std::fflush(nullptr);  // stdout too: _Exit and MPI_Abort flush nothing
    MPI_Abort(MPI_COMM_WORLD, exit_code == 0 ? 1 : exit_code);
    std::_Exit(exit_code == 0 ? 1 : exit_code);
  }

 private:
  struct Pending {
    int64_t buf[4] = {0, 0, 0, 0};
    MPI_Request request = MPI_REQUEST_NULL;
  };

  template <class T>
  void reduce(T* data, size_t count, ReduceOp op, MPI_Datatype type) {
    const size_t chunk = kMaxChunkBytes / sizeof(T);
    for (size_t done = 0; done < count;) {
      const int n = int(std::min(count - done, chunk));
      begin(kAllReduce, size_t(n) * sizeof(T));
      op_name_ = reduce_op_name(op);
      MPI_Request req;
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data + done, n, type, op == ReduceOp::Max ? MPI_MAX : MPI_SUM, comm_, &req));
      wait(req);
      done += size_t(n);
    }
  }

  void begin(OpCode op, size_t bytes) {
    ++seq_;
    op_ = op;
    op_name_ = nullptr;
    bytes_ = bytes;
  }

  std::string describe(int64_t op, int64_t seq, int64_t bytes) const {
    std::ostringstream os;
    os << op_code_name(op);
    if (op == kAllReduce && op_name_ && seq == seq_) os << "(" << op_name_ << ")";
    os << " #" << seq << " of " << bytes << " bytes";
    return os.str();
  }

  // Polls the request until it completes, answering other ranks' "where are you" queries meanwhile.
  void wait(MPI_Request& req) {
    const auto start = Clock::now();
    for (;;) {
      int done = 0;
      const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS)
        fail(describe(op_, seq_, int64_t(bytes_)) + " failed: " + mpi_error_string(rc) + " (has a rank died?)");
      if (done) {
        op_ = kIdle;
        return;
      }
      serve_queries();
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (waited > limit_.seconds) fail(timeout_report(waited));
      detail::poll_backoff(waited);  // collectives progress inside MPI_Test
    }
  }

  void serve_queries() {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, ctrl_, &flag, &st) != MPI_SUCCESS || !flag) break;
      int64_t query[4];
      if (MPI_Recv(query, 4, MPI_INT64_T, st.MPI_SOURCE, kQueryTag, ctrl_, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
      pending_.emplace_back();
      Pending& p = pending_.back();
      p.buf[0] = seq_;
      p.buf[1] = op_;
      p.buf[2] = int64_t(bytes_);
      MPI_Isend(p.buf, 4, MPI_INT64_T, st.MPI_SOURCE, kReplyTag, ctrl_, &p.request);
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      if (it->request == MPI_REQUEST_NULL || (MPI_Test(&it->request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done))
        it = pending_.erase(it);
      else
        ++it;
    }
  }

  // Asks every other rank which collective it is waiting in; those that do not answer within a
  // grace period are not in any collective (dead, hung, or still computing).
  std::string timeout_report(double waited) {
    const std::string what = describe(op_, seq_, int64_t(bytes_));
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      pending_.emplace_back();
      Pending& p = pending_.back();
      p.buf[0] = seq_;
      MPI_Isend(p.buf, 4, MPI_INT64_T, r, kQueryTag, ctrl_, &p.request);
    }
    std::map<int, std::vector<int64_t>> answers;
    const double grace = std::min(5.0, std::max(1.0, opts_.timeout_s / 10));
    const auto start = Clock::now();
    while (int(answers.size()) < size_ - 1 &&
           std::chrono::duration<double>(Clock::now() - start).count() < grace) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kReplyTag, ctrl_, &flag, &st) == MPI_SUCCESS && flag) {
        std::vector<int64_t> a(4);
        if (MPI_Recv(a.data(), 4, MPI_INT64_T, st.MPI_SOURCE, kReplyTag, ctrl_, MPI_STATUS_IGNORE) == MPI_SUCCESS)
          answers[st.MPI_SOURCE] = a;
        continue;
      }
      serve_queries();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<int> missing, waiting = {rank_};
    std::vector<std::string> elsewhere;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      auto it = answers.find(r);
      if (it == answers.end()) {
        missing.push_back(r);
      } else if (it->second[0] == seq_ && it->second[1] == op_ && it->second[2] == int64_t(bytes_)) {
        // (the same number is not the same collective: ranks that took different paths may meet at
        // #n of different operations or sizes, which is the report's whole point)
        waiting.push_back(r);
      } else {
        elsewhere.push_back("rank " + std::to_string(r) + " is in " + describe(it->second[1], it->second[0], it->second[2]));
      }
    }
    std::sort(waiting.begin(), waiting.end());
    std::ostringstream os;
    os.precision(3);
    os << what << " did not complete within " << limit_.seconds << " s (waited " << waited << " s, world size "
       << size_ << "); ";
    if (!missing.empty())
      os << "ranks that did not arrive: " << rank_list(missing)
         << " (no answer within " << grace << " s: dead, hung, or not calling the collective)";
    else
      os << "every rank answered";
    os << "; ranks waiting in it: " << rank_list(waiting);
    for (const std::string& e : elsewhere) os << "; " << e << " instead";
    os << ". Set $" << limit_.variable << " (seconds) to change the timeout";
    return os.str();
  }

  [[noreturn]] void fail(const std::string& msg) {
    if (opts_.abort_on_failure) abort(1, msg);
    VOLT_FAIL("rank ", rank_, " of ", size_, ": ", msg);
  }

  CommOptions opts_;
  CommOptions::Limit limit_ = opts_.collective_limit();  // the running collective's
  MPI_Comm comm_ = MPI_COMM_NULL, ctrl_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  int64_t seq_ = 0;  // collectives started (the same sequence on every rank)
  int64_t op_ = kIdle;
  const char* op_name_ = nullptr;
  size_t bytes_ = 0;
  std::list<Pending> pending_;  // sends of queries and answers not yet known complete
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& opts) {
  return std::make_unique<MpiCommunicator>(opts);
}

}  // namespace volt
