"""Volt next to PyTorch: reads the RESULT, FLOOR, BEST and SKIP lines that bench_train_gpu and
pytorch_seed_cnn.py print (files, or stdin) and prints a Markdown table, one row per batch size and
precision. Fields are key=value in any order; unknown fields and other lines are ignored."""
import argparse
import contextlib
import sys

KINDS = ("RESULT", "FLOOR", "BEST", "SKIP")
PRECISION_ORDER = ("32", "16-mixed", "bf16-mixed")
ALIASES = {"fp32": "32", "32-true": "32", "float32": "32", "fp16": "16-mixed", "16": "16-mixed",
           "float16": "16-mixed", "bf16": "bf16-mixed", "bfloat16": "bf16-mixed"}
COLUMNS = ("batch", "precision", "Volt img/s (mode)", "PyTorch eager img/s", "PyTorch best img/s (mode)",
           "Volt / eager", "Volt / best", "Volt floor img/s (Volt's share)", "target met")
TARGET_NOTE = ("target: in mixed precision, Volt at least 2x PyTorch's best at that batch size "
               "(any mode or precision); in fp32, Volt ahead of PyTorch fp32 eager. \"TF32 convs\": PyTorch "
               "ran its fp32 convolutions in TF32 (its default; Volt's fp32 row is true fp32 unless its mode "
               "says +tf32).")


def records(lines):
    """(kind, {field: value}) for each RESULT/FLOOR/BEST/SKIP line; other lines are skipped."""
    for line in lines:
        words = line.split()
        if words and words[0] in KINDS:
            yield words[0], dict(w.split("=", 1) for w in words[1:] if "=" in w)


def number(fields, key):
    """fields[key] as a float; None (with a note when it is there but no number) otherwise."""
    try:
        value = float(fields.get(key, "nan"))
    except ValueError:
        value = float("nan")
    if value != value and key in fields:
        print(f"compare.py: ignored {key}={fields[key]} (not a number)", file=sys.stderr)
    return None if value != value else value


class Table:
    """The best figure per (batch, precision) for each column, gathered from parsed records."""

    def __init__(self):
        self.volt, self.eager, self.floor = {}, {}, {}  # (batch, precision) -> (img/s, mode)
        self.best = {}  # batch -> (img/s, "mode, precision"): PyTorch's fastest at that batch
        self.skipped = []
        self.torch_skipped = set()  # batch sizes at which a PyTorch configuration did not run

    @staticmethod
    def keep_max(table, key, value, label):
        if value is not None and value > table.get(key, (-1.0,))[0]:
            table[key] = (value, label)

    def add(self, kind, f):
        if kind == "SKIP":
            self.skipped.append(" ".join(f"{k}={v}" for k, v in f.items()))
            if f.get("framework") == "pytorch" and f.get("batch", "").isdigit():
                self.torch_skipped.add(int(f["batch"]))
            return
        try:
            batch = int(f["batch"])
        except (KeyError, ValueError):
            print(f"compare.py: ignored a {kind} line without a batch size: {f}", file=sys.stderr)
            return
        prec = ALIASES.get(f.get("precision", "32"), f.get("precision", "32"))
        key, mode = (batch, prec), f.get("mode", "eager")
        framework = f.get("framework", {"BEST": "pytorch", "FLOOR": "volt"}.get(kind))
        if framework == "volt" and kind == "FLOOR":
            self.keep_max(self.floor, key, number(f, "floor_img_per_s"), "")
        elif framework == "volt" and kind == "RESULT":
            self.keep_max(self.volt, key, number(f, "img_per_s"), mode)
        elif framework == "pytorch":
            if kind == "RESULT" and mode == "eager":
                self.keep_max(self.eager, key, number(f, "img_per_s"),
                              "TF32 convs" if f.get("tf32_convs") == "1" else "")
            self.keep_max(self.best, batch, number(f, "img_per_s"), f"{mode}, {prec}")

    def keys(self):
        keys = set(self.volt) | set(self.eager) | set(self.floor)
        rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
        return sorted(keys, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))

    def row(self, key):
        volt, eager, floor = (t.get(key, (None, ""))[0] for t in (self.volt, self.eager, self.floor))
        best = self.best.get(key[0], (None, ""))[0]
        to_eager, to_best = div(volt, eager), div(volt, best)
        mixed = key[1] != "32"
        goal = to_best if mixed else to_eager
        met = "-" if goal is None else ("yes" if (goal >= 2.0 if mixed else goal > 1.0) else "no")
        if met == "yes" and mixed and key[0] in self.torch_skipped:
            met = "? (a PyTorch mode was skipped)"  # its best may be faster than the best that ran
        share = f" ({100.0 * volt / floor:.1f}%)" if volt and floor else ""
        return [str(key[0]), key[1], with_label(self.volt, key), with_label(self.eager, key),
                with_label(self.best, key[0]), times(to_eager), times(to_best), img(floor) + share, met]


def img(value):
    return "-" if value is None else f"{value:,.0f}"


def with_label(table, key):
    value, label = table.get(key, (None, ""))
    return img(value) + (f" ({label})" if value is not None and label else "")


def div(a, b):
    return a / b if a and b else None


def times(value):
    return "-" if value is None else f"{value:.2f}x"


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="logs to read ('-' or none: stdin)")
    p.add_argument("--markdown-row", nargs=3, metavar=("DATE", "GPU", "COMMIT"),
                   help="prefix each row with these three columns, for bench/RESULTS.md")
    args = p.parse_args(argv)

    table = Table()
    sys.stdin.reconfigure(errors="replace")  # a stray byte in a log costs that line, not the table
    for name in args.files or ["-"]:
        try:
            with open(name, errors="replace") if name != "-" else contextlib.nullcontext(sys.stdin) as f:
                for kind, fields in records(f):
                    table.add(kind, fields)
        except OSError as e:
            print(f"compare.py: cannot read {name}: {e.strerror}", file=sys.stderr)
            return 2

    header, prefix = list(COLUMNS), []
    if args.markdown_row:
        header, prefix = ["date", "GPU", "commit"] + header, list(args.markdown_row)
    rows = [prefix + table.row(k) for k in table.keys()]
    print(markdown(header, rows) if rows else "(no RESULT or FLOOR lines found)")
    if args.markdown_row:  # only what goes into RESULTS.md: the rows, and what their best left out
        if rows and table.skipped:
            print(f"\nNot run on {args.markdown_row[0]}, so not in \"PyTorch best\": "
                  + "; ".join(table.skipped))
        return 0
    if rows:
        print(f"\n{TARGET_NOTE}")
    for line in table.skipped:
        print(f"skipped: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
