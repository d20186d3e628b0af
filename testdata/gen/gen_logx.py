"""Golden files for internal/logx's TensorBoard event files, checked with
TensorBoard's own writer and reader (pip package `tensorboard`).

Files (testdata/golden/logx/):
  scalars.json          the input: a header wall time and, per step, a wall
                        time and (tag, float32 bits) scalars, with edge cases
                        (0, NaN, ±Inf, a subnormal, step 0, a step past 2^32,
                        a tag longer than 127 bytes, a non-ASCII tag).
  tb_written.tfevents   those scalars written by torch.utils.tensorboard's
                        SummaryWriter (tensorboard's EventFileWriter), wall
                        times fixed: the Go reader must decode it exactly, and
                        the Go writer must produce its scalar records byte for
                        byte.
  go_written.tfevents   the same scalars written by the Go writer
                        (`go test ./internal/logx -run TestGoWrittenGolden
                        -args -update`, which without -update checks that the
                        writer still produces these bytes); this
                        generator reads it back with TensorBoard's
                        EventAccumulator and with a strict record reader
                        (EventAccumulator drops a record with a bad CRC
                        silently), and fails unless every scalar, step, wall
                        time and the header come back exactly.
  resumed.json          a run logged steps 1..6 ("old"), was killed, and
                        resumed from its checkpoint of step 4: the resumed
                        run's event file ("new") restarts at purge_step 5 and
                        logs steps 5..8 (header_wall_time is the restart's).
  tb_resumed.tfevents   "new" written by SummaryWriter(purge_step=5): the Go
                        writer's session_log START record and scalar records
                        must be its records byte for byte.
  go_resumed.tfevents   "new" written by the Go writer (header, SessionStart,
                        scalars; `-run TestResumedGolden -args -update`). This
                        generator puts it beside "old" written by
                        SummaryWriter and fails unless EventAccumulator reads
                        each step once, steps 5..8 from the new file; and
                        unless, as a control, a new file without the START
                        event shows steps 5 and 6 twice.
"""
import glob
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
from unittest import mock

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from torch.utils.tensorboard import SummaryWriter

import common

