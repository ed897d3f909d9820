# Run with a Python that has numpy and onnx (scripts/python-env.sh makes one): python examples/c/elementwise.py
# Writes examples/c/elementwise.onnx: integer adds and multiplies (same-shape and broadcasting) and a
# sigmoid table between two small convolutions, for examples/c/check.sh.
import sys
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
rng = np.random.default_rng(7)
C = 20
def w(name, shape, s):
    return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)
inits = [w("w1", [C, 1, 3, 3], 0.5), w("w2", [C, 1, 3, 3], 0.5), w("w3", [4, C, 3, 3], 0.1)]
N = helper.make_node
nodes = [
    N("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
    N("Conv", ["input", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
    N("Add", ["c1", "c2"], ["s"], name="add"),
    N("Relu", ["s"], ["r"], name="relu"),
    N("Mul", ["c1", "c2"], ["m"], name="mul"),
    N("GlobalAveragePool", ["r"], ["g"], name="se_gap"),
    N("Sigmoid", ["g"], ["gs"], name="se_sigmoid"),
    N("Mul", ["r", "gs"], ["se"], name="se_mul"),
    N("Add", ["se", "m"], ["t"], name="add2"),
    N("MaxPool", ["t"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    N("Sigmoid", ["p"], ["ps"], name="sigmoid"),
    N("Conv", ["ps", "w3"], ["y"], name="conv3"),
]
g = helper.make_graph(nodes, "elementwise", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1] if len(sys.argv) > 1 else "examples/c/elementwise.onnx")
