"""Export a trained model for serving: a TF SavedModel plus TFLite models, checked numerically.

``python -m models.export --model runs/pets`` (or ``train.py --export``, which calls
``export_model``) writes into the run folder (or ``--out``)::

    saved_model/            SegNet.export: serve(images (N, h, w, 3) float32 RGB 0-255)
                            -> probabilities (N, h, w, C), any size
    model_float32.tflite    fixed input (1, H, W, 3) float32 RGB 0-255 (preprocessing inside),
                            outputs "probabilities" (1, H, W, C) float32 and, unless
                            --no-mask-output, "mask" (1, H, W) uint8 (the argmax class index)
    model_float16.tflite    the same with float16 weights (half the size; computed in float32
                            on CPUs, in float16 on GPU delegates)
    export.json             input size, class names, output names, and the self-check numbers

TFLite needs a fixed input size. The default is the training size (``input_shape`` in
``model_config.json``); the network is fully convolutional, so ``--image-size HxW`` (sides
multiples of 32) exports the same weights for another size. Larger or smaller photos must be
cropped/padded (or resized) to that size by the app, as ``SegNet.predict_image`` pads them.

The self-check runs each TFLite model and the Keras model on a few images (given ones, e.g.
validation images from train.py, or seeded synthetic ones) and reports the largest absolute
difference of the probabilities and the share of mask pixels whose class differs. A float32
model that differs in more than ``MAX_MASK_DIFFERENCE`` of the pixels (or by more than
``MAX_PROB_DIFFERENCE_FLOAT32`` in a probability) is an error: the conversion went wrong. The
float16 model's numbers are reported (and a warning logged beyond the same pixel share): its
rounding can flip pixels whose two best classes are nearly tied.

``models/`` imports neither ``datasets/`` nor ``learning/``: the check images arrive as arrays.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.cli import parse_size
from common.errors import ConfigError, GCNError, ModelError
from common.files import atomic_write_bytes, atomic_write_json
from models.nn import SegNet, validate_input_shape

__all__ = [
    "EXPORT_INFO_NAME", "SAVED_MODEL_DIR", "MAX_MASK_DIFFERENCE", "MAX_PROB_DIFFERENCE_FLOAT32",
    "TFLiteCheck", "ExportReport", "parse_image_size", "export_saved_model", "convert_to_tflite",
    "run_tflite",
    "synthetic_check_images", "export_model", "export_run", "main",
]

logger = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
EXPORT_INFO_NAME = "export.json"
TFLITE_NAMES = {"float32": "model_float32.tflite", "float16": "model_float16.tflite"}
SIGNATURE_KEY = "serving_default"
INPUT_NAME, PROBS_NAME, MASK_NAME = "images", "probabilities", "mask"
# The self-check's tolerance: share of mask pixels allowed to differ, and (float32 only) the
# largest probability difference; float32 TFLite kernels differ from TensorFlow's only by
# summation order, far below it.
MAX_MASK_DIFFERENCE = 0.001
MAX_PROB_DIFFERENCE_FLOAT32 = 1e-3
DEFAULT_NUM_CHECK_IMAGES = 4


@dataclasses.dataclass(frozen=True)
class TFLiteCheck:
    """One TFLite file and how it compared with the Keras model."""

    variant: str                  # "float32" or "float16"
    path: str
    size_bytes: int
    max_prob_difference: float    # max |p_tflite - p_keras| over images, pixels and classes
    mask_difference_share: float  # share of pixels whose class differs
    differing_pixels: int
    num_pixels: int

    def line(self) -> str:
        return (f"{self.variant}: {self.path} ({self.size_bytes / 2**20:.1f} MiB), largest "
                f"probability difference {self.max_prob_difference:.2e}, differing mask pixels "
                f"{self.differing_pixels}/{self.num_pixels} "
                f"({100 * self.mask_difference_share:.4f}%)")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and measured."""

    out_dir: str
    saved_model: str | None
    image_size: tuple[int, int]
    mask_output: bool
    num_check_images: int
    class_names: tuple[str, ...] | None
    checks: tuple[TFLiteCheck, ...]

    def lines(self) -> list[str]:
        head = (f"TFLite input (1, {self.image_size[0]}, {self.image_size[1]}, 3) float32 RGB "
                f"0-255; outputs {PROBS_NAME}" + (f", {MASK_NAME}" if self.mask_output else "")
                + f"; checked on {self.num_check_images} images against the Keras model")
        saved = [f"SavedModel: {self.saved_model}"] if self.saved_model else []
        return saved + [head] + [check.line() for check in self.checks]


