# cmake -P script: cnn_train's command line on the Trainer. A short synthetic run trains, writes
# logs and checkpoints under --log-dir, tests the best checkpoint and says where everything went;
# --resume last continues it; --fast-dev-run writes nothing; every tutorial flag is accepted
# (--data-on-device on runs the resident loader in host memory on the CPU; --precision 16-mixed and
# bf16-mixed run and report their loss scaling); bad flags exit with 2 and a message naming the flag
# and the valid choices; an unavailable accelerator or a missing dataset folder exits with 1 and says
# what to do.
function(expect rc_want pattern)
  execute_process(COMMAND ${CNN_TRAIN} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL rc_want)
    message(FATAL_ERROR "cnn_train ${ARGN}: exit ${rc}, expected ${rc_want}\n${out}\n${err}")
  endif()
  if(NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "cnn_train ${ARGN}: output does not match '${pattern}'\n${out}\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
endfunction()

set(small --dataset synthetic --train-samples 96 --val-samples 32 --test-samples 48 --batch-size 16
          --threads 1 --num-workers 2 --no-progress)
set(runs ${WORK_DIR}/cli_runs)
file(REMOVE_RECURSE ${runs})
file(REMOVE ${WORK_DIR}/weights.vt)

# A real run: two epochs, checkpoints, logs, test with the best checkpoint, weights saved.
expect(0 "test_acc [0-9.]+  test_loss [0-9.]+[^\n]*\\(best weights" ${small} --epochs 2 --log-dir ${runs}
       --save ${WORK_DIR}/weights.vt)
foreach(want "logs: ${runs}/lightning_logs/version_0" "best checkpoint: ${runs}/lightning_logs/version_0/checkpoints/epoch="
             "last checkpoint: .*last.ckpt" "Test metric" "test_acc_top5")
  if(NOT last_out MATCHES "${want}")
    message(FATAL_ERROR "the run's output lacks '${want}':\n${last_out}")
  endif()
endforeach()
foreach(f metrics.csv hparams.yaml checkpoints/last.ckpt)
  if(NOT EXISTS ${runs}/lightning_logs/version_0/${f})
    message(FATAL_ERROR "cnn_train did not write ${runs}/lightning_logs/version_0/${f}")
  endif()
endforeach()
file(GLOB events ${runs}/lightning_logs/version_0/events.out.tfevents.*)
if(NOT events)
  message(FATAL_ERROR "no TensorBoard event file in ${runs}/lightning_logs/version_0")
endif()
if(NOT EXISTS ${WORK_DIR}/weights.vt)
  message(FATAL_ERROR "cnn_train --save did not write ${WORK_DIR}/weights.vt")
endif()

# --resume last continues version_0 from epoch 2 to 3 in a new version folder.
expect(0 "Resumed from ${runs}/lightning_logs/version_0/checkpoints/last.ckpt at epoch 2" ${small} --epochs 3
       --log-dir ${runs} --resume last)
if(NOT EXISTS ${runs}/lightning_logs/version_1/checkpoints/last.ckpt)
  message(FATAL_ERROR "the resumed run wrote no last.ckpt in version_1")
endif()

# fast_dev_run: one batch of each, nothing written.
file(REMOVE_RECURSE ${runs}/fast)
expect(0 "logs and checkpoints: none written" --dataset synthetic --fast-dev-run --threads 1 --no-progress
       --log-dir ${runs}/fast)
if(EXISTS ${runs}/fast/lightning_logs)
  message(FATAL_ERROR "--fast-dev-run wrote ${runs}/fast/lightning_logs")
endif()
expect(0 "test_acc" --dataset synthetic --fast-dev-run 3 --threads 1 --no-progress --log-dir ${runs}/fast)

# The tutorial's flags, together: profiler, overfit, clipping, accumulation, limits, dp, one device.
expect(0 "Profiler report \\(simple, fit\\)" ${small} --epochs 1 --log-dir ${runs} --profiler simple --overfit-batches 2
       --gradient-clip-val 0.5 --accumulate-grad-batches 2 --limit-test-batches 1 --strategy dp --devices 1
       --num-nodes 1 --deterministic --scheduler onecycle --optimizer sgd)
expect(0 "test_acc" ${small} --epochs 1 --log-dir ${runs} --profiler advanced --limit-train-batches 0.5
       --limit-val-batches 1 --gradient-clip-algorithm value --gradient-clip-val 0.1 --optimizer adamw
       --scheduler cosine --checkpoint-every 1 --val-check-interval 0.5 --distributed-backend ddp)
expect(0 "test_acc" ${small} --epochs 1 --log-dir ${runs} --limit-val-batches 0 --scheduler step --cutout 8 --augment
       --data-on-device on --sync-batchnorm)

# Bad usage: exit 2, naming the flag and the choices.
expect(2 "unknown option --bogus.*usage: cnn_train" --bogus)
expect(2 "bad value '0' for --epochs" --epochs 0)
expect(2 "bad value 'x' for --lr" --lr x)
expect(2 "bad value for --momentum: it must be >= 0" --optimizer sgd --momentum -0.5)
expect(2 "--momentum is SGD's \\(--optimizer sgd\\); adamw uses betas" --momentum 0.8 --optimizer adamw)
expect(2 "expected one of adam, adamw, sgd" --optimizer rmsprop)
expect(2 "expected one of cifar10, cifar100, mnist, fashion-mnist, folder, synthetic" --dataset imagenet)
expect(2 "expected one of 32, 32-true, 16-mixed, 16, bf16-mixed, bf16" --precision 8)
expect(2 "expected one of simple, advanced" --profiler fancy)
expect(2 "bad value 'sometimes' for --data-on-device: expected one of auto, on, off" --data-on-device sometimes)
expect(2 "bad value 'maybe' for --cuda-graphs: expected one of on, off" --cuda-graphs maybe)
expect(2 "bad value 'medium' for --float32-matmul-precision: expected one of highest, high"
       --float32-matmul-precision medium)
expect(2 "bad value '1.5' for --limit-train-batches" --limit-train-batches 1.5)
expect(2 "missing value for --batch-size" --batch-size)
# An empty path would put the logs in one place and look for checkpoints in another.
expect(2 "empty value for --log-dir: expected a path" --log-dir=)
expect(2 "empty value for --resume: expected a path" --resume=)
# Integers past their range are refused, not clamped or narrowed (4294967297 was int 1 worker).
expect(2 "bad value '99999999999999999999' for --epochs" --epochs 99999999999999999999)
expect(2 "bad value '4294967297' for --num-workers: expected an integer >= 0 and <= 256" --num-workers 4294967297)
expect(2 "bad value '2147483648' for --threads" --threads 2147483648)
expect(2 "--download takes no value" --download=yes)
# Flags the chosen data set or options do not use are refused, not silently ignored.
expect(2 "--train-samples sizes --dataset synthetic; mnist has its own split" --dataset mnist --train-samples 5)
expect(2 "--channels is for --dataset folder; cifar10 has its own" --channels 1)
expect(2 "--data-dir is not read by --dataset synthetic" --dataset synthetic --data-dir ${WORK_DIR})
expect(2 "--download fetches cifar10, cifar100, mnist or fashion-mnist, not --dataset folder" --dataset folder
       --data-dir ${WORK_DIR} --download)
expect(2 "--gradient-clip-algorithm chooses how --gradient-clip-val clips" --gradient-clip-algorithm value)
expect(2 "bad value '0' for --num-nodes" --num-nodes 0)
expect(2 "bad value '0' for --devices: expected auto, -1 \\(one per GPU\\) or a count >= 1" --devices 0)
expect(2 "bad value '-1' for --fast-dev-run" --fast-dev-run -1)
expect(2 "bad value '-2' for --gpus" --gpus -2)
expect(2 "bad value '9223372036854775807' for --train-samples: expected an integer >= 1 and <= 2147483647"
       --train-samples 9223372036854775807)
expect(2 "--gpus 0 means the CPU but --accelerator is gpu" --gpus 0 --accelerator gpu)
expect(0 "usage: cnn_train" --help)

# OneCycleLR's step estimate at the flags' largest values (it overflowed: UBSan's build aborts on that).
expect(0 "test_acc" ${small} --scheduler onecycle --accumulate-grad-batches 9223372036854775807 --fast-dev-run 2)
expect(0 "test_acc" ${small} --scheduler onecycle --epochs 9223372036854775807 --max-steps 2 --limit-val-batches 0)

# Lightning's gpus=0 is the CPU, whatever GPUs are visible.
expect(0 "device: cpu" ${small} --gpus 0 --fast-dev-run 1)

# Mixed precision on the CPU: the float32 kernels between 16-bit casts; 16-mixed reports its scaler.
expect(0 "Mixed precision \\(16-mixed\\): 0 of 6 optimizer steps skipped" ${small} --precision 16-mixed --epochs 1
       --fast-dev-run 6)
expect(0 "test_acc" ${small} --precision bf16-mixed --fast-dev-run 2)
# TF32 is a GPU setting: on the CPU the flag is accepted and float32 stays FP32.
expect(0 "test_acc" ${small} --float32-matmul-precision high --fast-dev-run 2)

# Runtime refusals: exit 1 with the reason.
# Asking for a GPU where none is visible (where one is, these would train: the gpu tests' part).
execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE smi_rc OUTPUT_VARIABLE smi_out ERROR_QUIET)
if(NOT smi_rc EQUAL 0 OR NOT smi_out MATCHES "GPU [0-9]")
  expect(1 "accelerator \"gpu\"" ${small} --accelerator gpu --epochs 1)
  expect(1 "accelerator \"gpu\" \\(gpus=2\\)" ${small} --gpus 2 --epochs 1)
