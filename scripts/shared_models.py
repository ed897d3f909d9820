"""The ImageNet models in ../shared and how each is preprocessed (one table for every CI-only script)."""
import os
import sys

SHARED = os.environ.get("QCC_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
IMAGENET = os.path.join(SHARED, "models", "imagenet")
DEV = os.path.join(SHARED, "data", "imagenet_dev_500")

TORCH = "resize=256,crop=224,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225"
def tf(crop):
    return f"resize={int(crop * 1.14)},crop={crop},scale=1/255,mean=0.5,std=0.5"

# file, qcc --preprocess spec, label offset
MODELS = [
    ("mobilenetv2_torchvision_opset13.onnx", TORCH, 0),
    ("mobilenetv2_torchvision_bn_opset13.onnx", TORCH, 0),
    ("efficientnet_lite0_opset13.onnx", "resize=256,crop=224,scale=1/255,mean=0.5,std=0.5", 0),
    ("mobilenet_v1_0.25_128_tfqat_dequant_opset13.onnx", tf(128), 1),
    ("mobilenet_v1_0.5_160_tfqat_dequant_opset13.onnx", tf(160), 1),
    ("mobilenet_v1_0.75_192_tfqat_dequant_opset13.onnx", tf(192), 1),
    ("mobilenet_v2_1.0_224_tfqat_dequant_opset13.onnx", tf(224), 1),
    ("mobilenet_edgetpu_0.75_224_tfptq_dequant_opset13.onnx", tf(224), 1),
]


def require_shared():
    if not os.path.isdir(IMAGENET):
        print(f"ERROR: {SHARED} is absent: this check needs ../shared (models and images).", file=sys.stderr)
        sys.exit(2)


def parse_spec(spec):
    d = dict(kv.split("=") for kv in spec.split(","))
    three = lambda s: [float(x) for x in s.split(":")] * (3 if ":" not in s else 1)
    num = lambda s: (lambda a, b: float(a) / float(b))(*s.split("/")) if "/" in s else float(s)
    return int(d["resize"]), int(d["crop"]), num(d["scale"]), three(d["mean"]), three(d["std"])


def preprocess(path, spec):
    """PIL preprocessing (the reference the README's accuracy numbers use)."""
    import numpy as np
    from PIL import Image
    resize, crop, scale, mean, std = parse_spec(spec)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = resize, int(h * resize / w)
    else:
        nw, nh = int(w * resize / h), resize
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) * scale
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def dev_images(first, count):
    import csv
    with open(os.path.join(DEV, "labels.csv")) as f:
        rows = list(csv.reader(f))[1:]
    return [(os.path.join(DEV, "images", r[0]), int(r[1])) for r in rows[first:first + count]]
