// The process environment of a data-parallel run: which launcher started this process (srun,
// mpirun, or none), its global and local rank, its node and the world size, and the checks that
// refuse a layout that cannot work (more tasks on a node than GPUs, --devices disagreeing with the
// tasks per node) before any training starts. Pure functions of an environment map, so they are
// testable without a launcher; detect_process_env() reads the real environment.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace volt {

using EnvMap = std::map<std::string, std::string>;

struct ProcessEnv {
  std::string launcher = "none";  // "slurm" (srun), "mpirun" (OpenMPI), "none" (one process)
  int rank = 0;          // global rank in [0, world_size)
  int local_rank = 0;    // rank among the processes on this node; picks the GPU (process_gpu)
  int local_size = 1;    // processes on this node
  int node_rank = 0;     // index of this node in [0, num_nodes)
  int world_size = 1;
  int num_nodes = 1;
  std::vector<int> tasks_per_node;  // one entry per node (Slurm); {world_size} otherwise
  std::string job_id;               // SLURM_JOB_ID ("" outside Slurm)
  std::string requeue_id;           // the job for `scontrol requeue`: "<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>"
                                    // for an array task (its own, not the whole array), else job_id
  std::string nodelist;             // SLURM_NODELIST / SLURM_STEP_NODELIST, as given

  bool is_distributed() const { return world_size > 1; }
  bool is_rank0() const { return rank == 0; }
  bool is_local_rank0() const { return local_rank == 0; }
  std::string str() const;  // "slurm: rank 1/4 (local 1/2, node 0/2), job 123"
};

// Every variable of the current process's environment.
EnvMap current_env();

// The environment a process runs in, from its variables:
//  - mpirun (OpenMPI): OMPI_COMM_WORLD_RANK, _LOCAL_RANK, _SIZE, _LOCAL_SIZE (node index and
//    node count assume mpirun's default by-slot mapping: rank / local_size, with as many ranks on
//    every node; the Trainer makes them exact with set_nodes_from_hosts);
//  - srun: SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, the step's task and node counts
//    (SLURM_STEP_NUM_TASKS / SLURM_NTASKS, SLURM_STEP_NUM_NODES / SLURM_NNODES) and tasks per node
//    (SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE or SLURM_NTASKS_PER_NODE, in Slurm's
//    "2(x3),1" form). Only a job step counts (SLURM_STEP_ID set): a program run directly in an
//    sbatch script or salloc shell is one process, not rank 0 of the job's tasks;
//  - otherwise one process.
// Inconsistent values (rank >= world size, unparsable numbers, tasks per node not adding up)
// throw volt::Error naming the variable.
ProcessEnv detect_process_env(const EnvMap& env);
inline ProcessEnv detect_process_env() { return detect_process_env(current_env()); }

// mpirun's nodes from every rank's host name (hosts[r] for rank r, gathered once the ranks can talk):
// num_nodes, node_rank (nodes numbered in order of their lowest rank) and tasks_per_node, exact for
// any mapping (by slot with uneven slots, by node), where detect_process_env() could only assume
// as many processes on every node as on this one. Throws volt::Error when hosts does not fit env
// (its size, or this rank's node holding other than local_size ranks).
void set_nodes_from_hosts(ProcessEnv& env, const std::vector<std::string>& hosts);

// Slurm's tasks-per-node list: "2(x3),1" -> {2, 2, 2, 1}; "4" -> {4}. Throws volt::Error on bad text.
std::vector<int> parse_slurm_tasks_per_node(const std::string& text);

// Refuses a layout that cannot work, on every rank, with a message saying what to change:
//  - devices_requested (the Trainer's `devices` / cnn_train's --devices; -1 = all, 0 = not given)
//    must equal the processes on this node: Volt does not spawn processes, the launcher does
//    (srun --ntasks-per-node=N, mpirun -n N); a single process with devices > 1 is refused;
//  - on the GPU (accelerator_is_gpu): the process must see a GPU (gpus_visible, after
//    CUDA_VISIBLE_DEVICES); when it sees the whole node's GPUs (at least one per process) and
//    devices = -1, that means all of them, which must then equal the processes on the node. A process
//    that sees fewer GPUs than its node has processes is taken as bound to its own GPU by the
//    launcher (process_gpu); whether two processes share one is checked by check_distinct_gpus;
//  - num_nodes_requested (> 0) must equal the nodes the job runs on.
void check_layout(const ProcessEnv& env, int64_t devices_requested, int gpus_visible, bool accelerator_is_gpu,
                  int64_t num_nodes_requested = 0);

// The GPU (an index among the gpus_visible this process sees) that the process trains on:
//  - its local rank when it sees at least one GPU per process of its node (srun --gpus-per-node=N
//    with --ntasks-per-node=N, mpirun on a node whose GPUs all processes see);
//  - GPU 0 when it sees fewer (Slurm binds GPUs to tasks: --gpus-per-task=1, --gpu-bind=single:1 or
//    map_gpu, or a site's CUDA_VISIBLE_DEVICES per task: each task sees only its own).
// Throws volt::Error when the process sees no GPU.
int process_gpu(const ProcessEnv& env, int gpus_visible);

// One rank's GPU as gathered from every rank when the NCCL communicator starts: the GPU's UUID
// ("GPU-8c2d..." as nvidia-smi prints it), the node and the device index the rank chose.
struct RankGpu {
  int rank = 0, node = 0, device = 0;
  std::string uuid;
};
// Refuses two ranks on the same physical GPU (NCCL needs one GPU per rank), naming both ranks, the
// node and the GPU, and what to ask the launcher for instead. `gpus` holds one entry per rank.
void check_distinct_gpus(const std::vector<RankGpu>& gpus);

}  // namespace volt
