"""The kinds of things a repository is made of, each owning its knowledge in one module.

- `formats`: inference formats (ONNX, TorchScript): file name, tensors, backend, config
  parameters, the artifact check; registry `formats.FORMATS`.
- `preprocessing`: preprocessing kinds (textprep): backend, model code, parameter contract,
  tensors; registry `preprocessing.PREPROCESSORS`.
- `targets`: where a repository is served (local, ngc); registry `targets.TARGETS`.

Adding a kind is one module plus one registry entry.
"""
