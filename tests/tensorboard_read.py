#!/usr/bin/env python3
"""Reads a TensorBoard log folder with TensorBoard's own EventAccumulator and prints what it found
as JSON (used by tests/test_loggers.cpp to check Volt's event files against the real reader).

Usage: tensorboard_read.py <log dir>     Exit status 3 when tensorboard is not installed."""
import json
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from google.protobuf import json_format
except ImportError as e:  # the C++ test checks for tensorboard first; this is a fallback
    print("tensorboard not installed: %s" % e, file=sys.stderr)
    sys.exit(3)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    acc = event_accumulator.EventAccumulator(
        sys.argv[1],
        size_guidance={
            event_accumulator.COMPRESSED_HISTOGRAMS: 0,
            event_accumulator.IMAGES: 0,
            event_accumulator.AUDIO: 0,
            event_accumulator.SCALARS: 0,
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    acc.Reload()
    tags = acc.Tags()
    out = {"tags": {k: sorted(v) if isinstance(v, list) else v for k, v in tags.items()}}
    out["scalars"] = {
        tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in tags.get("scalars", [])
    }
    out["histograms"] = {}
    for tag in tags.get("histograms", []):
        events = acc.Histograms(tag)
        out["histograms"][tag] = [
            {
                "step": e.step,
                "min": e.histogram_value.min,
                "max": e.histogram_value.max,
                "num": e.histogram_value.num,
                "sum": e.histogram_value.sum,
                "bucket_count_total": sum(e.histogram_value.bucket),
                "buckets": len(e.histogram_value.bucket),
            }
            for e in events
        ]
    out["images"] = {
        tag: [
            {"step": e.step, "width": e.width, "height": e.height,
             "png_signature_ok": e.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"}
            for e in acc.Images(tag)
        ]
        for tag in tags.get("images", [])
    }
    hparams = {}
    try:
        contents = acc.PluginTagToContent("hparams")
    except KeyError:
        contents = {}
    for tag, content in contents.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        hparams[tag] = json_format.MessageToDict(data, preserving_proto_field_name=True)
    out["hparams"] = hparams
    out["graph"] = None
    if tags.get("graph"):
        graph = acc.Graph()
        out["graph"] = {
            "nodes": [
                {"name": n.name, "op": n.op, "inputs": list(n.input),
                 "attrs": {k: v.s.decode("utf-8", "replace") for k, v in n.attr.items()}}
                for n in graph.node
            ]
        }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
