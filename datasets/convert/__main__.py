"""``python -m datasets.convert``: see ``datasets/convert/command.py``."""
from common.cli import run
from datasets.convert.command import main

run(main)
