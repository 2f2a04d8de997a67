"""The networks a model can be built from, by name, and the form of a ``model_factory``: torch-free, so that
arguments are checked (``check_arguments``, the pipelines, the launcher pod) without loading torch."""

import re

LIBRARY_ARCHITECTURES = ("small_cnn",)
# torchvision's classifiers that train as plain single-output modules (no auxiliary heads), each
# checked in the tests to build, run and have its head found for any number of classes.
TORCHVISION_ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_v2_s",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "densenet121",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "swin_t",
    "vit_b_16",
    "vit_b_32",
)
ARCHITECTURES = LIBRARY_ARCHITECTURES + TORCHVISION_ARCHITECTURES
FACTORY_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
