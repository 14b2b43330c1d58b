"""Where models run: the same choices for training (torch) and scoring (ONNX Runtime).

auto: CUDA when the library can really use it, else CPU; cuda: CUDA or a clear
error; cpu: never try CUDA.
"""

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"
