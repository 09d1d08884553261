// Launcher detection (srun, mpirun, none) and the layout checks; see process_env.h.
#include "dist/process_env.h"

#include <cerrno>
#include <cstdlib>
#include <map>
#include <numeric>
#include <sstream>

#include "engine/error.h"

extern char** environ;

namespace volt {

namespace {

const std::string* find(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// The first of `names` that is set, or nullptr; `which` receives its name.
const std::string* first_of(const EnvMap& env, std::initializer_list<const char*> names, std::string* which) {
  for (const char* n : names) {
    if (const std::string* v = find(env, n)) {
      *which = n;
      return v;
    }
  }
  return nullptr;
}

int parse_int(const std::string& text, const std::string& what, int min_value) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  VOLT_CHECK(!text.empty() && end && *end == '\0' && errno == 0 && v >= min_value && v <= (1L << 30),
             "process environment: ", what, "='", text, "' is not an integer >= ", min_value);
  return int(v);
}

int required_int(const EnvMap& env, std::initializer_list<const char*> names, int min_value, const char* launcher) {
  std::string which;
  const std::string* v = first_of(env, names, &which);
  if (!v) {
    std::string list;
    for (const char* n : names) list += std::string(list.empty() ? "" : " or ") + n;
    VOLT_FAIL("process environment: ", list, " is not set although ", launcher, " launched this process");
  }
  return parse_int(*v, which, min_value);
}

// The Slurm job this process runs in (none outside Slurm), and what `scontrol requeue` must name: an
// array task as "<array job id>_<task id>", since the array's last task has SLURM_JOB_ID equal to
// SLURM_ARRAY_JOB_ID, which names the whole array (every task of it requeued, finished ones too).
void set_slurm_job(const EnvMap& env, ProcessEnv& e) {
  const std::string* j = find(env, "SLURM_JOB_ID");
  if (!j) j = find(env, "SLURM_JOBID");
  if (!j) return;
  e.job_id = *j;
  e.requeue_id = *j;
  const std::string* array = find(env, "SLURM_ARRAY_JOB_ID");
  const std::string* task = find(env, "SLURM_ARRAY_TASK_ID");
  if (array && task && !array->empty() && !task->empty()) e.requeue_id = *array + "_" + *task;
}

ProcessEnv from_mpirun(const EnvMap& env) {
  ProcessEnv e;
  e.launcher = "mpirun";
  e.world_size = required_int(env, {"OMPI_COMM_WORLD_SIZE"}, 1, "mpirun");
  e.rank = required_int(env, {"OMPI_COMM_WORLD_RANK"}, 0, "mpirun");
  e.local_rank = required_int(env, {"OMPI_COMM_WORLD_LOCAL_RANK"}, 0, "mpirun");
  e.local_size = required_int(env, {"OMPI_COMM_WORLD_LOCAL_SIZE"}, 1, "mpirun");
  VOLT_CHECK(e.rank < e.world_size, "process environment: OMPI_COMM_WORLD_RANK=", e.rank,
             " is not below OMPI_COMM_WORLD_SIZE=", e.world_size);
  VOLT_CHECK(e.local_rank < e.local_size && e.local_size <= e.world_size, "process environment: OMPI_COMM_WORLD_LOCAL_RANK=",
             e.local_rank, ", OMPI_COMM_WORLD_LOCAL_SIZE=", e.local_size, " do not fit OMPI_COMM_WORLD_SIZE=", e.world_size);
  // mpirun does not export the node count: assume its default by-slot mapping with the same number
  // of processes on every node (exact on one node, the usual case).
  e.num_nodes = (e.world_size + e.local_size - 1) / e.local_size;
  e.node_rank = e.rank / e.local_size;
  e.tasks_per_node.assign(size_t(e.num_nodes), e.local_size);
  e.tasks_per_node.back() = e.world_size - e.local_size * (e.num_nodes - 1);
  set_slurm_job(env, e);
  return e;
}

ProcessEnv from_slurm(const EnvMap& env) {
  ProcessEnv e;
  e.launcher = "slurm";
  e.rank = required_int(env, {"SLURM_PROCID"}, 0, "srun");
  e.local_rank = required_int(env, {"SLURM_LOCALID"}, 0, "srun");
  e.world_size = required_int(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"}, 1, "srun");
  std::string which;
  const std::string* nn = first_of(env, {"SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"}, &which);
  e.num_nodes = nn ? parse_int(*nn, which, 1) : 1;
  VOLT_CHECK(e.rank < e.world_size, "process environment: SLURM_PROCID=", e.rank, " is not below the task count ",
             e.world_size);
  VOLT_CHECK(e.num_nodes <= e.world_size, "process environment: ", which, "=", e.num_nodes, " nodes for only ",
             e.world_size, " tasks");

  const std::string* tpn = first_of(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}, &which);
  if (tpn) {
    e.tasks_per_node = parse_slurm_tasks_per_node(*tpn);
  } else if (const std::string* per = find(env, "SLURM_NTASKS_PER_NODE")) {
    which = "SLURM_NTASKS_PER_NODE";
    e.tasks_per_node = parse_slurm_tasks_per_node(*per);
    if (e.tasks_per_node.size() == 1) e.tasks_per_node.assign(size_t(e.num_nodes), e.tasks_per_node[0]);
  } else {
    VOLT_CHECK(e.world_size % e.num_nodes == 0, "process environment: ", e.world_size, " tasks on ", e.num_nodes,
               " nodes and no SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE to say how they are spread");
    which = "(tasks / nodes)";
    e.tasks_per_node.assign(size_t(e.num_nodes), e.world_size / e.num_nodes);
  }
  VOLT_CHECK(int(e.tasks_per_node.size()) == e.num_nodes, "process environment: ", which, " lists ",
             e.tasks_per_node.size(), " nodes but the step has ", e.num_nodes);
  const int total = std::accumulate(e.tasks_per_node.begin(), e.tasks_per_node.end(), 0);
  VOLT_CHECK(total == e.world_size, "process environment: ", which, " adds up to ", total, " tasks but the step has ",
             e.world_size);

  if (const std::string* node = find(env, "SLURM_NODEID")) {
    e.node_rank = parse_int(*node, "SLURM_NODEID", 0);
  } else {
    // Block distribution (Slurm's default): ranks fill node 0, then node 1, ...
    int first = 0;
    e.node_rank = 0;
    while (e.node_rank + 1 < e.num_nodes && e.rank >= first + e.tasks_per_node[size_t(e.node_rank)]) {
      first += e.tasks_per_node[size_t(e.node_rank)];
      ++e.node_rank;
    }
  }
  VOLT_CHECK(e.node_rank < e.num_nodes, "process environment: SLURM_NODEID=", e.node_rank, " is not below the ",
             e.num_nodes, " nodes of the step");
  e.local_size = e.tasks_per_node[size_t(e.node_rank)];
  VOLT_CHECK(e.local_rank < e.local_size, "process environment: SLURM_LOCALID=", e.local_rank, " but node ",
             e.node_rank, " runs ", e.local_size, " tasks (", which, ")");
  set_slurm_job(env, e);
  if (const std::string* n = first_of(env, {"SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST"}, &which))
    e.nodelist = *n;
  return e;
}

}  // namespace

std::string ProcessEnv::str() const {
  std::ostringstream os;
  os << launcher << ": rank " << rank << "/" << world_size << " (local " << local_rank << "/" << local_size << ", node "
     << node_rank << "/" << num_nodes << ")";
  if (!job_id.empty()) os << ", job " << job_id;
  return os.str();
}

EnvMap current_env() {
  EnvMap env;
  for (char** p = environ; p && *p; ++p) {
    const std::string kv = *p;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

std::vector<int> parse_slurm_tasks_per_node(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  auto bad = [&]() { VOLT_FAIL("process environment: cannot parse tasks per node '", text, "' (expected e.g. 2(x3),1)"); };
  if (text.empty()) bad();
  while (std::getline(ss, item, ',')) {
    const size_t paren = item.find('(');
    int tasks = 0, repeat = 1;
    try {
      if (paren == std::string::npos) {
        tasks = parse_int(item, "tasks per node", 1);
      } else {
        if (item.size() < paren + 4 || item.compare(paren, 2, "(x") != 0 || item.back() != ')') bad();
        tasks = parse_int(item.substr(0, paren), "tasks per node", 1);
        repeat = parse_int(item.substr(paren + 2, item.size() - paren - 3), "tasks per node repeat", 1);
      }
    } catch (const Error&) {
      bad();
    }
    VOLT_CHECK(out.size() + size_t(repeat) <= 1000000, "process environment: tasks per node '", text, "' lists too many nodes");
    out.insert(out.end(), size_t(repeat), tasks);
  }
  if (out.empty() || text.back() == ',') bad();
  return out;
}

namespace {
// Other launchers' ranks are not read: each of their processes would train alone (world size 1, or
// its srun task's), all into the same folders. A size over 1 that is not the world Volt found is
// refused (srun's PMI-2 sets PMI_SIZE to the step's size, and job scripts export WORLD_SIZE so).
void refuse_other_launchers(const EnvMap& env, int world_size) {
  for (const auto& [var, who] : {std::pair<const char*, const char*>{"WORLD_SIZE", "torchrun (torch.distributed)"},
                                 {"PMI_SIZE", "MPICH or Intel MPI (Hydra's PMI)"}}) {
    const std::string* n = find(env, var);
    const int size = n ? std::atoi(n->c_str()) : 0;
    if (size > 1 && size != world_size)
      VOLT_FAIL("process environment: this process is one of ", *n, " started by ", who, " (", var, "=", *n,
                world_size > 1 ? ", inside an srun step of " + std::to_string(world_size) + " tasks" : std::string(),
                "), which Volt does not join; launch with srun, or OpenMPI's mpirun");
  }
}
}  // namespace

ProcessEnv detect_process_env(const EnvMap& env) {
  if (find(env, "OMPI_COMM_WORLD_SIZE")) return from_mpirun(env);
  if (find(env, "SLURM_PROCID") && (find(env, "SLURM_STEP_ID") || find(env, "SLURM_STEPID"))) {
    ProcessEnv e = from_slurm(env);
    refuse_other_launchers(env, e.world_size);  // (torchrun or mpiexec started inside the step)
    return e;
  }
  refuse_other_launchers(env, 1);
  ProcessEnv e;
  e.tasks_per_node = {1};
  set_slurm_job(env, e);
  return e;
}

void set_nodes_from_hosts(ProcessEnv& env, const std::vector<std::string>& hosts) {
  VOLT_CHECK(int(hosts.size()) == env.world_size, "process environment: ", hosts.size(), " host names for ",
             env.world_size, " ranks");
  std::map<std::string, int> node_of;  // host -> node index, in order of the hosts' lowest ranks
  std::vector<int> tasks;
  for (const std::string& h : hosts) {
    const auto [it, fresh] = node_of.emplace(h, int(tasks.size()));
    if (fresh) tasks.push_back(0);
    ++tasks[size_t(it->second)];
  }
  const int node = node_of.at(hosts[size_t(env.rank)]);
  VOLT_CHECK(tasks[size_t(node)] == env.local_size, "process environment: ", tasks[size_t(node)], " ranks run on ",
             hosts[size_t(env.rank)], " but OMPI_COMM_WORLD_LOCAL_SIZE is ", env.local_size);
  env.num_nodes = int(tasks.size());
  env.node_rank = node;
  env.tasks_per_node = tasks;
}

namespace {
std::string where_is(const ProcessEnv& env) {
  return env.launcher == "none" ? std::string("this single process")
                                : "rank " + std::to_string(env.rank) + " (node " + std::to_string(env.node_rank) + ")";
}
}  // namespace

void check_layout(const ProcessEnv& env, int64_t devices_requested, int gpus_visible, bool accelerator_is_gpu,
                  int64_t num_nodes_requested) {
  const std::string where = where_is(env);
  const std::string launch_hint = "launch one process per device: srun --ntasks-per-node=N (with --gpus-per-node=N on "
                                  "GPUs) or mpirun -n N; Volt does not start processes itself";
  VOLT_CHECK(devices_requested >= -1, "layout: --devices ", devices_requested, " is not a count (or -1 for all)");
  if (accelerator_is_gpu) {
    VOLT_CHECK(gpus_visible > 0, "layout: the GPU accelerator was asked for but ", where, " sees no GPU");
    // Seeing the node's GPUs (one or more per process), -1 means all of them; a process bound to its
    // own GPU (it sees fewer) cannot count the node's, and check_distinct_gpus checks the binding.
    if (devices_requested == -1 && gpus_visible >= env.local_size) {
      VOLT_CHECK(env.local_size == gpus_visible, "layout: --devices -1 means all ", gpus_visible, " GPUs of the node, but ",
                 env.local_size, " process", env.local_size == 1 ? " runs" : "es run", " on node ", env.node_rank, "; ",
                 launch_hint);
    }
  }
  if (devices_requested > 0) {
    VOLT_CHECK(devices_requested == env.local_size, "layout: --devices ", devices_requested, " but ", env.local_size,
               " process", env.local_size == 1 ? " runs" : "es run", " on node ", env.node_rank,
               env.launcher == "slurm" ? " (Slurm's tasks per node" : env.launcher == "mpirun" ? " (mpirun -n" : " (",
               env.launcher == "none" ? "" : ", ", "seen by ", where, "); ", launch_hint);
  }
  if (num_nodes_requested > 0) {
    VOLT_CHECK(num_nodes_requested == env.num_nodes, "layout: --num-nodes ", num_nodes_requested, " but the job runs on ",
               env.num_nodes, " node", env.num_nodes == 1 ? "" : "s",
               env.launcher == "slurm" ? " (srun --nodes / sbatch --nodes)" : "", " as seen by ", where);
  }
}

int process_gpu(const ProcessEnv& env, int gpus_visible) {
  VOLT_CHECK(gpus_visible > 0, "layout: ", where_is(env), " sees no GPU (no driver, or CUDA_VISIBLE_DEVICES is empty)");
  return gpus_visible >= env.local_size ? env.local_rank : 0;
}

void check_distinct_gpus(const std::vector<RankGpu>& gpus) {
  std::map<std::string, const RankGpu*> first;
  for (const RankGpu& g : gpus) {
    const auto [it, fresh] = first.emplace(g.uuid, &g);
    if (fresh) continue;
    const RankGpu& a = *it->second;
    VOLT_FAIL("layout: ranks ", a.rank, " and ", g.rank, " (node ", g.node, ") both train on GPU ", g.uuid,
              " (device ", a.device, " and ", g.device, " of the GPUs each sees): each process needs its own GPU; "
              "start at most one task per GPU and give each task its own (srun --ntasks-per-node=N with "
              "--gpus-per-node=N, or --gpus-per-task=1)");
  }
}

}  // namespace volt
