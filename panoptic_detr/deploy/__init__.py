"""Deployment: the panoptic model as ONNX graphs, and a predictor on ONNX Runtime or OpenVINO.

- `graphs`: the two exported modules (`DetrGraph`: image -> predictions + the per-image
  tensors of the mask head; `MaskHeadGraph`: those + N query indices -> N mask logits)
  and their input / output names;
- `manifest`: `model.json` (format version, categories, input rules, inference
  defaults, file hashes) and the README.txt written beside the graphs;
- `export`: `export_onnx(model, out_dir)` (CLI `export`);
- `runtimes`: `open_graph(path, runtime)`, one session interface over ONNX Runtime and
  OpenVINO;
- `onnx_predictor`: `OnnxPredictor(export_dir, runtime=)`, the `engine.predict.Predictor`
  interface on the graphs (CLI `predict` / `evaluate --backend onnxruntime|openvino`).

Same level as `engine/`: imports data, model and engine.inference, never the commands.
`onnx` and `onnxruntime` are the optional extra `deploy`, `openvino` the extra `openvino`,
imported only when used.
"""
