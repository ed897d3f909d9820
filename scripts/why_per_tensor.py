"""Why per-tensor int8 collapses on the TF MobileNetV2 (QAT weights), and why qcc's defaults do not.

Calibrates on dev images 0-99 and evaluates on 100-499 (top-1, label + 1):
  1. ONNX Runtime's quantize_static with per-tensor weights (QDQ, s8 symmetric weights, u8 activations,
     MinMax), run by ONNX Runtime;
  2. qcc with the same scheme (--weights sym-per-tensor --calib-method minmax --no-bias-correction, and
     --disable-pass fuse-residual: ONNX Runtime quantizes a conv's output before the residual add);
  3. qcc's per-tensor default (--weights asym-per-tensor: the grid the QAT weights were trained on) and its
     overall default (sym-per-channel);
then names the layers that cause the collapse with `qcc analyze` (sensitivity: network-output SQNR with
only that layer quantized). Needs ../shared and the venv (scripts/python-env.sh). Takes a few minutes.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, os.path.dirname(__file__))
from shared_models import DEV, IMAGENET, dev_images, preprocess, require_shared, tf

QCC = os.environ.get("QCC", os.path.join(os.path.dirname(__file__), "..", "target", "release", "qcc"))
MODEL = os.path.join(IMAGENET, "mobilenet_v2_1.0_224_tfqat_dequant_opset13.onnx")
SPEC = tf(224)


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.it = iter([{name: preprocess(p, SPEC)} for p, _ in images])

    def get_next(self):
        return next(self.it, None)


def ort_top1(path, images):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    hits = sum(int(s.run(None, {name: preprocess(p, SPEC)})[0].argmax() == label + 1) for p, label in images)
    return 100.0 * hits / len(images)


def qcc_eval(tmp, *flags):
    out = os.path.join(tmp, "eval.json")
    subprocess.run([QCC, "eval", MODEL, "-O2", "--int8", "--calib", os.path.join(DEV, "images"), "--calib-samples", "100",
                    "--preprocess", SPEC, "--images", os.path.join(DEV, "images"), "--labels", os.path.join(DEV, "labels.csv"),
                    "--label-offset", "1", "--offset", "100", "--json", out, *flags], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.load(open(out))
    return r["float"]["top1"], r["quantized"]["top1"], r["quantized"]["agreement"]


def main():
    require_shared()
    calib, evaluate = dev_images(0, 100), dev_images(100, 400)
    # ONNX Runtime also quantizes each conv's output before a residual add: no fuse-residual.
    ort_like = ["--weights", "sym-per-tensor", "--calib-method", "minmax", "--no-bias-correction", "--disable-pass", "fuse-residual"]
    with tempfile.TemporaryDirectory() as tmp:
        q = os.path.join(tmp, "ort_per_tensor.onnx")
        name = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(MODEL, q, Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        print(f"ONNX Runtime per-tensor int8:                 top-1 {ort_top1(q, evaluate):.2f}")
        for label, flags in [("qcc, ONNX Runtime's scheme", ort_like), ("qcc, asym-per-tensor (per-tensor default)",
                             ["--weights", "asym-per-tensor"]), ("qcc, default (sym-per-channel)", [])]:
            f, t, a = qcc_eval(tmp, *flags)
            print(f"{label + ':':45} top-1 {t:.2f}, agreement {a:.2f}% (float {f:.2f})")
        js = os.path.join(tmp, "analysis.json")
        subprocess.run([QCC, "analyze", MODEL, "-O2", "--int8", *ort_like, "--calib", os.path.join(DEV, "images"),
                        "--calib-samples", "100", "--preprocess", SPEC, "--samples", "4", "--json", js],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        layers = [l for l in json.load(open(js))["layers"] if l["sensitivity"] is not None]
        layers.sort(key=lambda l: l["sensitivity"])
        print("\nqcc analyze, ONNX Runtime's scheme: the most sensitive layers (network-output SQNR with only that "
              "layer quantized)")
        for l in layers[:4]:
            lo, hi = l["weight_absmax"] or (float("nan"), float("nan"))
            print(f"  {l['name']}: {l['op']}, sensitivity {l['sensitivity']:.1f} dB, alone {l['alone_sqnr_db']:.1f} dB, "
                  f"RMSE/scale {l['rmse_over_scale']:.1f}, per-channel max|w| {lo:.3g} .. {hi:.3g}")


if __name__ == "__main__":
    main()
