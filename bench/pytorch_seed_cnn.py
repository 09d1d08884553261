"""PyTorch reference benchmark of the Volt "seed CNN" training step (conv-bn-relu-pool x2 + MLP).
Prints one machine-readable RESULT line per configuration (batch size, precision, mode) so Volt's own
numbers can be compared against it (bench/compare.py); --suite best also times PyTorch's fastest modes
and ends with one BEST line per batch size."""
from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
import time
import traceback

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
# Mode tokens that compile the model, and the torch.compile mode each one passes.
COMPILE_MODES = {"compile": "default", "compile-reduce-overhead": "reduce-overhead",
                 "compile-max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
MODE_TOKENS = ("eager", "channels-last", "fused-adam", *COMPILE_MODES)
COMPILE_STEPS = 3  # a compiled mode's first steps (compilation, CUDA-graph warm-up and recording): compile_s
SUITE_BUDGET_S = 300.0  # --suite default for --budget
COMPILE_RESERVE_S = 60.0  # under --budget, a compiled configuration starts only with this much time left


@dataclasses.dataclass(frozen=True)
class Mode:
    """How PyTorch runs the step: eager or torch.compile'd, memory format, Adam implementation."""
    compile: str | None = None  # a key of COMPILE_MODES
    channels_last: bool = False
    fused_adam: bool = False

    @property
    def name(self):
        parts = [self.compile] if self.compile else []
        parts += ["channels-last"] * self.channels_last + ["fused-adam"] * self.fused_adam
        return "+".join(parts) or "eager"


def number(kind, low, inclusive=True):
    """argparse type: an int or float no smaller than `low` (larger, if not `inclusive`)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}")
        if not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(f"expected {'>=' if inclusive else '>'} {low}, got {text}")
        return value
    return parse


positive_int, nonneg_int, positive_float = number(int, 1), number(int, 0), number(float, 0, False)


def comma_list(item):
    def parse(text):
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"bad comma list {text!r}")
        return [item(p) for p in parts]
    return parse


def precision(text):
    if text not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"precision {text!r} is not one of {', '.join(PRECISIONS)}")
    return text


def compile_batches(text):
    return [] if text == "none" else comma_list(positive_int)(text)


def mode(text):
    tokens = text.split("+")
    bad = [t for t in tokens if t not in MODE_TOKENS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown mode {'+'.join(bad)!r}: join any of {', '.join(MODE_TOKENS)} with '+'")
    compiled = [t for t in tokens if t in COMPILE_MODES]
    if len(compiled) > 1 or (compiled and "eager" in tokens):
        raise argparse.ArgumentTypeError(f"mode {text!r} names more than one way to run the model")
    return Mode(compiled[0] if compiled else None, "channels-last" in tokens, "fused-adam" in tokens)


def cpu_name():
    try:  # platform.processor() is just "x86_64" on Linux; prefer the model string
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads (CPU only; default: leave as is)")
    p.add_argument("--batch-size", type=comma_list(positive_int), default=[128],
                   help="batch size or comma list, e.g. 128,512,2048 (default 128)")
    p.add_argument("--precision", "--precisions", dest="precisions", type=comma_list(precision),
                   default=None, help=f"one or a comma list of {', '.join(PRECISIONS)} "
                   "(default 32; with --suite 32,16-mixed)")
    p.add_argument("--mode", type=mode, default=Mode(),
                   help=f"how to run the step: '+'-joined tokens of {', '.join(MODE_TOKENS)}, "
                   "e.g. compile-reduce-overhead+channels-last (default eager)")
    p.add_argument("--channels-last", action="store_true", help="same as adding +channels-last to --mode")
    p.add_argument("--compile", action="store_true", help="same as --mode compile (torch.compile defaults)")
    p.add_argument("--fused-adam", action="store_true",
                   help="torch.optim.Adam(fused=True); same as adding +fused-adam to --mode")
    p.add_argument("--suite", choices=("eager", "best"), default=None,
                   help="time a standard set instead of one --mode: 'eager' is eager at every batch "
                   "size and precision; 'best' adds PyTorch's fastest modes (AMP + channels_last + "
                   "fused Adam at every batch, torch.compile reduce-overhead at --compile-batches)")
    p.add_argument("--compile-batches", type=compile_batches, default=[128],
                   help="batch sizes at which --suite best runs the compiled mode, or 'none' (default 128)")
    p.add_argument("--budget", type=positive_float, default=None,
                   help=f"seconds for all configurations; later ones are skipped once it is spent "
                   f"(default: none; {SUITE_BUDGET_S:.0f} with --suite)")
    p.add_argument("--max-seconds", type=positive_float, default=10.0,
                   help="per configuration, stop warm-up and timing early after this many seconds "
                   "each and report what was measured (default 10)")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed steps (default 10)")
    p.add_argument("--steps", type=positive_int, default=50, help="timed steps (default 50)")
    p.add_argument("--in-channels", type=positive_int, default=3)
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--num-classes", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    side = ((args.image_size - 4) // 2 - 4) // 2  # conv5 -> pool2 -> conv5 -> pool2
    if side < 1:
        p.error(f"--image-size {args.image_size} is too small for the seed CNN (minimum 16)")
    flags = args.mode != Mode() or args.channels_last or args.compile or args.fused_adam
    if args.suite and flags:
        p.error("--suite picks its own modes: drop --mode, --channels-last, --compile and --fused-adam")
    args.mode = Mode(args.mode.compile or ("compile" if args.compile else None),
                     args.mode.channels_last or args.channels_last, args.mode.fused_adam or args.fused_adam)
    if args.precisions is None:
        args.precisions = ["32", "16-mixed"] if args.suite else ["32"]
    if args.budget is None and args.suite:
        args.budget = SUITE_BUDGET_S
    return p, args


def configurations(args):
    """(batch, precision, Mode) in the order they run: the cheap eager ones first, compiled ones last."""
    if not args.suite:
        return [(b, p, args.mode) for b in args.batch_size for p in args.precisions]
    configs = [(b, p, Mode()) for b in args.batch_size for p in args.precisions]
    if args.suite == "best":
        mixed = [p for p in args.precisions if p != "32"]
        fast = Mode(channels_last=True, fused_adam=True)
        configs += [(b, p, fast) for p in mixed for b in args.batch_size]
        compiled = dataclasses.replace(fast, compile="compile-reduce-overhead")
        configs += [(b, (mixed or ["32"])[0], compiled)
                    for b in args.batch_size if b in args.compile_batches]
    return configs


def seed_cnn_class(torch):
    nn = torch.nn

    class SeedCNN(nn.Module):
        def __init__(self, in_ch=3, image_size=32, num_classes=10):
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(in_ch, 64, 5, 1), nn.BatchNorm2d(64),
                                        nn.ReLU(), nn.MaxPool2d(2, 2))
            self.block2 = nn.Sequential(nn.Conv2d(64, 32, 5, 1), nn.BatchNorm2d(32),
                                        nn.ReLU(), nn.MaxPool2d(2, 2))
            side = ((image_size - 4) // 2 - 4) // 2
            flat = 32 * side * side  # 32x32 input -> 32*5*5 = 800
            self.fc_layers = nn.Sequential(nn.Linear(flat, 64), nn.ReLU(), nn.Dropout(0.2),
                                           nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2),
                                           nn.Linear(32, num_classes))

        def forward(self, x):
            x = self.block2(self.block1(x))
            return self.fc_layers(torch.flatten(x, 1))

    return SeedCNN


def run_steps(step, count, max_seconds):
    """Up to `count` steps, fewer once `max_seconds` have passed (at least one); returns (steps, loss)."""
    start, loss = time.perf_counter(), None
    for done in range(1, count + 1):
        loss = step()
        if time.perf_counter() - start >= max_seconds:
            return done, loss
    return count, loss


class Bench:
    """Times one configuration at a time on one device; RESULT fields come back as a dict."""

    def __init__(self, torch, dev, args):
        self.torch, self.dev, self.args = torch, dev, args
        self.model_class = seed_cnn_class(torch)

    def sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize(self.dev)

    def measure(self, batch, precision, mode):
        torch, dev, args = self.torch, self.dev, self.args
        F = torch.nn.functional
        torch.manual_seed(args.seed)
        if mode.compile:
            torch._dynamo.reset()  # a fresh compile per configuration, never a dynamic-shape recompile
        fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
        model = self.model_class(args.in_channels, args.image_size, args.num_classes)
        model = model.to(dev, memory_format=fmt).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if mode.fused_adam else None)
        amp_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
        scaler = torch.amp.GradScaler(dev.type) if precision == "16-mixed" else None
        run_model = model
        if mode.compile:
            run_model = torch.compile(model, mode=COMPILE_MODES[mode.compile], dynamic=False)
        # CUDA graphs (reduce-overhead) reuse their output buffers: say where each step begins.
        graphs = mode.compile == "compile-reduce-overhead"

        # One synthetic CIFAR-shaped batch, resident on the device for the whole run (as in Volt's bench).
        images = torch.randn(batch, args.in_channels, args.image_size, args.image_size,
                             device=dev).contiguous(memory_format=fmt)
        labels = torch.randint(0, args.num_classes, (batch,), dtype=torch.int64, device=dev)

        def step():
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = run_model(images)
                loss = F.cross_entropy(logits, labels)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            return loss

        result = {}
        if mode.compile:
            self.sync()
            start = time.perf_counter()
            for _ in range(COMPILE_STEPS):
                step()
            self.sync()
            result["compile_s"] = f"{time.perf_counter() - start:.1f}"
        run_steps(step, args.warmup, args.max_seconds)
        self.sync()
        start = time.perf_counter()
        steps, loss = run_steps(step, args.steps, args.max_seconds)
        self.sync()
        elapsed = time.perf_counter() - start
        if steps < args.steps:
            print(f"note: batch {batch} {precision} {mode.name}: timed {steps} of {args.steps} steps "
                  f"(--max-seconds {args.max_seconds:g})", file=sys.stderr)
        if not torch.isfinite(loss.detach()).item():
            print(f"warning: non-finite loss at batch {batch} {precision} {mode.name}", file=sys.stderr)
        if mode.compile:
            torch._dynamo.reset()  # frees the compiled graphs and their CUDA-graph memory pool
        if precision == "32" and dev.type == "cuda":
            # PyTorch's default lets cuDNN run fp32 convolutions in TF32 (Volt's 32 does only when asked)
            result["tf32_convs"] = str(int(torch.backends.cudnn.allow_tf32))
        return {"img_per_s": f"{batch * steps / elapsed:.1f}",
                "ms_per_step": f"{elapsed * 1000.0 / steps:.3f}", "steps": str(steps), **result}

    def release(self):
        gc.collect()
        if self.dev.type == "cuda":
            self.torch.cuda.empty_cache()


def fields(**kv):
    return " ".join(f"{k}={v}" for k, v in kv.items())


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("SKIP: PyTorch is not installed (pip install torch)", file=sys.stderr)
        return 77

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    dev = torch.device(args.device)

    threads = "default"
    if args.threads is not None:
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
            threads = str(args.threads)
        else:
            print("note: --threads only applies to --device cpu; ignored", file=sys.stderr)

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = (f"{torch.cuda.get_device_name(dev)}, cuDNN {torch.backends.cudnn.version()}, "
                f"fp32 convolutions in TF32: {torch.backends.cudnn.allow_tf32}")
    else:
        name = cpu_name()
    print(f"# PyTorch {torch.__version__} seed-CNN training benchmark on {args.device} ({name}), "
          f"intra-op threads={torch.get_num_threads()}", flush=True)

    configs = configurations(args)
    if args.suite:
        compiled = [f"{m.name} at batch {b} {p}" for b, p, m in configs if m.compile]
        print(f"# suite {args.suite}: {len(configs)} configurations, budget {args.budget:g} s; "
              f"compiled: {'; '.join(compiled) or 'none'}", flush=True)

    bench = Bench(torch, dev, args)
    begin = time.perf_counter()
    best, ran, failed = {}, 0, 0
    for batch, prec, m in configs:
        label = fields(framework="pytorch", device=args.device, batch=batch, precision=prec, mode=m.name)
        left = args.budget - (time.perf_counter() - begin) if args.budget else float("inf")
        if left <= 0 or (m.compile and left < COMPILE_RESERVE_S):
            print(f"SKIP {label} reason=budget", flush=True)
            continue
        try:
            measured = bench.measure(batch, prec, m)
        except Exception as e:  # an OOM or a compiler failure costs one configuration, not the run
            traceback.print_exc(file=sys.stderr)
            print(f"SKIP {label} reason=error ({type(e).__name__})", flush=True)
            failed += 1
            continue
        finally:
            bench.release()
        ran += 1
        print(f"RESULT {label} threads={threads} {fields(**measured)}", flush=True)
        img_per_s = float(measured["img_per_s"])
        if img_per_s > best.get(batch, (0.0,))[0]:
            best[batch] = (img_per_s, m.name, prec)

    if args.suite:
        print(f"# suite {args.suite}: ran {ran} of {len(configs)} configurations "
              f"in {time.perf_counter() - begin:.0f} s", flush=True)
        for batch, (img_per_s, name, prec) in sorted(best.items()):
            print("BEST " + fields(framework="pytorch", batch=batch, img_per_s=f"{img_per_s:.1f}",
                                   mode=name, precision=prec), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