else()
  message(STATUS "a GPU is visible: the no-GPU refusals are not checked here")
endif()
expect(1 "${WORK_DIR}/no-such-dir.*--download" --dataset cifar10 --data-dir ${WORK_DIR}/no-such-dir --epochs 1)
expect(1 "${WORK_DIR}/no-such-dir.*--download" --dataset mnist --data-dir ${WORK_DIR}/no-such-dir --epochs 1)
expect(1 "${WORK_DIR}/no-such-dir.*--download" --dataset fashion-mnist --data-dir ${WORK_DIR}/no-such-dir --epochs 1)
expect(1 "${WORK_DIR}/no-such-dir.*--download" --dataset cifar100 --data-dir ${WORK_DIR}/no-such-dir --epochs 1)
expect(1 "ImageFolder: ${WORK_DIR}/no-such-dir/train does not exist" --dataset folder --data-dir ${WORK_DIR}/no-such-dir)
# A count of batches between validations past the epoch's (Lightning refuses it too).
expect(1 "val_check_interval \\(100\\) must be at most the number of training batches \\(6\\)" ${small}
       --val-check-interval 100 --epochs 1 --log-dir ${runs}/vci)
# Counts past 2^63 (stored as doubles) have no int64 value: all the batches, and a refusal, as for 100.
expect(1 "val_check_interval \\(9.22337e\\+18\\) must be at most the number of training batches \\(6\\)" ${small}
       --val-check-interval 9223372036854775807 --epochs 1 --log-dir ${runs}/vci)
