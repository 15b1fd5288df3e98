"""TFLite conversion of the real GCN: the converter's temporary SavedModel written with the
serving function as its signature only (models/export.py today) against the same module with
the tf.function also kept as an attribute (as before), which ``tf.saved_model.save`` traces a
second time.

    python benchmarks/export_speed.py                  # GCN 64x64, 5 classes, 4 rounds
    python benchmarks/export_speed.py --rounds 6 --image-size 128

Each round converts the same model both ways (signature, attribute, signature, ...: this shared
machine's speed drifts), float32, and checks that the two flatbuffers are the same bytes. It
prints each round's seconds, the per-round ratio attribute / signature, and the median and
range.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import tensorflow as tf  # noqa: E402

from models import export  # noqa: E402
from models.nn import GCN  # noqa: E402


def saved_model_with_attribute(model, image_size, mask_output, directory) -> None:
    """The earlier temporary SavedModel: the serving tf.function also an attribute."""
    keras_model = model.keras_model

    def serve(images):
        logits = tf.cast(keras_model(images, training=False), tf.float32)
        outputs = {export.PROBS_NAME: tf.nn.softmax(logits, axis=-1)}
        if mask_output:
            outputs[export.MASK_NAME] = tf.cast(tf.argmax(logits, axis=-1), tf.uint8)
        return outputs

    module = tf.Module()
    module.weights = [variable.value for variable in keras_model.variables]
    module.serve = tf.function(serve, autograph=False, input_signature=[
        tf.TensorSpec((1,) + tuple(image_size) + (3,), tf.float32, name=export.INPUT_NAME)])
    tf.saved_model.save(module, directory,
                        signatures={export.SIGNATURE_KEY: module.serve.get_concrete_function()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--image-size", type=int, default=64, help="the model's input size")
    args = parser.parse_args()

    size = (args.image_size, args.image_size)
    model = GCN(size + (3,), 5, pretrain="none")
    current = export._fixed_size_saved_model
    ways = {"signature": current, "attribute": saved_model_with_attribute}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    export.convert_to_tflite(model, size)                     # warm-up: first traces, imports
    for round_index in range(args.rounds):
        outputs = {}
        for name, write in ways.items():
            export._fixed_size_saved_model = write
            start = time.perf_counter()
            outputs[name] = export.convert_to_tflite(model, size)
            seconds[name].append(time.perf_counter() - start)
        export._fixed_size_saved_model = current
        same = outputs["signature"] == outputs["attribute"]
        print(f"round {round_index + 1}: signature {seconds['signature'][-1]:.2f} s, attribute "
              f"{seconds['attribute'][-1]:.2f} s, ratio "
              f"{seconds['attribute'][-1] / seconds['signature'][-1]:.2f}, "
              f"{'the same' if same else 'DIFFERENT'} {len(outputs['signature']):,} bytes")
    ratios = [a / s for a, s in zip(seconds["attribute"], seconds["signature"])]
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.2f} s "
              f"(range {min(values):.2f}-{max(values):.2f})")
    print(f"attribute / signature: median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
