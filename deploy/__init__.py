"""``deploy``: turn a genotype into a deployable network and measure it.

- :mod:`deploy.build`: the derived network of a genotype, with trained or seeded random weights;
- :mod:`deploy.parity`: the comparison of a backend's output with the PyTorch reference;
- :mod:`deploy.export`: one checked, parity-verified ONNX file (and a TensorRT engine);
- :mod:`deploy.quantize`: a Q/DQ int8 ONNX file (ONNX Runtime static quantization);
- :mod:`deploy.engine`: a serialized TensorRT engine checked against the GPU and TensorRT here;
- :mod:`deploy.bench`: FPS and latency percentiles per backend, as JSON, Markdown and CSV;
- :mod:`deploy.cli`: the ``cas deploy export`` and ``cas deploy bench`` commands.

``deploy`` imports ``casprof`` and never ``search``. Importing this package imports nothing;
onnx, onnxruntime and tensorrt are imported only inside the functions that use them.
"""
