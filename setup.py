"""Install the GCN segmentation tutorial port: `pip install -e .[dev]` (the Makefile does it)."""
from setuptools import find_packages, setup

setup(
    name="gcn-segmentation",
    version="0.1.0",
    description=(
        "GCN (Global Convolutional Network) on ResNet-v2-50 for cat/dog segmentation of the "
        "Oxford-IIIT Pet images: a TensorFlow 2 / Keras 3 port of the classic TF1 tutorial"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["common", "common.*", "datasets", "datasets.*", "models",
                                    "models.*",
                                    "learning", "learning.*"]),
    # The colour tables of palette masks (datasets/labels.py), e.g. Pascal VOC's.
    package_data={"datasets": ["palettes/*.json"]},
    install_requires=[
        "tensorflow>=2.16,<3",  # 2.16 is the first release whose tf.keras is Keras 3
        "numpy",
        "opencv-python-headless",  # the same cv2 as opencv-python, without the libGL dependency
        "matplotlib",
        # tf.summary's writers live in the tensorboard package, which TensorFlow 2.21 no longer
        # installs; every run writes its scalars and previews there (learning/run_folder.py).
        "tensorboard",
        # COCO's own mask library: python -m datasets.convert decodes COCO RLE masks with it
        # (datasets/convert/coco.py). Installs from a binary wheel (no compiler needed).
        "pycocotools",
    ],
    extras_require={
        # tf-slim + tf-keras: only for the test that checks our slim-checkpoint mapping against
        # the real TF-slim resnet_v2_50 graph (tests/test_pretrained.py skips without them).
        # pytest-xdist: `make test` runs the suite in two processes (most of a test's time is
        # Python on one core: tracing, start-ups, subprocesses).
        "dev": ["pytest", "pytest-xdist", "tf-keras", "tf-slim"],
    },
)
