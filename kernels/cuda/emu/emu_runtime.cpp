// The emulator's scheduler (see cuda_emu.h): every thread of a block is a fiber with its own stack
// (switched by a few instructions on x86-64, which keep the callee-saved registers and the FPU control
// words but not the signal mask, as a kernel thread needs no other; ucontext elsewhere); the scheduler
// runs the ready fibers until each finishes or waits at a barrier, then releases the barriers whose
// participants have all arrived, and repeats. VOLT_EMU_SCHEDULE picks the order in which the ready
// fibers and the blocks run: `forward` (thread and block order; the default), `reverse`, or
// `shuffle[:seed]` (a fresh permutation every round and every launch). A kernel that reads what
// another thread wrote without a barrier between them, or that depends on the order of its blocks,
// gives other results in another order: running the tests under each catches such races, which one
// fixed order can hide (forward order finds a thread that reads its successor's value early, reverse
// its predecessor's). Under
// AddressSanitizer the stack switches are announced to it, so kernels' out-of-bounds accesses are
// reported as in any host code.
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cuda/emu/cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define VOLT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VOLT_EMU_ASAN 1
#endif
#endif
#ifndef VOLT_EMU_ASAN
#define VOLT_EMU_ASAN 0
#endif
#if VOLT_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace volt_emu {

namespace {

// ---- stack switching: make_context prepares a fresh stack to run entry(); switch_context saves the
// running context into *from and resumes `to`.
#if defined(__x86_64__)
extern "C" void volt_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .type volt_emu_switch,@function
volt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size volt_emu_switch, .-volt_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

struct Context {
  void* sp = nullptr;
};
void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  // From the top: a zero (entry's return address: it never returns), entry as the address that
  // volt_emu_switch's ret pops (16-byte aligned, so entry starts as if called), six zeroed registers
  // and the control words.
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  auto* w = reinterpret_cast<uint64_t*>(top);
  *--w = 0;
  *--w = reinterpret_cast<uint64_t>(entry);  // at top - 16: after the ret, rsp + 8 is 16-byte aligned
  for (int i = 0; i < 6; ++i) *--w = 0;
  uint32_t mxcsr = 0;
  uint16_t fcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  *--w = uint64_t(mxcsr) | (uint64_t(fcw) << 32);
  c.sp = w;
}
inline void switch_context(Context& from, Context& to) { volt_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;  // entry never returns
  makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

#if VOLT_EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;  // instrumented frames are larger
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif
constexpr int kMaxThreads = 1024;

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  Context context;
  ThreadState ts;
  State state = State::Ready;
  unsigned warp_mask = 0;  // lanes of this fiber's warp barrier
  int exchanges = 0;       // warp exchanges so far: picks the slot buffer (double-buffered)
  char* stack = nullptr;
};

struct Block {
  std::vector<Fiber> fibers;
  int threads = 0;
  Context scheduler;
  void (*call)(void*) = nullptr;
  void* arg = nullptr;
  std::vector<uint64_t> slots[2];  // [warp * 32 + lane] for each exchange parity
  std::vector<std::vector<unsigned char>> warp_scratch;  // per warp (warp_scratch())
  std::vector<unsigned char> smem;  // the dynamic shared memory starts at the first 128-byte boundary
  size_t smem_bytes = 0;
  std::string error;  // first error found; the launch throws it
  uint64_t rng = 0;   // the shuffled schedule's state
  std::vector<int> order;  // this round's fiber order
#if VOLT_EMU_ASAN
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
};

// VOLT_EMU_SCHEDULE, read at the first launch.
enum class Order { Forward, Reverse, Shuffle };
struct Schedule {
  Order order = Order::Forward;
  uint64_t seed = 0;
};

