"""qcc vs ONNX Runtime, side by side in one run: latency at 1 and 2 threads for float and int8 models.

int8: ONNX Runtime's quantize_static (QDQ, per-channel weights, u8 activations, MinMax) against qcc -O2
--int8 (its defaults). Models: MobileNetV2 and EfficientNet-Lite0 from ../shared (skipped, loudly, when
absent) and ResNet-18/ResNet-50/ResNeXt-50 (32x4d) shaped models with random weights generated here (latency does not depend
on weights). Prints median latencies, qcc/ORT ratios and the GOPS qcc's GEMM/conv kernels reach.
Usage: bench/compare_ort.sh [--iters N] [--models a,b] (the .sh builds the venv and qcc first).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QCC = os.path.join(ROOT, "target", "release", "qcc")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import shared_models  # noqa: E402
SHARED = shared_models.SHARED


def resnet(depth, path, groups=1):
    """A ResNet-18/50 shaped float model (BN folded into conv biases), He-initialised random weights; with
    `groups`, ResNeXt-50 (32x4d: bottlenecks twice as wide, their 3x3 convolutions grouped)."""
    rng = np.random.default_rng(depth + groups)
    inits, nodes = [], []
    count = [0]

    def name(p):
        count[0] += 1
        return f"{p}{count[0]}"

    def conv(x, cin, cout, k, s, relu=True, group=1):
        w, b, y = name("w"), name("b"), name("conv")
        cg = cin // group
        inits.append(numpy_helper.from_array((rng.standard_normal((cout, cg, k, k)) * np.sqrt(2.0 / (cg * k * k))).astype(np.float32), w))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=group))
        if relu:
            r = name("relu")
            nodes.append(helper.make_node("Relu", [y], [r]))
            return r
        return y

    def add_relu(a, b):
        s, r = name("add"), name("relu")
        nodes.extend([helper.make_node("Add", [a, b], [s]), helper.make_node("Relu", [s], [r])])
        return r

    x = conv("input", 3, 64, 7, 2)
    p = name("pool")
    nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = p, 64
    blocks = [2, 2, 2, 2] if depth == 18 else [3, 4, 6, 3]
    for stage, n in enumerate(blocks):
        width = 64 * 2**stage
        for i in range(n):
            s = 2 if stage > 0 and i == 0 else 1
            if depth == 18:
                cout = width
                y = conv(conv(x, cin, width, 3, s), width, width, 3, 1, relu=False)
            else:
                cout, mid = width * 4, width * (2 if groups > 1 else 1)
                y = conv(conv(conv(x, cin, mid, 1, 1), mid, mid, 3, s, group=groups), mid, cout, 1, 1, relu=False)
            short = x if (s == 1 and cin == cout) else conv(x, cin, cout, 1, s, relu=False)
            x, cin = add_relu(y, short), cout
    g, f = name("gap"), name("flat")
    nodes += [helper.make_node("GlobalAveragePool", [x], [g]), helper.make_node("Flatten", [g], [f], axis=1)]
    inits.append(numpy_helper.from_array((rng.standard_normal((1000, cin)) * np.sqrt(1.0 / cin)).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", [f, "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, f"resnet{depth}" if groups == 1 else f"resnext{depth}", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


class Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.it = iter([{"input": s} for s in samples])

    def get_next(self):
        return next(self.it, None)


def ort_session(path, threads, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    return s, name


def ort_latency(sess, iters, x):
    s, name = sess
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        s.run(None, {name: x})
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t)), float(np.percentile(t, 10))


def paired(ort_path, qcc_model, qcc_extra, threads, iters, x, rounds=10):
    """ONNX Runtime and qcc in alternating chunks of iters/rounds runs: this machine's speed drifts by up to 2x
    within minutes, so the ratio is the median of the per-round ratios (each round's two chunks run back
    to back) and each latency the median of its chunk medians. Interference only ever slows a run, so the
    ratio of the two tools' best p10 over all rounds is reported too (`best`)."""
    sess = ort_session(ort_path, threads, x)
    chunk = max(iters // rounds, 5)
    o, q, o10, q10, macs, peaks = [], [], [], [], 0, []
    for _ in range(rounds):
        om, op = ort_latency(sess, chunk, x)
        qm, qp, macs, peak = qcc_latency(qcc_model, threads, chunk, qcc_extra)
        o.append(om)
        q.append(qm)
        o10.append(op)
        q10.append(qp)
        peaks.append(peak or 0.0)
    ratio = float(np.median([b / a for a, b in zip(o, q)]))
    return float(np.median(o)), float(np.median(q)), ratio, min(q10) / min(o10), macs, max(peaks)


def qcc_latency(model, threads, iters, extra=()):
    with tempfile.NamedTemporaryFile(suffix=".json") as j:
        subprocess.run([QCC, "bench", model, "--threads", str(threads), "--iters", str(iters), "--json", j.name, *extra],
                       check=True, stdout=subprocess.DEVNULL)
        r = json.load(open(j.name))
    return r["median_ms"], r["p10_ms"], r["macs"], r.get("vnni_peak_gops")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--models", default="mobilenetv2,efficientnet_lite0,resnet18,resnet50,resnext50")
    ap.add_argument("--calib", type=int, default=20, help="calibration samples for both tools")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="qcc-bench-")
    rows = []
    for m in args.models.split(","):
        pre = None
        if m in ("mobilenetv2", "efficientnet_lite0"):
            f = {"mobilenetv2": "mobilenetv2_torchvision_opset13.onnx", "efficientnet_lite0": "efficientnet_lite0_opset13.onnx"}[m]
            path = os.path.join(SHARED, "models", "imagenet", f)
            if not os.path.exists(path):
                print(f"SKIPPED {m}: {path} is absent (../shared not available)", file=sys.stderr)
                continue
            pre = dict((f, spec) for f, spec, _ in shared_models.MODELS)[f]
        else:
            path = os.path.join(work, f"{m}.onnx")
            if m.startswith("resnext"):
                resnet(int(m[len("resnext"):]), path, groups=32)
            else:
                resnet(int(m[len("resnet"):]), path)
        # Calibration samples: the first dev images, preprocessed by qcc itself (so both tools see the same
        # tensors), or random tensors for the generated models.
        cal = os.path.join(work, f"{m}-calib")
        os.makedirs(cal, exist_ok=True)
        rng = np.random.default_rng(0)
        samples = []
        if pre:
            for img, _ in shared_models.dev_images(0, args.calib):
                np.save(os.path.join(cal, os.path.basename(img) + ".npy"), shared_models.preprocess(img, pre))
        if not os.listdir(cal):
            for i in range(args.calib):
                np.save(os.path.join(cal, f"s{i:03}.npy"), rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
        samples = [np.load(os.path.join(cal, f)) for f in sorted(os.listdir(cal))]
        x = samples[0]
        # ONNX Runtime int8: QDQ, per-channel, u8 activations (its recommended CPU configuration).
        pre_path = os.path.join(work, f"{m}-ort-pre.onnx")
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(path, pre_path)
        except Exception:
            pre_path = path
        ort_q = os.path.join(work, f"{m}-ort-int8.onnx")
        quantize_static(pre_path, ort_q, Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        qir = os.path.join(work, f"{m}-qcc-int8.qir")
        subprocess.run([QCC, path, "-O2", "--int8", "--calib", cal, "-o", qir], check=True, stderr=subprocess.DEVNULL)
        for threads in (1, 2):
            of, qf, rf, bf, _, _ = paired(path, path, ["-O2"], threads, args.iters, x)
            oq, qq, rq, bq, macs, peak = paired(ort_q, qir, [], threads, args.iters, x)
            rows.append((m, threads, of, qf, rf, bf, oq, qq, rq, bq, 2 * macs / (qq * 1e6), peak))
    print(f"\n{'model':<20}{'thr':>4}{'ORT fp32':>10}{'qcc fp32':>10}{'ratio':>7}{'best':>6}{'ORT int8':>10}{'qcc int8':>10}{'ratio':>7}{'best':>6}{'GOPS':>7}{'% VNNI':>8}")
    for m, t, of, qf, rf, bf, oq, qq, rq, bq, gops, peak in rows:
        pct = f"{100 * gops / (peak * t):>7.1f}%" if peak else f"{'n/a':>8}"
        print(f"{m:<20}{t:>4}{of:>9.2f}ms{qf:>8.2f}ms{rf:>7.2f}{bf:>6.2f}{oq:>8.2f}ms{qq:>8.2f}ms{rq:>7.2f}{bq:>6.2f}{gops:>7.1f}{pct}")
    peaks = [r[-1] for r in rows if r[-1]]
    if peaks:
        print(f"\nvpdpbusd peak of one core, measured by qcc bench on this machine: {max(peaks):.0f} GOPS")
    print("\nratio = qcc / ONNX Runtime latency, the median of 10 rounds that each run both tools back to back (below 1 = qcc "
          "faster); best = ratio of the two tools' fastest p10 over the rounds; GOPS = 2·MACs of qcc's GEMM/conv steps per second of the whole int8 model (a lower bound on kernel "
          "throughput); % VNNI = of the measured vpdpbusd peak of the threads used (best of the rounds).")


if __name__ == "__main__":
    main()
