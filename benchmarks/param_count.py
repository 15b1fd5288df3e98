"""Parameter count of GCN on ResNet50V2: backbone vs decoder (random weights, nothing downloaded).

    .venv/bin/python benchmarks/param_count.py [--size 512] [--classes 3]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.nn import GCN  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input height and width")
    parser.add_argument("--classes", type=int, default=3, help="number of classes")
    args = parser.parse_args()

    model = GCN((args.size, args.size, 3), args.classes, pretrain="none")
    encoder = model.keras_model.get_layer("resnet50v2_encoder")
    total = model.keras_model.count_params()
    encoder_params = encoder.count_params()
    decoder = total - encoder_params
    print(f"GCN {args.size}x{args.size}, {args.classes} classes, GCN kernel {model.kernel_size}")
    print(f"  ResNet50V2 backbone (keras.applications, notop): "
          f"{model.backbone.count_params():>12,d} ({model.backbone.count_params() / 1e6:.2f} M)")
    print(f"  encoder used by GCN (backbone minus post_bn):    "
          f"{encoder_params:>12,d} ({encoder_params / 1e6:.2f} M)")
    print(f"  decoder (4 GCM, 9 BRM, 1x1 logits):              "
          f"{decoder:>12,d} ({decoder / 1e6:.3f} M)")
    print(f"  total segmentation model:                        "
          f"{total:>12,d} ({total / 1e6:.2f} M)")
    trainable = sum(int(v.numpy().size) for v in model.keras_model.trainable_variables)
    print(f"  of which trainable (BN moving statistics are not): {trainable:>10,d}")


if __name__ == "__main__":
    main()
