"""The bottom layer: plain types and facts every other layer may import.

The layers of `generator`, bottom to top (a module imports only its own layer and those below;
`tests/test_layers.py` enforces it):

1. `generator` (the package itself: `PROJECT_ROOT`), `generator.errors`, `generator.sources`,
   `generator.base`: tensors and dtypes, spec building blocks, the embedded tritonserver's
   install and its launch contract;
2. `generator.kinds`: every kind of thing a repository is made of (inference formats, builders,
   preprocessing kinds, targets), each owning its knowledge in one module behind a registry;
3. `generator.environments`: per-version conda execution environments and the offline channel;
4. `generator.pipeline`: spec -> plan -> artifacts -> rendered files -> checks -> atomic write,
   and the manifest the plan leaves;
5. `generator.serving` and `generator.containers`: running a repository (embedded server,
   updates, tuning) and the container image and deploy files;
6. `generator.cli`: the `tritongen` command.
"""
