// SIGUSR1 flag and the requeue call (see requeue.h).
#include "dist/requeue.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace volt {

namespace {
volatile sig_atomic_t g_raised = 0;
bool g_installed = false;
struct sigaction g_previous;

volatile sig_atomic_t g_interrupt = 0;
int g_guards = 0;  // nested fits (a callback's own Trainer) install once
struct sigaction g_previous_int, g_previous_term;

// C linkage for a signal handler, and static: an unnamed namespace does not keep an extern "C"
// name out of the global symbol table, where a program that links libvolt could define its own.
extern "C" {
static void on_sigusr1(int) { g_raised = 1; }
static void on_interrupt(int sig) { g_interrupt = sig; }
}

// Single-quoted for the shell.
std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

bool install_requeue_signal() {
  if (g_installed) return false;
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  VOLT_CHECK(::sigaction(SIGUSR1, &sa, &g_previous) == 0, "cannot install the SIGUSR1 handler");
  g_installed = true;
  return true;
}

void uninstall_requeue_signal() {
  if (!g_installed) return;
  ::sigaction(SIGUSR1, &g_previous, nullptr);
  g_installed = false;
  g_raised = 0;
}

InterruptGuard::InterruptGuard() {
  if (g_guards++ > 0) return;
  g_interrupt = 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_RESETHAND;  // the second signal takes the default action: the end
  ::sigaction(SIGINT, &sa, &g_previous_int);
  ::sigaction(SIGTERM, &sa, &g_previous_term);
  // A signal the process was started ignoring (a shell's background job, nohup) stays ignored.
  if (!(g_previous_int.sa_flags & SA_SIGINFO) && g_previous_int.sa_handler == SIG_IGN)
    ::sigaction(SIGINT, &g_previous_int, nullptr);
  if (!(g_previous_term.sa_flags & SA_SIGINFO) && g_previous_term.sa_handler == SIG_IGN)
    ::sigaction(SIGTERM, &g_previous_term, nullptr);
}

InterruptGuard::~InterruptGuard() {
  if (--g_guards > 0) return;
  ::sigaction(SIGINT, &g_previous_int, nullptr);
  ::sigaction(SIGTERM, &g_previous_term, nullptr);
  g_interrupt = 0;
}

int interrupt_signal_raised() { return g_interrupt; }

bool requeue_signal_raised() { return g_raised != 0; }
void clear_requeue_signal() { g_raised = 0; }

std::string requeue_job(const std::string& job_id) {
  VOLT_CHECK(!job_id.empty(), "requeue: this is not a Slurm job (no SLURM_JOB_ID)");
  const char* custom = std::getenv("VOLT_REQUEUE_CMD");
  const std::string shown = (custom && *custom ? std::string(custom) : std::string("scontrol requeue")) + " " +
                            quote(job_id);
  const std::string cmd = shown + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  VOLT_CHECK(p != nullptr, "requeue: cannot run ", cmd);
  std::string output;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) output += buf;
  const int status = ::pclose(p);
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  VOLT_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "requeue: `", cmd, "` failed (status ",
             status, ")", output.empty() ? "" : ": " + output);
  return "`" + shown + "` succeeded" + (output.empty() ? "" : ": " + output);
}

std::string requeue_checkpoint_path(const std::string& root) { return root + "/hpc_ckpt.ckpt"; }

bool is_requeued_job() {
  const char* n = std::getenv("SLURM_RESTART_COUNT");
  return n && std::atoi(n) > 0;
}

}  // namespace volt
