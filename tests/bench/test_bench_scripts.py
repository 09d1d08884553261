"""Checks the GPU benchmark's scripts without a GPU: bench/compare.py on hand-written logs and
bench/run_gpu_bench.sh with a stand-in for bench_train_gpu (standard library only); with --torch,
bench/pytorch_seed_cnn.py on the CPU for a step or two per mode, using $PYTHON (default: this
interpreter), and exit 77 (skipped) where that has no torch. Compiled modes are left out: each takes
15-40 s to compile on a CPU (time them by hand with --mode compile...)."""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # importing bench/pytorch_seed_cnn.py leaves no __pycache__ in the source tree
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "bench")
SAMPLES = [os.path.join(HERE, f"sample_{side}.log") for side in ("volt", "pytorch")]
TORCH_PY = os.environ.get("PYTHON", sys.executable)
RESULT_FIELDS = ("framework", "device", "batch", "precision", "mode", "threads", "img_per_s",
                 "ms_per_step", "steps")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, **kw)


def compare(*args, stdin=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare.py"), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def rows(text):
    """Markdown table rows as lists of cells, header and separator dropped."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def lines_of(kind, text):
    return [dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
            for line in text.splitlines() if line.startswith(kind + " ")]


class Compare(unittest.TestCase):
    def test_table_from_both_sides(self):
        out = compare(*SAMPLES)
        self.assertEqual(out.returncode, 0, out.stderr)
        table = {(r[0], r[1]): r for r in rows(out.stdout)}
        self.assertEqual(list(table), [("128", "32"), ("128", "16-mixed"), ("512", "32"), ("2048", "16-mixed")])
        # Volt's fastest mode; PyTorch's best over modes and precisions at that batch; the floor share.
        self.assertEqual(table["128", "16-mixed"][2:], [
            "240,000 (graph)", "38,500",
            "109,000 (compile-reduce-overhead+channels-last+fused-adam, 16-mixed)",
            "6.23x", "2.20x", "3,705,000 (6.5%)", "yes"])
        self.assertEqual(table["128", "32"][3], "38,000 (TF32 convs)")  # PyTorch's default, said
        self.assertEqual(table["128", "32"][5:], ["3.95x", "1.38x", "-", "yes"])  # fp32: ahead of eager
        # Volt's line there has img_per_s=not-a-number: a note on stderr, "-" in the table.
        self.assertEqual(table["512", "32"][2:], ["-", "182,000", "182,000 (eager, 32)", "-", "-", "-", "-"])
        self.assertIn("not a number", out.stderr)
        self.assertIn("skipped: framework=pytorch device=cuda batch=512", out.stdout)

    def test_target_unknown_when_pytorch_skipped_a_mode(self):
        # Volt 2x PyTorch's best that ran, but a PyTorch mode at that batch did not run (budget): "?".
        log = ("RESULT framework=volt batch=128 precision=16-mixed mode=graph img_per_s=300000\n"
               "RESULT framework=pytorch batch=128 precision=16-mixed mode=eager img_per_s=38000\n"
               "RESULT framework=pytorch batch=2048 precision=16-mixed mode=eager img_per_s=240000\n"
               "RESULT framework=volt batch=2048 precision=16-mixed mode=graph img_per_s=500000\n"
               "SKIP framework=pytorch batch=128 precision=16-mixed mode=compile-reduce-overhead reason=budget\n")
        out = compare(stdin=log)
        self.assertEqual(out.returncode, 0, out.stderr)
        table = {(r[0], r[1]): r for r in rows(out.stdout)}
        self.assertEqual(table["128", "16-mixed"][-1], "? (a PyTorch mode was skipped)")
        self.assertEqual(table["2048", "16-mixed"][-1], "yes")  # nothing skipped there

    def test_markdown_row_and_stdin(self):
        with open(SAMPLES[1]) as f:
            out = compare("--markdown-row", "2026-12-01", "H100 SXM", "abc1234", stdin=f.read())
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(all(r[:3] == ["2026-12-01", "H100 SXM", "abc1234"] for r in rows(out.stdout)))
        # the rows, then what "PyTorch best" left out, to paste into RESULTS.md
        self.assertEqual(out.stdout.strip().splitlines()[-1],
                         "Not run on 2026-12-01, so not in \"PyTorch best\": framework=pytorch device=cuda batch=512 "
                         "precision=16-mixed mode=compile-reduce-overhead+channels-last+fused-adam reason=budget")
        self.assertEqual(rows(out.stdout)[0][3:7], ["128", "32", "-", "38,000 (TF32 convs)"])  # no Volt figure: "-"

    def test_results_md_takes_the_rows(self):
        # The empty GPU table in bench/RESULTS.md has exactly the columns --markdown-row prints.
        out = compare("--markdown-row", "d", "g", "c", SAMPLES[0])
        header = next(line for line in out.stdout.splitlines() if line.startswith("| "))
        with open(os.path.join(ROOT, "bench", "RESULTS.md")) as f:
            self.assertIn(header + "\n", f.read())

    def test_nothing_to_compare(self):
        out = compare(stdin="no results here\nRESULT framework=volt precision=32 img_per_s=1\n\xff\n")
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "(no RESULT or FLOOR lines found)"))
        self.assertEqual(compare("/nonexistent/log").returncode, 2)


FAKE_VOLT = """#!/usr/bin/env bash
# stand-in for bench_train_gpu: one call, every precision (outer) and batch size (inner) as the real one;
# FAKE=77 says "no GPU", FAKE=fail fails at batch 16, FAKE=calls counts its calls in $CALLS
while [ $# -gt 0 ]; do case $1 in --batch-size) bs=$2;; --precision) ps=$2;; esac; shift 2; done
[ -n "${CALLS:-}" ] && echo call >> "$CALLS"
[ "${FAKE:-}" = 77 ] && { echo "SKIPPED: no GPU"; exit 77; }
for p in ${ps//,/ }; do for b in ${bs//,/ }; do
  [ "${FAKE:-}" = fail ] && [ "$b" = 16 ] && { echo "error: out of memory" >&2; exit 1; }
  echo "RESULT framework=volt device=cuda batch=$b precision=$p mode=graph img_per_s=$((b * 1000)).0 ms_per_step=1"
  echo "FLOOR framework=volt batch=$b precision=$p floor_img_per_s=$((b * 5000))"
done; done
"""


def run_driver(tmp, *args, fake="", python="/nonexistent/python"):
    """bench/run_gpu_bench.sh on batch sizes 8 and 16 with FAKE_VOLT as tmp/build/bench/bench_train_gpu
    (written on first use); returns (CompletedProcess, the --out folder)."""
    exe = os.path.join(tmp, "build", "bench", "bench_train_gpu")
    if not os.path.exists(os.path.join(tmp, "build")):
        os.makedirs(os.path.dirname(exe))
        with open(exe, "w") as f:
            f.write(FAKE_VOLT)
        os.chmod(exe, 0o755)
    out = os.path.join(tmp, "out")
    cmd = ["bash", os.path.join(ROOT, "bench", "run_gpu_bench.sh"), "--build", os.path.join(tmp, "build"),
           "--out", out, "--python", python, "--batch-sizes", "8,16", *args]
    return run(cmd, env={**os.environ, "FAKE": fake, "CALLS": os.path.join(tmp, "calls")}), out


class Driver(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def driver(self, *args, **kw):
        return run_driver(self.tmp.name, *args, **kw)

    def test_volt_only(self):
        res, out = self.driver("--precisions", "32")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        with open(os.path.join(self.tmp.name, "calls")) as f:
            self.assertEqual(f.read(), "call\n")  # one process for both batch sizes
        self.assertIn("Volt:    ran", res.stdout)
        self.assertIn("PyTorch: skipped: torch is not importable with /nonexistent/python", res.stdout)
        self.assertEqual([r[:3] for r in rows(res.stdout)], [["8", "32", "8,000 (graph)"],
                                                              ["16", "32", "16,000 (graph)"]])
        self.assertEqual(rows(res.stdout)[0][7], "40,000 (20.0%)")
        for name in ("volt.log", "table.md", "results-row.md"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)

    def test_missing_and_failing_sides(self):
        res, _ = self.driver(fake="77")
        self.assertEqual(res.returncode, 0)
        self.assertIn("Volt:    skipped: bench_train_gpu found no GPU (exit 77)", res.stdout)
        res, _ = self.driver(fake="fail")
        self.assertEqual(res.returncode, 1)
        self.assertIn("Volt:    FAILED", res.stdout)
        self.assertEqual(len(rows(res.stdout)), 1)  # batch 8 in 32, printed before the failure, still counts
        os.remove(os.path.join(self.tmp.name, "build", "bench", "bench_train_gpu"))
        res, _ = self.driver()
        self.assertEqual(res.returncode, 0)
        self.assertIn("Volt:    skipped: no ", res.stdout)
        self.assertEqual(self.driver("--budget", "soon")[0].returncode, 2)

    def test_time_limit(self):
        res, _ = self.driver("--time-limit", "100")  # a configuration may take 120 s: none fits
        self.assertEqual(res.returncode, 1)
        self.assertIn("bench_train_gpu --batch-size 8,16 --precision 32,16-mixed: not run, --time-limit 100 s",
                      res.stdout)
        self.assertIn("Volt:    FAILED", res.stdout)


class Options(unittest.TestCase):
    """pytorch_seed_cnn.py's options and the suite's configurations: no torch needed."""

    @staticmethod
    def parse(*argv):
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        try:
            import pytorch_seed_cnn
        finally:
            sys.path.pop(0)
        _, args = pytorch_seed_cnn.parse_args(list(argv))
        return args, [(b, p, m.name) for b, p, m in pytorch_seed_cnn.configurations(args)]

    def test_mode_names(self):
        args, _ = self.parse("--mode", "fused-adam+compile-reduce-overhead+channels-last")
        self.assertEqual(args.mode.name, "compile-reduce-overhead+channels-last+fused-adam")
        self.assertEqual(self.parse("--channels-last", "--compile")[0].mode.name, "compile+channels-last")
        self.assertEqual(self.parse("--mode", "eager+channels-last")[0].mode.name, "channels-last")
        self.assertEqual(self.parse()[1], [(128, "32", "eager")])

    def test_bad_options(self):
        for argv in (["--mode", "compile+compile-reduce-overhead"], ["--mode", "compile+eager"],
                     ["--mode", "fast"], ["--suite", "best", "--fused-adam"], ["--precisions", "32,fp8"],
                     ["--batch-size", "128,"], ["--max-seconds", "0"]):
            with self.subTest(argv=argv), self.assertRaises(SystemExit), \
                    contextlib.redirect_stderr(io.StringIO()):
                self.parse(*argv)

    def test_suite_best(self):
        args, configs = self.parse("--suite", "best", "--batch-size", "128,512,2048")
        self.assertEqual(args.budget, 300)
        fast = "channels-last+fused-adam"
        self.assertEqual(configs, [(b, p, "eager") for b in (128, 512, 2048) for p in ("32", "16-mixed")]
                         + [(b, "16-mixed", fast) for b in (128, 512, 2048)]
                         + [(128, "16-mixed", "compile-reduce-overhead+" + fast)])
        _, configs = self.parse("--suite", "best", "--batch-size", "64", "--precisions", "32",
                                "--compile-batches", "64")
        self.assertEqual(configs, [(64, "32", "eager"), (64, "32", "compile-reduce-overhead+" + fast)])
        self.assertEqual(len(self.parse("--suite", "eager", "--batch-size", "8,16")[1]), 4)


class PyTorchCPU(unittest.TestCase):
    """pytorch_seed_cnn.py for one or two steps on the CPU in every mode that does not compile."""

    def script(self, *args):
        res = run([TORCH_PY, os.path.join(ROOT, "bench", "pytorch_seed_cnn.py"), "--device", "cpu",
                   "--batch-size", "4", "--warmup", "1", "--steps", "2", *args])
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        return res.stdout

    def check_results(self, text, expected):
        results = lines_of("RESULT", text)
        self.assertEqual([(r["precision"], r["mode"]) for r in results], expected)
        for r in results:
            self.assertTrue(all(k in r for k in RESULT_FIELDS), r)
            self.assertGreater(float(r["img_per_s"]), 0)
        return results

    def test_flags_precisions_and_max_seconds(self):
        text = self.script("--channels-last", "--fused-adam", "--precision", "32,bf16-mixed",
                           "--steps", "100000", "--max-seconds", "0.3")
        results = self.check_results(text, [("32", "channels-last+fused-adam"),
                                            ("bf16-mixed", "channels-last+fused-adam")])
        self.assertTrue(all(int(r["steps"]) < 100000 for r in results))

    def test_suite_best_without_compile(self):
        text = self.script("--suite", "best", "--batch-size", "4,6", "--compile-batches", "none")
        self.check_results(text, [("32", "eager"), ("16-mixed", "eager")] * 2
                           + [("16-mixed", "channels-last+fused-adam")] * 2)
        self.assertIn("compiled: none", text)
        self.assertEqual([b["batch"] for b in lines_of("BEST", text)], ["4", "6"])

    def test_suite_budget_skips(self):
        text = self.script("--suite", "eager", "--batch-size", "4,6", "--budget", "0.001")
        self.assertEqual(len(lines_of("RESULT", text)) + len(lines_of("SKIP", text)), 4)
        self.assertGreaterEqual(len(lines_of("SKIP", text)), 3)  # 1 ms runs out during the first at the latest
        self.assertTrue(all(s["reason"] == "budget" for s in lines_of("SKIP", text)))

    def test_driver_with_pytorch_on_cpu(self):
        with tempfile.TemporaryDirectory() as tmp:
            res, _ = run_driver(tmp, "--pytorch-device", "cpu", "--precisions", "32", "--steps", "1",
                                "--warmup", "1", python=TORCH_PY)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn("PyTorch: ran", res.stdout)
        self.assertTrue(all(r[3] != "-" and r[5] != "-" for r in rows(res.stdout)), res.stdout)


if __name__ == "__main__":
    torch_only = "--torch" in sys.argv
    argv = [a for a in sys.argv if a != "--torch"]
    try:
        has_torch = run([TORCH_PY, "-c", "import torch"]).returncode == 0
    except OSError:
        has_torch = False
    if torch_only and not has_torch:
        print(f"SKIPPED: torch is not importable with {TORCH_PY} (set PYTHON)")
        sys.exit(77)
    names = ["PyTorchCPU"] if torch_only else ["Compare", "Driver", "Options"]
    suite = unittest.defaultTestLoader.loadTestsFromNames(names, sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