OUT = os.path.join(common.GOLDEN, "logx")
REPO = os.path.dirname(common.ROOT)
HEADER_WALL_TIME = 1700000000.25


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_f32(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def scalars():
    long_tag = "train/" + "x" * 150
    steps = [
        (0, 1700000001.5, [("train/loss", 0.1234), ("lr", 0.0)]),
        (1, 1700000002.75, [("train/loss", 0.5), ("lr", 1e-4), ("train/grad_norm", float("nan")),
                            ("train/loss_scale", 65536.0)]),
        (2, 1700000003.0, [("train/grad_norm", float("inf")), ("neg", -3.5), ("tiny", 1e-45),
                           ("huge", -float("inf"))]),
        (300, 1700000100.125, [(long_tag, 2.0), ("größe/τ", 7.25)]),
        (123456789012, 1700009999.999, [("train/loss", 1.0 / 3.0)]),
    ]
    return {
        "header_wall_time": HEADER_WALL_TIME,
        "steps": [{"step": s, "wall_time": w, "values": [{"tag": t, "bits": f32_bits(v)} for t, v in vals]}
                  for s, w, vals in steps],
    }


def generate():
    os.makedirs(OUT, exist_ok=True)
    spec = scalars()
    with open(os.path.join(OUT, "scalars.json"), "w") as f:
        json.dump(spec, f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_tensorboard(spec, os.path.join(OUT, "tb_written.tfevents"))
    go_file = os.path.join(OUT, "go_written.tfevents")
    resumed = resumed_spec()
    with open(os.path.join(OUT, "resumed.json"), "w") as f:
        json.dump(resumed, f, indent=1)
        f.write("\n")
    write_tensorboard(resumed["new"], os.path.join(OUT, "tb_resumed.tfevents"), purge_step=resumed["purge_step"])
    subprocess.run(["go", "test", "./internal/logx", "-run", "^(TestGoWrittenGolden|TestResumedGolden)$", "-count=1",
                    "-args", "-update"], cwd=REPO, check=True)
    check_with_tensorboard(spec, go_file)
    check_with_tensorboard(spec, os.path.join(OUT, "tb_written.tfevents"))
    for name in ("go_resumed.tfevents", "tb_resumed.tfevents"):
        check_resumed(resumed, os.path.join(OUT, name), purged=True)
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain.tfevents")
        write_tensorboard(resumed["new"], plain)
        check_resumed(resumed, plain, purged=False)


def resumed_spec():
    def steps(first, last, wall0, scale):
        return [{"step": s, "wall_time": wall0 + s, "values": [{"tag": "train/loss", "bits": f32_bits(scale / s)},
                                                              {"tag": "train/lr", "bits": f32_bits(1e-4 * s)}]}
                for s in range(first, last + 1)]

    return {
        "purge_step": 5,
        "old": {"header_wall_time": 1700000000.0, "steps": steps(1, 6, 1700000010.0, 1.0)},
        "new": {"header_wall_time": 1700000100.5, "steps": steps(5, 8, 1700000110.25, 3.0)},
    }


def write_tensorboard(spec, out, purge_step=None):
    """SummaryWriter with the header's time.time() fixed (and the purge_step
    events', written as it opens), scalars with explicit walltime."""
    with tempfile.TemporaryDirectory() as tmp:
        with mock.patch("time.time", return_value=spec["header_wall_time"]):
            w = SummaryWriter(log_dir=tmp, purge_step=purge_step)
        for st in spec["steps"]:
            for v in st["values"]:
                w.add_scalar(v["tag"], bits_f32(v["bits"]), global_step=st["step"], walltime=st["wall_time"])
        w.close()
        files = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
        if len(files) != 1:
            raise RuntimeError(f"SummaryWriter wrote {files}, want one event file")
        shutil.copyfile(files[0], out)


def strict_records(path):
    """Every record's payload, failing on a bad length CRC, data CRC or a truncated tail."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off < len(data):
        if off + 12 > len(data):
            raise RuntimeError(f"{path}: truncated record header at {off}")
        header = data[off:off + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[off + 8:off + 12])
        if hcrc != masked_crc32c(header):
            raise RuntimeError(f"{path}: bad length CRC at {off}")
        body = data[off + 12:off + 12 + n]
        if len(body) != n or off + 16 + n > len(data):
            raise RuntimeError(f"{path}: truncated record at {off}")
        (dcrc,) = struct.unpack("<I", data[off + 12 + n:off + 16 + n])
        if dcrc != masked_crc32c(body):
            raise RuntimeError(f"{path}: bad data CRC at {off}")
        out.append(body)
        off += 16 + n
    return out


def same_value(got, want_bits):
    want = bits_f32(want_bits)
    if math.isnan(want):
        return math.isnan(got)
    return f32_bits(got) == want_bits


def check_with_tensorboard(spec, path):
    records = strict_records(path)
    want_events = sum(len(st["values"]) for st in spec["steps"])
    if len(records) != 1 + want_events:
        raise RuntimeError(f"{path}: {len(records)} records, want 1 header + {want_events} scalars")
    header = event_pb2.Event.FromString(records[0])
    if header.wall_time != spec["header_wall_time"] or header.file_version != "brain.Event:2":
        raise RuntimeError(f"{path}: header {header}")
    i = 1
    for st in spec["steps"]:
        for v in st["values"]:
            ev = event_pb2.Event.FromString(records[i])
            i += 1
            vals = ev.summary.value
            if (ev.step != st["step"] or ev.wall_time != st["wall_time"] or len(vals) != 1
                    or vals[0].tag != v["tag"] or vals[0].WhichOneof("value") != "simple_value"
                    or not same_value(vals[0].simple_value, v["bits"])):
                raise RuntimeError(f"{path}: record {i - 1} is {ev}, want step {st['step']} {v}")

    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    if acc.FirstEventTimestamp() != spec["header_wall_time"]:
        raise RuntimeError(f"{path}: EventAccumulator first timestamp {acc.FirstEventTimestamp()}")
    want = {}
    for st in spec["steps"]:
        for v in st["values"]:
            want.setdefault(v["tag"], []).append((st["wall_time"], st["step"], v["bits"]))
    tags = acc.Tags()["scalars"]
    if sorted(tags) != sorted(want):
        raise RuntimeError(f"{path}: EventAccumulator tags {sorted(tags)}, want {sorted(want)}")
    for tag, evs in want.items():
        got = acc.Scalars(tag)
        if len(got) != len(evs):
            raise RuntimeError(f"{path}: EventAccumulator has {len(got)} events for {tag!r}, want {len(evs)}")
        for g, (wall, step, bits) in zip(got, evs):
            if g.wall_time != wall or g.step != step or not same_value(g.value, bits):
                raise RuntimeError(f"{path}: EventAccumulator {tag!r}: {g}, want ({wall}, {step}, bits {bits:#x})")
    print(f"  {os.path.basename(path)}: {want_events} scalars read back exactly by EventAccumulator")


def check_resumed(resumed, new_file, purged):
    """Reads a folder holding "old" (SummaryWriter's file) and new_file, named
    so that new_file sorts after it, with EventAccumulator. purged: each step
    once, steps from purge_step on taken from new_file; else (a control
    without the START event) the steps both files hold come twice."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tensorboard(resumed["old"], os.path.join(tmp, "events.out.tfevents.1700000000.old"))
        shutil.copyfile(new_file, os.path.join(tmp, "events.out.tfevents.1700000100.new"))
        acc = event_accumulator.EventAccumulator(tmp, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        old = [st for st in resumed["old"]["steps"] if not purged or st["step"] < resumed["purge_step"]]
        want_steps = old + resumed["new"]["steps"]
        for tag in ("train/loss", "train/lr"):
            got = acc.Scalars(tag)
            want = [(st["wall_time"], st["step"], v["bits"]) for st in want_steps for v in st["values"] if v["tag"] == tag]
            if len(got) != len(want) or any(g.wall_time != w or g.step != s or not same_value(g.value, b)
                                            for g, (w, s, b) in zip(got, want)):
                raise RuntimeError(f"{os.path.basename(new_file)} after the old file: EventAccumulator {tag!r} has "
                                   f"steps {[g.step for g in got]}, want {[s for _, s, _ in want]} (purged={purged})")
        print(f"  {os.path.basename(new_file)} after the old file: EventAccumulator reads steps "
              f"{[g.step for g in acc.Scalars('train/loss')]}")
