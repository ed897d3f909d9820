"""CI-only: `qcc run` (reference interpreter) against ONNX Runtime on dev images of every shared ImageNet
model. Passes when max|diff| <= 1e-3 * max|output| and top-1 agrees on every image."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from shared_models import IMAGENET, MODELS, dev_images, preprocess, require_shared

QCC = os.environ.get("QCC", os.path.join(os.path.dirname(__file__), "..", "target", "release", "qcc"))
N = int(os.environ.get("QCC_COMPARE_IMAGES", "20"))


def main():
    require_shared()
    failures = 0
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fname, spec, _ in MODELS:
            model = os.path.join(IMAGENET, fname)
            sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            in_name = sess.get_inputs()[0].name
            worst = 0.0
            top1_diff = 0
            for i, (img, _) in enumerate(dev_images(0, N)):
                x = preprocess(img, spec)
                xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
                np.save(xin, x)
                ref = sess.run(None, {in_name: x})[0]
                subprocess.run([QCC, "run", model, "-O1", "--input", xin, "--output", yout], check=True)
                got = np.load(yout)
                rel = float(np.abs(got - ref).max() / np.abs(ref).max())
                worst = max(worst, rel)
                top1_diff += int(got.argmax() != ref.argmax())
                checked += 1
            ok = worst <= 1e-3 and top1_diff == 0
            failures += 0 if ok else 1
            print(f"{'ok  ' if ok else 'FAIL'} {fname}: {N} images, max|diff|/max|out| = {worst:.2e}, top-1 differs on {top1_diff}")
    print(f"{checked - failures * 0} images compared; {len(MODELS) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
