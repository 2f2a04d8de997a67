"""Container images the components run on in a cluster.

The images already hold this library and its dependencies (KFP included), so
no step installs anything when it starts. They are pinned to the library's
version. Point the components at your own registry by setting
``KFP_TORCH_LIFECYCLE_REGISTRY`` before importing the components (for
example before ``make compile``).
"""

import os

from components import __version__

REGISTRY = os.environ.get("KFP_TORCH_LIFECYCLE_REGISTRY", "ghcr.io/kfp-torch-lifecycle")

# Library plus data and packaging dependencies (DVC, dvc-gs, BentoML), CPU PyTorch.
COMPONENTS_IMAGE = f"{REGISTRY}/components:{__version__}"
# Library plus CUDA PyTorch, for the training steps.
TRAINING_IMAGE = f"{REGISTRY}/training-cuda:{__version__}"
