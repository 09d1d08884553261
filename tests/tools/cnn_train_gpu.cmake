# cmake -P script: cnn_train on cuda:0 (label gpu; "SKIPPED:" where no GPU is visible). A short synthetic
# run in 16-mixed with the dataset resident on the device and the step replayed as a CUDA graph trains,
# tests its best checkpoint and resumes on the GPU; a float32 run with pinned host batches and eager
# steps does too; both say in the log what ran where.
function(run_train out_var)
  execute_process(COMMAND ${CNN_TRAIN} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${out_var} "${out}${err}" PARENT_SCOPE)
  set(${out_var}_rc ${rc} PARENT_SCOPE)
endfunction()
function(expect_in text)
  foreach(want IN LISTS ARGN)
    if(NOT text MATCHES "${want}")
      message(FATAL_ERROR "cnn_train's output lacks '${want}':\n${text}")
    endif()
  endforeach()
endfunction()

set(small --dataset synthetic --train-samples 96 --val-samples 32 --test-samples 48 --batch-size 16
          --threads 2 --no-progress --accelerator gpu)
set(runs ${WORK_DIR}/gpu_runs)
file(REMOVE_RECURSE ${runs})

run_train(probe ${small} --fast-dev-run)
if(NOT probe_rc EQUAL 0)
  # As require_gpu(): $VOLT_REQUIRE_GPU set to anything but "0" makes a missing GPU a failure.
  set(must "$ENV{VOLT_REQUIRE_GPU}")
  if(probe MATCHES "no GPU is visible|this build has no CUDA backend" AND (must STREQUAL "" OR must STREQUAL "0"))
    message(STATUS "SKIPPED: no GPU for cnn_train:\n${probe}")
    return()
  endif()
  message(FATAL_ERROR "cnn_train --accelerator gpu --fast-dev-run: exit ${probe_rc}\n${probe}")
endif()

run_train(amp ${small} --epochs 2 --precision 16-mixed --log-dir ${runs}/amp)
if(NOT amp_rc EQUAL 0)
  message(FATAL_ERROR "the 16-mixed GPU run failed (exit ${amp_rc}):\n${amp}")
endif()
expect_in("${amp}" "device: cuda:0" "train data: GPU-resident on cuda:0"
          "CUDA graphs: the training step is captured"
          "Mixed precision \\(16-mixed\\): 0 of 12 optimizer steps skipped"
          "test_acc [0-9.]+  test_loss [0-9.]+[^\n]*\\(best weights")

run_train(resumed ${small} --epochs 3 --precision 16-mixed --log-dir ${runs}/amp --resume last)
if(NOT resumed_rc EQUAL 0)
  message(FATAL_ERROR "resuming the 16-mixed GPU run failed (exit ${resumed_rc}):\n${resumed}")
endif()
expect_in("${resumed}" "Resumed from ${runs}/amp/lightning_logs/version_0/checkpoints/last.ckpt at epoch 2"
          "Mixed precision \\(16-mixed\\): 0 of 18 optimizer steps skipped")

run_train(fp32 ${small} --epochs 1 --data-on-device off --cuda-graphs off --log-dir ${runs}/fp32)
if(NOT fp32_rc EQUAL 0)
  message(FATAL_ERROR "the float32 GPU run with host batches failed (exit ${fp32_rc}):\n${fp32}")
endif()
expect_in("${fp32}" "device: cuda:0" "test_acc [0-9.]+  test_loss [0-9.]+")
if(fp32 MATCHES "the training step is captured")
  message(FATAL_ERROR "--cuda-graphs off still captured the step:\n${fp32}")
endif()