def parse_image_size(text: str) -> tuple[int, int]:
    """``--image-size`` read by ``common.cli.parse_size`` and checked as a TFLite input size
    (``validate_input_shape``); ConfigError naming the option else."""
    try:
        height, width, _ = validate_input_shape(parse_size(text) + (3,))
    except ValueError as error:
        raise ConfigError(f"--image-size: {error}") from None
    return height, width  # type: ignore[return-value]


def _float32_model(model: SegNet) -> SegNet:
    """`model` itself when it computes in float32, else a float32 copy with the same weights.

    A model built under a mixed-precision policy (train.py --mixed-precision) computes in
    bfloat16/float16; TFLite's CPU kernels have no bfloat16, and a served model should not
    depend on the training machine's precision. Its variables are float32 either way.
    """
    if all(layer.compute_dtype in (None, "float32") for layer in model.keras_model.layers):
        return model
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = type(model).from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy(policy)
    clone.keras_model.set_weights(model.keras_model.get_weights())
    logger.info("export: the model computes in %s; exporting a float32 copy",
                model.keras_model.layers[-1].compute_dtype)
    return clone


def export_saved_model(model: SegNet, path: str | os.PathLike) -> str:
    """Write a TF SavedModel for serving at `path`; returns it (`SegNet.export`).

    Its endpoint `serve(images)` takes float32 `(N, h, w, 3)` RGB 0-255 of any size (sides
    multiples of 32 line the skip maps up exactly) and returns softmax probabilities
    `(N, h, w, C)` float32; the preprocessing is inside.
    """
    path = os.fspath(path)
    archive = keras.export.ExportArchive()
    archive.track(model.keras_model)
    archive.add_endpoint(
        "serve", model.probabilities,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME)])
    archive.write_out(path, verbose=False)
    logger.info("exported a SavedModel with endpoint serve(images) to %s", path)
    return path


def _fixed_size_saved_model(model: SegNet, image_size: tuple[int, int], mask_output: bool,
                            directory: str) -> None:
    """Write a SavedModel whose `serving_default` takes (1, H, W, 3): what the converter needs.

    A plain tf.Module that holds the weights and the one function: the converter reads nothing
    else, and Keras' ExportArchive (export_saved_model, for people) walks every layer's tracked
    objects first, a third of the conversion's time for a ResNet-50."""
    keras_model = model.keras_model

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(keras_model(images, training=False), tf.float32)   # (1, H, W, C)
        outputs = {PROBS_NAME: tf.nn.softmax(logits, axis=-1)}
        if mask_output:
            outputs[MASK_NAME] = tf.cast(tf.argmax(logits, axis=-1), tf.uint8)  # (1, H, W)
        return outputs

    module = tf.Module()
    # The tf.Variables under Keras' variables: what the traced function captures, so what the
    # SavedModel must hold (a Keras variable itself is not saved as one).
    module.weights = [variable.value for variable in keras_model.variables]
    # The signature only, not the tf.function as an attribute of the module: saving one traces
    # it again.
    signature = tf.function(serve, autograph=False, input_signature=[
        tf.TensorSpec((1,) + tuple(image_size) + (3,), tf.float32, name=INPUT_NAME)])
    tf.saved_model.save(module, directory,
                        signatures={SIGNATURE_KEY: signature.get_concrete_function()})


def convert_to_tflite(model: SegNet, image_size: Sequence[int], *, mask_output: bool = True,
                      float16: bool = False) -> bytes:
    """The TFLite flatbuffer of `model` for input (1, H, W, 3) float32 RGB 0-255.

    Outputs "probabilities" (1, H, W, C) float32 and, with `mask_output`, "mask" (1, H, W)
    uint8. `float16` stores the weights as float16 (post-training float16 quantisation).
    """
    height, width, _ = validate_input_shape(tuple(image_size) + (3,))
    if height is None or width is None:
        raise ConfigError("a TFLite model needs a fixed input size; pass image_size=(H, W)")
    model = _float32_model(model)
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as tmp:
        _fixed_size_saved_model(model, (height, width), mask_output, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE_KEY])
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            return bytes(converter.convert())
        except Exception as error:  # the converter raises ConverterError and others
            raise ModelError(f"TFLite conversion of {type(model).__name__} at {height}x{width} "
                             f"failed: {str(error).splitlines()[0] if str(error) else error!r}"
                             ) from error


