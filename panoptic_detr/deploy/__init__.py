"""Deployment: the panoptic model as ONNX graphs, and an ONNX Runtime predictor.

- `graphs`: the two exported modules (`DetrGraph`: image -> predictions + the per-image
  tensors of the mask head; `MaskHeadGraph`: those + N query indices -> N mask logits)
  and their input / output names;
- `manifest`: `model.json` (format version, categories, input rules, inference
  defaults, file hashes) and the README.txt written beside the graphs;
- `export`: `export_onnx(model, out_dir)` (CLI `export`);
- `onnx_predictor`: `OnnxPredictor(export_dir)`, the `engine.predict.Predictor`
  interface on ONNX Runtime (CLI `predict` / `evaluate --backend onnxruntime`).

Same level as `engine/`: imports data, model and engine.inference, never the commands.
`onnx` and `onnxruntime` are the optional extra `deploy`, imported only when used.
"""
