"""Model -> one self-contained ONNX file, proven: the export (torch), its
graph rewrites, the NumPy reference of the LSTM equations, and the model file
as a scoring host opens it (ONNX Runtime, no torch).

serving imports model_file, parity and verify only: none of them loads torch.
"""