def _interpreter(model_content: bytes) -> Any:
    """A TFLite interpreter: LiteRT's (package ai-edge-litert) when installed, else the one
    TensorFlow still ships (deprecated in favour of LiteRT, same behaviour)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return tf.lite.Interpreter(model_content=model_content)
    return Interpreter(model_content=model_content)


def run_tflite(model_content: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run a TFLite model from `convert_to_tflite` on images (N, H, W, 3) RGB 0-255, one at a
    time. Returns its outputs stacked over the images: "probabilities" (N, H, W, C) and,
    when the model has it, "mask" (N, H, W)."""
    runner = _interpreter(model_content).get_signature_runner(SIGNATURE_KEY)
    results: dict[str, list[np.ndarray]] = {}
    for image in np.asarray(images):
        outputs = runner(**{INPUT_NAME: image[None].astype(np.float32)})
        for name, value in outputs.items():
            results.setdefault(name, []).append(np.asarray(value)[0])
    return {name: np.stack(values) for name, values in results.items()}


def synthetic_check_images(num_images: int, image_size: Sequence[int],
                           seed: int = 0) -> np.ndarray:
    """Seeded stand-ins for photos, uint8 (N, H, W, 3): smooth colour blobs plus grain."""
    height, width = (int(s) for s in image_size)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (num_images, max(2, height // 16), max(2, width // 16), 3))
    smooth = tf.image.resize(coarse.astype(np.float32), (height, width), method="bicubic").numpy()
    noisy = smooth + rng.normal(0, 12, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _compare(variant: str, path: str, content: bytes, images: np.ndarray,
             keras_probs: np.ndarray, keras_mask: np.ndarray) -> TFLiteCheck:
    outputs = run_tflite(content, images)
    probs = outputs[PROBS_NAME]
    mask = outputs[MASK_NAME] if MASK_NAME in outputs else probs.argmax(-1)
    differing = int(np.count_nonzero(mask != keras_mask))
    return TFLiteCheck(variant=variant, path=path, size_bytes=len(content),
                       max_prob_difference=float(np.max(np.abs(probs - keras_probs))),
                       mask_difference_share=differing / keras_mask.size,
                       differing_pixels=differing, num_pixels=int(keras_mask.size))


def export_model(
    model: SegNet,
    out_dir: str | os.PathLike,
    *,
    image_size: Sequence[int] | None = None,
    mask_output: bool = True,
    saved_model: bool = True,
    variants: Sequence[str] = ("float32", "float16"),
    check_images: np.ndarray | None = None,
    num_check_images: int = DEFAULT_NUM_CHECK_IMAGES,
    seed: int = 0,
) -> ExportReport:
    """Write the SavedModel, the TFLite models and export.json into `out_dir`; check them.

    Args:
        model: a SegNet (e.g. `SegNet.load(run_dir)`; train.py passes its best model).
        out_dir: destination folder (created); existing export files are replaced.
        image_size: TFLite input (H, W); default: the model's training size.
        mask_output: add the argmax "mask" output to the TFLite models.
        saved_model: also write `saved_model/` (`SegNet.export`, any input size).
        variants: which TFLite files: "float32", "float16".
        check_images: uint8 RGB (N, H, W, 3) at `image_size` for the self-check (e.g. a few
            validation images); None: `num_check_images` seeded synthetic images.
    Raises ModelError when the float32 TFLite model disagrees with the Keras model (beyond
    `MAX_MASK_DIFFERENCE` of the mask pixels or `MAX_PROB_DIFFERENCE_FLOAT32`); the files are
    written first, so they can be inspected.
    """
    size, check_images = _checked_inputs(model, variants, image_size, check_images,
                                         num_check_images, seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved_path = _write_saved_model(model, out / SAVED_MODEL_DIR) if saved_model else None

    reference = _float32_model(model)
    keras_probs = reference.predict(check_images, batch_size=1, output="probs")
    keras_mask = keras_probs.argmax(-1)
    checks = []
    for variant in variants:
        content = convert_to_tflite(reference, size, mask_output=mask_output,
                                    float16=variant == "float16")
        path = out / TFLITE_NAMES[variant]
        atomic_write_bytes(path, content)
        checks.append(_compare(variant, str(path), content, check_images, keras_probs,
                               keras_mask))
        logger.info("export: %s", checks[-1].line())

    report = ExportReport(out_dir=str(out), saved_model=saved_path, image_size=size,
                          mask_output=bool(mask_output), num_check_images=len(check_images),
                          class_names=model.class_names, checks=tuple(checks))
    atomic_write_json(out / EXPORT_INFO_NAME, {
        "input": {"name": INPUT_NAME, "shape": [1, size[0], size[1], 3], "dtype": "float32",
                  "values": "RGB 0-255 (the model scales to [-1, 1] itself)"},
        "outputs": {PROBS_NAME: [1, size[0], size[1], model.num_classes]}
                   | ({MASK_NAME: [1, size[0], size[1]]} if mask_output else {}),
        "num_classes": model.num_classes,
        "class_names": None if model.class_names is None else list(model.class_names),
        "saved_model": saved_path,
        "checks": [dataclasses.asdict(check) for check in checks],
        "tensorflow_version": tf.__version__,
    })
    _check_tolerances(checks)
    return report


def _checked_inputs(model: SegNet, variants: Sequence[str], image_size: Sequence[int] | None,
                    check_images: np.ndarray | None, num_check_images: int,
                    seed: int) -> tuple[tuple[int, int], np.ndarray]:
    """``export_model``'s first step, before anything is written: the TFLite input size
    ``(H, W)`` and the self-check images at that size (seeded synthetic ones when none are
    given); unknown variants, a size the model cannot give and check images of another shape
    are a ``ConfigError``."""
    unknown = [v for v in variants if v not in TFLITE_NAMES]
    if unknown or not variants:
        raise ConfigError(f"TFLite variants must be among {sorted(TFLITE_NAMES)}, got "
                          f"{list(variants)!r}")
    size = tuple(image_size) if image_size is not None else tuple(model.input_shape[:2])
    if None in size:
        raise ConfigError(f"the model was built for any input size ({model.input_shape}); "
                          f"give the TFLite input size (--image-size HxW)")
    height, width, _ = validate_input_shape(size + (3,))
    size = (int(height), int(width))
    if check_images is None:
        check_images = synthetic_check_images(num_check_images, size, seed)
    check_images = np.asarray(check_images)
    if check_images.ndim != 4 or check_images.shape[1:] != size + (3,) or not len(check_images):
        raise ConfigError(f"check images must be RGB arrays (N, {size[0]}, {size[1]}, 3) at the "
                          f"export size, got shape {check_images.shape}")
    return size, check_images


def _check_tolerances(checks: Sequence[TFLiteCheck]) -> None:
    """``export_model``'s last step, after every file is written: a float32 TFLite model
    beyond the tolerances is a ``ModelError`` (the conversion is wrong); a float16 one beyond
    ``MAX_MASK_DIFFERENCE`` gets a warning."""
    for check in checks:
        too_far = (check.mask_difference_share > MAX_MASK_DIFFERENCE
                   or (check.variant == "float32"
                       and check.max_prob_difference > MAX_PROB_DIFFERENCE_FLOAT32))
        if too_far and check.variant == "float32":
            raise ModelError(f"the exported {check.line()}: beyond the tolerance "
                             f"({100 * MAX_MASK_DIFFERENCE:.2f}% of the pixels, probability "
                             f"{MAX_PROB_DIFFERENCE_FLOAT32:g}); the conversion is wrong")
        if too_far:
            logger.warning("export: the %s model differs from the Keras model in more than "
                           "%.2f%% of the mask pixels", check.variant, 100 * MAX_MASK_DIFFERENCE)


def _write_saved_model(model: SegNet, path: Path) -> str:
    """`export_saved_model` into a temporary folder beside `path`, then swapped in (an interrupted
    export never leaves half a SavedModel under the final name)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        export_saved_model(model, tmp / "model")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "model", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
               image_size: Sequence[int] | None = None, mask_output: bool = True,
               check_images: np.ndarray | None = None,
               num_check_images: int = DEFAULT_NUM_CHECK_IMAGES) -> ExportReport:
    """`export_model` of the best model of a run folder (`SegNet.load(run_dir)`), into
    `out_dir` (default: the run folder)."""
    try:
        model = SegNet.load(run_dir)
    except ValueError as error:   # ModelConfigError: a missing or mismatched model folder
        raise ModelError(str(error)) from None
    return export_model(model, run_dir if out_dir is None else out_dir, image_size=image_size,
                        mask_output=mask_output, check_images=check_images,
                        num_check_images=num_check_images)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Export a trained model (a run folder of train.py) as a TF SavedModel and "
                    "float32/float16 TFLite models, and check them against the Keras model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="run folder (holds model_config.json)")
    parser.add_argument("--out", default=None, help="output folder (default: the run folder)")
    parser.add_argument("--image-size", default=None, metavar="N|HxW",
                        help="TFLite input size, multiples of 32 (default: the training size)")
    parser.add_argument("--no-mask-output", action="store_true",
                        help="TFLite models output probabilities only (no argmax mask)")
    parser.add_argument("--check-images", type=int, default=DEFAULT_NUM_CHECK_IMAGES,
                        help="synthetic images of the numerical self-check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(message)s")
    try:
        if args.check_images < 1:
            raise ConfigError(f"--check-images must be >= 1, got {args.check_images}")
        size = None if args.image_size is None else parse_image_size(args.image_size)
        report = export_run(args.model, args.out, image_size=size,
                            mask_output=not args.no_mask_output,
                            num_check_images=args.check_images)
    except GCNError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for line in report.lines():
        print(line)
    print(f"Export description: {Path(report.out_dir) / EXPORT_INFO_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
