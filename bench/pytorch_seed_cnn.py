"""PyTorch reference benchmark of the Volt "seed CNN" training step (conv-bn-relu-pool x2 + MLP).
Prints one machine-readable RESULT line per batch size so Volt's own numbers can be compared against it."""
import argparse
import platform
import sys
import time

PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def batch_list(text):
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"bad batch-size list {text!r}")
    return [positive_int(p) for p in parts]


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
    p.add_argument("--batch-size", type=batch_list, default=[128],
                   help="batch size or comma list, e.g. 128,512,2048 (default 128)")
    p.add_argument("--precision", choices=PRECISIONS, default="32")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed steps (default 10)")
    p.add_argument("--steps", type=positive_int, default=50, help="timed steps (default 50)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--in-channels", type=positive_int, default=3)
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--num-classes", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    side = ((args.image_size - 4) // 2 - 4) // 2  # conv5 -> pool2 -> conv5 -> pool2
    if side < 1:
        p.error(f"--image-size {args.image_size} is too small for the seed CNN (minimum 16)")
    return p, args


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print("SKIP: PyTorch is not installed (pip install torch)", file=sys.stderr)
        return 77

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
        name = torch.cuda.get_device_name(dev)
    else:
        name = cpu_name()
    print(f"# PyTorch {torch.__version__} seed-CNN training benchmark on {args.device} ({name}), "
          f"intra-op threads={torch.get_num_threads()}, precision={args.precision}, "
          f"channels_last={args.channels_last}, compile={args.compile}", flush=True)

    amp_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(args.precision)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for batch in args.batch_size:
        torch.manual_seed(args.seed)
        model = SeedCNN(args.in_channels, args.image_size, args.num_classes)
        model = model.to(dev, memory_format=fmt).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = None
        if args.precision == "16-mixed":
            scaler = torch.amp.GradScaler(dev.type)
        run_model = torch.compile(model) if args.compile else model

        images = torch.randn(batch, args.in_channels, args.image_size, args.image_size,
                             device=dev).contiguous(memory_format=fmt)
        labels = torch.randint(0, args.num_classes, (batch,), dtype=torch.int64, device=dev)

        def step():
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

        for _ in range(args.warmup):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        elapsed = time.perf_counter() - start
        if not torch.isfinite(loss.detach()).item():
            print(f"warning: non-finite loss at batch {batch}", file=sys.stderr)

        print(f"RESULT framework=pytorch device={args.device} batch={batch} "
              f"precision={args.precision} threads={threads} "
              f"img_per_s={batch * args.steps / elapsed:.1f} "
              f"ms_per_step={elapsed * 1000.0 / args.steps:.3f}", flush=True)
        del model, run_model, optimizer, images, labels
    return 0


if __name__ == "__main__":
    sys.exit(main())
