"""Runs .onnx files in ONNX Runtime alone (no TensorFlow, Keras or torch in this process).

python onnx_child.py WORK FILE...: reads WORK/inputs.npy; for each file, writes its outputs on
the whole batch and on the first image alone to WORK/outputs.npz, and prints one JSON object
with each file's input and output names and shapes and its metadata as ONNX Runtime reads it.
"""

import json
import sys

import numpy as np
import onnxruntime as ort

work, files = sys.argv[1], sys.argv[2:]
x = np.load(f"{work}/inputs.npy")
outputs, report = {}, {}
for i, path in enumerate(files):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    outputs[f"{i}.batch"] = session.run(None, {inp.name: x})[0]
    outputs[f"{i}.one"] = session.run(None, {inp.name: x[:1]})[0]
    report[path] = {"input": [inp.name, inp.type, inp.shape], "output": [out.name, out.type, out.shape],
                    "metadata": session.get_modelmeta().custom_metadata_map}
np.savez(f"{work}/outputs.npz", **outputs)
print(json.dumps(report))
