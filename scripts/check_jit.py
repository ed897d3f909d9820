"""CI-only: compiled code (the JIT, and object files) on every model in ../shared.

For each ImageNet model: the int8 graph (calibrated on 20 dev images) run by the JIT equals the reference
interpreter byte for byte on 3 dev images, also with 1 and 2 threads and with each kernel variant this CPU
runs; the float model run by the JIT matches the interpreter within float rounding; the int8 graph compiles
to an object file (every node has a kernel). The ORT-quantized QDQ references are checked the same way.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from shared_models import IMAGENET, MODELS, dev_images, preprocess, require_shared  # noqa: E402

QCC = os.environ.get("QCC", "target/release/qcc")


def qcc(*args):
    r = subprocess.run([QCC, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"qcc {' '.join(args)}:\n{r.stderr}")
    return r


def cpu_variants():
    flags = open("/proc/cpuinfo").read()
    v = ["x86-64"]
    if " avx2 " in flags and " fma " in flags:
        v.append("x86-64-v3")
    if " avx512_vnni " in flags and " avx512bw " in flags:
        v.append("x86-64-v4")
    return v


def main():
    require_shared()
    failed = 0
    variants = cpu_variants()
    print(f"kernel variants this CPU runs: {', '.join(variants)}")
    with tempfile.TemporaryDirectory() as tmp:
        cal = os.path.join(tmp, "calib")
        models = [(f, spec) for f, spec, _ in MODELS]
        models += [(os.path.join("ort_int8_reference", r), spec) for r, spec in [
            ("mobilenetv2_ort_int8_qdq.onnx", MODELS[0][1]), ("efficientnet_lite0_ort_int8_qdq.onnx", MODELS[2][1])]]
        for f, spec in models:
            src = os.path.join(IMAGENET, f)
            name = os.path.basename(f)
            os.makedirs(cal, exist_ok=True)
            for old in os.listdir(cal):
                os.remove(os.path.join(cal, old))
            xs = []
            for i, (img, _) in enumerate(dev_images(0, 20)):
                x = preprocess(img, spec)
                np.save(os.path.join(cal, f"{i:03}.npy"), x)
                if i < 3:
                    xs.append(os.path.join(cal, f"{i:03}.npy"))
            qir = os.path.join(tmp, "q.qir")
            if "ort_int8_reference" in f:
                qcc(src, "-O2", "-o", qir)  # already quantized: qcc compiles its QDQ scales
            else:
                qcc(src, "-O2", "--int8", "--calib", cal, "-o", qir)
            ok = True
            for x in xs:
                ref = os.path.join(tmp, "ref.npy")
                qcc("run", qir, "--interp", "--input", x, "--output", ref)
                want = open(ref, "rb").read()
                for cpu in variants:
                    for threads in ("1", "2"):
                        out = os.path.join(tmp, "out.npy")
                        qcc("run", qir, "--target-cpu", cpu, "--threads", threads, "--input", x, "--output", out)
                        if open(out, "rb").read() != want:
                            print(f"FAIL {name}: int8 JIT ({cpu}, {threads} threads) differs from the interpreter on {x}")
                            ok = False
            obj = os.path.join(tmp, "m.o")
            try:
                qcc(qir, "-O0", "-o", obj)
            except RuntimeError as e:
                print(f"FAIL {name}: no object file: {e}")
                ok = False
            if "ort_int8_reference" not in f:
                for x in xs[:1]:
                    a, b = os.path.join(tmp, "fa.npy"), os.path.join(tmp, "fb.npy")
                    qcc("run", src, "-O2", "--input", x, "--output", a)
                    qcc("run", src, "-O2", "--interp", "--input", x, "--output", b)
                    fa, fb = np.load(a), np.load(b)
                    err = float(np.abs(fa - fb).max() / max(1e-6, np.abs(fb).max()))
                    if err > 1e-4 or fa.argmax() != fb.argmax():
                        print(f"FAIL {name}: float JIT differs from the interpreter (relative {err:.2e})")
                        ok = False
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
            failed += not ok
    print(f"compiled-code checks: {len(models) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
