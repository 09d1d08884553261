// Slurm pre-emption: sbatch --signal=SIGUSR1@90 warns a job before its time limit. The handler only
// raises a flag; the Trainer checks it at step boundaries (agreeing over the ranks), writes a
// checkpoint, asks Slurm to requeue the job and stops; the requeued job resumes from it.
#pragma once
#include <string>

namespace volt {

// Installs the SIGUSR1 handler; returns false when it already was (a flag already raised is kept:
// a program installs it first thing, so a signal that arrives while it loads data is not lost).
// uninstall restores the previous handler and clears the flag.
bool install_requeue_signal();
void uninstall_requeue_signal();
bool requeue_signal_raised();
void clear_requeue_signal();

// Ctrl-C (SIGINT) and SIGTERM (scancel, mpirun's or a node's shutdown) while a Trainer fits: the
// first one only raises a flag, which the Trainer acts on at its next step (every rank at the same
// one): it stops with the logs on disk, as Lightning's "graceful shutdown". The handlers remove
// themselves as they run, so a second signal ends the process at once; the guard puts the previous
// handlers back (and clears the flag) when the fit ends.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};
// The interrupting signal raised since the guard was made (SIGINT or SIGTERM), or 0.
int interrupt_signal_raised();

// Asks Slurm to put job_id back in the queue: runs $VOLT_REQUEUE_CMD with the job id as its
// argument when set (tests record the call that way), else `scontrol requeue <job_id>`.
// Returns a line saying what ran and how it ended; throws volt::Error when it could not run or failed.
std::string requeue_job(const std::string& job_id);

// Where a pre-empted run leaves its checkpoint: <root>/hpc_ckpt.ckpt.
std::string requeue_checkpoint_path(const std::string& root);
// True when this process is a requeued Slurm job ($SLURM_RESTART_COUNT > 0).
bool is_requeued_job();

}  // namespace volt