expect(0 "best checkpoint: [^\n]*epoch=0-step=6-" ${small} --limit-train-batches 9223372036854775807 --epochs 1
       --log-dir ${runs}/all_batches)
# No test batches: said so, no "nan" results.
expect(0 "Test metrics: none[^\n]*\ntest: skipped \\(no test batches\\)" ${small} --epochs 1 --limit-test-batches 0
       --log-dir ${runs}/no_test)
# --num-nodes defaults to what was launched; a count that does not match it is refused.
expect(1 "layout: --num-nodes 2 but the job runs on 1 node" ${small} --num-nodes 2 --epochs 1)
expect(1 "--save ${WORK_DIR}/no-such-dir/w.bin: folder ${WORK_DIR}/no-such-dir does not exist" ${small}
       --epochs 1 --save ${WORK_DIR}/no-such-dir/w.bin)
# Refused before the fit, not after it: a folder as the file to write.
expect(1 "--save ${WORK_DIR}: is a folder; name the file to write" ${small} --epochs 1 --save ${WORK_DIR})
# The next flag is not a path (it made a folder named --no-progress).
expect(2 "missing value for --log-dir \\(got the flag --no-progress\\)" ${small} --epochs 1 --log-dir --no-progress)
expect(2 "missing value for --save \\(got the flag --epochs\\)" ${small} --save --epochs 1)
expect(1 "resume: checkpoint \"${WORK_DIR}/nothing.ckpt\" does not exist" ${small} --resume ${WORK_DIR}/nothing.ckpt)
expect(1 "resume: checkpoint \"${WORK_DIR}\" is a folder" ${small} --resume ${WORK_DIR})
expect(1 "resume: checkpoint \"/dev/null\" is not a regular file" ${small} --resume /dev/null)
string(REPEAT x 300 long_name)  # the filesystem's refusal, as a resume error (it was a bare filesystem_error)
expect(1 "resume: checkpoint \"${WORK_DIR}/${long_name}\" cannot be read: File name too long" ${small}
       --resume ${WORK_DIR}/${long_name})
