"""tritongen: declarative model specs -> a complete, validated Triton model repository.

Subpackages, in the order data flows:

- `pipeline`: spec -> validated model -> plan -> artifacts -> rendered files -> checks -> atomic write;
- `kinds`: the kinds of things a repository is made of (inference formats, preprocessing kinds,
  targets), each in one module behind a registry;
- `environments`: per-version conda execution environments and the offline channel;
- `containers`: the local Triton image and the generated deploy files;
- `serving`: the embedded tritonserver, zero-downtime updates, the stub watchdog, tuning.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this package runs from (specs, envs, backends, build cache)."""
