#!/usr/bin/env bash
# One task of a job (srun or mpirun) that runs a command with no GPU visible on rank 1 (an empty
# CUDA_VISIBLE_DEVICES; no emulated device), as on a node whose GPUs are missing.
#   gpuless_rank.sh command args...
if [ "${SLURM_PROCID:-${OMPI_COMM_WORLD_RANK:-0}}" = 1 ]; then
  export CUDA_VISIBLE_DEVICES="" VOLT_EMU_DEVICES=0
fi
exec "$@"