const Schedule& schedule() {
  static const Schedule s = [] {
    Schedule r;
    const char* env = std::getenv("VOLT_EMU_SCHEDULE");
    const std::string v = env ? env : "";
    if (v.empty() || v == "forward") return r;
    if (v == "reverse") {
      r.order = Order::Reverse;
      return r;
    }
    if (v.rfind("shuffle", 0) == 0) {
      r.order = Order::Shuffle;
      if (v.size() > 7) {
        char* end = nullptr;
        const std::string digits = v.substr(8);
        r.seed = v[7] == ':' && !digits.empty() ? std::strtoull(digits.c_str(), &end, 10) : 0;
        VOLT_CHECK(v[7] == ':' && !digits.empty() && end && *end == '\0', "VOLT_EMU_SCHEDULE=", v,
                   ": expected forward, reverse, shuffle or shuffle:SEED (a decimal number)");
      }
      return r;
    }
    VOLT_FAIL("VOLT_EMU_SCHEDULE=", v, ": expected forward, reverse, shuffle or shuffle:SEED (a decimal number)");
  }();
  return s;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// order[0..n) = 0..n-1 in the schedule's order; `state` advances (shuffle).
void schedule_order(std::vector<int>& order, int n, uint64_t& state) {
  order.resize(size_t(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  switch (schedule().order) {
    case Order::Forward: break;
    case Order::Reverse: std::reverse(order.begin(), order.end()); break;
    case Order::Shuffle:
      for (int i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(splitmix64(state) % uint64_t(i + 1))]);
      break;
  }
}

thread_local Block* g_block = nullptr;
thread_local Fiber* g_fiber = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> g_stacks;  // reused by every launch on this thread

void note_error(const std::string& msg) {
  if (g_block && g_block->error.empty()) g_block->error = msg;
}

void fail_outside_kernel(const char* what) {
  std::fprintf(stderr, "volt CUDA emulator: %s called outside a kernel\n", what);
  std::abort();
}

// Switches from the running fiber back to the scheduler.
void yield_to_scheduler() {
  Fiber* me = g_fiber;
#if VOLT_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, g_block->sched_stack_bottom, g_block->sched_stack_size);
#endif
  switch_context(me->context, g_block->scheduler);
#if VOLT_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void fiber_main() {
#if VOLT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_block->sched_stack_bottom, &g_block->sched_stack_size);
#endif
  g_block->call(g_block->arg);
  g_fiber->state = State::Done;
#if VOLT_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_block->sched_stack_bottom, g_block->sched_stack_size);
#endif
  switch_context(g_fiber->context, g_block->scheduler);  // for good: a finished fiber is never resumed
  std::abort();
}

int linear_tid(const ThreadState& t) {
  return int(t.thread_idx.x + t.block_dim.x * (t.thread_idx.y + t.block_dim.y * t.thread_idx.z));
}

// Lanes of warp w that exist in the block.
unsigned existing_lanes(const Block& b, int warp) {
  const int first = warp * 32, n = std::min(32, b.threads - first);
  return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

// Releases the barriers whose participants have all arrived; returns whether any was released.
bool release_barriers(Block& b) {
  bool released = false;
  int alive = 0, at_block = 0;
  for (const Fiber& f : b.fibers) {
    if (f.state != State::Done) ++alive;
    if (f.state == State::AtBlockBarrier) ++at_block;
  }
  if (at_block > 0 && at_block == alive) {
    if (alive < b.threads)  // as the CUDA guide says: every thread of the block, or undefined
      note_error(::volt::detail::format("__syncthreads reached by ", at_block, " thread(s) while ",
                                        b.threads - alive, " have exited (a barrier in divergent code)"));
    for (Fiber& f : b.fibers)
      if (f.state == State::AtBlockBarrier) f.state = State::Ready;
    released = true;
  }
  const int warps = (b.threads + 31) / 32;
  for (int w = 0; w < warps; ++w) {
    const unsigned exist = existing_lanes(b, w);
    unsigned waiting = 0, done = 0, wanted = 0;
    for (int l = 0; l < 32; ++l) {
      if (!(exist & (1u << l))) continue;
      const Fiber& f = b.fibers[size_t(w * 32 + l)];
      if (f.state == State::AtWarpBarrier) {
        waiting |= 1u << l;
        wanted |= f.warp_mask;
      }
      if (f.state == State::Done) done |= 1u << l;
    }
    if (!waiting) continue;
    // Every lane the waiters name (that exists) must be waiting too; one that exited is an error.
    if (wanted & exist & done)
      note_error(::volt::detail::format("a warp shuffle/__syncwarp in warp ", w, " names lanes that have exited (mask 0x",
                                        std::hex, wanted, ", exited 0x", done, std::dec, ")"));
    const unsigned need = wanted & exist & ~done;
    if ((need & ~waiting) == 0) {
      for (int l = 0; l < 32; ++l)
        if (waiting & (1u << l)) b.fibers[size_t(w * 32 + l)].state = State::Ready;
      released = true;
    }
  }
  return released;
}

void run_block(Block& b) {
  for (int t = 0; t < b.threads; ++t) {
    Fiber& f = b.fibers[size_t(t)];
    f.state = State::Ready;
    f.exchanges = 0;
    make_context(f.context, f.stack, kStackBytes, fiber_main);
  }
  for (;;) {
    schedule_order(b.order, b.threads, b.rng);
    for (int t : b.order) {
      Fiber& f = b.fibers[size_t(t)];
      if (f.state != State::Ready) continue;
      g_fiber = &f;
#if VOLT_EMU_ASAN
      void* fake = nullptr;
      __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
      switch_context(b.scheduler, f.context);
#if VOLT_EMU_ASAN
      __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
      g_fiber = nullptr;
    }
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done = all_done && f.state == State::Done;
    if (all_done) return;
    if (!release_barriers(b)) {
      int at_block = 0, at_warp = 0, done = 0;
      for (const Fiber& f : b.fibers) {
        at_block += f.state == State::AtBlockBarrier;
        at_warp += f.state == State::AtWarpBarrier;
        done += f.state == State::Done;
      }
      note_error(::volt::detail::format("deadlock in block (", b.fibers[0].ts.block_idx.x, ", ",
                                        b.fibers[0].ts.block_idx.y, ", ", b.fibers[0].ts.block_idx.z, "): ", at_block,
                                        " thread(s) wait at __syncthreads, ", at_warp,
                                        " at a warp shuffle/__syncwarp, ", done,
                                        " exited (a barrier not reached by every thread)"));
      return;  // the fibers' stacks are simply reused by the next block
    }
  }
}

}  // namespace

ThreadState& self() {
  if (!g_fiber) fail_outside_kernel("threadIdx/blockIdx/blockDim/gridDim");
  return g_fiber->ts;
}

int lane_id() { return linear_tid(self()) & 31; }

void* dynamic_smem() {
  if (!g_fiber) fail_outside_kernel("dynamic shared memory");
  if (g_block->smem_bytes == 0) return nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(g_block->smem.data());
  return g_block->smem.data() + ((128 - p % 128) % 128);  // aligned as a GPU's shared window
}

void syncthreads() {
  if (!g_fiber) fail_outside_kernel("__syncthreads");
  g_fiber->state = State::AtBlockBarrier;
  yield_to_scheduler();
}

void syncwarp(unsigned mask) {
  if (!g_fiber) fail_outside_kernel("__syncwarp");
  g_fiber->warp_mask = mask;
  g_fiber->state = State::AtWarpBarrier;
  yield_to_scheduler();
}

void warp_exchange(unsigned mask, const void* in, void* out, size_t bytes, int src) {
  if (!g_fiber) fail_outside_kernel("a warp shuffle");
  Block& b = *g_block;
  const int tid = linear_tid(g_fiber->ts), warp = tid / 32, lane = tid % 32;
  std::vector<uint64_t>& slots = b.slots[g_fiber->exchanges++ & 1];
  uint64_t v = 0;
  std::memcpy(&v, in, bytes);
  slots[size_t(tid)] = v;
  if (!(mask & (1u << lane)))
    note_error(::volt::detail::format("thread ", tid, " shuffles with mask 0x", std::hex, mask, std::dec,
                                      " that does not include its own lane ", lane));
  syncwarp(mask);
  const unsigned exist = existing_lanes(b, warp);
  if (src < 0 || src > 31 || !(exist & (1u << src)) || !(mask & (1u << src))) {
    note_error(::volt::detail::format("thread ", tid, " (block of ", b.threads, " threads) reads lane ", src,
                                      " in a shuffle, which does not exist or is not in the mask: undefined on the "
                                      "GPU"));
    std::memcpy(out, in, bytes);
    return;
  }
  std::memcpy(out, &slots[size_t(warp * 32 + src)], bytes);
}

// Every lane of the warp must call a warp matrix operation, with the same pointer; the pointer must be
// 32-byte aligned and the leading dimension a multiple of 16 bytes.
void warp_collective(const void* ptr, size_t ldm_bytes, const char* what) {
  if (!g_fiber) fail_outside_kernel(what);
  const int tid = linear_tid(g_fiber->ts), warp = tid / 32;
  const unsigned lanes = existing_lanes(*g_block, warp);
  if (lanes != 0xffffffffu)
    note_error(::volt::detail::format(what, " in warp ", warp, " of a block of ", g_block->threads,
                                      " threads, which has fewer than 32 lanes: undefined on the GPU"));
  const uintptr_t mine = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t first = 0;
  warp_exchange(lanes, &mine, &first, sizeof mine, 0);
  if (first != mine)
    note_error(::volt::detail::format(what, ": thread ", tid, " passes another pointer than its warp's lane 0 "
                                      "(a warp-collective call must be uniform)"));
  if (mine % 32 != 0)
    note_error(::volt::detail::format(what, ": pointer ", ptr, " (thread ", tid, ") is not 32-byte aligned"));
  if (ldm_bytes % 16 != 0)
    note_error(::volt::detail::format(what, ": a leading dimension of ", ldm_bytes,
                                      " bytes is not a multiple of 16 (thread ", tid, ")"));
}

void* warp_scratch(size_t bytes) {
  if (!g_fiber) fail_outside_kernel("warp scratch");
  std::vector<unsigned char>& buf = g_block->warp_scratch[size_t(linear_tid(g_fiber->ts) / 32)];
  if (buf.size() < bytes) buf.assign(bytes, 0);  // contents kept until a larger size is asked
  return buf.data();
}

void check_launch_config(dim3 grid, dim3 block, size_t smem_bytes) {
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  VOLT_CHECK(grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535 &&
                 grid.z <= 65535,
             "CUDA emulator: invalid grid (", grid.x, ", ", grid.y, ", ", grid.z,
             "): cudaErrorInvalidConfiguration on a GPU");
  VOLT_CHECK(threads >= 1 && threads <= kMaxThreads && block.x <= 1024 && block.y <= 1024 && block.z <= 64,
             "CUDA emulator: invalid block (", block.x, ", ", block.y, ", ", block.z,
             "): cudaErrorInvalidConfiguration on a GPU");
  VOLT_CHECK(smem_bytes <= 48 * 1024, "CUDA emulator: ", smem_bytes,
             " bytes of dynamic shared memory need cudaFuncSetAttribute on a GPU (default limit 48 KiB)");
}

void run_grid(void (*call)(void*), void* arg, dim3 grid, dim3 block, size_t smem_bytes) {
  check_launch_config(grid, block, smem_bytes);
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  VOLT_CHECK(g_block == nullptr, "CUDA emulator: a kernel launched from inside a kernel");
  while (g_stacks.size() < size_t(threads)) g_stacks.emplace_back(new char[kStackBytes]);

  Block b;
  b.threads = int(threads);
  b.call = call;
  b.arg = arg;
  b.fibers.resize(size_t(threads));
  const size_t warps = size_t((threads + 31) / 32);
  b.slots[0].assign(warps * 32, 0);
  b.slots[1].assign(warps * 32, 0);
  b.warp_scratch.resize(warps);
  b.smem.assign(smem_bytes + 128, 0xCD);  // not zero: reading shared memory before writing it shows
  b.smem_bytes = smem_bytes;
  g_block = &b;
  struct Reset {
    ~Reset() {
      g_block = nullptr;
      g_fiber = nullptr;
    }
  } reset;
  static std::atomic<uint64_t> launches{0};
  b.rng = schedule().seed * 0x2545f4914f6cdd1dull + launches.fetch_add(1);
  const int64_t blocks = int64_t(grid.x) * grid.y * grid.z;
  std::vector<int> block_order;
  if (schedule().order != Order::Forward && blocks <= int64_t(1) << 24)  // larger grids run in order
    schedule_order(block_order, int(blocks), b.rng);
  for (int64_t i = 0; i < blocks && b.error.empty(); ++i) {
    const int64_t k = block_order.empty() ? i : block_order[size_t(i)];
    const unsigned bx = unsigned(k % grid.x), by = unsigned(k / grid.x % grid.y), bz = unsigned(k / grid.x / grid.y);
    int t = 0;
    for (unsigned z = 0; z < block.z; ++z)
      for (unsigned y = 0; y < block.y; ++y)
        for (unsigned x = 0; x < block.x; ++x, ++t) {
          Fiber& f = b.fibers[size_t(t)];
          f.ts = ThreadState{dim3(x, y, z), dim3(bx, by, bz), block, grid};
          f.stack = g_stacks[size_t(t)].get();
        }
    run_block(b);
  }
  VOLT_CHECK(b.error.empty(), "CUDA emulator: ", b.error);
}

// Half and bfloat16 conversions: Volt's own (engine/dtype.h), round to nearest even.
uint16_t float_to_half_bits(float f) { return ::volt::float_to_half(f); }
float half_bits_to_float(uint16_t h) {
  static const std::vector<float> table = [] {  // every half once: the tensor-core emulation converts a lot
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = ::volt::half_to_float(uint16_t(i));
    return t;
  }();
  return table[h];
}
uint16_t float_to_bf16_bits(float f) { return ::volt::float_to_bf16(f); }
float bf16_bits_to_float(uint16_t b) { return ::volt::bf16_to_float(b); }

}  // namespace volt_emu
