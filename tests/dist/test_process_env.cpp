// Launcher detection (srun, mpirun, none) and the layout checks, from made-up environments: no
// launcher needed. Also the world-size-1 communicator and DDP helpers, which every build has.
#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/process_env.h"
#include "layers/layers.h"
#include "tests/test_util.h"
#include "volt/config.h"

using namespace volt;
using volt::test::contains;
using volt::test::error_of;

namespace {
// What srun exports to task `rank` of a step on `nodes` nodes with the given tasks per node.
EnvMap srun_env(int rank, int local, int node, int ntasks, int nnodes, const std::string& tpn) {
  return {{"SLURM_PROCID", std::to_string(rank)},   {"SLURM_LOCALID", std::to_string(local)},
          {"SLURM_NODEID", std::to_string(node)},   {"SLURM_NTASKS", std::to_string(ntasks)},
          {"SLURM_NNODES", std::to_string(nnodes)}, {"SLURM_STEP_TASKS_PER_NODE", tpn},
          {"SLURM_JOB_ID", "4242"},                 {"SLURM_STEP_ID", "0"},
          {"SLURM_NODELIST", "gpu[01-02]"}};
}
}  // namespace

TEST_CASE("process_env: a plain process is world size 1") {
  const ProcessEnv e = detect_process_env(EnvMap{{"HOME", "/root"}});
  CHECK(e.launcher == "none");
  CHECK(e.rank == 0);
  CHECK(e.world_size == 1);
  CHECK(e.local_size == 1);
  CHECK(e.num_nodes == 1);
  CHECK_FALSE(e.is_distributed());
  // Inside an sbatch script or salloc shell but not an srun step: still one process.
  const ProcessEnv b = detect_process_env(EnvMap{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_ID", "7"}});
  CHECK(b.launcher == "none");
  CHECK(b.world_size == 1);
  CHECK(b.job_id == "7");
}

TEST_CASE("process_env: processes another launcher started are refused, not trained one by one") {
  const std::string torchrun = error_of([] { detect_process_env(EnvMap{{"WORLD_SIZE", "4"}, {"RANK", "1"}}); });
  CHECK(contains(torchrun, "one of 4 started by torchrun"));
  CHECK(contains(torchrun, "launch with srun, or OpenMPI's mpirun"));
  CHECK(contains(error_of([] { detect_process_env(EnvMap{{"PMI_SIZE", "2"}, {"PMI_RANK", "0"}}); }),
                 "MPICH or Intel MPI"));
  // Size 1 is one process: nothing to join.
  CHECK(detect_process_env(EnvMap{{"WORLD_SIZE", "1"}}).world_size == 1);
  // srun and OpenMPI's own variables come first (srun may export PMI_SIZE through its PMI plugins).
  EnvMap env = srun_env(1, 1, 0, 2, 1, "2");
  env["PMI_SIZE"] = "2";
  env["WORLD_SIZE"] = "2";  // (a job script's export WORLD_SIZE=$SLURM_NTASKS)
  CHECK(detect_process_env(env).world_size == 2);
  // torchrun (or Hydra's mpiexec) started inside a one-task srun step: its 4 processes would each train
  // alone as the step's only task.
  EnvMap nested = srun_env(0, 0, 0, 1, 1, "1");
  nested["WORLD_SIZE"] = "4";
  const std::string inside = error_of([&] { detect_process_env(nested); });
  CHECK(contains(inside, "one of 4 started by torchrun"));
  nested.erase("WORLD_SIZE");
  nested["PMI_SIZE"] = "4";
  CHECK(contains(error_of([&] { detect_process_env(nested); }), "MPICH or Intel MPI"));
  nested = srun_env(0, 0, 0, 2, 1, "2");
  nested["PMI_SIZE"] = "8";
  CHECK(contains(error_of([&] { detect_process_env(nested); }), "inside an srun step of 2 tasks"));
}

TEST_CASE("process_env: Slurm tasks-per-node forms") {
  CHECK(parse_slurm_tasks_per_node("4") == std::vector<int>{4});
  CHECK(parse_slurm_tasks_per_node("2(x3)") == std::vector<int>{2, 2, 2});
  CHECK(parse_slurm_tasks_per_node("2,1") == std::vector<int>{2, 1});
  CHECK(parse_slurm_tasks_per_node("3(x2),1,2(x1)") == std::vector<int>{3, 3, 1, 2});
  for (const char* bad : {"", "x", "2(x)", "2(3)", "0", "2,", "-1", "2(x3", "2(x0)"}) {
    INFO("text: '" << bad << "'");
    CHECK(contains(error_of([&] { parse_slurm_tasks_per_node(bad); }), "tasks per node"));
  }
}

TEST_CASE("process_env: an array job's task is requeued as itself, not as the whole array") {
  // sbatch --array=0-2: the array's last task started has SLURM_JOB_ID equal to SLURM_ARRAY_JOB_ID,
  // and `scontrol requeue <that id>` would requeue every task of the array.
  EnvMap env = srun_env(0, 0, 0, 1, 1, "1");
  env["SLURM_JOB_ID"] = "352";
  env["SLURM_ARRAY_JOB_ID"] = "352";
  env["SLURM_ARRAY_TASK_ID"] = "2";
  ProcessEnv e = detect_process_env(env);
  CHECK(e.job_id == "352");  // (what owns its checkpoints: kept by a requeue)
  CHECK(e.requeue_id == "352_2");
  env.erase("SLURM_STEP_ID");  // run directly in the batch script: one process, the same job
  e = detect_process_env(env);
  CHECK(e.launcher == "none");
  CHECK(e.requeue_id == "352_2");
  env.erase("SLURM_ARRAY_TASK_ID");
  CHECK(detect_process_env(env).requeue_id == "352");
}

TEST_CASE("process_env: srun across two nodes") {
  // srun -N 2 -n 3: node 0 runs ranks 0 and 1, node 1 runs rank 2.
  const ProcessEnv e = detect_process_env(srun_env(2, 0, 1, 3, 2, "2,1"));
  CHECK(e.launcher == "slurm");
  CHECK(e.rank == 2);
  CHECK(e.local_rank == 0);
  CHECK(e.local_size == 1);
  CHECK(e.node_rank == 1);
  CHECK(e.world_size == 3);
  CHECK(e.num_nodes == 2);
  CHECK(e.tasks_per_node == std::vector<int>{2, 1});
  CHECK(e.job_id == "4242");
  CHECK(e.requeue_id == "4242");
  CHECK(e.nodelist == "gpu[01-02]");
  CHECK(e.is_distributed());
  CHECK(contains(e.str(), "rank 2/3"));

  // Without SLURM_NODEID the node follows from block distribution; SLURM_NTASKS_PER_NODE alone.
  EnvMap env = srun_env(5, 1, 0, 8, 4, "");
  env.erase("SLURM_NODEID");
  env.erase("SLURM_STEP_TASKS_PER_NODE");
  env["SLURM_NTASKS_PER_NODE"] = "2";
  const ProcessEnv f = detect_process_env(env);
  CHECK(f.node_rank == 2);
  CHECK(f.local_size == 2);
  CHECK(f.tasks_per_node == std::vector<int>{2, 2, 2, 2});

  // The step's counts win over the job's (a smaller step inside a bigger allocation).
  env = srun_env(1, 1, 0, 8, 4, "2(x4)");
  env["SLURM_STEP_NUM_TASKS"] = "2";
  env["SLURM_STEP_NUM_NODES"] = "1";
  env["SLURM_STEP_TASKS_PER_NODE"] = "2";
  env["SLURM_TASKS_PER_NODE"] = "2(x4)";
  const ProcessEnv g = detect_process_env(env);
  CHECK(g.world_size == 2);
  CHECK(g.num_nodes == 1);
  CHECK(g.local_size == 2);
}

TEST_CASE("process_env: inconsistent Slurm variables are errors naming the variable") {
  CHECK(contains(error_of([] { detect_process_env(srun_env(3, 0, 0, 3, 1, "3")); }), "SLURM_PROCID=3"));
  CHECK(contains(error_of([] { detect_process_env(srun_env(0, 0, 0, 4, 2, "2,1")); }), "adds up to 3"));
  CHECK(contains(error_of([] { detect_process_env(srun_env(0, 2, 0, 4, 2, "2(x2)")); }), "SLURM_LOCALID=2"));
  CHECK(contains(error_of([] { detect_process_env(srun_env(0, 0, 0, 4, 3, "2(x2)")); }), "lists 2 nodes"));
  EnvMap env = srun_env(0, 0, 0, 2, 1, "2");
  env["SLURM_NTASKS"] = "two";
  CHECK(contains(error_of([&] { detect_process_env(env); }), "SLURM_NTASKS='two'"));
  env = srun_env(0, 0, 0, 2, 1, "2");
  env.erase("SLURM_LOCALID");
  CHECK(contains(error_of([&] { detect_process_env(env); }), "SLURM_LOCALID is not set"));
}

TEST_CASE("process_env: mpirun") {
  const EnvMap env = {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                      {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                      // mpirun inside an allocation: its own variables win over Slurm's.
                      {"SLURM_PROCID", "0"},         {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "1"},
                      {"SLURM_JOB_ID", "99"}};
  const ProcessEnv e = detect_process_env(env);
  CHECK(e.launcher == "mpirun");
  CHECK(e.rank == 3);
  CHECK(e.local_rank == 1);
  CHECK(e.local_size == 2);
  CHECK(e.world_size == 4);
  CHECK(e.num_nodes == 2);
  CHECK(e.node_rank == 1);
  CHECK(e.job_id == "99");
  EnvMap bad = env;
  bad["OMPI_COMM_WORLD_RANK"] = "4";
  CHECK(contains(error_of([&] { detect_process_env(bad); }), "OMPI_COMM_WORLD_RANK=4"));
}

TEST_CASE("process_env: layouts that cannot work are refused") {
  const ProcessEnv one = detect_process_env(EnvMap{});
  const ProcessEnv two_per_node = detect_process_env(srun_env(1, 1, 0, 4, 2, "2(x2)"));

  // Good layouts pass.
  check_layout(one, 1, 0, false);
  check_layout(one, 0, 0, false);
  check_layout(one, -1, 0, false);
  check_layout(one, 1, 1, true, 1);
  check_layout(two_per_node, 2, 2, true, 2);
  check_layout(two_per_node, -1, 2, true);
  check_layout(two_per_node, 2, 8, true);  // more GPUs than tasks is fine
  check_layout(two_per_node, 2, 0, false);

  // A process that sees fewer GPUs than its node has processes is bound to its own by Slurm
  // (--gpus-per-task=1): accepted here, with -1 too (it cannot count the node's GPUs).
  check_layout(two_per_node, 2, 1, true);
  check_layout(two_per_node, -1, 1, true);

  std::string m = error_of([&] { check_layout(two_per_node, 4, 4, true); });
  CHECK(contains(m, "--devices 4 but 2 processes run on node 0"));
  CHECK(contains(m, "srun --ntasks-per-node"));
  m = error_of([&] { check_layout(two_per_node, -1, 4, true); });
  CHECK(contains(m, "--devices -1 means all 4 GPUs"));
  m = error_of([&] { check_layout(two_per_node, 2, 2, true, 1); });
  CHECK(contains(m, "--num-nodes 1 but the job runs on 2 nodes"));
  m = error_of([&] { check_layout(one, 2, 2, true); });
  CHECK(contains(m, "--devices 2 but 1 process runs"));
  CHECK(contains(m, "does not start processes"));
  m = error_of([&] { check_layout(one, 1, 0, true); });
  CHECK(contains(m, "sees no GPU"));
  CHECK(contains(error_of([&] { check_layout(one, -2, 0, false); }), "--devices -2"));
}

TEST_CASE("process_env: the GPU each process trains on") {
  const ProcessEnv one = detect_process_env(EnvMap{});
  const ProcessEnv second_of_four = detect_process_env(srun_env(5, 1, 1, 8, 2, "4(x2)"));
  CHECK(process_gpu(one, 1) == 0);
  CHECK(process_gpu(one, 8) == 0);
  CHECK(process_gpu(second_of_four, 4) == 1);  // sees the node's 4 GPUs: GPU = local rank
  CHECK(process_gpu(second_of_four, 8) == 1);
  CHECK(process_gpu(second_of_four, 1) == 0);  // bound to its own GPU (--gpus-per-task=1)
  CHECK(process_gpu(second_of_four, 2) == 0);  // bound to two (--gpus-per-task=2): the first
  std::string m = error_of([&] { process_gpu(second_of_four, 0); });
  CHECK(contains(m, "rank 5 (node 1) sees no GPU"));
  CHECK(contains(m, "CUDA_VISIBLE_DEVICES"));

  // Two ranks on one physical GPU are refused, naming both and the GPU.
  check_distinct_gpus({{0, 0, 0, "GPU-a"}, {1, 0, 1, "GPU-b"}, {2, 1, 0, "GPU-c"}, {3, 1, 0, "GPU-d"}});
  check_distinct_gpus({});
  m = error_of([&] {
    check_distinct_gpus({{0, 0, 0, "GPU-a"}, {1, 0, 1, "GPU-b"}, {2, 1, 0, "GPU-c"}, {3, 1, 0, "GPU-c"}});
  });
  CHECK(contains(m, "ranks 2 and 3 (node 1) both train on GPU GPU-c"));
  CHECK(contains(m, "--gpus-per-task=1"));
}

TEST_CASE("communicator: world size 1 without a launcher") {
  auto comm = make_communicator(detect_process_env(EnvMap{}));
  REQUIRE(comm);
  CHECK(std::string(comm->backend()) == "local");
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  std::vector<float> v = {1.5f, -2.f, 3.25f};
  comm->all_reduce(v.data(), v.size(), ReduceOp::Avg);
  CHECK(v == std::vector<float>{1.5f, -2.f, 3.25f});
  Tensor t = Tensor::from_vector({3}, {1, 2, 3});
  Tensor g = comm->all_gather(t);
  CHECK(g.shape() == Shape{1, 3});
  CHECK(g.to_vector() == std::vector<float>{1, 2, 3});
  comm->broadcast(t, 0);
  comm->barrier();
  CHECK(comm->all_reduce_value(2.5, ReduceOp::Max) == 2.5);
  CHECK(contains(error_of([&] { comm->broadcast(t, 1); }), "root 1"));
  CHECK(contains(error_of([&] { comm->all_reduce(Tensor::zeros({2}, DType::U8)); }), "uint8"));

  // Several processes need MPI; a build without it says so.
  const ProcessEnv two = detect_process_env(srun_env(0, 0, 0, 2, 1, "2"));
  if (!mpi_available()) {
    CHECK(contains(error_of([&] { make_communicator(two); }), "no MPI support"));
  }
}

TEST_CASE("ddp: world size 1 leaves gradients and parameters alone") {
  LocalCommunicator comm;
  Linear layer(5, 3);
  broadcast_from_rank0(comm, layer);
  const auto params = layer.parameters();
  for (auto p : params) p.set_grad(Tensor::full(p.shape(), 0.5f));
  GradientAverager ddp(comm, layer, DDPOptions{16});
  ddp.all_reduce_gradients();
  for (const auto& p : params) CHECK(p.grad().to_vector() == std::vector<float>(size_t(p.numel()), 0.5f));
  // Buckets: reverse parameter order; a parameter bigger than a bucket has its own.
  REQUIRE(ddp.buckets().size() == 2);
  CHECK(ddp.buckets()[0] == std::vector<size_t>{1});
  CHECK(ddp.buckets()[1] == std::vector<size_t>{0});
  CHECK(contains(error_of([&] { GradientAverager(comm, std::vector<Tensor>{Tensor::zeros({2}, DType::I64)}); }), "int64"));
}

TEST_CASE("process_env: mpirun's nodes from the ranks' host names, for uneven and by-node mappings") {
  auto mpirun_rank = [](int rank, int local_rank, int size, int local_size) {
    return detect_process_env(EnvMap{{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
                                     {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(local_rank)},
                                     {"OMPI_COMM_WORLD_SIZE", std::to_string(size)},
                                     {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(local_size)}});
  };
  // mpirun -n 3 --host a:2,b:1: rank 2 alone on b assumed 3 nodes of one rank each.
  ProcessEnv r2 = mpirun_rank(2, 0, 3, 1);
  CHECK(r2.num_nodes == 3);
  set_nodes_from_hosts(r2, {"a", "a", "b"});
  CHECK(r2.num_nodes == 2);
  CHECK(r2.node_rank == 1);
  CHECK(r2.tasks_per_node == std::vector<int>{2, 1});
  CHECK_NOTHROW(check_layout(r2, 0, 0, false, 2));  // --num-nodes 2 is right on every rank
  // --map-by node: ranks 0 and 2 on a, 1 and 3 on b; rank 1 is on node 1, not node 0.
  ProcessEnv r1 = mpirun_rank(1, 0, 4, 2);
  CHECK(r1.node_rank == 0);
  set_nodes_from_hosts(r1, {"a", "b", "a", "b"});
  CHECK(r1.node_rank == 1);
  CHECK(r1.num_nodes == 2);
  // Names that do not fit the launcher's counts are refused.
  CHECK(contains(error_of([&] { set_nodes_from_hosts(r1, {"a", "b"}); }), "2 host names for 4 ranks"));
  CHECK(contains(error_of([&] { set_nodes_from_hosts(r1, {"a", "b", "b", "b"}); }),
                 "3 ranks run on b but OMPI_COMM_WORLD_LOCAL_SIZE is 2"));
}
