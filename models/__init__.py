"""Segmentation models: GCN on a ResNet50V2 backbone (images in, logits and loss out).

`models/` imports neither `datasets/` nor `learning/`; see docs/design.md.
"""
